"""`evaluation.evaluate_split` runs every recipe's task/format pair end to end: predict -> official files ->
the benchmark's metric, with a (random) debug model on a tiny synthetic split."""

import dataclasses

import numpy as np
import pytest
import torch

from gvseg.config import Config, ConfigError, DataConfig, SyntheticConfig
from gvseg.data.formats import FORMATS, val_split
from gvseg.data.synthetic import synthetic_label_space
from gvseg.evaluation import evaluate_split
from gvseg.model.gvseg import build_gvseg
from gvseg.recipes import unit_model_config

CLASSES = {"vipseg": (2, 2), "kitti-step": (2, 2), "vspw": (2, 2), "ytvis": (2, 0), "ovis": (2, 0),
           "davis": (0, 0), "ytvos": (0, 0), "burst": (0, 0)}  # (thing, stuff) classes drawn


def _cfg(task, fmt, root) -> Config:
    things, stuff = CLASSES[fmt]
    nc, nt = synthetic_label_space(fmt, things, stuff)  # KITTI-STEP and VSPW have fixed label spaces
    model = unit_model_config(task, nc, nt)
    if task == "vis":  # random weights: keep the queries so instances (and RLEs) are written
        model = dataclasses.replace(model, postprocess=dataclasses.replace(model.postprocess, track_min_score=0.0))
    synth = SyntheticConfig(videos=3, frames=4, height=32, width=48, seed=0, thing_classes=things,
                            stuff_classes=stuff, val_fraction=0.34)
    split = "valid" if fmt == "ytvis" else val_split(fmt)  # YouTube-VIS: the reader aliases val/valid
    return Config(model=model, data=DataConfig(format=fmt, root=str(root), synthetic=True, synth=synth,
                                                val_split=split, test_size=32, max_size=64))


@pytest.mark.parametrize("task,fmt", sorted((f.task, k) for k, f in FORMATS.items()))
def test_every_pair_evaluates(task, fmt, tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(task, fmt, tmp_path / "data")
    model = build_gvseg(cfg.model).eval()
    metrics, overlays = evaluate_split(model, cfg, tmp_path / "eval", progress=False, max_overlays=2)
    assert FORMATS[fmt].headline in metrics and all(isinstance(v, float) for v in metrics.values())
    v = metrics[FORMATS[fmt].headline]
    assert v != v or 0.0 <= v <= 100.0
    assert 1 <= len(overlays) <= 2 and overlays[0].dtype == np.uint8 and overlays[0].shape[2] == 3


def test_unsupported_pair_is_a_config_error(tmp_path):
    cfg = _cfg("vis", "vipseg", tmp_path / "data")
    with pytest.raises(ConfigError, match="task 'vis' on format 'vipseg' is not supported"):
        evaluate_split(torch.nn.Identity(), cfg, tmp_path / "eval", progress=False)
