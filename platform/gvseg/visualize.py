"""Pictures people would rather look at than read: id maps in stable colours, side by side with GT.

Pure NumPy/OpenCV. A track id always gets the same colour (a hash, not a palette index), so identity
switches are visible as colour changes across frames.
"""

from __future__ import annotations

import cv2
import numpy as np


def id_colors(ids: np.ndarray) -> np.ndarray:
    """[...] int ids -> [..., 3] uint8 RGB; 0 (void/background) is black; stable for a given id."""
    x = ids.astype(np.uint64) * np.uint64(2654435761) + np.uint64(0x9E3779B9)
    rgb = np.stack([(x >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], -1).astype(np.uint8)
    rgb = (rgb // 2 + 96).astype(np.uint8)  # bright enough on dark frames
    rgb[ids == 0] = 0
    return rgb


def overlay(frame: np.ndarray, ids: np.ndarray, alpha: float = 0.55, edges: bool = True) -> np.ndarray:
    """Blend coloured ids onto an RGB frame [H, W, 3]; segment borders drawn in white."""
    color = id_colors(ids)
    out = frame.astype(np.float32)
    fg = ids != 0
    out[fg] = (1 - alpha) * out[fg] + alpha * color[fg]
    if edges:
        k = np.ones((3, 3), np.uint8)
        border = cv2.dilate(ids.astype(np.float32), k) != cv2.erode(ids.astype(np.float32), k)
        out[border] = 255
    return out.clip(0, 255).astype(np.uint8)


def side_by_side(frame: np.ndarray, pred_ids: np.ndarray, gt_ids: np.ndarray | None = None,
                 labels: tuple[str, str] = ("prediction", "ground truth")) -> np.ndarray:
    """[H, W*k, 3]: the frame with predicted ids, and (if given) with GT ids, each captioned. Tiny frames
    (debug data) are enlarged with nearest-neighbour so a person can see the segments."""
    scale = max(1, -(-256 // frame.shape[0]))
    if scale > 1:
        up = lambda a: np.repeat(np.repeat(a, scale, 0), scale, 1)  # noqa: E731
        frame, pred_ids = up(frame), up(pred_ids)
        gt_ids = None if gt_ids is None else up(gt_ids)
    panels = [(overlay(frame, pred_ids), labels[0])]
    if gt_ids is not None:
        panels.append((overlay(frame, gt_ids), labels[1]))
    out = []
    for img, text in panels:
        img = np.ascontiguousarray(img)
        scale = max(0.3, img.shape[0] / 500)
        cv2.putText(img, text, (4, int(14 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
        out.append(img)
    return np.concatenate(out, axis=1)
