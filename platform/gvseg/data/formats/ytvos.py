"""YouTube-VOS 2018/2019 (VOS / exemplar-guided segmentation). datasets.md §4.

Layout read (``root`` holds the splits)::

    {split}/JPEGImages/<vid>/<%05d>.jpg     frames (5-digit ids, not necessarily from 0): listed, sorted
    {split}/Annotations/<vid>/<%05d>.png    8-bit palette PNGs: index = object id, 0 = background
    {split}/meta.json                       {"videos": {vid: {"objects": {"<obj_id>": {"category", "frames"}}}}}

PNG indices are used as they are, never converted through the palette. Object visibility is computed from
the masks (pytracking lists 6 objects whose meta ``frames[0]`` is wrong), so objects may first appear
mid-video. Exemplars: each object's first-appearance mask (kind "mask", decoded lazily from its PNG by
``formats.load_exemplars``). ``valid``/``test`` only hold those first-appearance masks, so a split whose frames
are not all masked (and is not a train split) reads as unannotated (``None``) with exemplars only; pass
``dense=True/False`` to override. A pixel value that is not an object of meta.json is a ``DataError``.

Decoded annotation: ids = object ids, category = 1 ("object", class-agnostic; the meta category name is in
``record.meta["object_categories"]``), ``ignore`` = index 255 if present.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from gvseg.data.errors import DataError
from gvseg.data.formats import _common as C
from gvseg.structures import Category, Exemplar, FrameAnnotation, SyntheticVideo, VideoRecord

OBJECT = [Category(1, "object", True, (128, 0, 0))]  # class-agnostic EVS category
IGNORE_INDEX = 255


def read_split(root: str | Path, split: str, on_error: C.OnError = "fail", *, validate: C.Validate = "header",
               progress: bool = False, dense: bool | None = None) -> tuple[list[VideoRecord], list[DataError]]:
    sdir = Path(root) / split
    meta_path = sdir / "meta.json"
    meta = C.load_json(meta_path, dict)
    videos = C.field(meta, "videos", meta_path, "top level", dict)
    build = lambda vid: _build(sdir, meta_path, vid, videos[vid], split, dense, validate)
    return C.run_videos(sorted(videos), build, on_error, f"ytvos {split}", progress)


def _build(sdir: Path, meta_path: Path, vid: str, vmeta: dict, split: str, dense: bool | None,
           validate: C.Validate) -> VideoRecord:
    objects = C.field(vmeta, "objects", meta_path, f"video {vid}", dict)
    for k in objects:
        if not str(k).isdigit() or not 0 < int(k) < 256:
            raise DataError(meta_path, f"video {vid}: object id {k!r} is not a PNG index 1..255")
    obj_ids = sorted(int(k) for k in objects)
    frames = C.list_frames(sdir / "JPEGImages" / vid)
    pngs = mask_files(sdir / "Annotations" / vid, frames)
    h, w = C.image_size(frames[0]) if validate == "none" else C.check_headers(vid, frames, pngs)
    first = first_appearances(pngs, h, w, stop_when=set(obj_ids), allowed=set(obj_ids))
    if dense is None:
        dense = split.startswith("train") or all(p is not None for p in pngs)
    exemplars = [Exemplar(track_id=o, frame=t, kind="mask", source=("png", pngs[t], o))
                 for o, t in sorted(first.items())]
    cats = {int(k): o.get("category", "") for k, o in objects.items() if isinstance(o, dict)}
    return VideoRecord(vid, "ytvos", frames, h, w, list(OBJECT), list(pngs) if dense else [None] * len(frames),
                       exemplars, meta={"object_categories": cats, "objects": obj_ids})


def mask_files(mask_dir: Path, frames: list[str]) -> list[str | None]:
    """[T] PNG path or None, aligned with ``frames`` by file stem."""
    stems = {Path(f).stem: t for t, f in enumerate(frames)}
    out: list[str | None] = [None] * len(frames)
    if C.optional_dir(mask_dir):
        for p in sorted(mask_dir.glob("*.png")):
            if p.stem not in stems:
                raise DataError(p, f"mask has no matching frame {p.stem}.jpg")
            out[stems[p.stem]] = str(p)
    return out


def first_appearances(pngs: list[str | None], height: int, width: int, stop_when: set[int] | None = None,
                      allowed: set[int] | None = None) -> dict[int, int]:
    """object id -> first frame index whose PNG contains it. Decodes in order; stops early once every id
    in ``stop_when`` has been seen (dense train splits: usually after the first frame)."""
    first: dict[int, int] = {}
    for t, p in enumerate(pngs):
        if p is None:
            continue
        for o in decode_palette(p, height, width, allowed)[0]:
            first.setdefault(int(o), t)
        if stop_when and stop_when <= first.keys():
            break
    return first


def decode_palette(path: str, height: int, width: int, allowed: set[int] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(object ids [K], index map [H, W]) of a palette PNG; ids outside ``allowed`` are a DataError."""
    lab = C.read_label(path)
    if lab.ndim != 2:
        raise DataError(path, f"expected a palette (P) PNG of object indices, got shape {lab.shape}")
    C.check_shape(path, lab, height, width)
    ids = C.present_values(lab, 256) if lab.dtype == np.uint8 else np.unique(lab).astype(np.int64)
    ids = ids[(ids != 0) & (ids != IGNORE_INDEX)]
    if allowed is not None:
        bad = ids[~np.isin(ids, list(allowed))]
        if len(bad):
            raise DataError(path, f"stray label values {bad[:8].tolist()}: not objects of this video "
                                  f"{sorted(allowed)}")
    return ids, lab


