"""gvseg.sweep: trial planning (names, resources, configs), the results table and the debug sweeps' base.
No Ray, no MLflow: what the Tune driver (gvseg.runtime.ray_tune) builds on."""

import math
from pathlib import Path

import pytest

from gvseg.config import Config, ConfigError, apply_overrides
from gvseg.sweep import (
    DEBUG_TRIAL,
    Sweep,
    TrialOutcome,
    best_row,
    build_trials,
    debug_base,
    format_cell,
    results_rows,
    to_csv,
    to_markdown,
    trial_name,
    trial_resources,
)

ROOT = Path(__file__).resolve().parent.parent
GRID = {"loss.contrastive.tau": [0.1, 0.3], "loss.contrastive.queue_size": [4, 8]}
BINS = "model.descriptor.angle_bins,model.descriptor.radius_bins"


# ------------------------------------------------------------------------------------------ trials


def test_trial_names_are_short_unique_and_name_split_grid_keys():
    sweep = Sweep(name="b", base=Config(), grid={BINS: [(12, 6), (36, 12)]}, num_samples=2)
    axes = ["model.descriptor.angle_bins", "model.descriptor.radius_bins", "train.seed"]
    names = [trial_name(i, t, axes) for i, t in enumerate(sweep.trials())]
    assert names[:2] == ["t00-angle_bins=12,radius_bins=6,seed=0", "t01-angle_bins=36,radius_bins=12,seed=0"]
    assert len(set(names)) == 4
    assert trial_name(3, {"variant": "+spa"}, []) == "t03-+spa"


def test_trial_resources_map_onto_the_runtime():
    base = Config()

    def resources(res, workers):
        sweep = Sweep(name="r", base=base, resources_per_trial=res)
        return trial_resources(sweep, apply_overrides(base, [f"runtime.num_workers={workers}"]))

    cfg, held = resources({"cpu": 2, "gpu": 0.5}, 1)  # in-process: the trial holds a GPU fraction
    assert cfg.runtime.local and cfg.runtime.use_gpu and held == {"cpu": 2.0, "gpu": 0.5}
    cfg, held = resources({"cpu": 8, "gpu": 8}, 2)  # the paper's 8-GPU DDP: one worker per GPU
    assert (cfg.runtime.num_workers, cfg.runtime.gpus_per_worker, cfg.runtime.cpus_per_worker) == (8, 1.0, 1.0)
    assert not cfg.runtime.local and held == {"cpu": 0.01}
    cfg, held = resources({"cpu": 1}, 2)  # CPU workers share the trial's CPUs
    assert cfg.runtime.cpus_per_worker == 0.5 and not cfg.runtime.use_gpu
    with pytest.raises(ConfigError, match="uses one GPU"):
        resources({"cpu": 1, "gpu": 2}, 1)
    with pytest.raises(ConfigError, match="whole number"):
        resources({"cpu": 1, "gpu": 1.5}, 2)
    with pytest.raises(ConfigError, match="cpu > 0"):
        resources({"cpu": 0}, 1)


def test_build_trials_gives_each_trial_its_own_absolute_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    base = apply_overrides(Config(), ["data.root=data/x", "runtime.num_workers=1", "tracking.registered_model=m"])
    sweep = Sweep(name="s", base=base, grid={"loss.contrastive.tau": [0.1, 0.3]}, variants={"a": {}, "+b": {}})
    trials = build_trials(sweep, tmp_path / "exp", "sqlite:///db")
    assert [t["name"] for t in trials] == ["t00-a,tau=0.1", "t01-a,tau=0.3", "t02-+b,tau=0.1", "t03-+b,tau=0.3"]
    assert [t["variant"] for t in trials] == ["a", "a", "+b", "+b"]
    assert trials[1]["params"] == {"loss.contrastive.tau": 0.3}
    cfg = trials[1]["cfg"]
    assert cfg["loss"]["contrastive"]["tau"] == 0.3 and cfg["data"]["root"] == str(tmp_path / "data" / "x")
    assert cfg["runtime"]["storage_path"] == str(tmp_path / "exp" / "trials") and cfg["runtime"]["local"]
    tracking = cfg["tracking"]
    assert (tracking["run_name"], tracking["tracking_uri"]) == ("t01-a,tau=0.3", "sqlite:///db")
    assert tracking["registered_model"] == ""  # a sweep registers no model versions


def test_debug_base_trains_trials_in_process_on_one_core():
    cfg = debug_base(apply_overrides(Config(), ["runtime.num_workers=4"]))
    assert DEBUG_TRIAL == ("runtime.num_workers=1",) and cfg.runtime.num_workers == 1


# ------------------------------------------------------------------------------------------ results

