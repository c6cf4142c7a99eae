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

Resources (:func:`gvseg.sweep.trial_resources`): in-process trials hold the sweep's ``resources_per_trial`` (GPU fractions
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

What is not here: trial planning and the results table are :mod:`gvseg.sweep` (no Ray, no MLflow), the
plot is :func:`gvseg.visualize.sweep_plot`, the ``gvseg tune`` command line is :mod:`gvseg.cli`. This
module imports neither ray, mlflow nor torch at import time; they load when a sweep runs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import signal
import threading
import time
from pathlib import Path
from typing import Any

from gvseg.config import Config, ConfigError, apply_overrides, flatten, from_dict
from gvseg.runtime.ray_init import init_ray
from gvseg.sweep import (
    Sweep,
    TrialOutcome,
    best_row,
    build_trials,
    format_cell,
    results_rows,
    to_csv,
    to_markdown,
    trial_resources,
)

STATE_FILE = "gvseg_sweep.json"
RESULT_FILE = "trial_result.json"
TRIAL_TAG = "gvseg_trial"  # "<experiment>/<index>": finds a trial's child run again on resume

# ------------------------------------------------------------------------------------------- trial


def _child_run(cfg: Config, spec: dict[str, Any], info: dict[str, Any]) -> Any:
    """The trial's nested MLflow run: created once, reopened (RUNNING again) when the trial runs again."""
    import mlflow

    from gvseg.checkpoint import run_dir
    from gvseg.runtime.mlflow_log import RunLogger, git_sha, log_params

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
        log_params(client, run_id, flatten(cfg))
    return RunLogger(spec["tracking_uri"], run_id, run_dir(cfg))


def tune_trial(config: dict[str, Any], spec: dict[str, Any]) -> None:
    """One trial: train → evaluate → report. ``config["trial"]["index"]`` picks the trial in ``spec``."""
    import torch
    from ray import tune

    from gvseg.checkpoint import run_dir
    from gvseg.runtime.ray_train import train_and_evaluate

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

    from gvseg.runtime.mlflow_log import artifacts_beside, git_sha, log_params

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
    try:  # log_params makes keys MLflow-legal: "variant.+spa" -> "variant._spa" ("variants" keeps the names)
        log_params(client, run_id, params)
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
    """The results table (:func:`gvseg.sweep.results_rows`) from what Tune's ``ResultGrid`` and the trials'
    MLflow child runs say of each trial."""
    runs = {r.data.tags.get(TRIAL_TAG): r for r in client.search_runs(
        [exp_id], filter_string=f"tags.gvseg_sweep = '{exp_name}'", max_results=10000)}
    by_index = {int(result.config["trial"]): result for result in grid}
    outcomes = {}
    for t in trials:
        result, run = by_index.get(t["index"]), runs.get(f"{exp_name}/{t['index']}")
        outcomes[t["index"]] = TrialOutcome(
            metrics=(result.metrics or {}) if result is not None else {},
            error=None if result is None or result.error is None else str(result.error),
            run_id=run.info.run_id if run is not None else "",
            stopped_early=run is not None and run.data.tags.get("stopped_early") == "true")
    return results_rows(trials, sweep, outcomes)


def _report(rows: list[dict[str, Any]], sweep: Sweep, exp_dir: Path, client: Any, parent_id: str) -> None:
    """Write table + plot next to the experiment, log them on the parent run, print the table."""
    md = to_markdown(rows)
    (exp_dir / "results.md").write_text(md + "\n")
    (exp_dir / "results.csv").write_text(to_csv(rows))
    from gvseg.visualize import sweep_plot  # matplotlib: only once the sweep is done

    plot_path = sweep_plot(rows, sweep, exp_dir)
    best = best_row(rows, sweep.metric, sweep.mode)
    counts = {s: sum(r["status"] == s for r in rows) for s in ("FINISHED", "STOPPED", "FAILED", "INCOMPLETE")}
    print(f"\nSweep {exp_dir.name}: {sweep.metric} ({sweep.mode})\n{md}")
    print(", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v))
    if best is not None:
        print(f"best: {best['name']}  {sweep.metric}={format_cell(best[sweep.metric])}")
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
