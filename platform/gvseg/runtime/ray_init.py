"""The one way gvseg starts or joins Ray: a cluster at ``address``, or an embedded instance on loopback only,
with token authentication on."""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Any


def init_ray(address: str | None, num_cpus: int, **kwargs: Any) -> bool:
    """Join the cluster at ``address``, or start embedded Ray (:func:`init_embedded`) with ``num_cpus``.
    Nothing when Ray is already up. True if this call started or joined it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        _reload_auth()  # the cluster's token, not one an earlier embedded start left cached in this process
        ray.init(address=address, **{"log_to_driver": True, **kwargs})
    else:
        init_embedded(num_cpus, **kwargs)
    return True


def init_embedded(num_cpus: int, **kwargs: Any) -> None:
    """Start a Ray instance inside this process that listens on 127.0.0.1 only, without a dashboard, with
    token authentication on (:func:`_auth_env`).

    Ray 2.60 ignores ``_node_ip_address`` for a new local instance, and its GCS, raylet, workers and agents
    then listen on every interface (``::`` / ``0.0.0.0``). What makes them bind to loopback is the node IP
    Ray picks, and on Linux that is loopback only when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once
    when ``ray`` is imported (``ray_constants.ENABLE_RAY_CLUSTER``). Set both for the start, then restore
    them and the auth variables: a later ``ray.init(address=...)`` to a real cluster must pick the node's
    real IP and token. Ray's daemons keep the environment they started with, and this process keeps the
    token Ray cached."""
    import ray
    from ray._private import ray_constants

    env = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **_auth_env()}
    saved_env, saved_flag = {k: os.environ.get(k) for k in env}, ray_constants.ENABLE_RAY_CLUSTER
    os.environ.update(env)
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        _reload_auth()
        ray.init(num_cpus=num_cpus, include_dashboard=False, **{"log_to_driver": True, **kwargs})
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


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
