"""Training checkpoints: everything a resumed run needs, written atomically, loaded with weights_only.

A checkpoint holds the model (its buffers carry the VSS class bank), the criterion's state (the TCL
per-class FIFO queues), optimizer, LR scheduler, step, data epoch and every RNG state, plus the config
dict. Only tensors, numbers, strings and containers of them are stored, so
``torch.load(weights_only=True)`` reads it: no arbitrary pickle is ever executed.

Writes go to a temporary file in the target directory, are fsynced, then renamed over the final name:
a crash mid-write leaves the previous checkpoint intact, never a torn one.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

FILENAME = "checkpoint.pt"


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
        "config": config,
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


def prune(root: str | Path, keep: int) -> None:
    """Keep the newest ``keep`` ``step_*`` checkpoint directories under ``root``."""
    dirs = sorted(Path(root).glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    for old in dirs[:-keep] if keep > 0 else []:
        for f in old.iterdir():
            f.unlink()
        old.rmdir()


def latest(root: str | Path) -> Path | None:
    dirs = sorted(Path(root).glob("step_*/" + FILENAME), key=lambda p: int(p.parent.name.split("_")[1]))
    return dirs[-1].parent if dirs else None
