"""Dataset readers and byte-exact writers for every supported on-disk format (shared/specs/datasets.md).

Public API::

    FORMATS[format]             -> Format: the one table of what belongs to a format (task, reader, writers,
                                   scorer, headline, split names, label space); ``format_of``, ``default_format``

    read_dataset(format, root, split, *, on_error="fail", validate="header", progress=True, **options)
        -> (records: list[VideoRecord], errors: list[DataError])
    load_frame(record, t)       -> uint8 [H, W, 3] RGB
    load_frame_native(record, t) -> (uint8 [H, W, 3], bgr)  the decoder's channel order (the clip pipeline's)
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gvseg.data.errors import DataError
from gvseg.data.formats import _common, burst, davis, kitti_step, video, vipseg, vspw, ytvis, ytvos
from gvseg.data.formats.vipseg_categories import VIPSEG_CATEGORIES
from gvseg.structures import Category, Exemplar, FrameAnnotation, SyntheticVideo, VideoRecord


@dataclasses.dataclass(frozen=True)
class Format:
    """Everything gvseg knows about one dataset format. Adding a dataset is one entry in :data:`FORMATS` (plus
    its reader module); every layer looks its part up here: the readers and synthetic writers below, the
    official result writer (``gvseg.writers``), the scorer and headline number (``gvseg.evaluation``), the
    debug label space (``gvseg.recipes``), the CLI's choices. ``config.DataFormat`` names the same keys so
    that a typo in a recipe fails at load time (a test keeps the two equal).

    ``writer`` and ``scorer`` are *names*: the writer class in ``gvseg.writers`` and the key of
    ``gvseg.evaluation.SCORERS``. They live on higher floors than this package, so the table names them
    rather than importing them (no arrow runs back up)."""

    task: str                      # the benchmark task it serves: vps | vss | vis | evs
    read: Callable                 # (root, split, on_error, *, validate, progress, **options) -> (records, errors)
    decode: Callable               # (record, t) -> FrameAnnotation of an annotated frame
    write: Callable                # (out_dir, videos, split, *, progress) -> None: the synthetic GT writer
    categories: list[Category]     # ids/isthing a synthetic set uses
    writer: str                    # gvseg.writers class of the official result files
    scorer: str                    # gvseg.evaluation.SCORERS key: the official metric on those files
    headline: str                  # the metric key the benchmark's tables lead with; ranks checkpoints ("best")
    val_split: str = "val"         # the validation split's name on disk (the synthetic writer uses the same)
    writer_options: dict = dataclasses.field(default_factory=dict)
    label_space: tuple[int, int] | None = None  # (num_classes, num_thing_classes) when fixed whatever the files
    debug_classes: tuple[int, int] = (0, 0)     # (things, stuff) a debug recipe's synthetic set draws


# The first format of each task is that task's default for predictions on plain videos (mp4, frame folders).
# Split names follow each release (datasets.md): YouTube-VOS has {train,valid,test}/; DAVIS ImageSets/2017/
# val.txt and BURST {train,val,test}/ say "val"; the YouTube-VIS / OVIS reader accepts "val" and "valid".
FORMATS: dict[str, Format] = {
    "vipseg": Format("vps", vipseg.read_split, vipseg.load_annotation, vipseg.write, VIPSEG_CATEGORIES,
                     writer="VipsegWriter", scorer="vipseg", headline="vpq_mean_1246", debug_classes=(3, 4)),
    "kitti-step": Format("vps", kitti_step.read_split, kitti_step.load_annotation, kitti_step.write,
                         kitti_step.KITTI_STEP_CATEGORIES, writer="KittiStepWriter", scorer="kitti-step",
                         headline="stq",  # KITTI-STEP defines STQ only
                         label_space=(19, 2), debug_classes=(2, 4)),
    "vspw": Format("vss", vspw.read_split, vspw.load_annotation, vspw.write,
                   VIPSEG_CATEGORIES,  # same 124 classes; VSPW label − 1 = VIPSeg id
                   writer="VspwWriter", scorer="vspw", headline="miou", label_space=(124, 0), debug_classes=(3, 4)),
    "ytvis": Format("vis", ytvis.read_split, ytvis.load_annotation, ytvis.write, ytvis.YTVIS21_CATEGORIES,
                    writer="YtvisWriter", scorer="ytvis", headline="AP", debug_classes=(3, 0)),
    "ovis": Format("vis", ytvis.read_split_ovis, ytvis.load_annotation, ytvis.write_ovis, ytvis.OVIS_CATEGORIES,
                   writer="YtvisWriter", scorer="ytvis", headline="AP", debug_classes=(3, 0)),
    "davis": Format("evs", davis.read_split, davis.load_annotation, davis.write, ytvos.OBJECT,  # class-agnostic
                    writer="PaletteWriter", scorer="davis", headline="J&F-Mean"),
    "ytvos": Format("evs", ytvos.read_split, ytvos.load_annotation, ytvos.write, ytvos.OBJECT,
                    writer="PaletteWriter", writer_options={"subdir": "Annotations"}, scorer="ytvos",
                    headline="J&F-Mean", val_split="valid"),
    "burst": Format("evs", burst.read_split, burst.load_annotation, burst.write,
                    ytvos.OBJECT,  # the release keeps LVIS ids; synthetic BURST is class-agnostic
                    writer="BurstWriter", scorer="burst", headline="HOTA_all"),
}


def format_of(format: str) -> Format:
    """The :class:`Format` of ``format``; a clear error naming the known ones otherwise."""
    _check_format(format)
    return FORMATS[format]


def default_format(task: str) -> str:
    """The format a task's predictions take when they come from plain videos: the task's first in the table."""
    return next(k for k, f in FORMATS.items() if f.task == task)


def val_split(format: str) -> str:
    """Name of ``format``'s validation split on disk (what ``synth_dataset`` writes and recipes read)."""
    return format_of(format).val_split


def _check_format(format: str) -> None:
    if format not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; known: {sorted(FORMATS)}")


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
    records, errors = FORMATS[format].read(root, split, on_error, validate=validate, progress=progress, **options)
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


def load_frame_native(record: VideoRecord, t: int) -> tuple[np.ndarray, bool]:
    """(uint8 [H, W, 3], bgr): frame t in the channel order its decoder gave (BGR from OpenCV: no swap pass);
    the clip pipeline reorders the channels while it writes them planar (issue #17)."""
    if record.video_path:
        return video.read_frame(record.video_path, t), False
    return _common.read_frame_native(record.frame_paths[t])


def load_annotation(record: VideoRecord, t: int) -> FrameAnnotation | None:
    """Ground truth of frame t, or None where the frame is not annotated (or the format has no GT)."""
    if not record.annotations or record.annotations[t] is None:
        return None
    return FORMATS[record.format].decode(record, t)  # decoders see annotated frames only: the None check is here


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
    FORMATS[format].write(out_dir, videos, split, progress=progress)


def categories_for(format: str) -> list[Category]:
    """The category list a (synthetic) dataset of ``format`` uses: real ids and isthing flags."""
    return list(format_of(format).categories)




read_video = video.read_video
iter_frames = video.iter_frames

__all__ = ["DataError", "FORMATS", "Format", "format_of", "default_format", "read_video", "iter_frames", "read_dataset", "load_frame", "load_frame_native", "load_annotation", "load_exemplars",
           "write_synthetic", "categories_for", "val_split"]
