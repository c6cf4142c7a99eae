"""Training checkpoints: everything a resumed run needs, written atomically, loaded with weights_only.

A checkpoint holds the model (its buffers carry the VSS class bank), the criterion's state (the TCL
per-class FIFO queues), optimizer, LR scheduler, step, data epoch and every RNG state, plus the config
dict. Only tensors, numbers, strings and containers of them are stored, so
``torch.load(weights_only=True)`` reads it: no arbitrary pickle is ever executed.

Writes go to a temporary file in the target directory, are fsynced, then renamed over the final name:
a crash mid-write leaves the previous checkpoint intact, never a torn one. A file torn afterwards (a full
disk, a bad copy) is skipped on resume: :func:`newest_valid` falls back to the newest checkpoint that loads,
and :func:`prune` never deletes the newest one that does.

The saved config is redacted (:func:`redact_config`): a ``user:password@`` in a URI or the value of a
secret-looking key never reaches a checkpoint file, nor any copy of it (MLflow artifacts, registered models).
"""

from __future__ import annotations

import os
import random
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from gvseg.config import Config, ModelConfig

FILENAME = "checkpoint.pt"
SECRET_KEY = re.compile(r"(password|passwd|secret|token|api[_-]?key|access[_-]?key|credential)", re.I)
URI_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")  # any userinfo: user:password@ or token@
REDACTED = "***"


def redact_value(key: str, value: Any) -> Any:
    """``***`` for a non-empty value of a secret-looking key; a URI's ``user:password@`` becomes ``***@``."""
    if SECRET_KEY.search(key):
        return REDACTED if value not in ("", None) else value
    if isinstance(value, str):
        return URI_CREDENTIALS.sub(f"{REDACTED}@", value)
    return value


