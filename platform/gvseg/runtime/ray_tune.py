"""Hyper-parameter sweeps on Ray Tune: every trial is a full training run (Train inside Tune).

    rows = run_sweep(sweep, address=None, max_concurrent=None, resume=False, storage_path=None, overrides=())

Input: a :class:`~gvseg.sweep.Sweep` (base recipe, grid × named variants × seeds, metric/mode, FIFO or
ASHA, resources per trial, plot kind) and ``--set`` overrides applied to its base config. Output: the
results table, one dict per trial in trial order (``trial``, ``name``, each swept key, ``status``
FINISHED | STOPPED | FAILED | INCOMPLETE, ``step``, the sweep metric and a few headline metrics, ``run_id``).

Driver (``run_sweep``): trial configs → one MLflow parent run (search space as params) → a
``ray.tune.Tuner`` over a grid of trial indices → table (CSV + markdown, printed) and plot (PNG heatmap of
the metric over the two grid axes, e.g. τ × N_Q of Table 4b, or a bar/line chart for bins and components)
as artifacts of the parent run. The parent ends FINISHED, or KILLED when interrupted (resume it).

Trial (``tune_trial``, runs in a Tune actor): opens its nested child run (tag ``mlflow.parentRunId``) and
calls :func:`gvseg.runtime.ray_train.train_and_evaluate`: in the trial process when ``runtime.num_workers``
<= 1 (tiny CPU trials: no TorchTrainer start-up), else a ``TorchTrainer`` whose reports reach Tune through
``TuneReportCallback``. Every checkpoint reports ``step``/``loss`` (plus the val metrics under ASHA, which
stops trials on the sweep metric at ``step`` rungs); the last report carries the final eval metrics.

Resources (``trial_resources``): in-process trials hold the sweep's ``resources_per_trial`` (GPU fractions
pack trials onto a GPU); TorchTrainer trials get one worker per whole GPU (or ``num_workers`` sharing
them) and hold 0.01 CPU themselves; on embedded Ray each also keeps one CPU free for its Ray Data tasks.
A sweep with no trials, or impossible resources, raises ConfigError before anything starts.

Robustness: a crashing trial ends FAILED in Tune and MLflow and the others go on. ``resume=True`` restores
the latest ``<storage>/<sweep.name>-*`` experiment with ``Tuner.restore``; a trial whose
``trial_result.json`` exists is never trained again (even if Tune's state missed its end), an unfinished
one continues from its own checkpoints. No MLflow run stays RUNNING: trials end their runs themselves,
a Tune callback and a final pass on the driver close what a stopped (ASHA) or killed trial left open.

On disk, ``<storage>/<sweep.name>-<YYYYmmdd-HHMMSS>/``: ``gvseg_sweep.json`` (trials, parent run id),
Tune's experiment state and trial dirs, ``trials/<name>/`` (checkpoints, eval outputs, metric fallback,
``trial_result.json``), ``results.csv``, ``results.md`` and the plot.

Import cost: this module imports neither ray, mlflow nor torch at import time (the CLI builds its parser
from here); they load when a sweep runs.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

from gvseg.config import Config, ConfigError, apply_overrides, flatten, from_dict, to_dict
from gvseg.runtime.ray_init import init_ray
from gvseg.sweep import Sweep

STATE_FILE = "gvseg_sweep.json"
RESULT_FILE = "trial_result.json"
HEADLINE = ("vpq_mean_1246", "vpq_1", "stq", "miou", "ap", "jf", "hota")  # shown next to the sweep metric
TRIAL_TAG = "gvseg_trial"  # "<experiment>/<index>": finds a trial's child run again on resume

# ------------------------------------------------------------------------------------------ trials


def trial_name(index: int, trial: dict[str, Any], axes: list[str]) -> str:
    """``t03-tau=0.3,queue_size=4`` or ``t01-+spa``: short, unique, filesystem- and MLflow-safe."""
    parts = [str(trial["variant"])] if trial.get("variant") else []
    parts += [f"{k.rsplit('.', 1)[-1]}={trial[k]}" for k in axes if k in trial]
    name = f"t{index:02d}-{','.join(parts)}" if parts else f"t{index:02d}"
    return name.replace("/", "_").replace(" ", "")


def sweep_axes(sweep: Sweep) -> list[str]:
    """The dotted keys that vary across grid trials (comma-joined grid keys split), plus the seed."""
    axes = [k for key in sweep.grid for k in key.split(",")]
    return axes + (["train.seed"] if sweep.num_samples > 1 else [])


def trial_resources(sweep: Sweep, cfg: Config) -> tuple[Config, dict[str, float]]:
    """Map the sweep's per-trial resources onto the trial's runtime, and say what the trial actor holds.

    In-process (``runtime.local`` or ``num_workers`` <= 1): the trial actor holds them all; a GPU fraction
    packs trials onto one GPU (``{"cpu": 2, "gpu": 0.5}``: two per GPU). TorchTrainer: one worker per whole
    GPU (``{"gpu": 8}`` is the paper's 8-GPU DDP), else ``num_workers`` sharing CPUs/GPU evenly; the trial
    actor holds 0.01 CPU (Tune rejects 0)."""
    cpu = float(sweep.resources_per_trial.get("cpu", 1.0))
    gpu = float(sweep.resources_per_trial.get("gpu", 0.0))
    if cpu <= 0 or gpu < 0:
        raise ConfigError(f"sweep {sweep.name}: resources_per_trial needs cpu > 0 and gpu >= 0, "
                          f"got {sweep.resources_per_trial}")
    if cfg.runtime.local or cfg.runtime.num_workers <= 1:
        if gpu > 1:
            raise ConfigError(f"sweep {sweep.name}: an in-process trial (runtime.num_workers=1) uses one GPU, "
                              f"but resources_per_trial asks for {gpu:g}; use --workers {int(gpu)} or gpu <= 1")
        rt = dataclasses.replace(cfg.runtime, local=True, num_workers=1, use_gpu=gpu > 0,
                                 cpus_per_worker=cpu, gpus_per_worker=gpu)
        return dataclasses.replace(cfg, runtime=rt), {"cpu": cpu, **({"gpu": gpu} if gpu > 0 else {})}
    if gpu >= 1 and gpu != int(gpu):
        raise ConfigError(f"sweep {sweep.name}: resources_per_trial gpu={gpu:g} must be a whole number of GPUs "
                          f"for a multi-worker trial (or <= 1 to share one)")
    workers = int(gpu) if gpu >= 1 else cfg.runtime.num_workers
    rt = dataclasses.replace(cfg.runtime, local=False, num_workers=workers, use_gpu=gpu > 0,
                             cpus_per_worker=cpu / workers,
                             gpus_per_worker=gpu / workers if gpu > 0 else cfg.runtime.gpus_per_worker)
    return dataclasses.replace(cfg, runtime=rt), {"cpu": 0.01}


def axis_columns(axes: list[str]) -> dict[str, str]:
    """Table column per swept key: its last component (``tau``), or the full key where those clash."""
    short = [k.rsplit(".", 1)[-1] for k in axes]
    return {k: s if short.count(s) == 1 else k for k, s in zip(axes, short)}


def build_trials(sweep: Sweep, exp_dir: Path, tracking_uri: str) -> list[dict[str, Any]]:
    """Every trial as ``{"index", "name", "params", "cfg" (plain dict)}``, paths absolute."""
    axes = sweep_axes(sweep)
    out = []
    for i, trial in enumerate(sweep.trials()):
        cfg = sweep.trial_config(trial)
        cfg, _ = trial_resources(sweep, cfg)
        name = trial_name(i, trial, axes)
        cfg = dataclasses.replace(
            cfg,
            data=dataclasses.replace(cfg.data, root=str(Path(cfg.data.root).resolve()) if cfg.data.root else ""),
            runtime=dataclasses.replace(cfg.runtime, storage_path=str(exp_dir / "trials")),
            tracking=dataclasses.replace(cfg.tracking, run_name=name, tracking_uri=tracking_uri,
                                         registered_model=""),  # a sweep registers no model versions
        )
        params = {k: v for k, v in trial.items() if k != "variant"}
        out.append({"index": i, "name": name, "variant": trial.get("variant"), "params": params,
                    "cfg": to_dict(cfg)})
    return out


# ------------------------------------------------------------------------------------------- trial


def _child_run(cfg: Config, spec: dict[str, Any], info: dict[str, Any]) -> Any:
    """The trial's nested MLflow run: created once, reopened (RUNNING again) when the trial runs again."""
    import mlflow

    from gvseg.runtime.mlflow_log import RunLogger, git_sha, redact
    from gvseg.runtime.ray_train import run_dir

    client = mlflow.MlflowClient(spec["tracking_uri"])
    key = f"{spec['experiment']}/{info['index']}"
    found = client.search_runs([spec["experiment_id"]], filter_string=f"tags.{TRIAL_TAG} = '{key}'",
                               max_results=1)
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        client.set_tag(run_id, "resumed", "true")
    else:
        tags = {"mlflow.parentRunId": spec["parent_run_id"], TRIAL_TAG: key, "gvseg_sweep": spec["experiment"],
                "variant": info["variant"] or "", "git_sha": git_sha(), "task": cfg.model.task,
                "dataset": cfg.data.format}
        run_id = client.create_run(spec["experiment_id"], run_name=info["name"], tags=tags).info.run_id
        items = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in redact(flatten(cfg)).items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i:i + 100])
    return RunLogger(spec["tracking_uri"], run_id, run_dir(cfg))


