"""Plain video input for prediction: a video file (mp4/avi/..., decoded with OpenCV) or a folder of frames.

    read_video(path) -> VideoRecord          format "video"; no annotations
    iter_frames(path, start=0) -> Iterator   uint8 [H, W, 3] RGB frames, streamed one at a time
    read_frame(path, t) -> np.ndarray        one frame (seeks; use iter_frames for whole videos)

A video file's record has ``video_path`` set and virtual ``frame_paths`` ``<file>/<%06d>`` (so that
``frame_names`` are the frame numbers). ``read_video`` decodes the file once to count its frames, since the
container's frame count is unreliable. A truncated or corrupt file raises ``DataError`` naming the file and
the frame index where decoding stopped; ``iter_frames`` raises it *after* yielding every frame that decoded.
A folder is listed and sorted like a dataset video (empty or duplicate names -> ``DataError``). A one-frame
video is valid.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from gvseg.data.errors import DataError
from gvseg.data.formats import _common as C
from gvseg.structures import VideoRecord

VIDEO_EXTS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def _open(path: Path) -> cv2.VideoCapture:
    if not path.is_file():
        raise DataError(path, "file is missing" if not path.is_symlink() else C.missing_reason(path))
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise DataError(path, "cannot open video (corrupt, truncated or unsupported container); "
                              "decoding stopped at frame 0")
    return cap


def _reported_count(cap: cv2.VideoCapture) -> int:
    n = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    return int(n) if n and n > 0 else -1


def iter_frames(path: str | Path, start: int = 0) -> Iterator[np.ndarray]:
    """Yield frames ``start, start+1, ...`` as uint8 [H, W, 3] RGB without holding the video in memory."""
    path = Path(path)
    if path.is_dir():
        for f in C.list_frames(path)[start:]:
            yield C.read_rgb(f)
        return
    cap = _open(path)
    try:
        expected = _reported_count(cap)
        if start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, start)
        t = start
        while True:
            ok, bgr = cap.read()
            if not ok or bgr is None:
                break
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            t += 1
    finally:
        cap.release()
    if t == 0 or (expected > 0 and t < expected):
        raise DataError(path, f"decoding stopped at frame {t}" + (f" of {expected}" if expected > 0 else "")
                              + " (truncated or corrupt video)")


def count_frames(path: Path) -> tuple[int, int, int]:
    """(frames, height, width) by decoding the whole file once; DataError if it stops early."""
    cap = _open(path)
    try:
        expected = _reported_count(cap)
        n, hw = 0, None
        while cap.grab():
            if hw is None:
                ok, bgr = cap.retrieve()
                if not ok:
                    break
                hw = bgr.shape[:2]
            n += 1
    finally:
        cap.release()
    if n == 0 or hw is None:
        raise DataError(path, "no decodable frames (empty, truncated or corrupt video); decoding stopped at frame 0")
    if expected > 0 and n < expected:
        raise DataError(path, f"decoding stopped at frame {n} of {expected} (truncated or corrupt video)")
    return n, hw[0], hw[1]


def read_video(path: str | Path) -> VideoRecord:
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise DataError(path, f"input {C.missing_reason(path)}")
    if path.is_dir():
        frames = C.list_frames(path)
        h, w = C.check_headers(path, frames)
        return VideoRecord(path.name, "video", frames, h, w, [], [None] * len(frames))
    if path.suffix.lower() not in VIDEO_EXTS:
        raise DataError(path, f"not a video file (extensions {VIDEO_EXTS}) nor a folder of frames")
    n, h, w = count_frames(path)
    return VideoRecord(path.stem, "video", [f"{path}/{t:06d}" for t in range(n)], h, w, [], [None] * n,
                       video_path=str(path))


def read_frame(path: str | Path, t: int) -> np.ndarray:
    """Frame t of a video file (a seek: fine for a few frames; stream with iter_frames otherwise)."""
    path = Path(path)
    cap = _open(path)
    try:
        cap.set(cv2.CAP_PROP_POS_FRAMES, t)
        ok, bgr = cap.read()
    finally:
        cap.release()
    if not ok or bgr is None:
        raise DataError(path, f"cannot decode frame {t}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
