"""A hyper-parameter sweep: a base recipe, a search space, a scheduler and the number of samples; its
trials planned and its results tabulated.

``sweeps/*.py`` are functions returning a :class:`Sweep`. The search space is a grid: each entry of
``grid`` maps a dotted config key to the values to try, and a comma-joined key sets several keys together
from tuples (``"model.descriptor.angle_bins,model.descriptor.radius_bins": [(36, 12), (48, 12)]``).
``variants`` are named sets of overrides (ablation rows); trials are the product of grid and variants.

Pure Python, no Ray or MLflow: trial planning (:func:`build_trials`: names, resources, absolute paths),
the results table (:func:`results_rows`, :func:`to_markdown`, :func:`to_csv`, :func:`best_row`) and the
debug sweeps' base (:func:`debug_base`). ``gvseg.runtime.ray_tune`` turns a Sweep into a ``ray.tune.Tuner``
and feeds what Tune and MLflow report back into :func:`results_rows`; ``gvseg.visualize.sweep_plot``
draws the table.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gvseg.config import Config, ConfigError, apply_overrides, set_values, to_dict

HEADLINE = ("vpq_mean_1246", "vpq_1", "stq", "miou", "ap", "jf", "hota")  # shown next to the sweep metric


@dataclass
class Sweep:
    name: str
    base: Config
    grid: dict[str, list[Any]] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # row name -> {dotted key: value}
    metric: str = "vpq"  # what the scheduler and the summary table rank by
    mode: Literal["max", "min"] = "max"
    scheduler: Literal["fifo", "asha"] = "fifo"
    num_samples: int = 1  # repeats of the whole grid (different seeds)
    max_concurrent: int = 0  # 0 = as many as resources allow
    resources_per_trial: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    plot: Literal["heatmap", "bar", "line"] = "bar"

    def trials(self) -> list[dict[str, Any]]:
        """Every trial as ``{"variant": name | None, dotted key: value, ...}``, in a stable order."""
        axes = [[(key, v) for v in values] for key, values in self.grid.items()]
        rows = list(self.variants.items()) or [(None, {})]
        out = []
        for seed in range(self.num_samples):
            for name, overrides in rows:
                for combo in itertools.product(*axes) if axes else [()]:
                    trial: dict[str, Any] = {"variant": name, **overrides}
                    for key, value in combo:
                        keys = key.split(",")
                        values = value if len(keys) > 1 else (value,)
                        if len(values) != len(keys):
                            raise ConfigError(f"sweep {self.name}: {key} needs {len(keys)} values, got {value!r}")
                        trial.update(zip(keys, values))
                    if self.num_samples > 1:
                        trial["train.seed"] = self.base.train.seed + seed
                    out.append(trial)
        return out

    def trial_config(self, trial: dict[str, Any]) -> Config:
        return set_values(self.base, {k: v for k, v in trial.items() if k != "variant"})  # typed, no strings


# Debug trials train inside the Tune trial process (runtime.num_workers=1: no TorchTrainer start-up per
# trial) on one core each (the debug sweeps' resources_per_trial), so a 2-core machine runs two at once.
DEBUG_TRIAL = ("runtime.num_workers=1",)


def debug_base(cfg: Config) -> Config:
    """A debug recipe (``load_recipe("tasks/x.py:debug")``) made the base of a debug sweep: one-core,
    in-process trials (:data:`DEBUG_TRIAL`). Takes the loaded config, not its path: ``gvseg.recipes``
    imports this module to check what a sweep file returns."""
    return apply_overrides(cfg, list(DEBUG_TRIAL))


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
    """Every trial as ``{"index", "name", "variant", "params", "cfg" (plain dict)}``, paths absolute."""
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


# ------------------------------------------------------------------------------------------ results


@dataclass
class TrialOutcome:
    """What the driver learnt of one trial: Tune's last result and the trial's MLflow child run."""

    metrics: dict[str, Any] = field(default_factory=dict)  # the last report (empty: never reported)
    error: str | None = None  # the trial's error as text; None when it did not crash
    run_id: str = ""  # its child run, "" when it has none yet
    stopped_early: bool = False  # the child run's "stopped_early" tag (the scheduler stopped it)


def results_rows(trials: list[dict[str, Any]], sweep: Sweep, outcomes: dict[int, TrialOutcome]) -> list[dict[str, Any]]:
    """One row per trial (:func:`build_trials`), in trial order, from its outcome (by trial index).
    FINISHED = trained and evaluated; STOPPED = stopped early by the scheduler (metric = its last mid-run
    evaluation); FAILED = crashed; INCOMPLETE = not run yet. Every row has the same keys."""
    axes = sweep_axes(sweep)
    headline = [sweep.metric] + [k for k in HEADLINE if k != sweep.metric]
    rows = []
    for t in trials:
        out = outcomes.get(t["index"], TrialOutcome())
        metrics = out.metrics
        if out.error is not None:
            status = "FAILED"
        elif metrics.get("completed"):
            status = "FINISHED"
        elif out.stopped_early:
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
        row["error"] = _short_error(out.error) if out.error is not None else ""
        row["run_id"] = metrics.get("mlflow_run_id") or out.run_id
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return [{k: r.get(k) for k in keys} for r in rows]


def _short_error(error: Any) -> str:
    text = str(error).strip().splitlines()
    last = next((line for line in reversed(text) if "Error" in line or "Exception" in line), text[-1] if text else "")
    return last.strip()[:120]


def format_cell(v: Any) -> str:
    """A table cell: short floats as written (0.1 stays 0.1), long ones to 4 decimals, None empty."""
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v) if len(repr(v)) <= 7 else f"{v:.4f}"
    return str(v)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no trials)"
    keys = list(rows[0])
    cells = [[format_cell(r[k]) for k in keys] for r in rows]
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