def tune_trial(config: dict[str, Any], spec: dict[str, Any]) -> None:
    """One trial: train → evaluate → report. ``config["trial"]["index"]`` picks the trial in ``spec``."""
    import torch
    from ray import tune

    from gvseg.runtime.ray_train import run_dir, train_and_evaluate

    info = spec["trials"][config["trial"]]
    cfg = from_dict(Config, info["cfg"])
    done = run_dir(cfg) / RESULT_FILE
    if done.exists():  # it finished before the driver died, but Tune's saved state missed that: no rerun
        tune.report(json.loads(done.read_text()))
        return
    run_dir(cfg).mkdir(parents=True, exist_ok=True)
    if cfg.runtime.local:  # one intra-op pool per reserved CPU: oversubscribed threads run ~10x slower
        torch.set_num_threads(max(1, int(cfg.runtime.cpus_per_worker)))
    logger = _child_run(cfg, spec, info)
    extra = {"mlflow_run_id": logger.run_id}

    def on_checkpoint(metrics: dict[str, float]) -> None:
        evals = {k: v for k, v in metrics.items() if k not in ("step", "epoch", "loss")}
        if evals:  # mid-run val metrics (ASHA): a series in the child run
            logger.log_metrics(evals, metrics["step"])
        tune.report({**metrics, **extra})  # raises SystemExit when the scheduler stops this trial

    callbacks: tuple[Any, ...] = ()
    if not cfg.runtime.local:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks = (TuneReportCallback(),)
    t0 = time.time()
    try:
        metrics = train_and_evaluate(cfg, logger, on_checkpoint=on_checkpoint, train_callbacks=callbacks,
                                     eval_at_checkpoints=spec["eval_at_checkpoints"], log_model=False,
                                     progress=False)
        final = {**metrics, "step": cfg.train.max_iters, "trial_seconds": time.time() - t0, "completed": 1, **extra}
        tmp = done.with_suffix(".tmp")
        tmp.write_text(json.dumps(final))
        os.replace(tmp, done)
        logger.end("FINISHED")
    except SystemExit:  # stopped by the scheduler (ASHA) at a report
        logger.client.set_tag(logger.run_id, "stopped_early", "true")
        logger.end("KILLED")
        raise
    except BaseException:
        logger.end("FAILED")
        raise
    tune.report(final)  # after ending the run: ASHA may stop the trial right at this report