# A fixed row set and the markdown/CSV that gvseg.runtime.ray_tune.to_markdown/to_csv wrote for it before
# they moved here (captured from commit 2a6b690): the move must not change a byte of the results files.
ROWS = [
    {"trial": 0, "name": "t00-tau=0.1,queue_size=4", "tau": 0.1, "queue_size": 4, "status": "FINISHED", "step": 4,
     "stq": 0.123456789, "vpq": 0.5, "trial_seconds": 12.3456789, "error": "", "run_id": "abc"},
    {"trial": 1, "name": "t01-tau=0.1,queue_size=8", "tau": 0.1, "queue_size": 8, "status": "FAILED", "step": None,
     "stq": None, "vpq": float("nan"), "trial_seconds": None, "error": "ValueError: boom, with comma", "run_id": ""},
    {"trial": 2, "name": "t02-tau=0.3,queue_size=4", "tau": 0.3, "queue_size": 4, "status": "STOPPED", "step": 2,
     "stq": 0.25, "vpq": 1e-05, "trial_seconds": 3.0, "error": "", "run_id": "def"},
    {"trial": 3, "name": "t03-tau=0.3,queue_size=8", "tau": 0.3, "queue_size": 8, "status": "INCOMPLETE", "step": None,
     "stq": None, "vpq": 123456.789, "trial_seconds": None, "error": 'line "quoted"\nsecond', "run_id": ""},
]
MARKDOWN = [
    "| trial | name                     | tau | queue_size | status     | step | stq    | vpq         | trial_seconds | error                        | run_id |",
    "|-------|--------------------------|-----|------------|------------|------|--------|-------------|---------------|------------------------------|--------|",
    "| 0     | t00-tau=0.1,queue_size=4 | 0.1 | 4          | FINISHED   | 4    | 0.1235 | 0.5         | 12.3457       |                              | abc    |",
    "| 1     | t01-tau=0.1,queue_size=8 | 0.1 | 8          | FAILED     |      |        | nan         |               | ValueError: boom, with comma |        |",
    "| 2     | t02-tau=0.3,queue_size=4 | 0.3 | 4          | STOPPED    | 2    | 0.25   | 1e-05       | 3.0           |                              | def    |",
    "| 3     | t03-tau=0.3,queue_size=8 | 0.3 | 8          | INCOMPLETE |      |        | 123456.7890 |               | line \"quoted\"",
    "second         |        |",
]
CSV = 'trial,name,tau,queue_size,status,step,stq,vpq,trial_seconds,error,run_id\r\n0,"t00-tau=0.1,queue_size=4",0.1,4,FINISHED,4,0.123456789,0.5,12.3456789,,abc\r\n1,"t01-tau=0.1,queue_size=8",0.1,8,FAILED,,,nan,,"ValueError: boom, with comma",\r\n2,"t02-tau=0.3,queue_size=4",0.3,4,STOPPED,2,0.25,1e-05,3.0,,def\r\n3,"t03-tau=0.3,queue_size=8",0.3,8,INCOMPLETE,,,123456.789,,"line ""quoted""\nsecond",\r\n'


def test_tables_are_byte_identical_to_the_old_ray_tune_output():
    assert to_markdown(ROWS).split("\n") == MARKDOWN
    assert to_csv(ROWS) == CSV
    assert to_markdown([]) == "(no trials)" and to_csv([]) == ""


def _rows():
    out, i = [], 0
    for tau in (0.1, 0.3):
        for q in (4, 8):
            status = "FAILED" if i == 1 else "FINISHED"
            out.append({"trial": i, "name": f"t{i:02d}", "tau": tau, "queue_size": q, "status": status,
                        "vpq": None if i == 1 else 0.1 * i})
            i += 1
    return out


def test_table_formats_and_best_ignores_failed_trials():
    rows = _rows()
    md = to_markdown(rows).splitlines()
    assert md[0].split("|")[1].strip() == "trial" and len(md) == 2 + 4
    assert "| 0.1 " in md[2] and "FAILED" in md[3]
    assert to_csv(rows).splitlines()[0] == "trial,name,tau,queue_size,status,vpq"
    assert best_row(rows, "vpq", "max")["name"] == "t03"
    assert best_row(rows, "vpq", "min")["name"] == "t00"
    assert best_row([{**r, "status": "FAILED"} for r in rows], "vpq", "max") is None
    assert best_row([{**rows[0], "vpq": math.nan}], "vpq", "max") is None  # NaN is no score
    assert [format_cell(v) for v in (None, 0.1, 0.123456, math.nan, 3)] == ["", "0.1", "0.1235", "nan", "3"]


def test_results_rows_status_error_and_run_id_from_each_outcome():
    sweep = Sweep(name="s", base=Config(), grid={"loss.contrastive.tau": [0.1, 0.2, 0.3, 0.4]}, metric="stq")
    trials = build_trials(sweep, Path("/tmp/exp"), "sqlite:///db")
    trace = "Traceback (most recent call last):\n  File x\nRuntimeError: non-finite loss at step 1\n  more"
    outcomes = {
        0: TrialOutcome(metrics={"completed": 1, "step": 4, "stq": 0.5, "vpq_1": 0.25, "trial_seconds": 9.0,
                                 "mlflow_run_id": "r0"}, run_id="ignored"),
        1: TrialOutcome(error=trace, run_id="r1"),
        2: TrialOutcome(metrics={"step": 2, "stq": 0.1}, run_id="r2", stopped_early=True),
    }  # trial 3 never ran
    rows = results_rows(trials, sweep, outcomes)
    assert [(r["tau"], r["status"], r["run_id"]) for r in rows] == [
        (0.1, "FINISHED", "r0"), (0.2, "FAILED", "r1"), (0.3, "STOPPED", "r2"), (0.4, "INCOMPLETE", "")]
    assert list(rows[0]) == ["trial", "name", "tau", "status", "step", "stq", "vpq_1", "trial_seconds", "error",
                             "run_id"]  # the sweep metric first, then headline metrics some trial has
    assert rows[1]["error"] == "RuntimeError: non-finite loss at step 1" and rows[1]["vpq_1"] is None
    assert rows[2]["step"] == 2 and rows[3]["stq"] is None
