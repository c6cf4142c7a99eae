"""The one way gvseg starts or joins Ray: a cluster at ``address``, or an embedded instance on loopback only,
with token authentication on, that ends with its driver even when the driver is SIGKILLed.

``python -m gvseg.runtime.ray_init DRIVER_PID DRIVER_SID SINCE SESSION_DIR [TOKEN_DIR]`` is that watchdog
(:func:`watch`)."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def init_ray(address: str | None, num_cpus: int, *, dashboard: bool = False, **kwargs: Any) -> bool:
    """Join the cluster at ``address``, or start embedded Ray (:func:`init_embedded`) with ``num_cpus`` (and
    its dashboard on loopback when ``dashboard``). Nothing when Ray is already up. True if this call started
    or joined it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        _reload_auth()  # the cluster's token, not one an earlier embedded start left cached in this process
        ray.init(address=address, **{"log_to_driver": True, **kwargs})
    else:
        init_embedded(num_cpus, dashboard=dashboard, **kwargs)
    return True


def init_embedded(num_cpus: int, *, dashboard: bool = False, **kwargs: Any) -> None:
    """Start a Ray instance inside this process that listens on 127.0.0.1 only, with token authentication on
    (:func:`_auth_env`), and with its dashboard on 127.0.0.1 when ``dashboard``.

    The dashboard is what serves Ray's state API. Ray Train needs it: its detached PlacementGroupCleaner
    asks the state API once a second whether the train controller is alive, and without a dashboard it logs
    "Failed to query Ray Train Controller actor state" every second of the run and never cleans up. It
    costs ~1.3 s of start-up, +1.0 GB RSS and +0.2 GB PSS (benchmarks/ray_start.py, 2-core box: 4.7 s /
    0.97 GB / 0.64 GB without, 6.0 s / 1.96 GB / 0.85 GB with), so prediction, which starts no Train
    controller, goes without.

    Ray 2.60 ignores ``_node_ip_address`` for a new local instance, and its GCS, raylet, workers and agents
    then listen on every interface (``::`` / ``0.0.0.0``). What makes them bind to loopback is the node IP
    Ray picks, and on Linux that is loopback only when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once
    when ``ray`` is imported (``ray_constants.ENABLE_RAY_CLUSTER``). Set both for the start, then restore
    them and the auth variables: a later ``ray.init(address=...)`` to a real cluster must pick the node's
    real IP and token. Ray's daemons keep the environment they started with, and this process keeps the
    token Ray cached. A watchdog (:func:`watch`) stops what is left of the instance when this process dies."""
    import ray
    from ray._private import ray_constants

    # The instance's own address, known before it starts (the GCS port is picked here), is handed to its job's
    # workers as RAY_ADDRESS: what runs inside (Ray Train's detached PlacementGroupCleaner asks the state API)
    # then finds this instance even when another Ray runs on the same host, where Ray's auto-detection stops
    # with "Found multiple active Ray instances".
    port = _free_loopback_port()
    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_GCS_SERVER_PORT": str(port), **_auth_env()}
    runtime_env = dict(kwargs.pop("runtime_env", None) or {})
    runtime_env["env_vars"] = {"RAY_ADDRESS": f"127.0.0.1:{port}", **runtime_env.get("env_vars", {})}
    saved_env, saved_flag = {k: os.environ.get(k) for k in env}, ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(env)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        _reload_auth()
        context = ray.init(num_cpus=num_cpus, include_dashboard=dashboard, runtime_env=runtime_env,
                           **({"dashboard_host": "127.0.0.1"} if dashboard else {}), **{"log_to_driver": True, **kwargs})
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    token = env.get("RAY_AUTH_TOKEN_PATH")
    _start_watchdog(context.address_info["session_dir"], os.path.dirname(token) if token else None)


def _free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _auth_env() -> dict[str, str]:
    """The environment that starts an embedded Ray with token auth: ``RAY_AUTH_MODE=token``, plus a fresh
    token (:func:`write_token_file`) when none is configured (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``
    or ``~/.ray/auth_token``, Ray's order). A ``RAY_AUTH_MODE`` other than ``token``, set on purpose, is kept.

    Ray 2.60 turns token auth on for a new local instance by itself, but saves the token it generates to
    ``~/.ray/auth_token`` with the default umask (0644 under umask 022), where it outlives the run and
    becomes the token of every later ``ray start`` and ``gvseg submit`` on the machine. Ray is given only
    the file's path, so the token is in no process environment, log, param or artifact."""
    mode = os.environ.get("RAY_AUTH_MODE")
    if mode is not None and mode.strip().lower() != "token":
        return {}
    env = {"RAY_AUTH_MODE": "token"}
    configured = (os.environ.get("RAY_AUTH_TOKEN", "").strip() or os.environ.get("RAY_AUTH_TOKEN_PATH")
                  or (Path.home() / ".ray" / "auth_token").is_file())
    if not configured:
        env["RAY_AUTH_TOKEN_PATH"] = write_token_file()
    return env


