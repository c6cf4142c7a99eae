"""Every task's shipped debug recipe trains a few steps on its own synthetic data and scores its val split
(6 frames: VPQ^6, part of the VPS headline mean, is defined).

The recipes are used as shipped (label space, exemplar hints, TCL, post-processing); only the sizes shrink.
"""

from pathlib import Path

import pytest
import torch

from gvseg.config import apply_overrides
from gvseg.data.pipeline import build_records, iterate_batches
from gvseg.engine import build_parts, fit, seed_everything
from gvseg.evaluation import evaluate_split, headline_metric
from gvseg.recipes import load_recipe

ROOT = Path(__file__).resolve().parent.parent
TASKS = sorted((ROOT / "tasks").glob("*.py"))


@pytest.mark.slow
@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_debug_recipe_trains_and_evaluates(path, tmp_path):
    torch.set_num_threads(1)
    cfg = load_recipe(f"{path}:debug")
    cfg = apply_overrides(cfg, [
        f"data.root={tmp_path / 'data'}", "data.synth.videos=3", "data.synth.frames=6", "data.synth.height=48",
        "data.synth.width=64", "data.min_size=(48,)", "data.test_size=48", "train.max_iters=2",
        "train.batch_size=2", "train.log_every=1", "loss.num_points=64",
    ])
    seed_everything(0)
    parts = build_parts(cfg)
    records = build_records(cfg.data, cfg.data.train_split)
    logged = {}
    fit(cfg, parts, lambda e: iterate_batches(records, cfg.data, batch_size=2, seed=0, epoch=e),
        device=torch.device("cpu"), progress=False, on_metrics=lambda m, s: logged.update(m))
    assert logged["loss"] == logged["loss"]  # finite, and logged
    if cfg.loss.contrastive.enabled and cfg.data.reference_frames:
        assert "loss/loss_tcl" in logged  # TCL ran on the reference clip
    metrics, _ = evaluate_split(parts.model.eval(), cfg, tmp_path / "eval", progress=False)
    key = headline_metric(cfg)
    assert key in metrics and metrics[key] == metrics[key]
