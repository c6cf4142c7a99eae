"""The one way gvseg starts or joins Ray: a cluster at ``address``, or an embedded instance on loopback only."""

from __future__ import annotations

import os
from typing import Any


def init_ray(address: str | None, num_cpus: int, **kwargs: Any) -> bool:
    """Join the cluster at ``address``, or start embedded Ray (:func:`init_embedded`) with ``num_cpus``.
    Nothing when Ray is already up. True if this call started or joined it (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, **{"log_to_driver": True, **kwargs})
    else:
        init_embedded(num_cpus, **kwargs)
    return True


def init_embedded(num_cpus: int, **kwargs: Any) -> None:
    """Start a Ray instance inside this process that listens on 127.0.0.1 only, without a dashboard.

    Ray 2.60 ignores ``_node_ip_address`` for a new local instance, and its GCS, raylet, workers and agents
    then listen on every interface (``::`` / ``0.0.0.0``). What makes them bind to loopback is the node IP
    Ray picks, and on Linux that is loopback only when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read once
    when ``ray`` is imported (``ray_constants.ENABLE_RAY_CLUSTER``). Set both for the start, then restore
    them: a later ``ray.init(address=...)`` to a real cluster must pick the node's real IP."""
    import ray
    from ray._private import ray_constants

    saved_env, saved_flag = os.environ.get("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"), ray_constants.ENABLE_RAY_CLUSTER
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        ray.init(num_cpus=num_cpus, include_dashboard=False, **{"log_to_driver": True, **kwargs})
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_flag
        if saved_env is None:
            os.environ.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        else:
            os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = saved_env