def write_token_file() -> str:
    """A fresh 256-bit token in a 0600 file inside a 0700 temp dir, removed when this process exits: it is
    good only for the Ray instance this process starts. Returns the file's path."""
    folder = tempfile.mkdtemp(prefix="gvseg-ray-auth-")  # mode 0700
    atexit.register(shutil.rmtree, folder, True)
    path = os.path.join(folder, "token")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path


def _reload_auth() -> None:
    """Make this process re-read the auth mode and token from the environment as it is now. Ray caches both
    per process (RayConfig, the C++ token loader) from the first read, so a mode or token set after that,
    or a second embedded start with a new token, would otherwise be ignored. ``Config.initialize("")`` is
    what Ray's own ``ray.init`` calls when it turns auth on; Ray is not running in this process yet."""
    from ray._raylet import AuthenticationTokenLoader, Config

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


# ----------------------------------------------------------------------------------------------- watchdog

_WATCHDOGS: list[subprocess.Popen] = []  # held so that no ResourceWarning fires while they wait


def _start_watchdog(session_dir: str, token_dir: str | None) -> None:
    """Start :func:`watch` for this process and the Ray session it just started, in a session of its own
    (a Ctrl-C or a kill of the driver's process group does not reach it). Its log: the session's logs/."""
    import psutil

    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, *filter(None, [os.environ.get("PYTHONPATH")])])}
    me = os.getpid()
    args = [sys.executable, "-m", "gvseg.runtime.ray_init", str(me), str(os.getsid(me)),
            repr(psutil.Process(me).create_time()), session_dir, *filter(None, [token_dir])]
    with open(os.path.join(session_dir, "logs", "gvseg_watchdog.log"), "ab") as log:
        _WATCHDOGS.append(subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                           start_new_session=True, close_fds=True))


def watch(driver_pid: int, sid: int, since: float, session_dir: str, token_dir: str | None = None) -> list[str]:
    """Wait for the driver ``driver_pid`` (this process's parent; in session ``sid``, started at ``since``)
    to exit, then stop every process left of its embedded Ray session and remove its token dir. Returns
    what it stopped.

    Why: on Linux Ray ties the GCS, raylet, log monitor and dashboard to the driver with
    ``PR_SET_PDEATHSIG`` (they are its children), but the raylet's own children, the DashboardAgent and
    RuntimeEnvAgent, only poll for the raylet; when it is gone they report that through the GCS, which died
    too, and hang there for good (seen with Ray 2.60 after a SIGKILLed ``gvseg train``). A death signal set
    by the driver cannot reach grandchildren, and the agents blank their command lines and environments
    (setproctitle), so they are found by what they still carry: a process of this user, started after the
    driver, in the driver's session (``getsid``: Ray's processes inherit it; this watchdog has its own)
    that names the session dir in its command line or has a file under it open (its logs). The driver is
    awaited with a pidfd, without polling; the parent check makes a driver that exited before the pidfd
    was opened count as gone."""
    import contextlib
    import select
    import signal

    import psutil

    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        fd = os.pidfd_open(driver_pid)
        if os.getppid() == driver_pid:
            select.select([fd], [], [])
        os.close(fd)
    except (AttributeError, OSError):  # no pidfd (old kernel) or already gone: poll for reparenting
        while os.getppid() == driver_pid:
            time.sleep(0.5)

    stopped: list[str] = []
    for _ in range(3):  # a raylet dying just now may still have started a worker
        left = _session_processes(session_dir, sid, since)
        if not left:
            break
        stopped += [f"{p.pid} {p.info['name']}" for p in left]
        for p in left:
            with contextlib.suppress(psutil.Error):
                p.terminate()
        _, alive = psutil.wait_procs(left, timeout=3)
        for p in alive:
            with contextlib.suppress(psutil.Error):
                p.kill()
        psutil.wait_procs(alive, timeout=3)
    if token_dir:
        shutil.rmtree(token_dir, ignore_errors=True)
    if stopped:
        print(f"gvseg watchdog: driver {driver_pid} exited; stopped {', '.join(stopped)}", flush=True)
    return stopped


def _session_processes(session_dir: str, sid: int, since: float) -> list:
    import psutil

    prefix, uid = session_dir.rstrip("/") + "/", os.getuid()
    found = []
    for p in psutil.process_iter(["name"]):
        try:
            if os.getsid(p.pid) != sid or p.uids().real != uid or p.create_time() < since:
                continue
            if session_dir in " ".join(p.cmdline()) or any(f.path.startswith(prefix) for f in p.open_files()):
                found.append(p)
        except (psutil.Error, OSError):
            continue
    return found


if __name__ == "__main__":
    watch(int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], *sys.argv[5:6])
