"""Dataset readers and byte-exact writers for every supported on-disk format (shared/specs/datasets.md).

Public API::

    read_dataset(format, root, split, *, on_error="fail", validate="header", progress=True, **options)
        -> (records: list[VideoRecord], errors: list[DataError])
    load_frame(record, t)       -> uint8 [H, W, 3] RGB
    load_annotation(record, t)  -> FrameAnnotation | None        (None = frame t is not annotated)
    load_exemplars(record)      -> list[Exemplar] with ``mask`` decoded for kind "mask"
    read_video(path)            -> VideoRecord of an mp4/avi file or a folder of frames (format "video")
    write_synthetic(format, out_dir, videos, split, *, progress=True)  (the format's writer)
    categories_for(format)      -> list[Category]                 (ids/isthing a synthetic set uses)
    val_split(format)           -> str                            ("valid" for YouTube-VOS, else "val")

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

from gvseg.data.errors import DataError
from gvseg.data.formats import _common, burst, davis, kitti_step, video, vipseg, vspw, ytvis, ytvos
from gvseg.data.formats.vipseg_categories import VIPSEG_CATEGORIES
from gvseg.structures import Category, Exemplar, FrameAnnotation, SyntheticVideo, VideoRecord

READERS = {
    "vipseg": vipseg.read_split,
    "vspw": vspw.read_split,
    "ytvis": ytvis.read_split,
    "ovis": ytvis.read_split_ovis,
    "ytvos": ytvos.read_split,
    "davis": davis.read_split,
    "burst": burst.read_split,
    "kitti-step": kitti_step.read_split,
}
DECODERS = {
    "vipseg": vipseg.load_annotation,
    "vspw": vspw.load_annotation,
    "ytvis": ytvis.load_annotation,
    "ovis": ytvis.load_annotation,
    "ytvos": ytvos.load_annotation,
    "davis": davis.load_annotation,
    "burst": burst.load_annotation,
    "kitti-step": kitti_step.load_annotation,
}
WRITERS = {
    "vipseg": vipseg.write,
    "vspw": vspw.write,
    "ytvis": ytvis.write,
    "ovis": ytvis.write_ovis,
    "ytvos": ytvos.write,
    "davis": davis.write,
    "burst": burst.write,
    "kitti-step": kitti_step.write,
}
CATEGORIES: dict[str, list[Category]] = {
    "vipseg": VIPSEG_CATEGORIES,
    "vspw": VIPSEG_CATEGORIES,  # same 124 classes; VSPW label − 1 = VIPSeg id
    "ytvis": ytvis.YTVIS21_CATEGORIES,
    "ovis": ytvis.OVIS_CATEGORIES,
    "ytvos": ytvos.OBJECT,  # class-agnostic EVS
    "davis": ytvos.OBJECT,
    "burst": ytvos.OBJECT,  # the release keeps LVIS ids; synthetic BURST is class-agnostic
    "kitti-step": kitti_step.KITTI_STEP_CATEGORIES,
}

# The validation split's name in each release's own layout (datasets.md), where it is not "val": YouTube-VOS has
# {train,valid,test}/ (DAVIS ImageSets/2017/val.txt and BURST {train,val,test}/ say "val"). The synthetic writers
# use the same names, so a recipe's data.val_split holds for the real and the synthetic set alike.
# (YouTube-VIS / OVIS also say "valid"; their reader accepts "val" and "valid" alike.)
VAL_SPLITS = {"ytvos": "valid"}


def val_split(format: str) -> str:
    """Name of ``format``'s validation split on disk (what ``synth_dataset`` writes and recipes read)."""
    _check_format(format)
    return VAL_SPLITS.get(format, "val")


def _check_format(format: str) -> None:
    if format not in READERS:
        raise ValueError(f"unknown dataset format {format!r}; known: {sorted(READERS)}")


def read_dataset(format: str, root: str | Path, split: str, *, on_error: _common.OnError = "fail",
                 validate: _common.Validate = "header", progress: bool = True, **options: Any
                 ) -> tuple[list[VideoRecord], list[DataError]]:
    """All videos of ``split``; ``options`` go to the format's reader (e.g. BURST ``frames_root``)."""
    _check_format(format)
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    if validate not in ("none", "header", "full"):
        raise ValueError(f"validate must be 'none', 'header' or 'full', got {validate!r}")
    _common.check_root(root)  # a root that is a link loop / dangling link / file: named, not a traceback
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
        return video.read_frame(record.video_path, t)
    return _common.read_rgb(record.frame_paths[t])


def load_annotation(record: VideoRecord, t: int) -> FrameAnnotation | None:
    """Ground truth of frame t, or None where the frame is not annotated (or the format has no GT)."""
    if not record.annotations or record.annotations[t] is None:
        return None
    return DECODERS[record.format](record, t)  # decoders see annotated frames only: the None check is here


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
                    *, progress: bool = True) -> None:
    """Serialise ``videos`` as ``split`` of a ``format`` dataset under ``out_dir`` (real on-disk layout)."""
    _check_format(format)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    WRITERS[format](out_dir, videos, split, progress=progress)


# Formats whose readers use a fixed category list whatever the files hold (no category table on disk):
# (num_classes, num_thing_classes) of their label space. Every other reader takes its files' categories.
FIXED_LABEL_SPACE = {"kitti-step": (19, 2), "vspw": (124, 0)}


def categories_for(format: str) -> list[Category]:
    """The category list a (synthetic) dataset of ``format`` uses: real ids and isthing flags."""
    _check_format(format)
    return list(CATEGORIES[format])




read_video = video.read_video
iter_frames = video.iter_frames

__all__ = ["DataError", "READERS", "read_video", "iter_frames", "read_dataset", "load_frame", "load_annotation", "load_exemplars",
           "write_synthetic", "categories_for", "val_split"]
