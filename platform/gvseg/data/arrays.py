"""Small array kernels shared by the format decoders and the clip transforms (no reader imports: cheap).

Each is the exact result of a plain NumPy expression, done the cheap way (issue #17, benchmarks/clip_pipeline.py).
"""

from __future__ import annotations

import cv2
import numpy as np


def lookup(lut: np.ndarray, values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``lut[values]`` (every value must be < len(lut)), written into ``out`` when given.

    A 2-D uint8 map through a uint8 table of at most 256 entries goes through ``cv2.LUT``: 0.26 ms against
    0.69 ms for ``np.take`` on a 720x960 map (NumPy widens every index to intp first). Anything else is
    ``np.take``."""
    if values.dtype != np.uint8 or lut.dtype != np.uint8 or len(lut) > 256 or values.ndim != 2:
        return np.take(lut, values, out=out)
    table = lut if len(lut) == 256 else np.pad(lut, (0, 256 - len(lut)))
    res = cv2.LUT(values, table, dst=out)
    if out is None:
        return res
    if res.ctypes.data != out.ctypes.data:  # cv2 wrote a new array (a destination layout it cannot take)
        out[...] = res
    return out


def runs(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-major runs of equal values of a map: (lengths [R] intp, values [R]); ``np.repeat(values, lengths)``
    is the flattened map again.

    Label maps are piecewise constant, so R is small (a few thousand on a real map), and what a decoder needs
    (the distinct values, a code per pixel) is found on the R runs instead of the H x W pixels: no
    ``np.unique`` sort of every pixel (2.8 ms a 480x640 map) and no per-pixel gather through a 2**24 table
    (1.6 ms with the intp index copy NumPy makes)."""
    flat = values.reshape(-1)
    if flat.size == 0:
        return np.zeros(0, np.intp), flat[:0]
    starts = np.flatnonzero(flat[1:] != flat[:-1]) + 1  # [R - 1] positions where a new run begins
    starts = np.concatenate([np.zeros(1, np.intp), starts])  # [R]
    return np.diff(starts, append=flat.size), flat[starts]


def paint_runs(lengths: np.ndarray, run_codes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The map of ``shape`` whose r-th run (of :func:`runs`) holds ``run_codes[r]``."""
    return np.repeat(run_codes, lengths).reshape(shape)
