"""The shipped EVS debug recipes train end to end with TCL on (hints in key and reference clips) and score
their own synthetic validation split with the benchmark's metric."""

import itertools
import math
from pathlib import Path

import pytest

from gvseg.config import apply_overrides
from gvseg.data import formats
from gvseg.data.pipeline import build_records, iterate_batches
from gvseg.engine import build_parts, seed_everything, train_step
from gvseg.evaluation import evaluate_split
from gvseg.recipes import load_recipe

ROOT = Path(__file__).resolve().parent.parent
HEADLINE = {"ytvos": "J&F-Mean", "burst": "HOTA_all"}


@pytest.mark.parametrize("recipe", ["evs_ytvos18", "evs_burst"])
def test_full_evs_recipes_draw_mask_or_point_hints(recipe):
    cfg = load_recipe(f"{ROOT}/tasks/{recipe}.py:full")
    assert cfg.data.exemplar_kinds == ("mask", "point")  # §4.4
    assert cfg.loss.contrastive.enabled and cfg.data.reference_frames > 0  # TCL on
    assert cfg.data.val_split == formats.val_split(cfg.data.format)  # the release's own split name


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["evs_ytvos18", "evs_burst"])
def test_debug_evs_recipe_trains_with_tcl_and_evaluates(recipe, tmp_path):
    cfg = load_recipe(f"{ROOT}/tasks/{recipe}.py:debug")
    cfg = apply_overrides(cfg, [
        f"data.root={tmp_path / 'data'}", "train.max_iters=3", "data.synth.videos=3", "data.synth.frames=4",
        "data.synth.height=32", "data.synth.width=48", "data.min_size=(32,)", "data.max_size=64",
        "data.test_size=32", "loss.num_points=64",
    ])
    assert cfg.loss.contrastive.enabled and cfg.data.reference_frames == 3 and cfg.data.exemplar_kinds
    seed_everything(0)
    parts = build_parts(cfg)
    records = build_records(cfg.data, cfg.data.train_split)
    batches = itertools.chain.from_iterable(
        iterate_batches(records, cfg.data, batch_size=cfg.train.batch_size, seed=0, epoch=e) for e in itertools.count())
    for _, clip in zip(range(cfg.train.max_iters), batches):
        assert clip.reference is not None and clip.reference.exemplars is not None
        result = train_step(parts, clip, cfg)
        assert result.finite and math.isfinite(result.loss)
        assert {"loss_tcl", "loss_tcl_aux"} <= set(result.losses)
    metrics, _ = evaluate_split(parts.model, cfg, tmp_path / "eval", progress=False, max_overlays=1)
    v = metrics[HEADLINE[cfg.data.format]]
    assert 0.0 <= v <= 100.0
