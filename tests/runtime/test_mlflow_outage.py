"""Fault matrix, MLflow outage: the tracking server is SIGKILLed during a training run and restarted on the
same port and store a few steps later. Checked from the server's store: the run ends FINISHED, every metric
series has unique, complete steps, system metrics cover the outage, the final checkpoint is valid, and no
server process is left."""

import functools
import time

import mlflow
import pytest
from live_services import MlflowServer, _session_pids, unique_series

from gvseg import checkpoint, engine
from gvseg.checkpoint import run_dir
from gvseg.config import apply_overrides
from gvseg.runtime.mlflow_log import RunLogger
from gvseg.runtime.ray_train import run_train

pytestmark = [pytest.mark.slow]


def test_server_killed_and_restarted_mid_run(tiny_cfg, tmp_path, monkeypatch):
    root = tmp_path / "mlflow"
    root.mkdir()
    servers = [MlflowServer(root)]
    cfg = apply_overrides(tiny_cfg, ["runtime.local=true", f"tracking.tracking_uri={servers[0].uri}",
                                     "train.max_iters=10", "tracking.log_system_metrics=true"])
    # samples every 0.5 s instead of 5 s, so that the outage spans several of them
    monkeypatch.setattr(RunLogger, "start_system_metrics",
                        functools.partialmethod(RunLogger.start_system_metrics, interval=0.5))
    real_step, calls, down = engine.train_step, [0], {}

    def step(*args, **kwargs):  # the outage is placed by training step, not by wall time: no race
        calls[0] += 1
        if calls[0] == 3:
            servers[0].kill()
            down["at"] = time.time()
        if calls[0] == 7:
            time.sleep(2.0)  # a few failed sampling intervals before the restart
            servers.append(MlflowServer(root, port=servers[0].port))  # blocks until /health answers
            down["until"] = time.time()
        return real_step(*args, **kwargs)

    monkeypatch.setattr(engine, "train_step", step)
    try:
        run_train(cfg)
        client = mlflow.MlflowClient(servers[-1].uri)
        (run,) = client.search_runs([client.get_experiment_by_name("gvseg").experiment_id])
        assert run.info.status == "FINISHED"
        assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == list(range(1, 11))
        unique_series(client, run)
        cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        assert [m.step for m in cpu] == list(range(len(cpu)))  # complete: no sample lost, none twice
        stamps = [m.timestamp / 1000 for m in cpu]
        assert min(stamps) < down["at"] and max(stamps) > down["until"]  # before the kill and after the restart
        assert any(down["at"] <= t <= down["until"] for t in stamps)  # sampled while the server was away
        assert checkpoint.load(run_dir(cfg) / "checkpoints" / "step_0000010")["step"] == 10  # loads: not torn
    finally:
        servers[-1].stop()
    assert not _session_pids(servers[-1].proc.pid, servers[-1].marker)
