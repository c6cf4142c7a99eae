"""Real services on loopback for the slow tests: a Ray head (`ray start --head`) and an `mlflow server`,
each in its own session, stopped by the PIDs they started as (never `ray stop`, which would end every Ray on
the machine)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


# ------------------------------------------------------------------------------------ MLflow store checks


def unique_series(client, run) -> None:
    """Every metric series of ``run`` (losses, lr, mech/*, val and system metrics) has each step once."""
    for key in run.data.metrics:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, key)]
        assert len(steps) == len(set(steps)), (key, steps)


# --------------------------------------------------------------------------------- real head + server


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def _service_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_API_SERVER", "MLFLOW_TRACKING"))}
    env.update({"PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
    env.update(extra)
    return env


def _session_pids(sid: int, marker: str) -> list[int]:
    """Processes of the session we started (setsid) or whose command line names our temp dir."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            if os.getsid(int(d.name)) == sid or marker in (d / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(d.name))
        except (OSError, ProcessLookupError):
            continue
    return pids


def _stop(sid: int, marker: str, grace_s: float = 10.0) -> None:
    """SIGTERM what we started, SIGKILL what is left after the grace period. Never `ray stop`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _session_pids(sid, marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _session_pids(sid, marker):
            time.sleep(0.25)
        if not _session_pids(sid, marker):
            return


class RayHead:
    """`ray start --head` on loopback in a fresh session and a short temp dir (unix socket paths are capped)."""

    def __init__(self, **env: str):
        self.temp = tempfile.mkdtemp(prefix="gvr")
        gcs, dash, client, agent = _free_ports(4)
        self.address = f"http://127.0.0.1:{dash}"
        cmd = [str(BIN / "ray"), "start", "--head", f"--port={gcs}", "--dashboard-host=127.0.0.1",
               f"--dashboard-port={dash}", "--num-cpus=2", f"--temp-dir={self.temp}", "--include-dashboard=true",
               f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
               "--disable-usage-stats"]
        self.proc = subprocess.Popen(cmd, env=_service_env(**env), start_new_session=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = self.proc.communicate(timeout=120)  # returns once the daemons are up
        if self.proc.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed:\n{out[-3000:]}")

    def stop(self) -> None:
        _stop(self.proc.pid, self.temp)
        shutil.rmtree(self.temp, ignore_errors=True)


class MlflowServer:
    def __init__(self, root: Path, port: int | None = None):
        port = port or _free_ports(1)[0]
        self.port = port
        self.uri = f"http://127.0.0.1:{port}"
        cmd = [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1"]
        self.log = open(root / "mlflow-server.log", "a")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, env=_service_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
                                     start_new_session=True, stdout=self.log, stderr=subprocess.STDOUT)
        self.marker = str(root / "mlflow.db")
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mlflow server did not come up: {(root / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.5)

    def api(self, path: str, body: dict | None = None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.uri}/api/2.0/mlflow/{path}", data=data,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def kill(self) -> None:
        """SIGKILL the server and its workers at once, as a crash or an OOM kill would."""
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=15)
        _stop(self.proc.pid, self.marker)
        self.log.close()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)  # the leader stops its workers
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
        _stop(self.proc.pid, self.marker)
        self.log.close()
