"""`gvseg tune`: Ray Tune sweeps of tiny CPU trials -> MLflow parent + nested children, table, plot; a
crashing trial fails alone; ASHA-stopped trials end KILLED; a killed driver resumes without reruns.
The pure pieces (trial names, resources, table, plots, CLI errors) are tested first, without Ray."""

import json
import os
import signal
import subprocess
import sys
import time

import cv2
import mlflow
import pytest

from gvseg.cli import main
from gvseg.config import ConfigError, apply_overrides, to_dict
from gvseg.runtime.ray_tune import (
    _find_experiment,
    best_row,
    sweep_plot,
    to_csv,
    to_markdown,
    trial_name,
    trial_resources,
)
from gvseg.sweep import Sweep

GRID = {"loss.contrastive.tau": [0.1, 0.3], "loss.contrastive.queue_size": [4, 8]}
BINS = "model.descriptor.angle_bins,model.descriptor.radius_bins"


# ------------------------------------------------------------------------------------------ no Ray


def test_trial_names_are_short_unique_and_name_split_grid_keys(tiny_cfg):
    sweep = Sweep(name="b", base=tiny_cfg, grid={BINS: [(12, 6), (36, 12)]}, num_samples=2)
    axes = ["model.descriptor.angle_bins", "model.descriptor.radius_bins", "train.seed"]
    names = [trial_name(i, t, axes) for i, t in enumerate(sweep.trials())]
    assert names[:2] == ["t00-angle_bins=12,radius_bins=6,seed=0", "t01-angle_bins=36,radius_bins=12,seed=0"]
    assert len(set(names)) == 4
    assert trial_name(3, {"variant": "+spa"}, []) == "t03-+spa"


def test_trial_resources_map_onto_the_runtime(tiny_cfg):
    def resources(res, workers):
        sweep = Sweep(name="r", base=tiny_cfg, resources_per_trial=res)
        return trial_resources(sweep, apply_overrides(tiny_cfg, [f"runtime.num_workers={workers}"]))

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
    assert to_markdown([]) == "(no trials)"


def test_plots_heatmap_over_two_axes_else_bars(tiny_cfg, tmp_path):
    sweep = Sweep(name="h", base=tiny_cfg, grid=GRID, metric="vpq", plot="heatmap")
    path = sweep_plot(_rows(), sweep, tmp_path)
    image = cv2.imread(str(path))
    assert path.name == "vpq_heatmap.png" and image.shape[2] == 3
    assert len({tuple(p) for p in image.reshape(-1, 3)}) > 10  # colour cells, not a blank canvas
    with_variants = Sweep(name="h", base=tiny_cfg, grid=GRID, variants={"a": {}}, metric="vpq", plot="heatmap")
    assert sweep_plot(_rows(), with_variants, tmp_path).name == "vpq_bar.png"  # no 2-D grid: bars
    line = Sweep(name="l", base=tiny_cfg, metric="vpq", plot="line")
    assert cv2.imread(str(sweep_plot(_rows(), line, tmp_path))) is not None


def test_resume_finds_only_this_sweeps_runs(tmp_path):
    for name in ("tiny-20260101-000000", "tiny-20260102-000000", "tiny-debug-20260103-000000"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "gvseg_sweep.json").write_text("{}")
    assert _find_experiment(tmp_path, "tiny").name == "tiny-20260102-000000"
    with pytest.raises(FileNotFoundError, match="no sweep 'other' to resume"):
        _find_experiment(tmp_path, "other")


def test_cli_tune_help_and_bad_sweep_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["tune", "--help"])
    assert e.value.code == 0 and "--resume" in capsys.readouterr().out
    assert main(["tune", str(tmp_path / "missing.py")]) == 2
    assert "missing.py: recipe file not found" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ Ray


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


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
    driver = subprocess.Popen([sys.executable, "-m", "gvseg.cli", "tune", str(spec)], cwd=tmp_path,
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
