"""Dataset readers and byte-exact writers for every supported on-disk format (shared/specs/datasets.md).

Public API::

    read_dataset(format, root, split, *, on_error="fail", validate="header", progress=False, **options)
        -> (records: list[VideoRecord], errors: list[DataError])
    load_frame(record, t)       -> uint8 [H, W, 3] RGB
    load_annotation(record, t)  -> FrameAnnotation | None        (None = frame t is not annotated)
    load_exemplars(record)      -> list[Exemplar] with ``mask`` decoded for kind "mask"
    write_synthetic(format, out_dir, videos, split)               (the format's writer)
    categories_for(format)      -> list[Category]                 (ids/isthing a synthetic set uses)

Readers list frames (sorted, never computed) and keep a cheap, picklable handle per frame; nothing heavy is
decoded until ``load_frame`` / ``load_annotation``. ``validate``: "none" only lists files; "header" (default)
also opens every frame/mask header and checks sizes; "full" decodes every frame and annotation, so corrupt
pixels, stray label values and unknown ids are found up front. A bad video raises :class:`DataError`
(``on_error="fail"``) or is skipped and returned in ``errors`` (``on_error="skip"``); never dropped silently.
An empty split gives ``([], [])``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gvseg.data.errors import DataError
from gvseg.data.formats import _common, vipseg
from gvseg.data.formats.vipseg_categories import VIPSEG_CATEGORIES
from gvseg.structures import Category, Exemplar, FrameAnnotation, SyntheticVideo, VideoRecord

READERS = {
    "vipseg": vipseg.read_split,
}
DECODERS = {
    "vipseg": vipseg.load_annotation,
}
WRITERS = {
    "vipseg": vipseg.write,
}
CATEGORIES: dict[str, list[Category]] = {
    "vipseg": VIPSEG_CATEGORIES,
}


def _check_format(format: str) -> None:
    if format not in READERS:
        raise ValueError(f"unknown dataset format {format!r}; known: {sorted(READERS)}")


def read_dataset(format: str, root: str | Path, split: str, *, on_error: _common.OnError = "fail",
                 validate: _common.Validate = "header", progress: bool = False, **options: Any
                 ) -> tuple[list[VideoRecord], list[DataError]]:
    """All videos of ``split``; ``options`` go to the format's reader (e.g. BURST ``frames_root``)."""
    _check_format(format)
    if validate not in ("none", "header", "full"):
        raise ValueError(f"validate must be 'none', 'header' or 'full', got {validate!r}")
    records, errors = READERS[format](root, split, on_error, validate=validate, progress=progress, **options)
    if validate == "full":
        records, more = _common.run_videos(records, _decode_all, on_error, f"check {format} {split}", progress)
        errors += more
    return records, errors


def _decode_all(record: VideoRecord) -> VideoRecord:
    for t in range(len(record)):
        frame = load_frame(record, t)
        if frame.shape[:2] != (record.height, record.width):
            raise DataError(record.frame_paths[t], f"frame is {frame.shape[0]}x{frame.shape[1]} but the "
                                                   f"video is {record.height}x{record.width}")
        load_annotation(record, t)
    load_exemplars(record)
    return record


def load_frame(record: VideoRecord, t: int) -> np.ndarray:
    """Frame t of the video as uint8 [H, W, 3] RGB."""
    if record.video_path:
        from gvseg.data.formats import video

        return video.read_frame(record.video_path, t)
    return _common.read_rgb(record.frame_paths[t])


def load_annotation(record: VideoRecord, t: int) -> FrameAnnotation | None:
    """Ground truth of frame t, or None where the frame is not annotated (or the format has no GT)."""
    if not record.annotations or record.annotations[t] is None:
        return None
    return DECODERS[record.format](record, t)


def load_exemplars(record: VideoRecord) -> list[Exemplar]:
    """``record.exemplars`` with each mask decoded from its handle (``Exemplar.source``); the record keeps
    only handles so that thousands of videos fit in memory."""
    out = []
    for ex in record.exemplars:
        if ex.mask is None and ex.source is not None:
            ex = dataclasses.replace(ex, mask=_common.decode_exemplar_source(ex.source, record))
        out.append(ex)
    return out


def write_synthetic(format: str, out_dir: str | Path, videos: list[SyntheticVideo], split: str,
                    *, progress: bool = False) -> None:
    """Serialise ``videos`` as ``split`` of a ``format`` dataset under ``out_dir`` (real on-disk layout)."""
    _check_format(format)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    WRITERS[format](out_dir, videos, split, progress=progress)


def categories_for(format: str) -> list[Category]:
    """The category list a (synthetic) dataset of ``format`` uses: real ids and isthing flags."""
    _check_format(format)
    return list(CATEGORIES[format])


__all__ = ["DataError", "READERS", "read_dataset", "load_frame", "load_annotation", "load_exemplars",
           "write_synthetic", "categories_for"]
