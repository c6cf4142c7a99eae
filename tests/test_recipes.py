from pathlib import Path

import pytest

from gvseg.config import Config, ConfigError, from_dict, to_dict
from gvseg.recipes import load_recipe, load_sweep
from gvseg.sweep import Sweep

ROOT = Path(__file__).resolve().parent.parent
TASKS = sorted((ROOT / "tasks").glob("*.py"))
SWEEPS = sorted((ROOT / "sweeps").glob("*.py"))
PAIRS = {"vps_vipseg", "vps_kitti_step", "vss_vspw", "vis_ytvis21", "vis_ovis", "evs_ytvos18", "evs_burst"}


def test_every_task_dataset_pair_has_a_recipe():
    assert {p.stem for p in TASKS} >= PAIRS


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
@pytest.mark.parametrize("fn", ["full", "debug"])
def test_recipe_builds_and_round_trips(path, fn):
    cfg = load_recipe(f"{path}:{fn}")
    assert isinstance(cfg, Config)
    assert from_dict(Config, to_dict(cfg)) == cfg
    assert 0 <= cfg.model.num_thing_classes <= cfg.model.num_classes


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_debug_recipe_is_cpu_sized(path):
    cfg = load_recipe(f"{path}:debug")
    assert not cfg.runtime.use_gpu and cfg.data.synthetic
    assert cfg.train.max_iters <= 1000 and cfg.model.decoder.dim <= 64


def test_full_recipes_follow_the_paper_schedule():
    vipseg = load_recipe(f"{ROOT}/tasks/vps_vipseg.py:full")
    ytvis = load_recipe(f"{ROOT}/tasks/vis_ytvis21.py:full")
    assert (vipseg.train.max_iters, vipseg.train.lr_steps, vipseg.train.batch_size) == (10000, (7000,), 16)
    assert (ytvis.train.max_iters, ytvis.train.lr_steps) == (15000, (11000,))
    assert vipseg.model.descriptor.angle_bins == 36 and vipseg.model.descriptor.radius_bins == 12


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
@pytest.mark.parametrize("fn", ["sweep", "debug"])
def test_sweep_builds_every_trial_config(path, fn):
    sweep = load_sweep(f"{path}:{fn}")
    assert isinstance(sweep, Sweep)
    trials = sweep.trials()
    assert trials
    configs = [sweep.trial_config(t) for t in trials]
    assert len({repr(to_dict(c)) for c in configs}) == len(configs)  # every trial differs


def test_tau_queue_sweep_is_table_4b():
    sweep = load_sweep(f"{ROOT}/sweeps/tcl_tau_queue.py:sweep")
    grid = {(t["loss.contrastive.tau"], t["loss.contrastive.queue_size"]) for t in sweep.trials()}
    assert grid == {(a, b) for a in (0.1, 0.2, 0.3) for b in (100, 200)}


def test_bins_sweep_sets_both_keys_together():
    sweep = load_sweep(f"{ROOT}/sweeps/descriptor_bins.py:sweep")
    bins = [(c.model.descriptor.angle_bins, c.model.descriptor.radius_bins)
            for c in map(sweep.trial_config, sweep.trials())]
    assert bins == [(12, 6), (24, 12), (36, 12), (36, 18), (48, 12)]


def test_missing_recipe_function_lists_available(tmp_path):
    f = tmp_path / "r.py"
    f.write_text("from gvseg.config import Config\ndef full():\n    return Config()\n")
    with pytest.raises(ConfigError, match="no recipe function 'fast'; available: full"):
        load_recipe(f"{f}:fast")


def test_missing_recipe_file():
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_recipe("tasks/nope.py:debug")
