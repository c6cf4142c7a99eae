"""`gvseg train --local`: the whole main job in one process (train -> eval -> MLflow), resume, failure."""

import json
import os

import mlflow
import numpy as np
import pytest

from gvseg import checkpoint
from gvseg.checkpoint import run_dir
from gvseg.config import apply_overrides
from gvseg.engine import NonFiniteLossError
from gvseg.runtime.ray_train import run_train


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
    assert ckpt["epoch"] == 1  # 3 training clips, batches of 2 (2 + 1 per epoch): steps 3-4 are the second

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
    assert "vps" in version.description and "tasks/vps_vipseg.py:debug" in version.description
    assert version.tags["recipe"] == "tasks/vps_vipseg.py:debug" and version.tags["git_sha"] == run.data.tags["git_sha"]
    assert float(version.tags["metric.vpq_1"]) == pytest.approx(metrics["vpq_1"], abs=1e-5)
    assert not [a for a in client.list_artifacts(run.info.run_id, "images/val_overlay") if a.path.endswith(".webp")]

    # The registered model is a pyfunc of weights + config: it loads with pickle forbidden and predicts a clip.
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    try:
        model = mlflow.pyfunc.load_model("models:/gvseg-tiny/1")
        out = model.predict(np.random.default_rng(0).integers(0, 255, (3, 48, 64, 3), dtype=np.uint8))
    finally:
        del os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"]
    assert out["id_map"].shape == (3, 48, 64) and out["semantic"].shape == (3, 48, 64)


def _loss_history(cfg):
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    (run,) = _run(cfg)
    return run, [m.step for m in client.get_metric_history(run.info.run_id, "loss")]


def test_resume_after_a_failure_logs_every_step_once(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, ["runtime.local=true", "train.fault.nan_at_steps=(3,)", "train.max_nonfinite=1"])
    with pytest.raises(NonFiniteLossError):
        run_train(cfg)  # dies at step 3, after the checkpoint at step 2
    run_train(apply_overrides(cfg, ["train.fault.nan_at_steps=()"]))  # resumes the same run from step 2
    run, steps = _loss_history(cfg)
    assert run.info.status == "FINISHED" and steps == [1, 2, 3, 4]
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    for key in run.data.metrics:  # every series, not just the loss
        series = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(series) == len(set(series)), key


def test_torn_latest_checkpoint_falls_back_to_the_previous_one(tiny_cfg, capsys):
    cfg = apply_overrides(tiny_cfg, ["runtime.local=true", "train.fault.nan_at_steps=(5,)", "train.max_nonfinite=1",
                                     "train.max_iters=6"])
    with pytest.raises(NonFiniteLossError):
        run_train(cfg)  # checkpoints at steps 2 and 4, then dies
    torn = run_dir(cfg) / "checkpoints" / "step_0000004" / checkpoint.FILENAME
    torn.write_bytes(torn.read_bytes()[:1000])
    capsys.readouterr()
    run_train(apply_overrides(cfg, ["train.fault.nan_at_steps=()"]))
    out = capsys.readouterr().out
    (line,) = [x for x in out.splitlines() if "unreadable" in x]
    assert "resumed from step_0000002" in line and "step_0000004" in line
    run, steps = _loss_history(cfg)
    assert run.data.tags["checkpoint_fallback"].startswith("resumed from step_0000002")
    assert steps == [1, 2, 3, 4, 5, 6] and checkpoint.load(torn.parent)["step"] == 4  # rewritten, whole


def test_rerun_with_the_same_name_resumes(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, ["runtime.local=true", "train.max_iters=2"])
    run_train(cfg)
    longer = apply_overrides(cfg, ["train.max_iters=4"])
    run_train(longer)
    steps = [json.loads(line)["step"] for line in (run_dir(cfg) / "metrics_fallback.jsonl").read_text().splitlines()
             if "loss" in json.loads(line)]
    assert steps == [1, 2, 3, 4]  # the second run started at step 3, not from scratch, and logged each once
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
