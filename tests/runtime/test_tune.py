"""`gvseg tune`: Ray Tune sweeps of tiny CPU trials -> MLflow parent + nested children, table, plot; a
crashing trial fails alone; ASHA-stopped trials end KILLED; a killed driver resumes without reruns.
The driver's Ray-free pieces (finding a sweep to resume, reading Tune's results, CLI errors) are tested
first. Trial planning and the table are tests/test_sweep.py, the plots tests/test_visualize.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import mlflow
import pytest

from gvseg.cli import main
from gvseg.config import Config, apply_overrides, to_dict
from gvseg.runtime.ray_tune import TRIAL_TAG, _find_experiment, results_table
from gvseg.sweep import Sweep, build_trials

PLATFORM = Path(__file__).resolve().parents[2] / "platform"
GRID = {"loss.contrastive.tau": [0.1, 0.3], "loss.contrastive.queue_size": [4, 8]}


# ------------------------------------------------------------------------------------------ no Ray


def test_resume_finds_only_this_sweeps_runs(tmp_path):
    for name in ("tiny-20260101-000000", "tiny-20260102-000000", "tiny-debug-20260103-000000"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "gvseg_sweep.json").write_text("{}")
    assert _find_experiment(tmp_path, "tiny").name == "tiny-20260102-000000"
    with pytest.raises(FileNotFoundError, match="no sweep 'other' to resume"):
        _find_experiment(tmp_path, "other")


def test_results_table_reads_tunes_results_and_the_child_runs(tmp_path):
    """What Tune's ResultGrid and MLflow say, stood in for by plain objects: a finished trial, a crashed one,
    one the scheduler stopped (its child run's tag) and one that never ran."""
    from types import SimpleNamespace as NS

    sweep = Sweep(name="s", base=Config(), grid={"loss.contrastive.tau": [0.1, 0.2, 0.3, 0.4]}, metric="stq")
    trials = build_trials(sweep, tmp_path, "sqlite:///db")
    grid = [NS(config={"trial": 0}, metrics={"completed": 1, "step": 4, "stq": 0.5}, error=None),
            NS(config={"trial": 1}, metrics=None, error=RuntimeError("boom")),
            NS(config={"trial": 2}, metrics={"step": 2, "stq": 0.1}, error=None)]
    runs = [NS(info=NS(run_id=f"r{i}"), data=NS(tags={TRIAL_TAG: f"exp/{i}", **tags}))
            for i, tags in ((0, {}), (1, {}), (2, {"stopped_early": "true"}))]

    class Client:
        def search_runs(self, experiment_ids, filter_string, max_results):
            assert experiment_ids == ["7"] and filter_string == "tags.gvseg_sweep = 'exp'"
            return runs

    rows = results_table(grid, trials, sweep, Client(), "7", "exp")
    assert [(r["status"], r["run_id"], r["error"]) for r in rows] == [
        ("FINISHED", "r0", ""), ("FAILED", "r1", "boom"), ("STOPPED", "r2", ""), ("INCOMPLETE", "", "")]


def test_cli_tune_help_and_bad_sweep_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["tune", "--help"])
    assert e.value.code == 0 and "--resume" in capsys.readouterr().out
    assert main(["tune", str(tmp_path / "missing.py")]) == 2
    assert "missing.py: recipe file not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ Ray


@pytest.fixture()
def base(tiny_cfg):
    return apply_overrides(tiny_cfg, ["runtime.num_workers=1"])  # trials train inside the trial process