# ------------------------------------------------------------------------------------------ driver


class TrialName:
    """Tune's name (and directory) for a trial: ours, e.g. ``t03-tau=0.3,queue_size=8``. A class, not a
    lambda, so Tune's saved state pickles it by reference."""

    def __init__(self, names: list[str]):
        self.names = names

    def __call__(self, trial: Any) -> str:
        return self.names[int(trial.config["trial"])]


def _close_child(client: Any, run: Any, *, status: str, tag: str) -> None:
    """End a child run the trial left open: FAILED (crashed actor) or KILLED (``tag`` says why)."""
    if run.info.status in ("RUNNING", "SCHEDULED"):
        if tag:
            client.set_tag(run.info.run_id, tag, "true")
        client.set_terminated(run.info.run_id, status=status)


def _closer_callback(tracking_uri: str, experiment_id: str, experiment: str) -> Any:
    """A Tune callback on the driver that ends a trial's child run if the trial could not (stopped or
    crashed actor). Built lazily so this module imports without ray; cloudpickle carries it into
    Tune's saved state."""
    from ray import tune

    class CloseChildRuns(tune.Callback):
        def _close(self, trial: Any, status: str, tag: str) -> None:
            import mlflow

            client = mlflow.MlflowClient(tracking_uri)
            key = f"{experiment}/{trial.config['trial']}"
            try:
                for run in client.search_runs([experiment_id], filter_string=f"tags.{TRIAL_TAG} = '{key}'"):
                    _close_child(client, run, status=status, tag=tag)
            except Exception as e:  # never take the sweep down for bookkeeping; the final pass retries
                print(f"gvseg: could not close the MLflow run of trial {key} ({e})")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            if not (trial.last_result or {}).get("completed"):
                self._close(trial, "KILLED", "stopped_early")  # the scheduler stopped it

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self._close(trial, "FAILED", "")

    return CloseChildRuns()


def _find_experiment(storage: Path, name: str) -> Path:
    stamp = re.compile(re.escape(name) + r"-\d{8}-\d{6}")  # not the runs of a sweep named "<name>-x"
    found = sorted(p.parent for p in storage.glob(f"{name}-*/{STATE_FILE}") if stamp.fullmatch(p.parent.name))
    if not found:
        raise FileNotFoundError(f"{storage}: no sweep {name!r} to resume (no {name}-*/{STATE_FILE})")
    return found[-1]  # names end in a sortable timestamp