def load_annotation(record: VideoRecord, t: int) -> FrameAnnotation:
    path = record.annotations[t]
    allowed = set(record.meta["objects"]) if "objects" in record.meta else None
    ids, lab = decode_palette(path, record.height, record.width, allowed)
    return indexed_palette(ids, lab)


def indexed_palette(ids: np.ndarray, lab: np.ndarray) -> FrameAnnotation:
    """Object ids [K] + palette index map -> :class:`IndexedAnnotation` (255 = ignore), one LUT pass."""
    if lab.dtype != np.uint8:
        return FrameAnnotation(ids=ids, category_ids=np.ones(len(ids), np.int64), masks=C.masks_from_ids(lab, ids),
                               iscrowd=np.zeros(len(ids), bool), ignore=lab == IGNORE_INDEX)
    return C.IndexedAnnotation(ids=ids, category_ids=np.ones(len(ids), np.int64),
                               source=lab, source_lut=C.index_lut(256, ids, (IGNORE_INDEX,)), iscrowd=np.zeros(len(ids), bool),
                               present=np.ones(len(ids), bool))  # ids are the values found


# ----------------------------------------------------------------------------------------------- write


def object_index_maps(video: SyntheticVideo) -> tuple[dict[int, int], list[np.ndarray]]:
    """Segment id -> object index 1..N (by segment id) and the [T] uint8 index maps."""
    segs = C.present_segments(video)
    if len(segs) > 254:
        raise ValueError(f"{video.video_id}: {len(segs)} objects do not fit an 8-bit palette PNG")
    obj = {s: k + 1 for k, s in enumerate(segs)}
    maps = []
    for ids in video.id_maps:
        u, inv = np.unique(ids, return_inverse=True)
        maps.append(np.array([obj.get(int(s), 0) for s in u], np.uint8)[inv].reshape(ids.shape))
    return obj, maps


def write(out_dir: str | Path, videos: list[SyntheticVideo], split: str, *, progress: bool = False) -> None:
    """Dense masks for every frame of every split (synthetic val needs ground truth for evaluation)."""
    sdir = Path(out_dir) / split
    meta_videos = {}
    for v in tqdm(videos, desc=f"write ytvos {split}", disable=not progress):
        C.check_synthetic(v)
        names = {c.id: c.name for c in v.categories}
        stems = [f"{n:05d}" for n in C.frame_numbers(v.video_id, len(v.frames), step=5)]
        obj, maps = object_index_maps(v)
        for stem, frame, m in zip(stems, v.frames, maps):
            C.save_jpg(sdir / "JPEGImages" / v.video_id / f"{stem}.jpg", frame)
            C.save_png(sdir / "Annotations" / v.video_id / f"{stem}.png", m, "P", C.voc_palette())
        meta_videos[v.video_id] = {"objects": {
            str(o): {"category": names.get(v.segment_category[s], "object"),
                     "frames": [stem for stem, m in zip(stems, maps) if (m == o).any()]}
            for s, o in obj.items()}}
    C.save_json(sdir / "meta.json", {"videos": meta_videos})
