"""MLflow tracking for one training run (driver and rank 0 only).

What is logged: the flattened config as params (credentials redacted), tags (git sha, recipe, task,
dataset), per-step losses and learning rates, eval metrics, system metrics, prediction overlays as a PNG
image series (``log_image(key=, step=)``: the artifact browser previews PNG), checkpoints as artifacts, and
the final model as a pyfunc (``gvseg.runtime.mlflow_model``: state dict + config read with
``weights_only=True``, no pickle), registered under ``tracking.registered_model`` with a description and
the recipe, git sha and metrics as version tags.

Each step appears once per metric, even across worker and driver restarts. Training metrics are *held*
(:meth:`RunLogger.hold`) until the checkpoint that covers them is committed (:meth:`RunLogger.commit`):
the metrics of work lost in a crash are never logged, and the replayed steps are logged once, by the
run that kept them. Every committed metric also goes to a local JSONL file next to the run's checkpoints
(with the run id), which records what was committed: a step already committed for a key is never sent
again (a restart that replays from an older checkpoint, a re-run of the final evaluation).

An unreachable tracking server never stops training: failed calls are buffered and flushed when the server
answers again, and what could not be delivered is reported at the end. System metrics are sampled from the
start of the run to its end, through outages (buffered like the rest). Runs always end FINISHED or FAILED.

Credentials: the tracking URI's ``user:password@`` is redacted in params, tags, checkpoints and console
lines, and MLflow's own "View run at <URI>" line is suppressed when the URI carries credentials.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from gvseg import checkpoint
from gvseg.checkpoint import REDACTED, SECRET_KEY, URI_CREDENTIALS, redact_value  # noqa: F401 - re-exported
from gvseg.config import Config, flatten

# Fail fast instead of MLflow's default minutes of retries: we buffer and retry ourselves.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

import mlflow  # noqa: E402

MODEL_LOADER = "gvseg.runtime.mlflow_model"
_PARAM_KEY = re.compile(r"[^\w\-. :/]")  # what MLflow refuses in a param key


def redact(params: dict[str, Any]) -> dict[str, Any]:
    """Hide values of secret-looking keys and user:password@ parts of URIs."""
    return {k: redact_value(k, v) for k, v in params.items()}


def has_credentials(uri: str) -> bool:
    return bool(URI_CREDENTIALS.search(uri or ""))


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


def log_params(client: mlflow.MlflowClient, run_id: str, params: dict[str, Any]) -> None:
    """Log ``params`` on the run, the one way gvseg logs params (a training run's config, a sweep's search
    space, a trial's config): credentials redacted (:func:`redact`), keys made MLflow-legal (only
    ``[\\w\\-. :/]``: ``variant.+spa`` -> ``variant._spa``; at most 250 characters), values cut at 6000
    characters (MLflow's limit), in batches of 100 (the most one ``log_batch`` call takes)."""
    items = [mlflow.entities.Param(_PARAM_KEY.sub("_", k)[:250], str(v)[:6000]) for k, v in redact(params).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


class RunLogger:
    """One MLflow run. Construct on the driver with ``create``, or attach to an existing run id."""

    def __init__(self, tracking_uri: str, run_id: str, fallback_dir: str | Path, *, recipe: str = ""):
        self.tracking_uri = tracking_uri
        self.run_id = run_id
        self.recipe = recipe
        self.fallback = Path(fallback_dir) / "metrics_fallback.jsonl"
        self.fallback.parent.mkdir(parents=True, exist_ok=True)
        self.held: list[tuple[dict[str, float], int, int]] = []  # not yet covered by a committed checkpoint
        self.pending: list[tuple[dict[str, float], int, int]] = []  # (metrics, step, timestamp ms), unsent
        self.committed = self._committed_steps()  # metric key -> last step committed for this run
        self.failures = 0
        self._next_retry = 0.0
        if has_credentials(tracking_uri):  # MLflow would print "View run ... at <URI>", password and all
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        self.client = mlflow.MlflowClient(tracking_uri)

    def _committed_steps(self) -> dict[str, int]:
        last: dict[str, int] = {}
        if not self.fallback.exists():
            return last
        for line in self.fallback.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a crash mid-write
                continue
            if row.get("run_id") != self.run_id:
                continue
            step = int(row["step"])
            for k in row:
                if k not in ("run_id", "step", "timestamp"):
                    last[k] = max(step, last.get(k, step))
        return last

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
            log_params(client, run_id, flatten(cfg))
        return RunLogger(uri, run_id, fallback_dir, recipe=recipe)

    def start_system_metrics(self, node_id: str | None = None, interval: float = 5.0) -> SystemMetrics | None:
        """Sample CPU/GPU/memory into the run in a background thread (needs psutil) until ``finish()``."""
        try:
            monitor = SystemMetrics(self.run_id, self.tracking_uri, node_id=node_id, interval=interval)
            monitor.start()
            return monitor
        except Exception as e:  # system metrics are a nicety; never fail a run for them
            print(f"gvseg: system metrics unavailable ({type(e).__name__}: {e})")
            return None

    def end(self, status: str = "FINISHED") -> None:
        if self.held:  # only after a failure: the checkpoint covering them was never written
            print(f"gvseg: {len(self.held)} logged steps after the last checkpoint are not kept "
                  f"(a resume replays them)")
            self.held.clear()
        self.flush(force=True)
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as e:
            print(f"gvseg: could not mark MLflow run {self.run_id} {status} ({e}); "
                  f"metrics are safe in {self.fallback}")

    def set_tag(self, key: str, value: str) -> None:
        self._safe(lambda: self.client.set_tag(self.run_id, key, redact_value(key, str(value))[:5000]))

    # ------------------------------------------------------------------------------------ metrics

    def hold(self, metrics: dict[str, float], step: int) -> None:
        """A training step's metrics, kept until :meth:`commit` of a checkpoint at ``step`` or later."""
        self.held.append(({k: float(v) for k, v in metrics.items()}, step, int(time.time() * 1000)))

    def commit(self, step: int) -> None:
        """The checkpoint at ``step`` is safe: log every held metric up to ``step``."""
        ready = [h for h in self.held if h[1] <= step]
        self.held = [h for h in self.held if h[1] > step]
        for metrics, s, ts in ready:
            self._record(metrics, s, ts)
        self.flush()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Log now (evaluation results, summaries): for metrics no checkpoint needs to cover."""
        self._record({k: float(v) for k, v in metrics.items()}, step, int(time.time() * 1000))
        self.flush()

    def _record(self, metrics: dict[str, float], step: int, ts: int) -> None:
        fresh = {k: v for k, v in metrics.items() if step > self.committed.get(k, -1)}
        if not fresh:  # every key already committed at this step (a replay): logged once, by the first
            return
        with self.fallback.open("a") as f:  # always: nothing committed is lost, whatever the server does
            f.write(json.dumps({"run_id": self.run_id, "step": step, "timestamp": ts, **fresh}) + "\n")
        for k in fresh:
            self.committed[k] = step
        self.pending.append((fresh, step, ts))

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

    # ---------------------------------------------------------------------------------- artifacts

    def log_image(self, image: Any, key: str, step: int) -> None:
        """One PNG per step under ``images/`` (what the artifact browser previews; MLflow's default image
        series also writes a webp, which it cannot preview)."""

        def do() -> None:
            from PIL import Image

            img = image if isinstance(image, Image.Image) else Image.fromarray(image)
            with tempfile.TemporaryDirectory() as d:
                path = Path(d) / f"{key}_step_{step:04d}.png"
                img.save(path)
                self.client.log_artifact(self.run_id, str(path), f"images/{key}")

        self._safe(do)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._safe(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self._safe(lambda: self.client.log_dict(self.run_id, data, name))

    def log_model(self, checkpoint_path: str | Path, registered_model: str = "", *,
                  metrics: dict[str, float] | None = None) -> None:
        """The trained model as an MLflow pyfunc that loads without unpickling (see ``mlflow_model``):
        the checkpoint's weights and redacted config, read back with ``weights_only=True``. Registered when
        a name is configured; the version gets a description and the recipe, git sha and metrics as tags.
        No fluent ``start_run``: it would print the tracking URI and mark the run FINISHED."""
        metrics = {k: float(v) for k, v in (metrics or {}).items() if v == v}

        def do() -> None:
            state = checkpoint.load(checkpoint_path)
            sha = git_sha()
            meta = {"recipe": self.recipe, "git_sha": sha, "step": int(state.get("step", 0)),
                    "task": state["config"]["model"]["task"], "metrics": metrics}
            with tempfile.TemporaryDirectory() as d:
                data = Path(d) / "gvseg"
                checkpoint.save({"model": state["model"], "config": checkpoint.redact_config(state["config"]),
                                 "step": int(state.get("step", 0))}, data)
                mlflow.set_tracking_uri(self.tracking_uri)
                info = mlflow.models.Model.log(
                    None, name="model", flavor=mlflow.pyfunc, run_id=self.run_id, loader_module=MODEL_LOADER,
                    data_path=str(data), registered_model_name=registered_model or None, metadata=meta,
                    pip_requirements=["torch==2.14.1", "timm==1.0.31", "gvseg"])
            version = getattr(info, "registered_model_version", None)
            if registered_model and version is not None:
                headline = ", ".join(f"{k} {v:.4f}" for k, v in sorted(metrics.items())[:8])
                self.client.update_model_version(
                    registered_model, str(version),
                    description=(f"GvSeg {meta['task']} model, {meta['step']} steps, recipe {self.recipe or '?'}, "
                                 f"git {sha}. Load: mlflow.pyfunc.load_model(...).predict(frames [T, H, W, 3] "
                                 f"uint8) -> id_map / semantic [T, H, W]. Metrics: {headline}"))
                tags = {"recipe": self.recipe, "git_sha": sha, "run_id": self.run_id,
                        "metrics": json.dumps(metrics, sort_keys=True)[:5000],
                        **{f"metric.{k}": f"{v:.6g}" for k, v in metrics.items()}}
                for k, v in tags.items():
                    self.client.set_model_version_tag(registered_model, str(version), k, v)

        self._safe(do)

    def _safe(self, fn: Any) -> None:
        try:
            fn()
        except Exception as e:
            print(f"gvseg: MLflow call failed ({type(e).__name__}: {redact_value('', str(e))[:500]}); "
                  f"training continues")


def _system_metrics_monitor_class() -> type:
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    return SystemMetricsMonitor


class SystemMetrics:
    """CPU/GPU/memory/disk/network sampled every ``interval`` s from ``start()`` to ``finish()``.

    MLflow's own ``SystemMetricsMonitor`` thread ends for good on the first failed call ("Failed to get
    mlflow run"), so a tracking-server outage stopped system metrics for the rest of the run. This reuses
    its samplers, but keeps sampling through outages: samples are buffered and sent when the server is
    back. Steps continue after the run's last system-metric step (a resumed run, a second monitor)."""

    def __init__(self, run_id: str, tracking_uri: str, *, node_id: str | None = None, interval: float = 5.0):
        base = _system_metrics_monitor_class()(run_id, sampling_interval=interval, samples_before_logging=1,
                                               resume_logging=False, node_id=node_id, tracking_uri=tracking_uri)
        self.samplers = base.monitors
        self.interval = float(base.sampling_interval)
        self.prefix = "system/" + (f"{base.node_id}/" if base.node_id else "")
        self.run_id = run_id
        self.client = mlflow.MlflowClient(tracking_uri)
        self.step: int | None = None  # resolved on the first successful contact
        self.pending: list[tuple[dict[str, float], int]] = []  # (metrics, timestamp ms), steps not yet given
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True, name="gvseg-system-metrics")
        self._thread.start()

    def _loop(self) -> None:
        while True:
            stopping = self._stop.wait(self.interval)
            try:
                for m in self.samplers:
                    m.collect_metrics()
                sample = {self.prefix + k: float(v) for m in self.samplers for k, v in m.aggregate_metrics().items()}
                for m in self.samplers:
                    m.clear_metrics()
                self.pending.append((sample, int(time.time() * 1000)))
            except Exception:  # a sampler hiccup (a vanished GPU, a psutil race): skip this sample
                pass
            self._send()
            if stopping:
                return

    def _next_step(self) -> int:
        history = [m.step for m in self.client.get_run(self.run_id).data._metric_objs
                   if m.key.startswith(self.prefix)]
        return max(history) + 1 if history else 0

    def _send(self) -> None:
        try:
            if self.step is None:
                self.step = self._next_step()
            batch = [mlflow.entities.Metric(k, v, ts, self.step + i)
                     for i, (sample, ts) in enumerate(self.pending) for k, v in sample.items()]
            for i in range(0, len(batch), 1000):
                self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])
            self.step += len(self.pending)
            self.pending.clear()
        except Exception:  # the server is away: keep the samples (bounded), try again next interval
            del self.pending[:-2000]

    def finish(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout=30)
        self._thread = None
