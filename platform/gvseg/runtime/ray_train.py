"""Training on Ray Train (DDP: NCCL on GPU, gloo on CPU), or in one process with ``--local``.

Driver (``run_train``): resolve paths → synthesise data if the recipe asks → create or resume the MLflow
run → ``TorchTrainer.fit()`` (or ``engine.train_local``) → evaluate the last checkpoint on the val split
(``evaluation.evaluate_checkpoint``) → log checkpoints, overlays and the registered model → end the run
FINISHED, or FAILED on any error.

Worker (``train_worker``): build the parts → restore the latest checkpoint (Ray hands it over after a
worker failure or when the same run name is re-run) → wrap in DDP → ``engine.fit`` over this worker's
Ray Data shard (disjoint videos) → at every checkpoint step all ranks ``ray.train.report`` (a barrier),
rank 0 attaching the checkpoint. Only rank 0 talks to MLflow.

Only what touches Ray or MLflow is here; the Ray-free pieces both paths share (state save/restore, the
periodic evaluation, checkpoint metrics) are in ``gvseg.engine``, ``gvseg.evaluation`` and ``gvseg.resources``.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from gvseg import checkpoint
from gvseg.checkpoint import run_dir
from gvseg.config import Config, from_dict, to_dict
from gvseg.engine import (
    LoopState,
    PeriodicEval,
    build_parts,
    checkpoint_metrics,
    fit,
    maybe_crash,
    restore_newest_valid,
    restore_state,
    save_state,
    seed_everything,
    train_local,
)
from gvseg.evaluation import evaluate_checkpoint
from gvseg.resources import check_cluster_fits
from gvseg.runtime.ray_init import init_ray

# Ray workers chdir into a per-run directory: every path that crosses to them must be absolute.


def resolve_paths(cfg: Config) -> Config:
    root = str(Path(cfg.data.root).resolve()) if cfg.data.root else ""
    # config, else $GVSEG_STORAGE_PATH (set by a cluster's runtime env to its shared storage), else <cwd>/runs
    storage = cfg.runtime.storage_path or os.environ.get("GVSEG_STORAGE_PATH") or str(Path.cwd() / "runs")
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    from gvseg.runtime.mlflow_log import resolve_tracking_uri

    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, root=root),
        runtime=dataclasses.replace(cfg.runtime, storage_path=storage),
        tracking=dataclasses.replace(cfg.tracking, tracking_uri=resolve_tracking_uri(cfg),
                                     run_name=cfg.tracking.run_name or cfg.name),
    )


# --------------------------------------------------------------------------------------------- worker


def train_worker(config: dict[str, Any]) -> None:
    """The per-worker function that Ray Train runs on every rank."""
    import ray.train
    import ray.train.torch

    from gvseg.runtime.mlflow_log import RunLogger
    from gvseg.runtime.ray_data import iterate_shard

    cfg = from_dict(Config, config["cfg"])
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    if device.type == "cpu":  # one intra-op pool per reserved CPU: oversubscribed threads run ~10x slower
        torch.set_num_threads(max(1, int(cfg.runtime.cpus_per_worker)))
    seed_everything(cfg.train.seed)  # identical init on every rank (DDP also broadcasts rank 0's weights)
    parts = build_parts(cfg, device)
    state = LoopState()
    logger = RunLogger(config["tracking_uri"], config["run_id"], run_dir(cfg)) if rank == 0 else None
    ckpt = ray.train.get_checkpoint()  # set after a worker failure, or when the same run name is re-run
    local = ckpt is not None and ckpt.filesystem.type_name == "local" and Path(ckpt.path).is_dir()
    if ckpt is not None and not local:
        with ckpt.as_directory() as d:
            state = restore_state(parts, d, device)
    else:  # Ray's record (with its siblings to fall back on), or the run's own files when Ray recorded none
        own = run_dir(cfg) if "://" not in cfg.runtime.storage_path else None
        candidates = checkpoint.resume_candidates(Path(ckpt.path) if local else None, own)
        if candidates:
            state = restore_newest_valid(parts, candidates, device, logger, verbose=rank == 0)
    seed_everything(cfg.train.seed + 1000 * rank + state.step)  # different augmentation per rank and resume
    parts.model = ray.train.torch.prepare_model(parts.model, parallel_strategy_kwargs={"find_unused_parameters": True})

    shard = ray.train.get_dataset_shard("train")
    per_worker = max(1, cfg.train.batch_size // world)
    # the driver samples its own machine for the whole run; on a cluster rank 0's node is another one
    worker_metrics = logger and cfg.tracking.log_system_metrics and config.get("worker_system_metrics", False)
    monitor = logger.start_system_metrics(node_id=f"rank{rank}") if worker_metrics else None

    def on_metrics(metrics: dict[str, float], step: int) -> None:
        if logger:
            logger.hold(metrics, step)  # logged once the checkpoint covering this step is reported

    def on_checkpoint(st: LoopState) -> None:
        maybe_crash(cfg, st.step, rank, world)
        # One pass over the shard streams every epoch, so fit never counts one: the data epoch is that of
        # the last sample seen (as the local loop's epoch is that of the last batch).
        if config.get("samples_per_epoch"):
            st.epoch = max(0, st.step * per_worker * world - 1) // config["samples_per_epoch"]
        with tempfile.TemporaryDirectory() as d:
            reported = None
            if rank == 0:
                checkpoint.verify(save_state(parts, st, cfg, d))  # never hand Ray a torn file
                reported = ray.train.Checkpoint.from_directory(d)
            # rank 0's metrics are the ones Ray keeps (and forwards to Tune inside a sweep)
            metrics = checkpoint_metrics(cfg, st, d if rank == 0 else None, config.get("eval_at_checkpoints", False))
            name = f"step_{st.step:07d}"
            if (run_dir(cfg) / name).exists():  # replayed after a fallback: never reuse a path Ray may prune
                name += f"-{int(time.time())}"
            ray.train.report(metrics, checkpoint=reported, checkpoint_dir_name=name)
        if logger:  # persisted: the metrics it covers are no longer lost work
            logger.commit(st.step)

    try:
        if state.step >= cfg.train.max_iters:
            # Resumed from the run's own last checkpoint: the driver died after the final step was saved but
            # before Ray recorded it. Nothing is left to train; hand Ray that state (saved again under a fresh
            # name; no metric is held, so nothing is logged twice) and the driver evaluates it as usual.
            on_checkpoint(state)
            return
        # One pass over the shard streams every epoch the driver planned (see _train_ray); a rare extra pass
        # (uneven last batches) simply re-streams it.
        fit(cfg, parts, lambda epoch: iterate_shard(shard, cfg.data, per_worker),
            device=device, state=state, on_metrics=on_metrics, on_checkpoint=on_checkpoint,
            on_eval=PeriodicEval(cfg, parts, logger, device) if rank == 0 else (lambda st: None),
            progress=rank == 0 and config.get("progress", True))
    finally:
        if monitor is not None:
            monitor.finish()
        if logger:
            logger.flush(force=True)  # committed metrics only: held ones are lost work if we got here by error


# --------------------------------------------------------------------------------------------- driver


def find_data_error(e: BaseException | None, _depth: int = 0) -> Any:
    """The DataError inside a Ray error (worker failure, Ray Data task error, controller error), or None.

    Bad input is deterministic: retrying the run cannot help, so training fails on it at once, with one line."""
    from gvseg.data.errors import DataError

    if e is None or _depth > 8:
        return None
    if isinstance(e, DataError):
        return DataError(e.path, e.reason)  # a plain one: Ray's dual-class RayTaskError prints a traceback
    inner = [e.__cause__, e.__context__, getattr(e, "cause", None), getattr(e, "controller_failure", None)]
    inner += list((getattr(e, "worker_failures", None) or {}).values())
    for x in inner:
        if isinstance(x, BaseException):
            found = find_data_error(x, _depth + 1)
            if found is not None:
                return found
    return None


def _fail_fast_callback() -> Any:
    import ray.train

    class FailFastOnDataError(ray.train.UserCallback):
        """Runs on the controller: a worker's DataError ends the run instead of a FailureConfig retry
        (an exception raised here is a ControllerError, which the failure policy does not retry)."""

        def after_exception(self, run_context: Any, worker_exceptions: dict[int, Exception]) -> None:
            for err in worker_exceptions.values():
                found = find_data_error(err)
                if found is not None:
                    raise found

    return FailFastOnDataError()


def _train_ray(cfg: Config, logger: Any, address: str | None, *, callbacks: Any = (),
               eval_at_checkpoints: bool = False, progress: bool = True) -> Path:
    import ray
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from gvseg.data.pipeline import build_records, check_label_space, label_space_for
    from gvseg.runtime.ray_data import build_dataset

    ray.data.DataContext.get_current().enable_progress_bars = False  # the train bar is the one to watch
    started = init_ray(address, num_cpus=max(2, int(cfg.runtime.num_workers * cfg.runtime.cpus_per_worker) + 1),
                       dashboard=cfg.runtime.dashboard)
    check_cluster_fits(cfg.runtime, ray.cluster_resources())  # a run that cannot start must not wait forever
    records = build_records(cfg.data, cfg.data.train_split, progress=progress)
    check_label_space(label_space_for(records), cfg.model.num_classes, cfg.model.num_thing_classes, cfg.data.root)
    samples_per_epoch = len(records) * cfg.data.clips_per_video
    epochs = -(-cfg.train.max_iters * cfg.train.batch_size // samples_per_epoch) + 1
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"cfg": checkpoint.redact_config(to_dict(cfg)), "run_id": logger.run_id,
                           "tracking_uri": logger.tracking_uri, "samples_per_epoch": samples_per_epoch,
                           "worker_system_metrics": bool(address),
                           "eval_at_checkpoints": eval_at_checkpoints, "progress": progress},
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.runtime.num_workers, use_gpu=cfg.runtime.use_gpu,
            resources_per_worker={"CPU": cfg.runtime.cpus_per_worker,
                                  **({"GPU": cfg.runtime.gpus_per_worker} if cfg.runtime.use_gpu else {})}),
        run_config=ray.train.RunConfig(
            name=cfg.tracking.run_name, storage_path=cfg.runtime.storage_path,
            failure_config=ray.train.FailureConfig(max_failures=cfg.runtime.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.num_to_keep),
            callbacks=[_fail_fast_callback(), *callbacks]),
        datasets={"train": build_dataset(records, cfg.data, seed=cfg.train.seed, epochs=epochs)},
    )
    try:
        result = trainer.fit()
    except Exception as e:
        found = find_data_error(e)
        if found is not None:
            if started:  # flush the workers' logs now, so the one-line error is the last thing printed
                ray.shutdown()
            raise found from None  # the CLI prints it as one line (exit 2)
        raise
    if result.error is not None:
        raise find_data_error(result.error) or result.error
    if result.checkpoint is None:
        raise RuntimeError(f"{run_dir(cfg)}: training reported no checkpoint")
    local = run_dir(cfg) / "final_checkpoint"
    with result.checkpoint.as_directory() as d:
        checkpoint.save(checkpoint.load(d), local)
    return local


def run_train(cfg: Config, *, recipe: str = "", address: str | None = None) -> dict[str, float]:
    """Train → evaluate → log. Returns the eval metrics. The MLflow run ends FINISHED or FAILED."""
    from gvseg.runtime.mlflow_log import RunLogger

    cfg = resolve_paths(cfg)
    run_dir(cfg).mkdir(parents=True, exist_ok=True)
    logger = RunLogger.create(cfg, recipe=recipe, fallback_dir=run_dir(cfg))
    from gvseg.runtime.mlflow_log import redact

    shown = redact({"uri": logger.tracking_uri})["uri"]  # job logs are readable by anyone with the dashboard
    print(f"gvseg: MLflow run {logger.run_id} ({cfg.tracking.run_name}) at {shown}")
    status = "FAILED"
    # sampled from here to the end (training, evaluation, model logging), through server outages
    monitor = logger.start_system_metrics() if cfg.tracking.log_system_metrics else None
    try:
        metrics = train_and_evaluate(cfg, logger, address=address)
        status = "FINISHED"
        return metrics
    finally:
        if monitor is not None:
            monitor.finish()
        logger.end(status)


def train_and_evaluate(cfg: Config, logger: Any, *, address: str | None = None, on_checkpoint: Any = None,
                       train_callbacks: Any = (), eval_at_checkpoints: bool = False, log_model: bool = True,
                       progress: bool = True) -> dict[str, float]:
    """The body of :func:`run_train` for a resolved config and an open run (a sweep trial calls it too).

    ``runtime.local``: the loop runs in this process and ``on_checkpoint(metrics)`` is called at every
    checkpoint; otherwise a TorchTrainer runs it and the same metrics go to ``ray.train.report``, where
    ``train_callbacks`` (Tune's ``TuneReportCallback``) see them. Does not end the run."""
    t0 = time.time()
    if cfg.runtime.local:
        final = train_local(cfg, logger, on_checkpoint=on_checkpoint, eval_at_checkpoints=eval_at_checkpoints,
                            progress=progress)
    else:
        final = _train_ray(cfg, logger, address or cfg.runtime.address or None, callbacks=train_callbacks,
                           eval_at_checkpoints=eval_at_checkpoints, progress=progress)
    train_seconds = time.time() - t0
    logger.log_artifact(final / checkpoint.FILENAME, "checkpoints/last")
    best = run_dir(cfg) / "best_checkpoint" / checkpoint.FILENAME
    if best.exists():  # written by the periodic evaluation (train.eval_every)
        logger.log_artifact(best, "checkpoints/best")
    metrics = evaluate_checkpoint(cfg, final, logger=logger)
    logger.log_metrics({**metrics, "train_seconds": train_seconds}, step=cfg.train.max_iters)
    if cfg.tracking.baselines:
        from gvseg.evaluation import evaluate_baseline

        for name in cfg.tracking.baselines:
            base = evaluate_baseline(cfg, name, run_dir(cfg) / f"baseline_{name}")
            metrics.update({f"baseline/{name}/{k}": v for k, v in base.items() if not k.startswith("mech")})
        logger.log_metrics({k: v for k, v in metrics.items() if k.startswith("baseline/")}, step=cfg.train.max_iters)
    if log_model:  # a pyfunc of weights + config (no pickle), registered when a name is configured
        logger.log_model(final / checkpoint.FILENAME, cfg.tracking.registered_model, metrics=metrics)
    return metrics
