"""Run a recipe on a Ray cluster as a Ray job, and manage the cluster's jobs.

    gvseg submit RECIPE [--set k=v ...] --address http://HEAD:8265 [--runtime-env cluster/runtime_env.yaml] [--wait]
    gvseg jobs list|status|logs|stop [JOB_ID] [--follow]

``submit`` sends the shell command ``python -m gvseg.cli train RECIPE --set ...`` (or ``tune``) to the
head's dashboard through ``ray.job_submission.JobSubmissionClient``. The job runs in a Ray *runtime
environment* that carries:

- ``working_dir``: this checkout (code, recipes, sweeps), minus data, venvs, outputs and ``.git``
  (``EXCLUDES``). ``PYTHONPATH`` gets its ``platform/`` (relative: every Ray process starts in the
  working dir), so the cluster runs *this* code, not whatever gvseg the image installed. (Not
  ``py_modules``: Ray applies ``excludes`` to those too, and ``/data/`` would drop ``gvseg/data``.);
- ``pip``: the exact pins of ``pyproject.toml`` (a no-op on an image that already has them);
- ``env_vars``: telemetry off, plus whatever the runtime-env YAML sets (``MLFLOW_TRACKING_URI``,
  ``GVSEG_STORAGE_PATH``). Credentials travel only here, never in the entrypoint (which ``gvseg jobs list``
  shows): a ``--set tracking.tracking_uri=http://user:pass@host`` becomes ``MLFLOW_TRACKING_URI``.

The recipe is resolved locally first, so a bad ``--set`` fails here, in a second, not on the cluster.
A cluster job must write checkpoints to shared storage: ``submit`` refuses when neither
``runtime.storage_path`` nor ``GVSEG_STORAGE_PATH`` in the runtime env says where.

Authentication: Ray 2.60 turns token auth on by default, and cluster/ sets ``RAY_AUTH_MODE=token`` on
every node explicitly. The token is read from ``RAY_AUTH_TOKEN``,
else the file ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (Ray's own order, see
``ray/_private/authentication``) and sent as ``Authorization: Bearer <token>`` on every request, the
header the dashboard's token middleware checks (``http_token_authentication.py``). With no token the
request goes without it, which an auth-disabled head accepts and an auth-enabled one rejects with
a message naming the fix.

Errors (unreachable head, unknown job id, bad runtime-env file) raise ``JobError`` naming the address,
job or file; the CLI (``gvseg.cli.cmd_submit``, ``cmd_jobs``) prints one line and exits 1.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

# Anchored (leading "/") gitignore-style patterns, relative to working_dir: a bare "data/" would also drop
# the package platform/gvseg/data/. Ray also honours the checkout's .gitignore; these hold without one.
EXCLUDES = ["/data/", "/.venv/", "/runs/", "/mlruns/", "/mlartifacts/", "/mlflow.db", "/.git/",
            "/benchmarks/data/", "/.whl/", "__pycache__/", "*.egg-info/", ".pytest_cache/", ".ruff_cache/"]
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT: MLflow prints "View run at <tracking URI>", user:password@ and all,
# and job logs are readable by anyone who reaches the dashboard.
HYGIENE_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0",
               "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true"}


class JobError(RuntimeError):
    """A job-submission failure with a message that names the address, job or file."""


# ------------------------------------------------------------------------------------------ auth, client


def auth_token() -> str | None:
    """The Ray auth token, found the way Ray finds it; None when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:  # Ray treats an unreadable explicit path as fatal, not as "no token"
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as e:
            raise JobError(f"{path}: RAY_AUTH_TOKEN_PATH is set but unreadable ({e.strerror})") from None
        if not token:
            raise JobError(f"{path}: RAY_AUTH_TOKEN_PATH points at an empty file")
        return token
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        return default.read_text().strip() or None
    return None


def auth_headers() -> dict[str, str]:
    token = auth_token()
    return {"Authorization": f"Bearer {token}"} if token else {}


