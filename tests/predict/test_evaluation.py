"""`evaluation.evaluate_split` runs every recipe's task/format pair end to end: predict -> official files ->
the benchmark's metric, with a (random) debug model on a tiny synthetic split."""

import dataclasses

import numpy as np
import pytest
import torch

from gvseg.config import Config, ConfigError, DataConfig, SyntheticConfig
from gvseg.data.formats import val_split
from gvseg.evaluation import SUPPORTED, evaluate_split
from gvseg.model.gvseg import build_gvseg, debug_model_config

HEADLINE = {"vipseg": "vpq_1", "kitti-step": "stq", "vspw": "miou", "ytvis": "AP", "ovis": "AP",
            "davis": "J&F-Mean", "ytvos": "J&F-Mean", "burst": "HOTA_all"}
CLASSES = {"vipseg": (4, 2), "kitti-step": (4, 2), "vspw": (4, 2), "ytvis": (2, 2), "ovis": (2, 2),
           "davis": (1, 1), "ytvos": (1, 1), "burst": (1, 1)}


def _cfg(task, fmt, root) -> Config:
    nc, nt = CLASSES[fmt]
    if fmt == "kitti-step":  # its 19 classes (2 things) are fixed by the format
        nc, nt = 19, 2
    model = debug_model_config(task, nc, nt)
    if task == "vis":  # random weights: keep the queries so instances (and RLEs) are written
        model = dataclasses.replace(model, association=dataclasses.replace(model.association, score_threshold=0.0))
    synth = SyntheticConfig(videos=3, frames=4, height=32, width=48, seed=0, thing_classes=nt,
                            stuff_classes=nc - nt, val_fraction=0.34)
    if fmt == "kitti-step":
        synth = dataclasses.replace(synth, thing_classes=0, stuff_classes=0)
    split = "valid" if fmt == "ytvis" else val_split(fmt)  # YouTube-VIS: the reader aliases val/valid
    return Config(model=model, data=DataConfig(format=fmt, root=str(root), synthetic=True, synth=synth,
                                                val_split=split, test_size=32, max_size=64))


@pytest.mark.parametrize("task,fmt", sorted(SUPPORTED))
def test_every_pair_evaluates(task, fmt, tmp_path):
    torch.manual_seed(0)
    cfg = _cfg(task, fmt, tmp_path / "data")
    model = build_gvseg(cfg.model).eval()
    metrics, overlays = evaluate_split(model, cfg, tmp_path / "eval", progress=False, max_overlays=2)
    assert HEADLINE[fmt] in metrics and all(isinstance(v, float) for v in metrics.values())
    v = metrics[HEADLINE[fmt]]
    assert v != v or 0.0 <= v <= 100.0
    assert 1 <= len(overlays) <= 2 and overlays[0].dtype == np.uint8 and overlays[0].shape[2] == 3


def test_unsupported_pair_is_a_config_error(tmp_path):
    cfg = _cfg("vis", "vipseg", tmp_path / "data")
    with pytest.raises(ConfigError, match="task 'vis' on format 'vipseg' is not supported"):
        evaluate_split(torch.nn.Identity(), cfg, tmp_path / "eval", progress=False)
