"""MLflow tracking for one training run (driver and rank 0 only).

What is logged: the flattened config as params (credentials redacted), tags (git sha, recipe, task,
dataset), per-step losses and learning rates, eval metrics, system metrics, prediction overlays as an
image series (``log_image(key=, step=)``), checkpoints as artifacts, and the final model (pickle
serialisation: ``pt2`` would pin the input shapes, useless for videos of any size), registered under
``tracking.registered_model``.

An unreachable tracking server never stops training: every metric first goes to a local JSONL fallback
file next to the run's checkpoints, failed calls are buffered and flushed when the server answers again,
and what could not be delivered is reported at the end. Runs always end FINISHED or FAILED.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

from gvseg.config import Config, flatten

# Fail fast instead of MLflow's default minutes of retries: we buffer and retry ourselves.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402

SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key|access[_-]?key|credential)", re.I)
URI_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+:[^/@\s]+@")
REDACTED = "***"


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Hide values of secret-looking keys and user:password@ parts of URIs."""
    out = {}
    for k, v in params.items():
        if SECRET_KEY.search(k):
            out[k] = REDACTED if v not in ("", None) else v
        elif isinstance(v, str):
            out[k] = URI_CREDENTIALS.sub(f"{REDACTED}@", v)
        else:
            out[k] = v
    return out


def default_tracking_uri() -> str:
    return f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def resolve_tracking_uri(cfg: Config) -> str:
    return cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def artifacts_beside(uri: str) -> str | None:
    """For a sqlite store, keep artifacts in ``mlruns/`` next to the database file, not in whatever directory
    the process happens to run in (MLflow's default); servers choose their own."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri[len("sqlite:///"):]).parent / "mlruns").resolve().as_uri()


def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class RunLogger:
    """One MLflow run. Construct on the driver with ``create``, or attach to an existing run id."""

    def __init__(self, tracking_uri: str, run_id: str, fallback_dir: str | Path):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.fallback = Path(fallback_dir) / "metrics_fallback.jsonl"
        self.fallback.parent.mkdir(parents=True, exist_ok=True)
        self.pending: list[tuple[dict[str, float], int, int]] = []  # (metrics, step, timestamp ms)
        self.failures = 0
        self._next_retry = 0.0
        self.client = mlflow.MlflowClient(tracking_uri)

    # ---------------------------------------------------------------------------------- lifecycle

    @staticmethod
    def create(cfg: Config, *, recipe: str, fallback_dir: str | Path) -> RunLogger:
        """Create the run, or resume the one with the same run name (re-running a command resumes it)."""
        uri = resolve_tracking_uri(cfg)
        mlflow.set_tracking_uri(uri)  # the first use of a new sqlite db migrates it (~2 s): do it here, once
        client = mlflow.MlflowClient(uri)
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(
            cfg.tracking.experiment, artifact_location=artifacts_beside(uri))
        run_name = cfg.tracking.run_name or cfg.name
        found = client.search_runs([exp_id], filter_string=f"tags.mlflow.runName = '{run_name}'",
                                   order_by=["attributes.start_time DESC"], max_results=1)
        tags = {"git_sha": git_sha(), "recipe": recipe, "task": cfg.model.task, "dataset": cfg.data.format}
        if found and found[0].info.status != "FINISHED":
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "resumed", "true")
        else:
            run = client.create_run(exp_id, run_name=run_name, tags=tags)
            run_id = run.info.run_id
            params = redact(flatten(cfg))
            items = [mlflow.entities.Param(k, str(v)[:6000]) for k, v in params.items()]
            for i in range(0, len(items), 100):
                client.log_batch(run_id, params=items[i:i + 100])
        return RunLogger(uri, run_id, fallback_dir)

    def start_system_metrics(self) -> Any:
        """Sample CPU/GPU/memory into the run in a background thread (needs psutil)."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(self.run_id, sampling_interval=5, samples_before_logging=1,
                                           resume_logging=True, tracking_uri=self.tracking_uri)
            monitor.start()
            return monitor
        except Exception as e:  # system metrics are a nicety; never fail a run for them
            print(f"gvseg: system metrics unavailable ({e})")
            return None

    def end(self, status: str = "FINISHED") -> None:
        self.flush(force=True)
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as e:
            print(f"gvseg: could not mark MLflow run {self.run_id} {status} ({e}); "
                  f"metrics are safe in {self.fallback}")

    # ------------------------------------------------------------------------------------ metrics

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        ts = int(time.time() * 1000)
        clean = {k: float(v) for k, v in metrics.items()}
        with self.fallback.open("a") as f:  # always: nothing is lost, whatever the server does
            f.write(json.dumps({"step": step, "timestamp": ts, **clean}) + "\n")
        self.pending.append((clean, step, ts))
        self.flush()

    def flush(self, force: bool = False) -> bool:
        if not self.pending or (not force and time.monotonic() < self._next_retry):
            return not self.pending
        batch = [mlflow.entities.Metric(k, v, ts, step) for m, step, ts in self.pending for k, v in m.items()]
        try:
            for i in range(0, len(batch), 1000):
                self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])
        except Exception as e:
            self.failures += 1
            self._next_retry = time.monotonic() + min(60.0, 2.0 ** self.failures)
            if self.failures == 1:
                print(f"gvseg: MLflow unreachable ({type(e).__name__}); buffering metrics, "
                      f"local copy in {self.fallback}")
            return False
        if self.failures:
            print(f"gvseg: MLflow reachable again; flushed {len(self.pending)} buffered steps")
        self.pending.clear()
        self.failures = 0
        return True

    def log_params(self, params: dict[str, Any]) -> None:
        self._safe(lambda: self.client.log_batch(
            self.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in redact(params).items()]))

    # ---------------------------------------------------------------------------------- artifacts

    def log_image(self, image: Any, key: str, step: int) -> None:
        self._safe(lambda: self.client.log_image(self.run_id, image, key=key, step=step, synchronous=True))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._safe(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self._safe(lambda: self.client.log_dict(self.run_id, data, name))

    def log_model(self, model: Any, registered_model: str = "") -> None:
        """Pickle-serialised PyTorch model (any input shape), registered if a name is configured.
        Call it last, just before ``end``: the fluent ``start_run`` context marks the run FINISHED."""

        def do() -> None:
            mlflow.set_tracking_uri(self.tracking_uri)
            with mlflow.start_run(run_id=self.run_id):
                mlflow.pytorch.log_model(
                    model, name="model", serialization_format="pickle",
                    registered_model_name=registered_model or None,
                    pip_requirements=["torch==2.14.1", "timm==1.0.31", "gvseg"],
                )

        self._safe(do)

    def _safe(self, fn: Any) -> None:
        try:
            fn()
        except Exception as e:
            print(f"gvseg: MLflow call failed ({type(e).__name__}: {e}); training continues")