def _runs(cfg):
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def _sweep_runs(cfg):
    client, runs = _runs(cfg)
    (parent,) = [r for r in runs if "gvseg_sweep" in r.data.tags and "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, children, runs


@pytest.mark.ray
@pytest.mark.slow
def test_debug_sweep_logs_parent_children_table_and_plot(ray_local, base):
    from gvseg.runtime.ray_tune import run_sweep

    sweep = Sweep(name="tiny", base=base, grid=GRID, metric="stq", plot="heatmap")
    rows = run_sweep(sweep)
    assert [(r["tau"], r["queue_size"], r["status"]) for r in rows] == [
        (0.1, 4, "FINISHED"), (0.1, 8, "FINISHED"), (0.3, 4, "FINISHED"), (0.3, 8, "FINISHED")]
    assert all(0.0 <= r["stq"] <= 1.0 and r["step"] == 4 for r in rows)

    client, parent, children, runs = _sweep_runs(base)
    assert parent.info.status == "FINISHED"
    assert json.loads(parent.data.params["grid.loss.contrastive.tau"]) == [0.1, 0.3]
    assert parent.data.params["sweep.num_trials"] == "4"
    assert sorted(c.info.run_name for c in children) == sorted(r["name"] for r in rows)
    for child in children:  # each child is its own trial: its params and its final metric
        row = next(r for r in rows if r["run_id"] == child.info.run_id)
        assert child.info.status == "FINISHED"
        assert float(child.data.params["loss.contrastive.tau"]) == row["tau"]
        assert child.data.metrics["stq"] == pytest.approx(row["stq"])
    assert len(runs) == 5

    artifacts = {a.path for d in ("results", "plots") for a in client.list_artifacts(parent.info.run_id, d)}
    assert artifacts == {"results/results.csv", "results/results.md", "plots/stq_heatmap.png"}
    local = mlflow.artifacts.download_artifacts(run_id=parent.info.run_id, artifact_path="plots/stq_heatmap.png",
                                                tracking_uri=base.tracking.tracking_uri)
    image = cv2.imread(local)
    assert image is not None and image.shape[0] > 100 and (image != 255).any()  # drawn, not blank
    csv_text = open(mlflow.artifacts.download_artifacts(
        run_id=parent.info.run_id, artifact_path="results/results.csv",
        tracking_uri=base.tracking.tracking_uri)).read()
    assert len(csv_text.strip().splitlines()) == 5 and csv_text.startswith("trial,name,tau,queue_size,status")


@pytest.mark.ray
@pytest.mark.slow
def test_crashing_trial_fails_alone_and_asha_stopped_trial_ends_killed(ray_local, base):
    from gvseg.runtime.ray_tune import run_sweep

    # Run in order (one at a time): "+heavy" (10x loss weights) reaches ASHA's step-2 rung after "ok" and
    # is stopped on its worse loss; "crash" dies at step 1 on a NaN loss.
    heavy = {"loss.class_weight": 20.0, "loss.mask_weight": 50.0, "loss.dice_weight": 50.0}
    sweep = Sweep(name="faults", base=base, variants={
        "ok": {}, "crash": {"train.fault.nan_at_steps": (1,), "train.max_nonfinite": 1}, "+heavy": heavy},
        metric="loss", mode="min", scheduler="asha", max_concurrent=1, plot="bar")
    rows = run_sweep(sweep)
    assert [(r["variant"], r["status"]) for r in rows] == [("ok", "FINISHED"), ("crash", "FAILED"),
                                                           ("+heavy", "STOPPED")]
    assert "non-finite" in rows[1]["error"] and rows[2]["step"] == 2 and rows[0]["step"] == 4

    client, parent, children, runs = _sweep_runs(base)
    status = {c.data.tags["variant"]: c.info.status for c in children}
    assert status == {"ok": "FINISHED", "crash": "FAILED", "+heavy": "KILLED"}  # "+": Table 4a-style names
    assert parent.data.params["variants"] == "ok, crash, +heavy" and "variant._heavy" in parent.data.params
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials_failed"] == 1
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert (client.list_artifacts(parent.info.run_id, "plots")[0].path == "plots/loss_bar.png")


SWEEP_FILE = '''
import json
from gvseg.config import Config, from_dict
from gvseg.sweep import Sweep

def sweep():
    base = from_dict(Config, json.load(open({cfg!r})))
    return Sweep(name="resumable", base=base, grid={{"loss.contrastive.tau": [0.1, 0.3]}}, metric="stq",
                 max_concurrent=1)
'''


@pytest.mark.ray
@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_trials(ray_local, base, tmp_path):
    from gvseg.recipes import load_sweep
    from gvseg.runtime.ray_tune import run_sweep

    (tmp_path / "base.json").write_text(json.dumps(to_dict(base)))
    spec = tmp_path / "resumable.py"
    spec.write_text(SWEEP_FILE.format(cfg=str(tmp_path / "base.json")))
    storage = tmp_path / "runs"
    # PYTHONPATH: the driver runs this checkout's gvseg, not the one the venv may have installed elsewhere
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLATFORM), *filter(None, [os.environ.get("PYTHONPATH")])])}
    driver = subprocess.Popen([sys.executable, "-m", "gvseg.cli", "tune", str(spec)], cwd=tmp_path, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:  # kill the whole driver (and its embedded Ray) once the first trial has finished
        deadline = time.time() + 240
        while not list(storage.glob("resumable-*/trials/t00-*/trial_result.json")):
            assert driver.poll() is None and time.time() < deadline, "the first trial never finished"
            time.sleep(0.5)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    client, before = _runs(base)
    (first,) = [r for r in before if r.info.run_name.startswith("t00-")]
    assert first.info.status == "FINISHED" and len(before) <= 3  # parent, t00, maybe t01 (unfinished)

    rows = run_sweep(load_sweep(str(spec)), resume=True)
    assert [r["status"] for r in rows] == ["FINISHED"] * 2

    client, parent, children, runs = _sweep_runs(base)
    assert parent.info.status == "FINISHED" and parent.data.tags["resumed"] == "true"
    assert sorted(c.info.run_name for c in children) == sorted(r["name"] for r in rows)  # no duplicates
    again = client.get_run(first.info.run_id)
    assert again.info.end_time == first.info.end_time  # the finished trial did not run again
    assert [m.step for m in client.get_metric_history(first.info.run_id, "loss")] == [1, 2, 3, 4]
    assert not [r for r in runs if r.info.status == "RUNNING"]