def resolve_address(address: str | None) -> str:
    """--address, else RAY_API_SERVER_ADDRESS, else an http RAY_ADDRESS (the dashboard, not the GCS)."""
    address = address or os.environ.get("RAY_API_SERVER_ADDRESS") or ""
    if not address and os.environ.get("RAY_ADDRESS", "").startswith(("http://", "https://")):
        address = os.environ["RAY_ADDRESS"]
    if not address:
        raise JobError("no Ray dashboard address: pass --address http://HEAD:8265 "
                       "(or set RAY_API_SERVER_ADDRESS)")
    if "://" not in address:
        address = f"http://{address}"
    return address


def client(address: str | None) -> Any:
    """A JobSubmissionClient for the head at ``address`` that sends the auth token."""
    from ray.job_submission import JobSubmissionClient

    address = resolve_address(address)
    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as e:  # ConnectionError, or an auth failure surfaced as RuntimeError
        raise JobError(f"{address}: cannot reach the Ray dashboard ({_one_line(e)}). Is the head up, "
                       "started with ray[default] and --include-dashboard=true, and is the token right?") from None


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text[:300] + ("..." if len(text) > 300 else "")


# ---------------------------------------------------------------------------------------- runtime env


def project_root(start: Path | None = None) -> Path:
    """The checkout to ship: the nearest directory at or above ``start`` holding pyproject.toml."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "pyproject.toml").is_file() and (d / "platform" / "gvseg").is_dir():
            return d
    raise JobError(f"{here}: not inside a gvseg checkout (no pyproject.toml with platform/gvseg above it)")


def pinned_requirements(root: Path) -> list[str]:
    """``[project].dependencies`` of pyproject.toml: the exact pins every node must run."""
    path = root / "pyproject.toml"
    try:
        deps = tomllib.loads(path.read_text())["project"]["dependencies"]
    except (OSError, KeyError, tomllib.TOMLDecodeError) as e:
        raise JobError(f"{path}: cannot read [project].dependencies ({_one_line(e)})") from None
    return list(deps)


def default_runtime_env(root: Path) -> dict[str, Any]:
    return {
        "working_dir": str(root),
        "excludes": list(EXCLUDES),
        "pip": {"packages": pinned_requirements(root), "pip_check": False},
        "env_vars": dict(HYGIENE_ENV),
    }


def load_runtime_env(path: str | Path | None, root: Path) -> dict[str, Any]:
    """Read a runtime-env YAML (or build the default), resolve local paths, enforce the excludes and
    ``platform`` on ``PYTHONPATH``.

    Relative ``working_dir``/``py_modules`` paths are relative to the checkout root (the YAML is shared
    by everyone, wherever they run ``gvseg submit`` from). Remote URIs (``s3://...zip``) pass through.
    """
    if path is None:
        env = default_runtime_env(root)
    else:
        import yaml

        p = Path(path)
        try:
            env = yaml.safe_load(p.read_text())
        except OSError as e:
            raise JobError(f"{p}: cannot read the runtime env ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise JobError(f"{p}: not valid YAML ({_one_line(e)})") from None
        if not isinstance(env, dict):
            raise JobError(f"{p}: a runtime env must be a mapping (working_dir, py_modules, pip, env_vars)")
    env = dict(env)

    def local(value: str, key: str) -> str:
        if "://" in value:
            return value
        q = Path(value)
        q = q if q.is_absolute() else root / q
        if not q.exists():
            raise JobError(f"{path or 'runtime env'}: {key} {value!r} does not exist ({q})")
        return str(q.resolve())

    env["working_dir"] = local(str(env.get("working_dir", ".")), "working_dir")
    if env.get("py_modules"):
        env["py_modules"] = [local(str(m), "py_modules") for m in env["py_modules"]]
    excludes = list(env.get("excludes") or [])
    env["excludes"] = excludes + [e for e in EXCLUDES if e not in excludes]  # user patterns can only add
    env_vars = {k: str(v) for k, v in (env.get("env_vars") or {}).items()}
    paths = [q for q in env_vars.get("PYTHONPATH", "").split(os.pathsep) if q]
    env_vars["PYTHONPATH"] = os.pathsep.join(["platform", *[q for q in paths if q != "platform"]])
    env["env_vars"] = {**HYGIENE_ENV, **env_vars}
    return env


# -------------------------------------------------------------------------------------------- submit


def entrypoint(recipe: str, sets: list[str], *, tune: bool = False, extra: list[str] | tuple = ()) -> str:
    """The shell command the job runs on the head, e.g. ``python -m gvseg.cli train tasks/x.py:debug ...``.

    ``python -m`` rather than the ``gvseg`` script: it resolves through PYTHONPATH to the shipped code even
    where no gvseg is installed. ``--address auto`` joins the job's own cluster (Ray sets RAY_ADDRESS for
    the entrypoint) instead of starting an embedded Ray inside the job.
    """
    args = ["python", "-m", "gvseg.cli", "tune" if tune else "train", recipe]
    for s in sets:
        args += ["--set", s]
    return shlex.join([*args, "--address", "auto", *extra])


def move_credentials(sets: list[str], env_vars: dict[str, str]) -> list[str]:
    """Keep credentials out of the entrypoint, which ``ray job list`` / ``gvseg jobs list`` and the
    dashboard show to anyone: a ``tracking.tracking_uri`` with ``user:password@`` moves to the job's
    ``MLFLOW_TRACKING_URI`` env var (runtime_env ``env_vars``, which the config falls back on); any other
    credential-bearing ``--set`` is refused with the fix. Returns the sets to put in the entrypoint."""
    from gvseg.checkpoint import SECRET_KEY, URI_CREDENTIALS

    kept = []
    for s in sets:
        key, _, value = s.partition("=")
        key = key.strip()
        if key == "tracking.tracking_uri" and URI_CREDENTIALS.search(value):
            env_vars["MLFLOW_TRACKING_URI"] = value.strip()
            continue
        if URI_CREDENTIALS.search(value) or (SECRET_KEY.search(key) and value.strip()):
            raise JobError(f"--set {key}=...: a credential would be visible in the job's entrypoint "
                           f"(ray job list); set it in the runtime env's env_vars instead")
        kept.append(s)
    return kept


def _recipe_in_checkout(recipe: str, root: Path) -> str:
    """The recipe path relative to the shipped working_dir (the job's cwd)."""
    file, _, fn = recipe.partition(":")
    p = Path(file)
    p = (p if p.is_absolute() else Path.cwd() / p).resolve()
    if not p.is_file():
        raise JobError(f"{file}: recipe file not found")
    try:
        rel = p.relative_to(root)
    except ValueError:
        raise JobError(f"{file}: the recipe must live inside the shipped checkout {root}") from None
    return f"{rel.as_posix()}:{fn}" if fn else rel.as_posix()


def check_config(recipe: str, sets: list[str], runtime_env: dict[str, Any], *, tune: bool = False) -> Any:
    """Resolve the recipe (or the sweep's base config) locally, so bad keys fail here, and insist on
    shared checkpoint storage."""
    from gvseg.config import ConfigError, apply_overrides
    from gvseg.recipes import load_recipe, load_sweep

    cfg = apply_overrides(load_sweep(recipe).base if tune else load_recipe(recipe), sets)
    if not (cfg.runtime.storage_path or runtime_env["env_vars"].get("GVSEG_STORAGE_PATH")):
        raise ConfigError("a cluster run needs shared checkpoint storage: --set runtime.storage_path=s3://... "
                          "(or an NFS/PVC path every node mounts), or GVSEG_STORAGE_PATH in the runtime env's "
                          "env_vars")
    if not (cfg.tracking.tracking_uri or runtime_env["env_vars"].get("MLFLOW_TRACKING_URI")):
        print("gvseg: warning: no tracking.tracking_uri or MLFLOW_TRACKING_URI; the job will log to a sqlite "
              "file inside its working dir on the head", file=sys.stderr)
    return cfg


def submit(recipe: str, sets: list[str], address: str | None, runtime_env: str | Path | None = None,
           wait: bool = False, tune: bool = False, *, extra: list[str] | tuple = (),
           submission_id: str | None = None, pip: bool = True, progress: bool = True,
           timeout_s: float | None = None) -> str:
    """Submit ``gvseg train`` (or ``tune``) as a Ray job. Returns the submission id.

    With ``wait`` the job's logs stream to stdout until it ends, and a job that does not SUCCEED raises
    ``JobError``; ``timeout_s`` bounds that wait (the job keeps running; ``gvseg jobs stop`` ends it).
    ``pip=False`` drops the pinned requirements from the runtime env: for an image that
    already has them, where Ray's pip step is a no-op that still builds a virtualenv per job (on a head
    that itself runs in a venv, Ray clones that whole venv: GBs and tens of seconds).
    """
    root = project_root()
    env = load_runtime_env(runtime_env, root)
    if not pip:
        env.pop("pip", None)
    rel = _recipe_in_checkout(recipe, root)
    check_config(recipe, sets, env, tune=tune)
    sets = move_credentials(sets, env["env_vars"])
    move_credentials(list(extra), {})  # extra CLI args go to the entrypoint as they are: no credentials there
    c = client(address)
    command = entrypoint(rel, sets, tune=tune, extra=extra)
    try:
        job_id = c.submit_job(entrypoint=command, runtime_env=env, submission_id=submission_id,
                              metadata={"gvseg_recipe": rel, "gvseg_command": "tune" if tune else "train"})
    except Exception as e:
        raise JobError(f"{c.get_address()}: job submission failed ({_one_line(e)})") from None
    print(f"gvseg: submitted {job_id} to {c.get_address()}: {command}")
    if wait:
        final = wait_for(c, job_id, stream=progress, timeout_s=timeout_s)
        if final != "SUCCEEDED":
            info = c.get_job_info(job_id)
            raise JobError(f"job {job_id} ended {final}: {info.message or 'see gvseg jobs logs ' + job_id}")
        print(f"gvseg: job {job_id} SUCCEEDED")
    return job_id


def wait_for(c: Any, job_id: str, *, stream: bool = True, poll_s: float = 1.0, timeout_s: float | None = None) -> str:
    """Block until the job is terminal (streaming its logs when ``stream``); returns the final status."""
    t0 = time.monotonic()
    if stream:
        try:
            asyncio.run(asyncio.wait_for(_tail(c, job_id), timeout_s))
        except TimeoutError:
            pass  # the status check below says what the job is doing
        except Exception as e:  # a dropped websocket must not lose the job: fall back to polling
            print(f"gvseg: log stream ended ({_one_line(e)}); polling status", file=sys.stderr)
    while True:
        status = str(c.get_job_status(job_id).value)
        if status in TERMINAL:
            return status
        if timeout_s is not None and time.monotonic() - t0 > timeout_s:
            raise JobError(f"job {job_id} still {status} after {timeout_s:.0f} s (--timeout); it keeps running: "
                           f"gvseg jobs logs {job_id} to look, gvseg jobs stop {job_id} to end it")
        time.sleep(poll_s)


async def _tail(c: Any, job_id: str) -> None:
    async for chunk in c.tail_job_logs(job_id):
        print(chunk, end="", flush=True)


# -------------------------------------------------------------------------------------- manage jobs


def _known(c: Any, job_id: str) -> Any:
    try:
        return c.get_job_info(job_id)
    except Exception as e:
        raise JobError(f"{c.get_address()}: no job {job_id!r} ({_one_line(e)})") from None


def list_jobs(address: str | None) -> list[Any]:
    """Every job the head knows, oldest first (``JobDetails``: submission_id, status, entrypoint, ...)."""
    jobs = client(address).list_jobs()
    return sorted(jobs, key=lambda j: j.start_time or 0)


def status(address: str | None, job_id: str) -> str:
    return str(_known(client(address), job_id).status.value)


def logs(address: str | None, job_id: str, follow: bool = False) -> str:
    """The job's driver output so far; with ``follow``, stream it to stdout until the job ends."""
    c = client(address)
    _known(c, job_id)
    if follow:
        wait_for(c, job_id, stream=True)
        return ""
    return c.get_job_logs(job_id)


def stop(address: str | None, job_id: str) -> bool:
    """Ask the head to stop the job. False when it had already ended."""
    c = client(address)
    _known(c, job_id)
    return bool(c.stop_job(job_id))
