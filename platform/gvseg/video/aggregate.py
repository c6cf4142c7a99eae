"""Two-model aggregation by temporal consistency (paper 003, §2.3, Eq. 5-7): per video, keep the model whose
segmentation agrees best with itself under optical-flow warping.

    flow(prev_rgb, next_rgb)              -> [H, W, 2] float32 Farneback flow (OpenCV), see below
    warp(labels [H, W], flow [H, W, 2])   -> [H, W] labels carried to the next frame (nearest, no blending)
    ssim(a [T, H, W], b [T, H, W])        -> [T] float64, Eq. (7) with global means/variances per map
    consistency(frames, labels)           -> [T-1] SSIM(warp(y_t), y_{t+1}) for t = 0 .. T-2
    choose(frames, labels_a, labels_b)    -> (0 or 1, mean score of a, mean score of b)

Eq. (5): F = OF(x_t, x_{t+1}) by Farneback. Eq. (6): ỹ_{t+1} = Warp(y_t, F). We compute the flow *backwards*
(from x_{t+1} to x_t) so that every pixel of frame t+1 looks up its source in y_t (``cv2.remap``): a
forward flow would have to be splatted, leaving holes. Labels are warped with nearest-neighbour sampling
(no class mixing); pixels whose source falls outside the frame keep the border label.

Eq. (7): SSIM with μ, σ² the mean and variance of each whole map and σ_ab their covariance ("μ and σ
represent the mean and variance of the respective segmentation maps"), C1 = (0.01 L)², C2 = (0.03 L)²,
L = 255 (label maps as 8-bit images). Ties keep model a. Videos of one frame score 1 (nothing to warp).
All SSIM arithmetic is vectorised over frames; only the flow is per frame pair (OpenCV).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

FARNEBACK = dict(pyr_scale=0.5, levels=3, winsize=15, iterations=3, poly_n=5, poly_sigma=1.2, flags=0)
L_RANGE = 255.0


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY) if rgb.ndim == 3 else rgb


def flow(prev_rgb: np.ndarray, next_rgb: np.ndarray) -> np.ndarray:
    """[H, W, 2] backward flow: pixel (x, y) of ``next`` comes from (x + fx, y + fy) of ``prev``."""
    if prev_rgb.shape[:2] != next_rgb.shape[:2]:
        raise ValueError(f"flow: frames are {prev_rgb.shape[:2]} and {next_rgb.shape[:2]}")
    return cv2.calcOpticalFlowFarneback(_gray(next_rgb), _gray(prev_rgb), None, **FARNEBACK)


def warp(labels: np.ndarray, flw: np.ndarray) -> np.ndarray:
    """Eq. (6): carry ``labels`` [H, W] of frame t to frame t+1 with the backward flow of :func:`flow`."""
    h, w = labels.shape
    if flw.shape != (h, w, 2):
        raise ValueError(f"warp: labels are {h}x{w} but the flow is {flw.shape}")
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flw[..., 0], gy + flw[..., 1]
    # float32 labels through remap: exact for |label| < 2^24 (nearest: no mixing)
    out = cv2.remap(labels.astype(np.float32), mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)
    return out.astype(labels.dtype)


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = L_RANGE) -> np.ndarray:
    """Eq. (7) per map: a, b [T, H, W] (or [H, W]) -> [T] float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"ssim: shapes differ, {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[None], b[None]
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = a.mean(1), b.mean(1)
    var_a, var_b = a.var(1), b.var(1)
    cov = ((a - mu_a[:, None]) * (b - mu_b[:, None])).mean(1)
    return ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))


def consistency(frames: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                flows: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """[T-1] SSIM(warp(y_t, F_t), y_{t+1}). ``flows`` (from :func:`flows_of`) can be shared between models."""
    if len(frames) != len(labels):
        raise ValueError(f"consistency: {len(frames)} frames but {len(labels)} label maps")
    if len(labels) < 2:
        return np.ones(0)
    flows = flows if flows is not None else flows_of(frames)
    warped = np.stack([warp(labels[t], flows[t]) for t in range(len(labels) - 1)])  # [T-1, H, W]
    return ssim(warped, np.stack(labels[1:]))


def flows_of(frames: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Backward flows of consecutive frame pairs: [T-1] x [H, W, 2]."""
    return [flow(frames[t], frames[t + 1]) for t in range(len(frames) - 1)]


def choose(frames: Sequence[np.ndarray], labels_a: Sequence[np.ndarray], labels_b: Sequence[np.ndarray]
           ) -> tuple[int, float, float]:
    """Per video: 0 if model a's labels are at least as temporally consistent as b's, else 1; with both scores."""
    flows = flows_of(frames)  # the flow depends on the frames only: compute it once for both models
    sa = consistency(frames, labels_a, flows)
    sb = consistency(frames, labels_b, flows)
    ma = float(sa.mean()) if sa.size else 1.0
    mb = float(sb.mean()) if sb.size else 1.0
    return (0 if ma >= mb else 1), ma, mb
