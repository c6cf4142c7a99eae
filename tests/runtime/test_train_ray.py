"""Ray Train: 2 CPU workers (gloo DDP) over Ray Data shards; a killed worker resumes; a re-run resumes, past a
torn latest checkpoint; every metric step is logged once; embedded Ray listens on loopback only, refuses
requests without its token, and leaves no process behind when its driver is SIGKILLed."""

import ipaddress
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
from live_services import _session_pids, _stop, unique_series

from gvseg import checkpoint
from gvseg.checkpoint import run_dir
from gvseg.config import apply_overrides
from gvseg.runtime.ray_train import run_train

# ray_local (tests/conftest.py): with the dashboard, as training starts Ray (runtime.dashboard)
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.ray_local(num_cpus=3, dashboard=True)]
ROOT = Path(__file__).resolve().parents[2]
PLATFORM = ROOT / "platform"


def _loss_steps(cfg):
    lines = (run_dir(cfg) / "metrics_fallback.jsonl").read_text().splitlines()
    return [json.loads(x)["step"] for x in lines if "loss" in json.loads(x)]


def _loopback(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%")[0])
    return (getattr(addr, "ipv4_mapped", None) or addr).is_loopback


def test_embedded_ray_listens_on_loopback_only(ray_local):
    import psutil

    me = psutil.Process()
    listening = set()
    for p in [me, *me.children(recursive=True)]:  # GCS, raylet, agents, workers: all started by this driver
        try:
            listening |= {(p.name(), c.laddr.ip, c.laddr.port) for c in p.net_connections("inet")
                          if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            continue
    assert any(name == "raylet" for name, _, _ in listening)
    assert not [x for x in listening if not _loopback(x[1])]


def test_embedded_ray_hands_its_own_address_to_its_workers(ray_local):
    """Its tasks and detached actors (Ray Train's PlacementGroupCleaner is one) see RAY_ADDRESS = this
    instance's GCS, so Ray's auto-detection never picks another instance on the host."""
    import os

    import ray

    @ray.remote(num_cpus=0)
    class Probe:
        def address(self):
            return os.environ.get("RAY_ADDRESS")

    gcs = ray.get_runtime_context().gcs_address
    task = ray.get(ray.remote(num_cpus=0)(lambda: os.environ.get("RAY_ADDRESS")).remote(), timeout=120)
    probe = Probe.options(lifetime="detached", name="gvseg_address_probe").remote()
    try:
        assert task == gcs and ray.get(probe.address.remote(), timeout=120) == gcs
        assert gcs.startswith("127.0.0.1:")
    finally:
        ray.kill(probe)
    assert "RAY_ADDRESS" not in os.environ  # the driver's own environment is left as it was


def test_embedded_ray_refuses_requests_without_the_token(ray_local):
    """Token auth is on in the embedded Ray: its GCS answers only a request that carries the token, and the
    token is in none of its logs or process environments (Ray got the file's path)."""
    import grpc
    import psutil
    import ray
    from ray._raylet import AuthenticationMode, get_authentication_mode
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    assert get_authentication_mode() == AuthenticationMode.TOKEN
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"]).read_text().strip()  # tests/conftest.py's
    stub = gcs_service_pb2_grpc.NodeInfoGcsServiceStub(grpc.insecure_channel(ray.get_runtime_context().gcs_address))
    for metadata in (None, (("authorization", "Bearer wrong-" + token),)):
        with pytest.raises(grpc.RpcError) as e:
            stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(), metadata=metadata, timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    reply = stub.GetAllNodeInfo(gcs_service_pb2.GetAllNodeInfoRequest(),
                                metadata=(("authorization", "Bearer " + token),), timeout=10)
    assert len(reply.node_info_list) == 1

    session = Path(ray._private.worker._global_node.get_session_dir_path())
    assert not [p for p in session.rglob("*") if p.is_file() and token.encode() in p.read_bytes()]
    environs = []
    for p in psutil.Process().children(recursive=True):  # GCS, raylet, workers (agents' setproctitle blanks theirs)
        try:
            environs += [p.environ()] if p.environ() else []
        except psutil.Error:
            continue
    assert len(environs) >= 2 and all(env.get("RAY_AUTH_MODE") == "token" for env in environs)
    assert not [env for env in environs if token in json.dumps(env)]


def _cleaner_ran_quietly():
    """Ray Train's placement-group cleaner ran and reached the state API: without the dashboard it logs
    "Failed to query Ray Train Controller actor state" once a second for the whole run."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    texts = [p.read_bytes() for p in logs.glob("worker-*") if p.is_file()]
    assert any(b"PlacementGroupCleaner" in t for t in texts)  # its actor's log: it did run
    assert not [t for t in texts if b"Failed to query Ray Train Controller actor state" in t]


def test_killed_worker_resumes_and_rerun_continues(ray_local, tiny_cfg, tmp_path):
    """A worker killed three times in one run (fault matrix: worker kill x3), each time as it reaches a
    checkpoint (every 2 steps): at step 2 (restarts from scratch), 4 (resumes from step 2), 6 (from step 4)."""
    cfg = apply_overrides(tiny_cfg, [
        "runtime.num_workers=2", "runtime.max_failures=3", "train.max_iters=6",
        "train.fault.crash_at_steps=(2, 4, 6)", f"train.fault.crash_marker={tmp_path}/crashed",
        "tracking.log_system_metrics=true",
    ])
    t0 = time.time()
    metrics = run_train(cfg)
    t1 = time.time()
    assert (tmp_path / "crashed").read_text().split("\n")[:3] == [f"crashed at step {s}" for s in (2, 4, 6)]
    assert "vpq_mean_1246" in metrics
    final = checkpoint.load(run_dir(cfg) / "final_checkpoint")  # loads with weights_only: not torn
    assert final["step"] == 6 and final["epoch"] == 3  # 3 training clips, 2 per step: 12 samples seen
    steps = _loss_steps(cfg)
    assert steps == [1, 2, 3, 4, 5, 6]  # steps 1-6 each ran twice: each logged once
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("gvseg").experiment_id])
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == steps
    unique_series(client, run)
    _cleaner_ran_quietly()
    cpu = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    assert [m.step for m in cpu] == list(range(len(cpu)))  # sampled through the restarts, none lost or twice
    assert cpu[0].timestamp / 1000 - t0 < 30 and t1 - cpu[-1].timestamp / 1000 < 30  # the whole run
    # Re-running the same command with a longer schedule resumes from the last checkpoint (step 6); torn, so
    # from the one before it (step 4), said in one line and a tag: no retries, no traceback.
    torn = run_dir(cfg) / "step_0000006" / checkpoint.FILENAME
    torn.write_bytes(torn.read_bytes()[:1000])
    run_train(apply_overrides(cfg, ["train.max_iters=8"]))  # rank 0 prints the line (to the worker's log)
    assert checkpoint.load(run_dir(cfg) / "final_checkpoint")["step"] == 8
    assert _loss_steps(cfg)[len(steps):] == [5, 6, 7, 8]  # a second MLflow run (the first one FINISHED)
    (second, _) = client.search_runs([client.get_experiment_by_name("gvseg").experiment_id],
                                     order_by=["attributes.start_time DESC"])
    assert second.data.tags["checkpoint_fallback"].startswith("resumed from step_0000004")
    assert [m.step for m in client.get_metric_history(second.info.run_id, "loss")] == [5, 6, 7, 8]
    unique_series(client, second)


def test_rerun_after_the_last_checkpoint_but_before_ray_recorded_it_finishes(ray_local, tiny_cfg):
    """The driver died after the worker saved the final step but before Ray recorded it (what the SIGKILL test
    below can hit when training is fast): the re-run resumes from the run's own files at max_iters, trains
    nothing, hands Ray that state and evaluates it; no step is logged twice."""
    cfg = apply_overrides(tiny_cfg, ["runtime.num_workers=1", "train.max_iters=2"])
    run_train(cfg)
    (run_dir(cfg) / "checkpoint_manager_snapshot.json").unlink()  # Ray's record, as a killed driver leaves it
    shutil.rmtree(run_dir(cfg) / "final_checkpoint")  # written by the driver after fit, so never there
    metrics = run_train(cfg)
    assert "vpq_mean_1246" in metrics
    assert checkpoint.load(run_dir(cfg) / "final_checkpoint")["step"] == 2
    assert _loss_steps(cfg) == [1, 2]


def _wait_for(predicate, timeout_s: float, what: str, proc=None) -> float:
    """Seconds until ``predicate()`` held; fails after ``timeout_s`` or when ``proc`` ended first."""
    t0 = time.monotonic()
    while not predicate():
        assert proc is None or proc.poll() is None, f"the driver exited ({proc.returncode}) before {what}"
        assert time.monotonic() - t0 < timeout_s, f"no {what} after {timeout_s:.0f} s"
        time.sleep(0.25)
    return time.monotonic() - t0


def test_sigkilled_driver_leaves_no_ray_process_and_the_rerun_finishes(vipseg_root, tmp_path):
    """`gvseg train` (embedded Ray, no token configured) is SIGKILLed after its first checkpoint: its Ray
    session's processes (found by session id, or by its temp dir in their command line: the watchdog) and
    its token dir are gone within 20 s. The same command then resumes and ends FINISHED, each step once."""
    short = tempfile.mkdtemp(prefix="gvk")  # Ray's temp dir (TMPDIR): unix socket paths are capped
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_AUTH", "RAY_ADDRESS", "MLFLOW_TRACKING"))}
    env.update(TMPDIR=short, HOME=str(tmp_path / "home"), PYTHONPATH=str(PLATFORM))
    sets = [f"data.root={vipseg_root}", "data.synthetic=false", "data.min_size=(48,)", "data.test_size=48",
            "train.max_iters=4", "train.batch_size=2", "train.checkpoint_every=2", "train.log_every=1",
            "train.lr_steps=(100,)", "loss.num_points=64", "model.decoder.num_layers=2", "runtime.num_workers=1",
            f"runtime.storage_path={tmp_path}/runs", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
            "tracking.run_name=killed", "tracking.log_system_metrics=false", "tracking.registered_model="]
    cmd = [sys.executable, "-m", "gvseg.cli", "train", f"{ROOT}/tasks/vps_vipseg.py:debug",
           *[a for x in sets for a in ("--set", x)]]
    log = open(tmp_path / "driver.log", "w")  # noqa: SIM115 - closed in finally
    drivers = []
    try:
        driver = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        drivers.append(driver)
        first = tmp_path / "runs" / "killed" / "step_0000002"
        trained = _wait_for(first.exists, 150, "first checkpoint", driver)
        (token,) = Path(short).glob("gvseg-ray-auth-*/token")  # generated: none was configured
        assert stat.S_IMODE(token.stat().st_mode) == 0o600 and not (tmp_path / "home" / ".ray").exists()
        assert _session_pids(driver.pid, short)  # GCS, raylet, agents, workers, the watchdog
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone, as the OOM killer or `kill -9 PID` would
        driver.wait()
        gone = _wait_for(lambda: not _session_pids(driver.pid, short), 20, "clean-up")
        assert not list(Path(short).glob("gvseg-ray-auth-*"))

        rerun = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        drivers.append(rerun)
        t0 = time.monotonic()
        assert rerun.wait(timeout=240) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        _wait_for(lambda: not _session_pids(rerun.pid, short), 20, "clean-up after a normal exit")
        print(f"first checkpoint after {trained:.0f} s, Ray gone {gone:.1f} s after the SIGKILL, "
              f"re-run {time.monotonic() - t0:.0f} s", file=sys.stderr)
    finally:
        log.close()
        for d in drivers:
            _stop(d.pid, short)
        shutil.rmtree(short, ignore_errors=True)
    text = (tmp_path / "driver.log").read_text()
    assert "resum" in text.lower(), text[-3000:]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("gvseg").experiment_id])  # the same run, continued
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3, 4]
    unique_series(client, run)
