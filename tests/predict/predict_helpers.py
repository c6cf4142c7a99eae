"""Helpers for the prediction tests: synthetic frames and videos encoded with OpenCV."""

import cv2
import numpy as np


def moving_square(t: int, h: int = 48, w: int = 64) -> np.ndarray:
    """RGB frame t: a bright square sliding right over a dark gradient."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 2] = np.linspace(0, 80, w, dtype=np.uint8)[None]
    x = 4 + 3 * t
    img[12:32, x:x + 16] = (220, 60, 40)
    return img


def write_video(path, n: int, fourcc: str = "mp4v", h: int = 48, w: int = 64, fps: float = 8.0):
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert vw.isOpened()
    for t in range(n):
        vw.write(cv2.cvtColor(moving_square(t, h, w), cv2.COLOR_RGB2BGR))
    vw.release()
    return path
