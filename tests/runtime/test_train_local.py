"""`gvseg train --local`: the whole main job in one process (train -> eval -> MLflow), resume, failure."""

import json

import mlflow
import pytest

from gvseg import checkpoint
from gvseg.config import apply_overrides
from gvseg.engine import NonFiniteLossError
from gvseg.runtime.ray_train import run_dir, run_train


def _run(cfg):
    return mlflow.MlflowClient(cfg.tracking.tracking_uri).search_runs(
        [mlflow.MlflowClient(cfg.tracking.tracking_uri).get_experiment_by_name("gvseg").experiment_id],
        order_by=["attributes.start_time DESC"])


def test_local_run_trains_evaluates_and_logs(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, ["runtime.local=true", "tracking.registered_model=gvseg-tiny"])
    metrics = run_train(cfg, recipe="tasks/vps_vipseg.py:debug")
    assert {"vpq_mean_1246", "vpq_1", "stq", "aq", "sq"} <= set(metrics)
    assert 0.0 <= metrics["vpq_1"] <= 1.0
    ckpt = checkpoint.load(run_dir(cfg) / "checkpoints" / "step_0000004")
    assert ckpt["step"] == 4 and "contrastive.queue" in "".join(ckpt["criterion"])

    (run,) = _run(cfg)
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    assert run.info.status == "FINISHED"
    assert run.data.params["loss.contrastive.tau"] == "0.2" and run.data.tags["task"] == "vps"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]
    assert "vpq_mean_1246" in run.data.metrics
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"checkpoints", "eval", "images"} <= artifacts  # last checkpoint, metrics JSON, overlay series
    (version,) = client.search_model_versions("name = 'gvseg-tiny'")
    assert version.run_id == run.info.run_id


def test_rerun_with_the_same_name_resumes(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, ["runtime.local=true", "train.max_iters=2"])
    run_train(cfg)
    longer = apply_overrides(cfg, ["train.max_iters=4"])
    run_train(longer)
    steps = [json.loads(line)["step"] for line in (run_dir(cfg) / "metrics_fallback.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4]  # the second run started at step 3, not from scratch
    assert checkpoint.load(checkpoint.latest(run_dir(cfg) / "checkpoints"))["step"] == 4


def test_failed_training_marks_the_run_failed(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, ["runtime.local=true", "train.fault.nan_at_steps=(1, 2)",
                                     "train.max_nonfinite=2"])
    with pytest.raises(NonFiniteLossError):
        run_train(cfg)
    (run,) = _run(cfg)
    assert run.info.status == "FAILED"


def test_periodic_eval_keeps_the_best_checkpoint_and_eval_cli_scores_it(tiny_cfg, tmp_path, capsys):
    from gvseg.cli import main

    cfg = apply_overrides(tiny_cfg, ["runtime.local=true", "train.eval_every=2"])
    run_train(cfg)
    (run,) = _run(cfg)
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val/vpq_1")] == [2]
    assert checkpoint.load(run_dir(cfg) / "best_checkpoint")["step"] == 2
    assert {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")} == {
        "checkpoints/best", "checkpoints/last"}

    out = tmp_path / "scores.json"
    assert main(["eval", "--checkpoint", str(run_dir(cfg) / "best_checkpoint"), "--out", str(out),
                 "--eval-dir", str(tmp_path / "eval")]) == 0
    scores = json.loads(out.read_text())
    assert "vpq_mean_1246" in scores and "stq" in scores
    assert "vpq_mean_1246" in capsys.readouterr().out


def test_eval_without_inputs_is_a_usage_error(capsys):
    from gvseg.cli import main

    assert main(["eval", "--metric", "vpq"]) == 2
    assert "give --metric, --gt and --pred, or --checkpoint" in capsys.readouterr().err