def _parent_run(sweep: Sweep, exp_name: str, base: Config, overrides: tuple[str, ...], source: str,
                n_trials: int) -> tuple[str, str]:
    """Create the sweep's parent run with the search space as params. Returns (experiment id, run id)."""
    import mlflow

    from gvseg.runtime.mlflow_log import artifacts_beside, git_sha

    mlflow.set_tracking_uri(base.tracking.tracking_uri)  # the first use of a new sqlite db migrates it
    client = mlflow.MlflowClient(base.tracking.tracking_uri)
    exp = client.get_experiment_by_name(base.tracking.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        base.tracking.experiment, artifact_location=artifacts_beside(base.tracking.tracking_uri))
    tags = {"gvseg_sweep": exp_name, "sweep": sweep.name, "sweep_file": source, "git_sha": git_sha(),
            "task": base.model.task, "dataset": base.data.format}
    run_id = client.create_run(exp_id, run_name=exp_name, tags=tags).info.run_id
    params = {"sweep.metric": sweep.metric, "sweep.mode": sweep.mode, "sweep.scheduler": sweep.scheduler,
              "sweep.num_samples": sweep.num_samples, "sweep.max_concurrent": sweep.max_concurrent,
              "sweep.resources_per_trial": json.dumps(sweep.resources_per_trial),
              "sweep.num_trials": n_trials, "sweep.overrides": " ".join(overrides), "base": base.name}
    params.update({f"grid.{k}": json.dumps(v) for k, v in sweep.grid.items()})
    if sweep.variants:
        params["variants"] = ", ".join(sweep.variants)
        params.update({f"variant.{k}": json.dumps(v) for k, v in sweep.variants.items()})
    # MLflow keys allow only [\w\-. :/]: "variant.+spa" -> "variant._spa" (the "variants" param keeps the names)
    items = [mlflow.entities.Param(re.sub(r"[^\w\-. :/]", "_", k)[:250], str(v)[:6000]) for k, v in params.items()]
    try:
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i:i + 100])
    except BaseException:
        client.set_terminated(run_id, status="FAILED")  # never leave it RUNNING
        raise
    return exp_id, run_id


def _prepare_data(trials: list[dict[str, Any]]) -> None:
    """Write synthetic datasets once, on the driver (concurrent trials would race to write the same root),
    and fail before any trial starts when a dataset is missing. Embedded Ray only: a cluster's paths need
    not exist here."""
    from gvseg.data.pipeline import build_records

    seen = set()
    for t in trials:
        data = from_dict(Config, t["cfg"]).data
        if data.root in seen:
            continue
        seen.add(data.root)
        if data.synthetic:
            build_records(data, data.train_split, progress=True)
        elif not Path(data.root).exists():
            raise FileNotFoundError(f"{data.root}: dataset root of sweep trial {t['name']} does not exist")


def _init_ray(address: str | None, trial_cpus: float, dashboard: bool) -> bool:
    """Connect to ``address`` or start embedded Ray on loopback, with its dashboard when TorchTrainer trials
    need the state API (``dashboard``; :func:`gvseg.runtime.ray_init.init_embedded`). True if we started it."""
    # room for at least one trial, however many cores this machine has
    return init_ray(address, num_cpus=max(os.cpu_count() or 1, math.ceil(trial_cpus)), dashboard=dashboard)


