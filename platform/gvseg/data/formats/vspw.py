"""VSPW (video semantic segmentation). datasets.md §2.

Layout read (``root`` = ``VSPW`` or ``VSPW_480p``)::

    {split}.txt                          video ids
    data/<video>/origin/<%08d>.jpg       frames; names start at the video's ``start`` (not 1): listed, sorted
    data/<video>/mask/<%08d>.png         8-bit ``L`` labels (``P`` accepted: its indices are the labels)

Labels: raw 0 ("others") and 255 (void) are both ignored; the rest shift by −1 to 0..123 (the official
``l[l==0]=255; l=l-1; l[l==254]=255``), which equals the VIPSeg category id. Any other raw value (125..254)
is a ``DataError``. Test videos have no ``mask/``: their frames read as unannotated (``None``).

Decoded annotation: one segment per class present (semantic: track id = category id), ``ignore`` = raw 0 or
255. ``write`` stores class + 1 per pixel and spreads unlabelled pixels over raw 0 and 255 (both occur in the
release); thing instances of one class merge into one class segment, as VSPW has no instances.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gvseg.data.errors import DataError
from gvseg.data.formats import _common as C
from gvseg.data.formats.vipseg_categories import VIPSEG_CATEGORIES
from gvseg.structures import FrameAnnotation, SyntheticVideo, VideoRecord

VOID_RAW = (0, 255)
NUM_CLASSES = 124
# VSPW is a semantic dataset: no class has instances, so every class is stuff to the model (class-bank queries,
# class-identity association, queue TCL; paper §3.1 VSS). The synthetic generator still draws VIPSeg's thing
# classes as moving objects (``formats.CATEGORIES["vspw"]``); their pixels are labelled by class only.
SEMANTIC_CATEGORIES = [dataclasses.replace(c, isthing=False) for c in VIPSEG_CATEGORIES]


def read_split(root: str | Path, split: str, on_error: C.OnError = "fail", *, validate: C.Validate = "header",
               progress: bool = False) -> tuple[list[VideoRecord], list[DataError]]:
    root = Path(root)
    ids = C.read_lines(root / f"{split}.txt")
    return C.run_videos(ids, lambda vid: _build(root, vid, validate), on_error, f"vspw {split}", progress)


def _build(root: Path, vid: str, validate: C.Validate) -> VideoRecord:
    vdir = root / "data" / vid
    frames = C.list_frames(vdir / "origin")
    stems = {Path(f).stem: t for t, f in enumerate(frames)}
    annotations: list = [None] * len(frames)
    if C.optional_dir(vdir / "mask"):
        masks = sorted((vdir / "mask").glob("*.png"))
        C.check_unique(vdir / "mask", [p.stem for p in masks], "mask names")
        for p in masks:
            if p.stem not in stems:
                raise DataError(p, f"mask has no matching frame in {vdir / 'origin'}")
            annotations[stems[p.stem]] = str(p)
    if validate == "none":
        h, w = C.image_size(frames[0])
    else:
        h, w = C.check_headers(vid, frames, annotations)
    return VideoRecord(vid, "vspw", frames, h, w, list(SEMANTIC_CATEGORIES), annotations)


def load_annotation(record: VideoRecord, t: int) -> FrameAnnotation:
    return decode(record.annotations[t], record.height, record.width)


def decode(path: str, height: int, width: int) -> FrameAnnotation:
    """Label PNG -> :class:`IndexedAnnotation` (a 256-bin bincount finds the classes, not ``np.unique``)."""
    raw = C.read_label(path)
    if raw.ndim != 2:
        raise DataError(path, f"expected a single-channel (L or P) mask, got shape {raw.shape}")
    C.check_shape(path, raw, height, width)
    if raw.dtype != np.uint8:
        raw = raw.astype(np.int64)
        if raw.min() < 0 or raw.max() > 255:
            raise DataError(path, f"stray label values {np.unique(raw[(raw < 0) | (raw > 255)])[:8].tolist()} "
                                  f"(allowed: 0, 255, 1..{NUM_CLASSES})")
        raw = raw.astype(np.uint8)
    values = C.present_values(raw, 256)
    values = values[~np.isin(values, VOID_RAW)]
    bad = values > NUM_CLASSES
    if bad.any():
        raise DataError(path, f"stray label values {values[bad][:8].tolist()} (allowed: 0, 255, 1..{NUM_CLASSES})")
    cats = values - 1  # [K]
    return C.IndexedAnnotation(ids=cats.copy(), category_ids=cats, source=raw, source_lut=C.index_lut(256, values, VOID_RAW),
                               iscrowd=np.zeros(len(cats), bool), present=np.ones(len(cats), bool))


def write(out_dir: str | Path, videos: list[SyntheticVideo], split: str, *, progress: bool = False) -> None:
    out = Path(out_dir)
    for v in tqdm(videos, desc=f"write vspw {split}", disable=not progress):
        C.check_synthetic(v)
        bad = {c for c in v.segment_category.values() if not 0 <= c < NUM_CLASSES}
        if bad:
            raise ValueError(f"{v.video_id}: categories {sorted(bad)} are not VSPW ids 0..{NUM_CLASSES - 1}")
        stems = [f"{n:08d}" for n in C.frame_numbers(v.video_id, len(v.frames), step=1)]
        for t, (frame, ids) in enumerate(zip(v.frames, v.id_maps)):
            u, inv = np.unique(ids, return_inverse=True)
            label = np.array([v.segment_category[int(s)] + 1 if s != 0 else 0 for s in u], np.int64)[inv]
            label = label.reshape(ids.shape)
            xx = np.arange(ids.shape[1])[None, :]
            label = np.where((label == 0) & (xx % 2 == 1), 255, label)  # unlabelled -> both 0 and 255
            C.save_jpg(out / "data" / v.video_id / "origin" / f"{stems[t]}.jpg", frame)
            C.save_png(out / "data" / v.video_id / "mask" / f"{stems[t]}.png", label, "L")
    (out / f"{split}.txt").write_text("".join(f"{v.video_id}\n" for v in videos))
