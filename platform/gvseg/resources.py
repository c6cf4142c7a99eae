"""What a run asks of a cluster, checked before Ray is asked for it. Pure Python: the caller passes the
cluster's resources (``ray.cluster_resources()`` in ``runtime.ray_train``), so this is testable without Ray."""

from __future__ import annotations

import os

from gvseg.config import ConfigError, RuntimeConfig

DATA_CPUS = 1.0  # Ray Data's read/decode/augment task (map_batches) takes one CPU beside the train workers


def check_cluster_fits(rt: RuntimeConfig, have: dict) -> None:
    """One line naming what is missing and the ``--set`` that fixes it, when the cluster cannot hold the run:
    ``num_workers`` train workers of ``cpus_per_worker`` CPUs (and ``gpus_per_worker`` GPUs) plus Ray Data's
    task. Without this check Ray Train and Ray Data wait for resources that never come ("The job may hang
    forever unless the cluster scales up"). An autoscaling cluster that will grow can skip it with
    ``RAY_GVSEG_SKIP_FIT_CHECK=1``."""
    if os.environ.get("RAY_GVSEG_SKIP_FIT_CHECK") == "1":
        return
    cpus, gpus = float(have.get("CPU", 0.0)), float(have.get("GPU", 0.0))
    need_cpu = rt.num_workers * rt.cpus_per_worker + DATA_CPUS
    fit_workers = int((cpus - DATA_CPUS) // rt.cpus_per_worker) if rt.cpus_per_worker > 0 else rt.num_workers
    if rt.use_gpu and rt.gpus_per_worker > 0:
        fit_workers = min(fit_workers, int(gpus // rt.gpus_per_worker))
    if cpus < need_cpu:
        raise ConfigError(f"the Ray cluster has {cpus:g} CPUs but the run needs {need_cpu:g} ({rt.num_workers} "
                          f"train workers x {rt.cpus_per_worker:g} CPUs + {DATA_CPUS:g} for Ray Data): "
                          f"--set runtime.num_workers={max(fit_workers, 0)} or a smaller runtime.cpus_per_worker"
                          + (" (or add nodes)" if fit_workers < 1 else ""))
    if rt.use_gpu and gpus < rt.num_workers * rt.gpus_per_worker:
        raise ConfigError(f"the Ray cluster has {gpus:g} GPUs but the run needs "
                          f"{rt.num_workers * rt.gpus_per_worker:g} ({rt.num_workers} workers x "
                          f"{rt.gpus_per_worker:g}): --set runtime.num_workers={max(fit_workers, 0)}, "
                          f"runtime.gpus_per_worker or runtime.use_gpu=false")