def redact_config(config: Any, key: str = "") -> Any:
    """A copy of a nested config dict with every credential redacted (see :func:`redact_value`)."""
    if isinstance(config, dict):
        return {k: redact_config(v, str(k)) for k, v in config.items()}
    if isinstance(config, (list, tuple)):
        return type(config)(redact_config(v, key) for v in config)
    return redact_value(key, config)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy_keys": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "numpy_has_gauss": int(np_state[3]),
        "numpy_gauss": float(np_state[4]),
        "python": _python_rng_to_tensor(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy_keys"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_has_gauss"], state["numpy_gauss"]))
    version, internal, gauss = 3, tuple(int(v) for v in state["python"][:-1].tolist()), None
    if state["python"][-1].item() >= 0:
        gauss = float(state["python"][-1].item())
    random.setstate((version, internal, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _python_rng_to_tensor() -> torch.Tensor:
    _, internal, gauss = random.getstate()
    return torch.tensor([*internal, -1.0 if gauss is None else gauss], dtype=torch.float64)


def build_state(
    *,
    model: torch.nn.Module,
    criterion: torch.nn.Module | None,
    optimizer: torch.optim.Optimizer | None,
    scheduler: Any | None,
    step: int,
    epoch: int,
    config: dict[str, Any],
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    model = getattr(model, "module", model)  # unwrap DDP
    return {
        "model": model.state_dict(),
        "criterion": None if criterion is None else criterion.state_dict(),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "step": int(step),
        "epoch": int(epoch),
        "rng": rng_state(),
        "config": redact_config(config),
        "extra": extra or {},
    }


def save(state: dict[str, Any], directory: str | Path) -> Path:
    """Atomically write ``directory/checkpoint.pt``; returns its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / FILENAME
    fd, tmp = tempfile.mkstemp(prefix=".checkpoint-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return final


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint file (or a directory holding one) with ``weights_only=True``."""
    path = Path(path)
    if path.is_dir():
        path = path / FILENAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a torn or foreign file: say which and why
        raise ValueError(f"{path}: not a readable gvseg checkpoint ({type(e).__name__}: {e})") from e


def restore(
    state: dict[str, Any],
    *,
    model: torch.nn.Module,
    criterion: torch.nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> tuple[int, int]:
    """Load ``state`` into the given objects; returns (step, epoch)."""
    getattr(model, "module", model).load_state_dict(state["model"])
    if criterion is not None and state.get("criterion") is not None:
        criterion.load_state_dict(state["criterion"])
    if optimizer is not None and state.get("optimizer") is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state.get("scheduler") is not None:
        scheduler.load_state_dict(state["scheduler"])
    if restore_rng:
        set_rng_state(state["rng"])
    return int(state["step"]), int(state["epoch"])


def model_weights(saved: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The model's state dict in ``saved`` (what :func:`load` read from ``path``): a training checkpoint's
    ``"model"`` entry, or ``saved`` itself when it is a bare ``torch.save(model.state_dict())``. Anything else
    is one ``ValueError`` naming the file."""
    if isinstance(saved, dict) and isinstance(saved.get("model"), dict):
        return saved["model"]
    if isinstance(saved, dict) and saved and all(isinstance(v, torch.Tensor) for v in saved.values()):
        return saved
    raise ValueError(f"{path}: neither a gvseg checkpoint (no 'model' entry) nor a model state dict")


def load_model(path: str | Path, model_cfg: ModelConfig, device: torch.device | str = "cpu", *,
               saved: Any = None) -> torch.nn.Module:
    """A GvSeg built from ``model_cfg`` with the weights of ``path`` (a checkpoint file or ``step_*`` folder,
    or a bare state dict file), on ``device``, in eval mode. ``saved``: what :func:`load` already read from
    ``path`` (a caller that needed its config first), so the file is not read twice."""
    from gvseg.model.gvseg import build_gvseg

    if saved is None:
        saved = load(path, map_location=device)
    model = build_gvseg(model_cfg)
    model.load_state_dict(model_weights(saved, path))
    return model.to(device).eval()


def verify(path: str | Path) -> dict[str, Any]:
    """Load ``path`` back (weights_only) and check it holds a model and a step; returns the state.
    Raises ``ValueError`` naming the file otherwise. Call it before anything older is deleted."""
    state = load(path)
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path}: not a gvseg training checkpoint (no 'model' or 'step')")
    return state


def run_dir(cfg: Config) -> Path:
    """This run's local files (eval outputs, metric fallback, final checkpoint copy). Under storage_path
    when it is a filesystem (NFS/PVC) path; under <cwd>/runs when it is a URI (s3://, gs://), where Ray
    Train writes the checkpoints itself and a local Path would become a bogus "s3:" directory."""
    storage = cfg.runtime.storage_path
    base = Path.cwd() / "runs" if "://" in storage else Path(storage)
    return base / cfg.tracking.run_name


def step_key(path: str | Path) -> tuple[int, str]:
    """Sort key of a ``step_<N>[-suffix]`` directory: its step, then its name (a re-written step after a
    fallback gets a suffix, so it never shares a path with the torn one an older record points at)."""
    name = Path(path).name
    return int(name.split("_")[1].split("-")[0]), name


def step_dirs(root: str | Path) -> list[Path]:
    """``root/step_*`` directories holding a checkpoint file, oldest first."""
    return sorted((p.parent for p in Path(root).glob("step_*/" + FILENAME)), key=step_key)


def resume_candidates(recorded: str | Path | None, own_root: str | Path | None) -> list[Path]:
    """Checkpoint dirs a restarted run may resume from, oldest first (the newest that loads wins).

    ``recorded``: the local checkpoint the launcher recorded (Ray Train's ``get_checkpoint()``), or None.
    With one, its siblings up to it (so a torn newest falls back to an older one, never to a newer one the
    launcher did not record). Without one, the run's own step dirs under ``own_root`` (local storage; None
    for remote storage): the driver can die after a worker wrote a checkpoint but before the launcher saved
    its record of it, and resuming from the files means no step is trained, and logged, twice."""
    if recorded is not None:
        recorded = Path(recorded)
        return [d for d in step_dirs(recorded.parent) if step_key(d) <= step_key(recorded)]
    return step_dirs(own_root) if own_root is not None else []


def prune(root: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` ``step_*`` checkpoint directories under ``root``, and always the newest
    one that loads (so a torn newest file never leaves the run without a valid checkpoint)."""
    dirs = sorted(Path(root).glob("step_*"), key=step_key)
    if keep <= 0 or len(dirs) <= keep:
        return
    kept = dirs[-keep:]
    valid = newest_valid(kept, quiet=True)
    protect = valid[0] if valid else (newest_valid(dirs[:-keep], quiet=True) or (None,))[0]
    for old in dirs[:-keep]:
        if old == protect:
            continue
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def latest(root: str | Path) -> Path | None:
    dirs = step_dirs(root)
    return dirs[-1] if dirs else None


def newest_valid(candidates: list[Path], *, map_location: str | torch.device = "cpu",
                 quiet: bool = False) -> tuple[Path, dict[str, Any], list[str]] | None:
    """The newest of ``candidates`` (oldest first, as :func:`step_dirs` lists them) that loads:
    ``(path, state, skipped)`` where ``skipped`` says, one line each, which newer ones did not load and why;
    None when none loads. Unless ``quiet``, each skipped one is printed as one line."""
    skipped: list[str] = []
    for path in reversed(candidates):
        try:
            state = load(path, map_location=map_location)
        except (ValueError, FileNotFoundError) as e:
            skipped.append(str(e).splitlines()[0][:300])
            if not quiet:
                print(f"gvseg: skipping unreadable checkpoint: {skipped[-1]}")
            continue
        return path, state, skipped
    return None
