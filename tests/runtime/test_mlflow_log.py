"""MLflow logging: params, resume by run name, redaction, and no metric lost while the server is away."""

import json

import pytest

pytest.importorskip("mlflow")

import mlflow  # noqa: E402

from gvseg.config import Config, apply_overrides  # noqa: E402
from gvseg.runtime.mlflow_log import REDACTED, RunLogger, redact  # noqa: E402


@pytest.fixture()
def cfg(tmp_path):
    return apply_overrides(Config(), [f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                                      "tracking.run_name=unit"])


def test_params_tags_and_metrics_land(cfg, tmp_path):
    logger = RunLogger.create(cfg, recipe="tasks/x.py:debug", fallback_dir=tmp_path / "run")
    logger.log_metrics({"loss": 1.5}, step=3)
    logger.end("FINISHED")
    run = mlflow.MlflowClient(cfg.tracking.tracking_uri).get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.0001"
    assert run.data.tags["recipe"] == "tasks/x.py:debug" and run.data.tags["task"] == "vps"
    assert run.data.metrics["loss"] == 1.5


def test_same_run_name_resumes_an_unfinished_run(cfg, tmp_path):
    first = RunLogger.create(cfg, recipe="r", fallback_dir=tmp_path)
    first.end("FAILED")
    again = RunLogger.create(cfg, recipe="r", fallback_dir=tmp_path)
    assert again.run_id == first.run_id
    again.end("FINISHED")
    fresh = RunLogger.create(cfg, recipe="r", fallback_dir=tmp_path)
    assert fresh.run_id != first.run_id
    fresh.end()


def test_outage_buffers_then_flushes(cfg, tmp_path, monkeypatch):
    logger = RunLogger.create(cfg, recipe="r", fallback_dir=tmp_path)
    real = logger.client.log_batch

    def down(*a, **k):
        raise ConnectionError("server away")

    monkeypatch.setattr(logger.client, "log_batch", down)
    for step in range(3):
        logger.log_metrics({"loss": float(step)}, step=step)
    assert len(logger.pending) == 3
    lines = [json.loads(x) for x in (tmp_path / "metrics_fallback.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [0, 1, 2]  # the local copy has everything
    monkeypatch.setattr(logger.client, "log_batch", real)
    logger.end("FINISHED")  # forces a flush
    history = logger.client.get_metric_history(logger.run_id, "loss")
    assert sorted(m.step for m in history) == [0, 1, 2]


def test_unreachable_server_does_not_raise(tmp_path):
    logger = RunLogger("http://127.0.0.1:9", "0" * 32, tmp_path)  # nothing listens on port 9
    logger.log_metrics({"loss": 1.0}, step=1)
    logger.end("FINISHED")
    assert logger.pending and (tmp_path / "metrics_fallback.jsonl").exists()


def test_redaction_hides_secrets():
    params = redact({"tracking.tracking_uri": "http://alice:s3cret@mlflow:5000", "runtime.token": "abc",
                     "storage.aws_secret_access_key": "xyz", "train.lr": 0.1, "runtime.password": ""})
    assert params["tracking.tracking_uri"] == f"http://{REDACTED}@mlflow:5000"
    assert params["runtime.token"] == REDACTED and params["storage.aws_secret_access_key"] == REDACTED
    assert params["train.lr"] == 0.1 and params["runtime.password"] == ""


def test_sqlite_artifacts_live_beside_the_database(cfg, tmp_path):
    logger = RunLogger.create(cfg, recipe="r", fallback_dir=tmp_path)
    logger.end()
    exp = mlflow.MlflowClient(cfg.tracking.tracking_uri).get_experiment_by_name("gvseg")
    assert exp.artifact_location == (tmp_path / "mlruns").as_uri()  # not the process's working directory


def _history(logger, key):
    return [(m.step, m.value) for m in sorted(logger.client.get_metric_history(logger.run_id, key),
                                               key=lambda m: m.step)]


def test_held_metrics_are_logged_once_across_restarts(cfg, tmp_path):
    first = RunLogger.create(cfg, recipe="r", fallback_dir=tmp_path)
    for step in (1, 2, 3):
        first.hold({"loss": 10.0 + step}, step)
    first.commit(2)  # the checkpoint at step 2 is safe; step 3 is lost work when the process dies now
    # A restarted worker (or driver) resumes from step 2 and replays step 3 with another value; a second
    # restart resumes from an older checkpoint than the last commit and replays step 2: logged once.
    second = RunLogger(first.tracking_uri, first.run_id, tmp_path)
    for step in (3, 4):
        second.hold({"loss": 20.0 + step}, step)
    second.commit(4)
    third = RunLogger(first.tracking_uri, first.run_id, tmp_path)
    third.hold({"loss": 99.0}, 2)
    third.commit(2)
    third.end("FINISHED")
    assert _history(third, "loss") == [(1, 11.0), (2, 12.0), (3, 23.0), (4, 24.0)]
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics_fallback.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]


def test_a_failed_run_keeps_no_uncommitted_steps(cfg, tmp_path, capsys):
    logger = RunLogger.create(cfg, recipe="r", fallback_dir=tmp_path)
    logger.hold({"loss": 1.0}, 1)
    logger.end("FAILED")
    assert _history(logger, "loss") == [] and "not kept" in capsys.readouterr().out


def test_system_metrics_keep_sampling_through_an_outage(cfg, tmp_path, monkeypatch):
    logger = RunLogger.create(cfg, recipe="r", fallback_dir=tmp_path)
    monitor = logger.start_system_metrics(interval=0.1)
    real = monitor.client.log_batch
    calls = []

    def down(*a, **k):
        calls.append(1)
        raise ConnectionError("server away")

    import time

    time.sleep(0.3)
    monkeypatch.setattr(monitor.client, "log_batch", down)
    time.sleep(1.0)
    assert calls and monitor.pending  # samples kept while the server was away
    monkeypatch.setattr(monitor.client, "log_batch", real)
    time.sleep(0.5)
    monitor.finish()
    steps = [s for s, _ in _history(logger, "system/cpu_utilization_percentage")]
    assert len(steps) >= len(calls) and steps == list(range(len(steps)))  # all of them, once each


def test_images_are_logged_as_png(cfg, tmp_path):
    import numpy as np

    logger = RunLogger.create(cfg, recipe="r", fallback_dir=tmp_path)
    logger.log_image(np.zeros((8, 8, 3), np.uint8), key="val_overlay", step=0)
    names = [a.path for a in logger.client.list_artifacts(logger.run_id, "images/val_overlay")]
    assert names == ["images/val_overlay/val_overlay_step_0000.png"]  # no webp: the browser previews PNG


def test_log_params_batches_redacts_and_makes_keys_legal():
    from gvseg.runtime.mlflow_log import log_params

    class Client:
        batches: list = []

        def log_batch(self, run_id, params):
            assert run_id == "r1"
            self.batches.append({p.key: p.value for p in params})

    client = Client()
    params = {f"p{i:03d}": i for i in range(230)}
    params.update({"variant.+spa": "x", "tracking.tracking_uri": "http://alice:SECRET@host", "api_key": "k",
                   "long": "v" * 7000})
    log_params(client, "r1", params)
    assert [len(b) for b in client.batches] == [100, 100, 34]  # MLflow takes at most 100 params a call
    logged = {k: v for b in client.batches for k, v in b.items()}
    assert logged["variant._spa"] == "x" and "variant.+spa" not in logged
    assert logged["tracking.tracking_uri"] == f"http://{REDACTED}@host" and logged["api_key"] == REDACTED
    assert logged["p007"] == "7" and len(logged["long"]) == 6000
