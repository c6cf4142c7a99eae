"""The registered model's MLflow pyfunc loader: ``mlflow.pyfunc.load_model(uri)`` imports this module.

The model is logged with ``loader_module="gvseg.runtime.mlflow_model"`` and ``data_path`` a folder holding
one ``checkpoint.pt`` (weights + the redacted config only). Loading runs *this installed code*, then
``torch.load(weights_only=True)``: nothing is unpickled but tensors and plain containers, so it loads with
``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false`` (the mlflow.pytorch / cloudpickle flavours need pickle).

``predict(frames)``: ``frames`` is one video clip, ``[T, H, W, 3]`` uint8 RGB (a numpy array, or a dict
``{"frames": ...}``). Returns ``{"id_map": [T, H, W] int32, "semantic": [T, H, W] int32}``, the keys the
model's task produces (VPS both, VSS ``semantic``, VIS/EVS ``id_map``; 0 / -1 = void). EVS needs exemplars,
which this interface does not take: it raises.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gvseg import checkpoint


class GvSegPyfunc:
    def __init__(self, data_path: str | Path):
        from gvseg.predict import load_model

        path = Path(data_path)
        self.model, self.cfg = load_model(path if path.is_file() else path / checkpoint.FILENAME)

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        from gvseg.video.stream import predict_video

        frames = model_input["frames"] if isinstance(model_input, dict) else model_input
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"gvseg pyfunc: expected one clip [T, H, W, 3] uint8 RGB, got {frames.shape}")
        if self.cfg.model.task == "evs":
            raise ValueError("gvseg pyfunc: an EVS model needs exemplars; use gvseg predict --exemplars")
        preds = list(predict_video(self.model, list(frames), self.cfg.model, progress=False))
        out: dict[str, np.ndarray] = {}
        for key in ("id_map", "semantic"):
            maps = [getattr(p, key) for p in preds]
            if all(m is not None for m in maps):
                out[key] = np.stack(maps).astype(np.int32)
        return out


def _load_pyfunc(data_path: str) -> GvSegPyfunc:
    """MLflow's loader_module entry point."""
    return GvSegPyfunc(data_path)