def run_sweep(sweep: Sweep, *, address: str | None = None, max_concurrent: int | None = None,
              resume: bool = False, storage_path: str | None = None, overrides: tuple[str, ...] | list[str] = (),
              source: str = "") -> list[dict[str, Any]]:
    """Run (or, with ``resume``, continue) the sweep on Ray Tune. Returns the results table rows."""
    import mlflow
    from ray import tune
    from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler

    from gvseg.runtime.ray_train import resolve_paths

    # FIFO trials report loss at checkpoints without the sweep metric (only the end is evaluated): Tune's
    # strict check would reject those results. ASHA skips results that lack its metric.
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    overrides = tuple(overrides)
    base = resolve_paths(apply_overrides(sweep.base, list(overrides)))  # absolute storage + tracking URI
    if storage_path:
        base = dataclasses.replace(base, runtime=dataclasses.replace(
            base.runtime, storage_path=str(Path(storage_path).resolve())))
    sweep = dataclasses.replace(sweep, base=base)
    if not sweep.trials():
        raise ConfigError(f"sweep {sweep.name}: no trials")
    storage = Path(base.runtime.storage_path)
    if resume:
        exp_dir = _find_experiment(storage, sweep.name)
    else:
        exp_dir = storage / f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
        while exp_dir.exists():  # two sweeps in one second
            time.sleep(1.0)
            exp_dir = storage / f"{sweep.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    exp_name = exp_dir.name
    trials = build_trials(sweep, exp_dir, base.tracking.tracking_uri)
    base, resources = trial_resources(sweep, base)
    client = mlflow.MlflowClient(base.tracking.tracking_uri)
    if not (address or base.runtime.address):
        _prepare_data(trials)

    state_path = exp_dir / STATE_FILE
    if resume:
        state = json.loads(state_path.read_text())
        if [t["name"] for t in state["trials"]] != [t["name"] for t in trials]:
            raise ConfigError(f"{state_path}: the sweep's trials changed since it started; start a new sweep "
                              f"instead of --resume")
        if state["overrides"] != list(overrides):  # unfinished trials would train another config
            raise ConfigError(f"{state_path}: --resume needs the same --set as the start: {state['overrides']}, "
                              f"got {list(overrides)}")
        exp_id, parent_id = state["experiment_id"], state["parent_run_id"]
        client.update_run(parent_id, status="RUNNING")
        client.set_tag(parent_id, "resumed", "true")
        print(f"gvseg: resuming sweep {exp_dir} (MLflow parent run {parent_id})")
    else:
        exp_dir.mkdir(parents=True)
        exp_id, parent_id = _parent_run(sweep, exp_name, base, overrides, source, len(trials))
        state = {"sweep": sweep.name, "experiment": exp_name, "experiment_id": exp_id, "parent_run_id": parent_id,
                 "tracking_uri": base.tracking.tracking_uri, "source": source, "overrides": list(overrides),
                 "trials": [{k: t[k] for k in ("index", "name", "params")} for t in trials]}
        state_path.write_text(json.dumps(state, indent=2, default=str))
        print(f"gvseg: sweep {exp_name}: {len(trials)} trials, MLflow parent run {parent_id}")

    names = [t["name"] for t in trials]
    asha = sweep.scheduler == "asha"
    # ASHA ranks trials mid-run: evaluate each checkpoint unless the metric is one training reports anyway
    evaluate_mid_run = asha and sweep.metric not in ("loss", "step", "epoch")
    spec = {"trials": trials, "experiment": exp_name, "experiment_id": exp_id, "parent_run_id": parent_id,
            "tracking_uri": base.tracking.tracking_uri, "eval_at_checkpoints": evaluate_mid_run}
    trainable = tune.with_resources(tune.with_parameters(tune_trial, spec=spec), resources)
    limit = max_concurrent or sweep.max_concurrent or None
    cluster = address or base.runtime.address or None
    if base.runtime.local:
        trial_cpus = resources["cpu"]
    else:  # + 1: the trial's Ray Data tasks need a whole CPU beside its workers, or its input never arrives
        trial_cpus = resources["cpu"] + base.runtime.num_workers * base.runtime.cpus_per_worker + 1
    status, started_ray = "FAILED", False
    main_thread = threading.current_thread() is threading.main_thread()  # signals: main thread only
    old_term = signal.getsignal(signal.SIGTERM) if main_thread else None
    try:  # from here on, the parent run ends FINISHED, KILLED or FAILED whatever happens
        if main_thread:  # SIGTERM (a scheduler, `kill`) takes Tune's graceful SIGINT path: resumable
            signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
        started_ray = _init_ray(cluster, trial_cpus, base.runtime.dashboard and not base.runtime.local)
        if not base.runtime.local and not cluster:
            import ray

            fits = max(1, int(ray.cluster_resources().get("CPU", 1) // trial_cpus))
            if limit is None or limit > fits:
                print(f"gvseg: {fits} TorchTrainer trial(s) at a time fit this machine's CPUs "
                      f"(each: its workers + 1 CPU for Ray Data)")
                limit = fits
        tuner = None
        if resume and tune.Tuner.can_restore(str(exp_dir)):
            tuner = tune.Tuner.restore(str(exp_dir), trainable, resume_errored=True)
        if tuner is None:  # new sweep, or the driver died before Tune saved any state
            t = base.train
            scheduler = (AsyncHyperBandScheduler(time_attr="step", metric=sweep.metric, mode=sweep.mode,
                                                 max_t=t.max_iters, grace_period=min(t.checkpoint_every, t.max_iters),
                                                 reduction_factor=2, stop_last_trials=False)
                         if asha else FIFOScheduler())
            tuner = tune.Tuner(
                trainable,
                param_space={"trial": tune.grid_search([t["index"] for t in trials])},
                tune_config=tune.TuneConfig(scheduler=scheduler, num_samples=1, max_concurrent_trials=limit,
                                            reuse_actors=False, trial_name_creator=TrialName(names),
                                            trial_dirname_creator=TrialName(names)),
                run_config=tune.RunConfig(
                    name=exp_name, storage_path=str(storage), verbose=1,
                    failure_config=tune.FailureConfig(max_failures=0),  # a crash is a result, not a retry
                    callbacks=[_closer_callback(base.tracking.tracking_uri, exp_id, exp_name)]),
            )
        grid = tuner.fit()
        rows = results_table(grid, trials, sweep, client, exp_id, exp_name)
        status = "KILLED" if any(r["status"] == "INCOMPLETE" for r in rows) else "FINISHED"
        _report(rows, sweep, exp_dir, client, parent_id)
        if status == "KILLED":
            print(f"gvseg: sweep interrupted; continue it with --resume ({exp_dir})")
        return rows
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, old_term)
        _close_leftovers(client, exp_id, parent_id)
        try:
            client.set_terminated(parent_id, status=status)
        except Exception as e:
            print(f"gvseg: could not mark the sweep's MLflow run {parent_id} {status} ({e})")
        if started_ray:
            import ray

            ray.shutdown()


def _children(client: Any, exp_id: str, parent_id: str) -> list[Any]:
    return client.search_runs([exp_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
                              max_results=10000)


def _close_leftovers(client: Any, exp_id: str, parent_id: str) -> None:
    """Last line of defence: no child run of this sweep may stay RUNNING once the driver is done."""
    try:
        for run in _children(client, exp_id, parent_id):
            _close_child(client, run, status="KILLED", tag="interrupted")
    except Exception as e:
        print(f"gvseg: could not check the sweep's child runs ({e})")


# ------------------------------------------------------------------------------------------ results


def results_table(grid: Any, trials: list[dict[str, Any]], sweep: Sweep, client: Any, exp_id: str,
                  exp_name: str) -> list[dict[str, Any]]:
    """One row per trial, in trial order. FINISHED = trained and evaluated; STOPPED = stopped early by
    the scheduler (metric = its last mid-run evaluation); FAILED = crashed; INCOMPLETE = not run yet."""
    by_index: dict[int, Any] = {}
    for result in grid:
        by_index[int(result.config["trial"])] = result
    runs = {r.data.tags.get(TRIAL_TAG): r for r in client.search_runs(
        [exp_id], filter_string=f"tags.gvseg_sweep = '{exp_name}'", max_results=10000)}
    axes = sweep_axes(sweep)
    headline = [sweep.metric] + [k for k in HEADLINE if k != sweep.metric]
    rows = []
    for t in trials:
        result = by_index.get(t["index"])
        metrics = (result.metrics or {}) if result is not None else {}
        run = runs.get(f"{exp_name}/{t['index']}")
        if result is not None and result.error is not None:
            status = "FAILED"
        elif metrics.get("completed"):
            status = "FINISHED"
        elif run is not None and run.data.tags.get("stopped_early") == "true":
            status = "STOPPED"
        else:
            status = "INCOMPLETE"
        row: dict[str, Any] = {"trial": t["index"], "name": t["name"]}
        if sweep.variants:
            row["variant"] = t["variant"] or ""
        row.update({col: t["params"].get(k) for k, col in axis_columns(axes).items()})
        row.update({"status": status, "step": metrics.get("step")})
        row.update({k: metrics.get(k) for k in headline if k == sweep.metric or k in metrics})
        row["trial_seconds"] = metrics.get("trial_seconds")
        row["error"] = _short_error(result.error) if result is not None and result.error is not None else ""
        row["run_id"] = metrics.get("mlflow_run_id") or (run.info.run_id if run is not None else "")
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def _short_error(error: Any) -> str:
    text = str(error).strip().splitlines()
    last = next((line for line in reversed(text) if "Error" in line or "Exception" in line), text[-1] if text else "")
    return last.strip()[:120]


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v) if len(repr(v)) <= 7 else f"{v:.4f}"  # 0.1 stays 0.1
    return str(v)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)"
    keys = list(rows[0])
    cells = [[_fmt(r[k]) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = lambda vals: "| " + " | ".join(v.ljust(w) for v, w in zip(vals, widths)) + " |"
    return "\n".join([line(keys), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buf.getvalue()


def best_row(rows: list[dict[str, Any]], metric: str, mode: str) -> dict[str, Any] | None:
    scored = [r for r in rows if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])
              and r["status"] == "FINISHED"]
    if not scored:
        return None
    return (max if mode == "max" else min)(scored, key=lambda r: r[metric])


def _report(rows: list[dict[str, Any]], sweep: Sweep, exp_dir: Path, client: Any, parent_id: str) -> None:
    """Write table + plot next to the experiment, log them on the parent run, print the table."""
    md = to_markdown(rows)
    (exp_dir / "results.md").write_text(md + "\n")
    (exp_dir / "results.csv").write_text(to_csv(rows))
    plot_path = sweep_plot(rows, sweep, exp_dir)
    best = best_row(rows, sweep.metric, sweep.mode)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("FINISHED", "STOPPED", "FAILED", "INCOMPLETE")}
    print(f"\nSweep {exp_dir.name}: {sweep.metric} ({sweep.mode})\n{md}")
    print(", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v))
    if best is not None:
        print(f"best: {best['name']}  {sweep.metric}={_fmt(best[sweep.metric])}")
    print(f"table: {exp_dir / 'results.md'}  plot: {plot_path}")
    try:
        for path in (exp_dir / "results.md", exp_dir / "results.csv"):
            client.log_artifact(parent_id, str(path), "results")
        client.log_artifact(parent_id, str(plot_path), "plots")
        metrics = {f"trials_{k.lower()}": float(v) for k, v in counts.items()}
        if best is not None:
            metrics[f"best_{sweep.metric}"] = float(best[sweep.metric])
            client.set_tag(parent_id, "best_trial", best["name"])
        for k, v in metrics.items():
            client.log_metric(parent_id, k, v)
    except Exception as e:  # the files are on disk whatever the tracking server does
        print(f"gvseg: could not log the sweep results to MLflow ({type(e).__name__}: {e})")


# ------------------------------------------------------------------------------------------ plots
# Drawn with OpenCV + NumPy (already dependencies; matplotlib is not): plain, deterministic PNGs.

_FONT = 0  # cv2.FONT_HERSHEY_SIMPLEX
_INK, _GRAY, _BAR, _BEST = (30, 30, 30), (170, 170, 170), (180, 119, 31), (44, 160, 44)  # BGR


def _text(img: Any, text: str, org: tuple[int, int], scale: float = 0.45, color: tuple = _INK,
          align: str = "left") -> None:
    import cv2

    (w, h), _ = cv2.getTextSize(text, _FONT, scale, 1)
    x = {"left": org[0], "center": org[0] - w // 2, "right": org[0] - w}[align]
    cv2.putText(img, text, (int(x), int(org[1] + h // 2)), _FONT, scale, color, 1, cv2.LINE_AA)


def _text_width(text: str, scale: float = 0.45) -> int:
    import cv2

    return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def _value(row: dict[str, Any], metric: str) -> float | None:
    v = row.get(metric)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def heatmap_image(rows: list[dict[str, Any]], y_key: str, x_key: str, metric: str, title: str) -> Any:
    """Metric over a 2-D grid (rows: ``y_key`` values, columns: ``x_key``), mean over seeds of FINISHED
    trials; cells without one show the trials' status in gray. Returns a BGR uint8 image."""
    import cv2
    import numpy as np

    ys = sorted({r[y_key] for r in rows}, key=lambda v: (str(type(v)), v))
    xs = sorted({r[x_key] for r in rows}, key=lambda v: (str(type(v)), v))
    vals = np.full((len(ys), len(xs)), np.nan)  # [Y, X]
    notes = [["" for _ in xs] for _ in ys]
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            cell = [r for r in rows if r[y_key] == y and r[x_key] == x]
            scores = [v for r in cell if r["status"] == "FINISHED" and (v := _value(r, metric)) is not None]
            early = [v for r in cell if r["status"] == "STOPPED" and (v := _value(r, metric)) is not None]
            if scores:
                vals[i, j] = float(np.mean(scores))
            elif early:  # ASHA's last mid-run value: shown, but not coloured as a result
                notes[i][j] = f"{np.mean(early):.3f} stopped"
            else:
                notes[i][j] = "/".join(sorted({r["status"].lower() for r in cell})) or "-"
    cw, ch, left, top, bottom = 130, 56, 90, 60, 50
    width = max(left + cw * len(xs) + 20, _text_width(title, 0.5) + 16)
    img = np.full((top + ch * len(ys) + bottom, width, 3), 255, np.uint8)
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    norm = np.where(np.isfinite(vals), (vals - lo) / (hi - lo) if hi > lo else 0.5, 0.0)
    colors = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)  # [Y, X, 3]
    for i in range(len(ys)):
        for j in range(len(xs)):
            x0, y0 = left + j * cw, top + i * ch
            color = tuple(int(c) for c in colors[i, j]) if np.isfinite(vals[i, j]) else (225, 225, 225)
            cv2.rectangle(img, (x0, y0), (x0 + cw - 2, y0 + ch - 2), color, -1)
            label = f"{vals[i, j]:.3f}" if np.isfinite(vals[i, j]) else notes[i][j]
            ink = (255, 255, 255) if np.isfinite(vals[i, j]) and norm[i, j] < 0.6 else _INK
            _text(img, label, (x0 + cw // 2, y0 + ch // 2), 0.5, ink, "center")
        _text(img, str(ys[i]), (left - 8, top + i * ch + ch // 2), 0.45, _INK, "right")
    for j, x in enumerate(xs):
        _text(img, str(x), (left + j * cw + cw // 2, top + len(ys) * ch + 12), 0.45, _INK, "center")
    _text(img, x_key, (left + cw * len(xs) // 2, top + len(ys) * ch + 36), 0.45, _INK, "center")
    _text(img, y_key, (8, top - 14), 0.45)
    _text(img, title, (8, 16), 0.5)
    return img


def bar_image(rows: list[dict[str, Any]], metric: str, title: str, best: str | None = None) -> Any:
    """Horizontal bars, one per trial (label = trial name); the best FINISHED trial in green; trials
    without a value show their status. Returns a BGR uint8 image."""
    import cv2
    import numpy as np

    labels = [r["name"] for r in rows]
    values = [_value(r, metric) for r in rows]
    finite = [v for v in values if v is not None]
    lo, hi = min([0.0, *finite]), max([0.0, *finite])
    span = (hi - lo) or 1.0
    lw = max(_text_width(s) for s in labels) + 16
    bw, rh, top = 320, 26, 40
    img = np.full((top + rh * len(rows) + 16, max(lw + bw + 150, _text_width(title, 0.5) + 16), 3), 255, np.uint8)
    zero = lw + int((0.0 - lo) / span * bw)
    for i, (row, label, v) in enumerate(zip(rows, labels, values)):
        y = top + i * rh
        _text(img, label, (lw - 8, y + rh // 2), 0.45, _INK, "right")
        if v is None:
            _text(img, row["status"].lower(), (zero + 6, y + rh // 2), 0.45, _GRAY)
            continue
        end = lw + int((v - lo) / span * bw)
        color = _BEST if label == best else (_BAR if row["status"] == "FINISHED" else _GRAY)
        cv2.rectangle(img, (min(zero, end), y + 4), (max(zero, end, min(zero, end) + 1), y + rh - 4), color, -1)
        suffix = "" if row["status"] == "FINISHED" else f" ({row['status'].lower()})"
        _text(img, f"{v:.3f}{suffix}", (max(zero, end) + 6, y + rh // 2), 0.45)
    cv2.line(img, (zero, top - 4), (zero, top + rh * len(rows)), _INK, 1)
    _text(img, title, (8, 16), 0.5)
    return img


def line_image(rows: list[dict[str, Any]], metric: str, title: str) -> Any:
    """Metric against trial order (e.g. increasing bins), trial names written vertically under the axis."""
    import cv2
    import numpy as np

    values = [_value(r, metric) for r in rows]
    finite = [v for v in values if v is not None]
    lo, hi = (min(finite), max(finite)) if finite else (0.0, 1.0)
    span = (hi - lo) or 1.0
    step, left, top, ph = 90, 60, 40, 200
    lh = max(_text_width(r["name"]) for r in rows) + 16
    img = np.full((top + ph + lh + 10, max(left + step * len(rows) + 20, _text_width(title, 0.5) + 16), 3), 255,
                  np.uint8)
    cv2.line(img, (left, top + ph), (left + step * len(rows), top + ph), _INK, 1)
    pts = []
    for i, (row, v) in enumerate(zip(rows, values)):
        x = left + step * i + step // 2
        label = np.full((18, lh, 3), 255, np.uint8)
        _text(label, row["name"], (4, 9), 0.45, _INK)  # read top-down once rotated
        img[top + ph + 6: top + ph + 6 + lh, x - 9: x + 9] = cv2.rotate(label, cv2.ROTATE_90_CLOCKWISE)
        if v is None:
            _text(img, row["status"].lower(), (x, top + ph - 10), 0.4, _GRAY, "center")
            continue
        y = top + ph - 10 - int((v - lo) / span * (ph - 30))
        pts.append((x, y))
        cv2.circle(img, (x, y), 4, _BAR, -1, cv2.LINE_AA)
        _text(img, f"{v:.3f}", (x, y - 12), 0.4, _INK, "center")
    if len(pts) > 1:
        cv2.polylines(img, [np.array(pts, np.int32)], False, _BAR, 2, cv2.LINE_AA)
    _text(img, title, (8, 16), 0.5)
    return img


def sweep_plot(rows: list[dict[str, Any]], sweep: Sweep, out_dir: Path) -> Path:
    """The sweep's plot as ``<out_dir>/<metric>_<kind>.png``. A heatmap needs exactly two grid axes and no
    variants (Table 4b's τ × N_Q); otherwise it falls back to bars."""
    import cv2

    axes = [k for key in sweep.grid for k in key.split(",")]
    title = f"{sweep.name}: {sweep.metric} ({sweep.mode})"
    kind = sweep.plot
    if kind == "heatmap" and not (len(sweep.grid) == 2 and len(axes) == 2 and not sweep.variants):
        print(f"gvseg: sweep {sweep.name}: a heatmap needs exactly two grid keys and no variants; drawing bars")
        kind = "bar"
    if kind == "heatmap":
        y_key, x_key = axis_columns(axes).values()
        img = heatmap_image(rows, y_key, x_key, sweep.metric, title)
    elif kind == "line":
        img = line_image(rows, sweep.metric, title)
    else:
        best = best_row(rows, sweep.metric, sweep.mode)
        img = bar_image(rows, sweep.metric, title, best["name"] if best else None)
    path = out_dir / f"{sweep.metric}_{kind}.png"
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: could not write the sweep plot")
    return path


# ------------------------------------------------------------------------------------------ CLI


def add_tune_parser(sub: Any) -> None:
    """``gvseg tune SWEEP.py[:fn] [--set k=v ...] [--address A] [--max-concurrent K] [--resume]``."""
    p = sub.add_parser(
        "tune", help="run a hyper-parameter sweep on Ray Tune (each trial trains + evaluates)",
        description="Run the Sweep returned by SWEEP.py[:fn] (default fn: sweep; e.g. sweeps/tcl_tau_queue.py:debug) "
                    "on Ray Tune: every trial is a full training run with evaluation; FIFO or ASHA on the sweep's "
                    "metric. MLflow gets one parent run (search space, results table, plot) with a nested child "
                    "run per trial. --resume continues the latest run of this sweep without retraining finished "
                    "trials.")
    p.add_argument("sweep", help="sweep as path/to/file.py[:function], e.g. sweeps/tcl_tau_queue.py:debug")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override the base config by dotted key, e.g. --set train.max_iters=50 (repeatable); "
                        "swept keys keep their trial values")
    p.add_argument("--address", default=None, help="Ray address: 'auto' or ray://HEAD:10001 (default: embedded)")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="K",
                   help="run at most K trials at once (default: the sweep's, else as many as resources allow)")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray Train workers per trial; 1 trains inside the trial process (runtime.num_workers)")
    p.add_argument("--scheduler", choices=["fifo", "asha"], default=None, help="override the sweep's scheduler")
    p.add_argument("--storage-path", default=None, help="where sweeps live (default: runtime.storage_path, ./runs)")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest <storage>/<sweep name>-* run (Tuner.restore) instead of starting anew")
    p.set_defaults(fn=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    from gvseg.recipes import load_sweep

    sweep = load_sweep(args.sweep)
    if args.scheduler:
        sweep = dataclasses.replace(sweep, scheduler=args.scheduler)
    sets = list(args.sets) + ([f"runtime.num_workers={args.workers}"] if args.workers is not None else [])
    rows = run_sweep(sweep, address=args.address, max_concurrent=args.max_concurrent, resume=args.resume,
                     storage_path=args.storage_path, overrides=sets, source=args.sweep)
    return 0 if rows and all(r["status"] != "INCOMPLETE" for r in rows) else 1
