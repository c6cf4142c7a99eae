from pathlib import Path

import pytest

from gvseg.config import Config, ConfigError, apply_overrides, flatten, from_dict, to_dict
from gvseg.data.formats import format_of
from gvseg.data.synthetic import synthetic_label_space
from gvseg.recipes import load_recipe, load_sweep

ROOT = Path(__file__).resolve().parent.parent
TASKS = sorted((ROOT / "tasks").glob("*.py"))
SWEEPS = sorted((ROOT / "sweeps").glob("*.py"))
# recipe file -> the dataset format it trains on (the file name says <task>_<dataset>)
PAIRS = {"vps_vipseg": "vipseg", "vps_kitti_step": "kitti-step", "vss_vspw": "vspw", "vis_ytvis21": "ytvis",
         "vis_ovis": "ovis", "evs_ytvos18": "ytvos", "evs_burst": "burst"}


def test_every_task_dataset_pair_has_a_recipe():
    assert {p.stem for p in TASKS} >= set(PAIRS)


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
@pytest.mark.parametrize("fn", ["full", "debug"])
def test_recipe_round_trips_through_dict_and_overrides(path, fn):
    # what a Ray worker (dict) and a sweep trial or `--set` (dotted overrides) rebuild must be the same config
    cfg = load_recipe(f"{path}:{fn}")
    assert from_dict(Config, to_dict(cfg)) == cfg
    assert apply_overrides(Config(), [f"{k}={v!r}" for k, v in flatten(cfg).items()]) == cfg


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
@pytest.mark.parametrize("fn", ["full", "debug"])
def test_recipe_matches_its_file_name(path, fn):
    cfg = load_recipe(f"{path}:{fn}")
    task = path.stem.split("_")[0]
    assert cfg.name == (path.stem if fn == "full" else f"{path.stem}_debug")
    assert cfg.model.task == task
    assert cfg.data.format == PAIRS.get(path.stem, cfg.data.format)
    assert format_of(cfg.data.format).task == task


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_label_space_matches_the_dataset(path):
    full, debug = load_recipe(f"{path}:full"), load_recipe(f"{path}:debug")
    fmt = full.data.format
    # full: the dataset's whole label space; debug: the few classes its synthetic set draws
    assert (full.model.num_classes, full.model.num_thing_classes) == synthetic_label_space(fmt)
    assert (debug.model.num_classes, debug.model.num_thing_classes) == synthetic_label_space(
        fmt, *format_of(fmt).debug_classes)


@pytest.mark.parametrize("path", TASKS, ids=lambda p: p.stem)
def test_debug_recipe_is_a_cpu_sized_version_of_the_full_one(path):
    full, debug = load_recipe(f"{path}:full"), load_recipe(f"{path}:debug")
    assert not debug.runtime.use_gpu and debug.data.synthetic and not full.data.synthetic
    assert debug.train.max_iters < full.train.max_iters and debug.train.max_iters <= 1000
    assert debug.train.batch_size < full.train.batch_size
    assert debug.model.decoder.dim < full.model.decoder.dim and debug.model.decoder.dim <= 64
    assert debug.model.decoder.num_queries < full.model.decoder.num_queries
    assert max(debug.data.min_size) < max(full.data.min_size)
    assert debug.data.max_size < full.data.max_size and debug.data.test_size < full.data.test_size
    assert debug.data.format == full.data.format and debug.model.task == full.model.task


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
    trials = sweep.trials()
    assert trials
    configs = [sweep.trial_config(t) for t in trials]
    assert len({repr(to_dict(c)) for c in configs}) == len(configs)  # every trial differs
    for trial, cfg in zip(trials, configs):  # and each really carries its trial's values
        got = flatten(cfg)
        want = {k: list(v) if isinstance(v, tuple) else v for k, v in trial.items() if k != "variant"}
        assert {k: got[k] for k in want} == want, trial


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
