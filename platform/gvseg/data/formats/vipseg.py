"""VIPSeg (video panoptic segmentation), in both on-disk forms of the release. datasets.md §1.

Layout read (``root`` = the VIPSeg folder, original or ``VIPSeg_720P``)::

    {split}.txt                                   video ids, one per line (raw form)
    imgs/<video>/<8-digit>.jpg  (or images/...)   frames; names are VSPW frame numbers: sorted, never computed
    panomasks/<video>/<stem>.png                  raw form: 16-bit grey, 0 = void, stuff = raw class 1..124,
                                                  thing = raw_class*100 + inst (inst from 0)
    panomasksRGB/<video>/<stem>.png               converted form: segment id = R + 256 G + 65536 B (rgb2id)
    panoptic_gt_VIPSeg_{split}.json               converted form: COCO-panoptic-video, *string* image ids

The converted form (RGB + JSON) is preferred when both exist (``form="auto"``), as DVIS++ ``vps.py`` does.

Decoded annotation (``load_annotation``): ``FrameAnnotation`` with one mask per segment, category = VIPSeg id
0..123 (raw − 1), ``ignore`` = void pixels. Track ids are the raw value (raw form) or the rgb2id segment id
(converted form); both are stable over the video. Raw value 200 is the documented stray label (VIPSeg issue
#1, mapped to void as OMG-Seg does); any other value whose class is not 1..124 is a ``DataError``.
Frames without a mask (test split, unannotated frames) give ``None``.

``write`` serialises SyntheticVideos in both forms (they decode to the same segments), with the IdGenerator
colour logic of panopticapi: stuff gets its category colour exactly; a thing gets the base colour, or a
±30 random perturbation once that colour is taken (per video, seeded by the video id).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from tqdm import tqdm

from gvseg.data.arrays import runs
from gvseg.data.errors import DataError
from gvseg.data.formats import _common as C
from gvseg.data.formats.vipseg_categories import VIPSEG_CATEGORIES
from gvseg.structures import Category, FrameAnnotation, SyntheticVideo, VideoRecord

STRAY_VOID = 200  # VIPSeg issue #1: "should be 0"
NUM_RAW = 124  # raw classes 1..124


def _image_dir(root: Path) -> Path:
    return root / "imgs" if (root / "imgs").is_dir() else root / "images"


def read_split(root: str | Path, split: str, on_error: C.OnError = "fail", *, validate: C.Validate = "header",
               form: Literal["auto", "rgb", "raw"] = "auto", progress: bool = False
               ) -> tuple[list[VideoRecord], list[DataError]]:
    root = Path(root)
    js = root / f"panoptic_gt_VIPSeg_{split}.json"
    if js.is_symlink() and not js.is_file():  # a broken converted form is an error, not "use the raw form"
        raise DataError(js, C.missing_reason(js))
    if form == "rgb" or (form == "auto" and js.is_file() and (root / "panomasksRGB").is_dir()):
        return _read_rgb(root, split, js, on_error, validate, progress)
    ids = C.read_lines(root / f"{split}.txt")
    build = lambda vid: _build_raw(root, vid, validate)
    return C.run_videos(ids, build, on_error, f"vipseg {split}", progress)


def _build_raw(root: Path, vid: str, validate: C.Validate) -> VideoRecord:
    frames = C.list_frames(_image_dir(root) / vid)
    stems = {Path(f).stem: t for t, f in enumerate(frames)}
    annotations: list = [None] * len(frames)
    mask_dir = root / "panomasks" / vid
    if C.optional_dir(mask_dir):
        for p in sorted(mask_dir.glob("*.png")):
            if p.stem not in stems:
                raise DataError(p, f"mask has no matching frame in {_image_dir(root) / vid}")
            annotations[stems[p.stem]] = ("raw", str(p))
    h, w = _sizes(vid, frames, annotations, validate)
    first = next((a[1] for a in annotations if a), None)
    if validate != "none" and first is not None:
        _check_raw_mode(first)  # the header says it: one cheap open per video
    return VideoRecord(vid, "vipseg", frames, h, w, list(VIPSEG_CATEGORIES), annotations, meta={"form": "raw"})


def _check_raw_mode(path: str, mode: str | None = None) -> None:
    """Raw panomasks are 16-bit: thing values class*100+inst exceed 255, so an 8-bit copy has wrapped ids."""
    if mode is None:
        from PIL import Image

        try:
            with Image.open(path) as im:
                mode = im.mode
        except Exception:
            return  # unreadable: the header/decode checks name it
    if mode in ("L", "P", "LA", "PA", "1"):
        raise DataError(path, f"raw panomask is 8-bit (mode {mode}); VIPSeg panomasks are 16-bit grey (thing "
                              "values class*100+instance exceed 255), so this copy's ids have wrapped")


def _sizes(vid: str, frames: list[str], annotations: list, validate: C.Validate) -> tuple[int, int]:
    if validate == "none":
        return C.image_size(frames[0])
    return C.check_headers(vid, frames, [a[1] if a else None for a in annotations])


def _read_rgb(root: Path, split: str, js: Path, on_error: C.OnError, validate: C.Validate, progress: bool):
    data = C.load_json(js, dict)
    categories = [
        Category(C.int_field(c, "id", js, f"categories[{i}]"), str(c.get("name", c["id"])),
                 bool(C.field(c, "isthing", js, f"categories[{i}]")),
                 tuple(C.field(c, "color", js, f"categories[{i}]", list)) if "color" in c else None)
        for i, c in enumerate(C.expect(data.get("categories") or [], list, js, "field 'categories'"))
    ] or list(VIPSEG_CATEGORIES)
    C.check_unique_ids(js, [c.id for c in categories], "category ids")
    anns_by_video = {}
    # test split: no annotations at all
    for i, a in enumerate(C.expect(data.get("annotations") or [], list, js, "field 'annotations'")):
        avid = str(C.field(a, "video_id", js, f"annotations[{i}]"))
        if avid in anns_by_video:
            raise DataError(js, f"annotations[{i}]: duplicate video_id {avid!r} (one annotation entry per video)")
        anns_by_video[avid] = a
    videos = C.field(data, "videos", js, "top level", list)
    C.check_unique_ids(js, [str(v["video_id"]) for v in videos if isinstance(v, dict) and "video_id" in v],
                       "video_id in 'videos'")
    items = [(i, v, anns_by_video) for i, v in enumerate(videos)]
    build = lambda item: _build_rgb(root, js, item, categories, validate)
    return C.run_videos(items, build, on_error, f"vipseg {split}", progress)


def _build_rgb(root: Path, js: Path, item, categories: list[Category], validate: C.Validate) -> VideoRecord:
    i, v, anns_by_video = item
    vid = str(C.field(v, "video_id", js, f"videos[{i}]"))
    frames = C.list_frames(_image_dir(root) / vid)
    stems = {Path(f).stem: t for t, f in enumerate(frames)}
    known = {c.id for c in categories}
    annotations: list = [None] * len(frames)
    ann = anns_by_video.get(vid)
    seen: set[str] = set()
    for j, a in enumerate(C.field(ann, "annotations", js, f"video {vid}", list) if ann is not None else []):
        where = f"video {vid} annotations[{j}]"
        image_id = str(C.field(a, "image_id", js, where, (str, int)))
        if image_id not in stems:
            raise DataError(js, f"{where}: frame {image_id!r} is not in {_image_dir(root) / vid}")
        if image_id in seen:
            raise DataError(js, f"{where}: duplicate image_id {image_id!r} in video {vid}")
        seen.add(image_id)
        segs = []
        for k, s in enumerate(C.field(a, "segments_info", js, where, list)):
            sid = C.int_field(s, "id", js, f"{where} segments_info[{k}]")
            cat = C.int_field(s, "category_id", js, f"{where} segments_info[{k}]")
            if cat not in known:
                raise DataError(js, f"{where}: unknown category id {cat}")
            if any(sid == x[0] for x in segs):
                raise DataError(js, f"{where}: duplicate segment id {sid} in segments_info")
            segs.append((sid, cat, bool(s.get("iscrowd", 0))))
        file_name = str(C.field(a, "file_name", js, where, str) if "file_name" in a else f"{image_id}.png")
        annotations[stems[image_id]] = ("rgb", str(root / "panomasksRGB" / vid / file_name), tuple(segs))
    h, w = _sizes(vid, frames, annotations, validate)
    return VideoRecord(vid, "vipseg", frames, h, w, categories, annotations, meta={"form": "rgb"})


# ----------------------------------------------------------------------------------------------- decode


def load_annotation(record: VideoRecord, t: int) -> FrameAnnotation:
    handle = record.annotations[t]
    if handle[0] == "raw":
        return decode_raw(handle[1], record.height, record.width, {c.id for c in record.categories})
    return decode_rgb(handle[1], handle[2], record.height, record.width)


def decode_raw(path: str, height: int, width: int, known: set[int] | None = None) -> FrameAnnotation:
    """Raw panomask -> :class:`IndexedAnnotation` (ids = raw values). The distinct values come from a
    65536-bin bincount of the uint16 map, not ``np.unique`` (hash): same ids, ~10x less time."""
    v = C.read_label(path)
    if v.ndim != 2:
        raise DataError(path, f"expected a single-channel 16-bit panomask, got shape {v.shape}")
    if v.dtype == np.uint8:
        _check_raw_mode(path, "L")
    C.check_shape(path, v, height, width)
    if v.dtype != np.uint16:
        v = v.astype(np.int64)
        if v.min() < 0 or v.max() >= 65536:
            raise DataError(path, f"panomask values outside 0..65535 (min {v.min()}, max {v.max()})")
        v = v.astype(np.uint16)
    values = C.present_values(v, 65536)
    ids = values[(values != 0) & (values != STRAY_VOID)]  # [K]
    raw_cat = np.where(ids <= NUM_RAW, ids, ids // 100)  # create_panoptic_video_labels.py: el < 125 is stuff
    cats = raw_cat - 1
    bad = (raw_cat < 1) | (raw_cat > NUM_RAW) if known is None else ~np.isin(cats, list(known))
    if bad.any():
        raise DataError(path, f"stray label values {ids[bad][:8].tolist()} (allowed: 0, {STRAY_VOID}, "
                              f"stuff 1..{NUM_RAW}, thing class*100+instance)")
    index = C.index_lut(65536, ids, (0, STRAY_VOID))[v]  # [H, W] codes
    return C.IndexedAnnotation(ids=ids, category_ids=cats, index=index, iscrowd=np.zeros(len(ids), bool),
                               present=np.ones(len(ids), bool))  # ids are the values found


def decode_rgb(path: str, segments: tuple, height: int, width: int) -> FrameAnnotation:
    """Converted (RGB) panomask -> :class:`IndexedAnnotation`. The segment ids and categories come from the
    JSON's ``segments_info``; which of them the frame shows, and the index map, come from the runs of the id
    map (``arrays.runs``), not from ``np.unique`` over the full-resolution map (17% of the clip pipeline,
    issue #17) nor a per-pixel gather through a 2**24 table. A PNG id missing from ``segments_info`` is a
    DataError naming the ids; listed ids absent from the frame are dropped."""
    rgb, bgr = C.read_label_native(path)  # BGR as OpenCV decodes it: rgb2id reorders the bytes anyway
    if rgb.ndim != 3:
        raise DataError(path, f"expected an RGB panomask, got shape {rgb.shape}")
    C.check_shape(path, rgb, height, width)
    info = {sid: (cat, crowd) for sid, cat, crowd in segments}
    idmap = rgb2id(rgb, bgr=bgr)  # [H, W]
    lengths, run_ids = runs(idmap)  # [R]
    seen, run_of = np.unique(run_ids, return_inverse=True)  # [S] ascending, 0 = void
    seen = seen.astype(np.int64)
    void = seen == 0
    missing = [int(i) for i in seen[~void] if int(i) not in info]
    if missing:
        raise DataError(path, f"segment ids {missing[:8]} are in the PNG but not in segments_info of the JSON")
    ids = seen[~void]  # [K]
    code = np.zeros(len(seen), C.index_dtype(len(ids)))  # [S] id -> k + 1, void -> K + 1
    code[~void] = np.arange(1, len(ids) + 1)
    code[void] = len(ids) + 1
    return C.IndexedAnnotation(ids=ids, category_ids=np.array([info[int(i)][0] for i in ids], np.int64),
                               runs=(lengths, code[run_of]), shape=idmap.shape,
                               iscrowd=np.array([info[int(i)][1] for i in ids], bool),
                               present=np.ones(len(ids), bool))  # ids are the segments the runs hold


def rgb2id(rgb: np.ndarray, bgr: bool = False) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] int64 (uint32 for uint8 input), id = R + 256 G + 65536 B (panopticapi).
    ``bgr``: the channels are stored B, G, R (an OpenCV decode), the same ids."""
    if rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[-1] == 3:  # 0.15 ms vs 2.4 ms (3 int64 passes)
        conv = cv2.COLOR_BGR2RGBA if bgr else cv2.COLOR_RGB2RGBA  # bytes R, G, B, A either way
        out = cv2.cvtColor(np.ascontiguousarray(rgb), conv).view("<u4")[..., 0]  # alpha in the top byte
        return np.bitwise_and(out, 0xFFFFFF, out=out)
    rgb = rgb.astype(np.int64)[..., ::-1] if bgr else rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


# ------------------------------------------------------------------------------------ raw -> converted


def convert_raw(records: list[VideoRecord], out_dir: str | Path, split: str) -> Path:
    """The raw form's GT in the converted form, as the official ``create_panoptic_video_labels.py`` makes it:
    ``out_dir/panomasksRGB/<video>/<stem>.png`` (segment id = rgb2id of an IdGenerator colour, one per raw
    value per video, so ids stay temporally consistent) and ``out_dir/panoptic_gt_VIPSeg_{split}.json``.
    Raw 200 (issue #1) is void. Only annotated frames are listed. The JSON is written last, via a rename, so
    a crash never leaves a GT that looks complete. Returns the JSON path."""
    import json
    import os

    out = Path(out_dir)
    cats = {c.id: c for c in VIPSEG_CATEGORIES}
    videos, anns = [], []
    for rec in records:
        if rec.meta.get("form") != "raw":
            raise ValueError(f"{rec.video_id}: convert_raw takes raw-form records, got {rec.meta.get('form')!r}")
        gen = IdGenerator(VIPSEG_CATEGORIES, zlib.crc32(rec.video_id.encode()))
        color: dict[int, tuple[int, int, int]] = {}  # raw value -> colour, for the whole video
        images, frame_anns = [], []
        for handle in rec.annotations:
            if handle is None:
                continue
            ann = decode_raw(handle[1], rec.height, rec.width, set(cats))  # checks values, 16-bit, size
            rgb = np.zeros((rec.height, rec.width, 3), np.uint8)
            segs = []
            for raw, cat, m in zip(ann.ids.tolist(), ann.category_ids.tolist(), ann.masks):
                if raw not in color:
                    color[raw] = gen.color(int(cat))
                rgb[m] = color[raw]
                segs.append({"id": int(rgb2id(np.array(color[raw]))), "category_id": int(cat), "iscrowd": 0,
                             "area": int(m.sum())})
            stem = Path(handle[1]).stem
            C.save_png(out / "panomasksRGB" / rec.video_id / f"{stem}.png", rgb, "RGB")
            images.append({"id": stem, "width": rec.width, "height": rec.height, "file_name": f"{stem}.png"})
            frame_anns.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": segs})
        videos.append({"video_id": rec.video_id, "images": images})
        anns.append({"video_id": rec.video_id, "annotations": frame_anns})
    cats_json = [{"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color or (0, 0, 0))}
                 for c in VIPSEG_CATEGORIES]
    js = out / f"panoptic_gt_VIPSeg_{split}.json"
    tmp = js.with_suffix(".json.partial")
    tmp.write_text(json.dumps({"videos": videos, "annotations": anns, "categories": cats_json}))
    os.replace(tmp, js)
    return js


# ----------------------------------------------------------------------------------------------- write


class IdGenerator:
    """Colours for one video's segments, as panopticapi's IdGenerator: stuff colours are reserved up front
    and returned exactly; a thing takes its base colour once, then random ±30 perturbations not yet taken."""

    def __init__(self, categories: list[Category], seed: int):
        self.cats = {c.id: c for c in categories}
        self.taken = {(0, 0, 0)} | {tuple(c.color) for c in categories if not c.isthing and c.color}
        self.rng = np.random.default_rng(seed)

    def color(self, cat: int) -> tuple[int, int, int]:
        c = self.cats[cat]
        base = tuple(c.color) if c.color else (128, 128, 128)
        if not c.isthing:
            return base
        if base not in self.taken:
            self.taken.add(base)
            return base
        while True:
            new = tuple(int(x) for x in np.clip(np.array(base) + self.rng.integers(-30, 31, 3), 0, 255))
            if new not in self.taken:
                self.taken.add(new)
                return new


def raw_values(video: SyntheticVideo) -> dict[int, int]:
    """Segment id -> raw panomask value: stuff = class + 1, thing = (class + 1) * 100 + inst (per class)."""
    cats = {c.id: c for c in video.categories}
    out: dict[int, int] = {}
    next_inst: dict[int, int] = defaultdict(int)
    for s in C.present_segments(video):
        c = video.segment_category[s]
        if not 0 <= c < NUM_RAW:
            raise ValueError(f"{video.video_id}: category {c} is not a VIPSeg id 0..{NUM_RAW - 1}")
        if cats[c].isthing:
            inst = next_inst[c]
            next_inst[c] += 1
            if inst > 99:
                raise ValueError(f"{video.video_id}: more than 100 instances of class {c} do not fit cat*100+inst")
            out[s] = (c + 1) * 100 + inst
        else:
            if c + 1 in out.values():
                raise ValueError(f"{video.video_id}: two stuff segments of class {c}; raw panomasks hold one")
            out[s] = c + 1
    return out


def _check_categories(video: SyntheticVideo) -> None:
    for c in video.categories:
        if not 0 <= c.id < NUM_RAW or VIPSEG_CATEGORIES[c.id].isthing != c.isthing:
            raise ValueError(f"{video.video_id}: category {c} does not match VIPSeg id {c.id}'s isthing flag")


def write(out_dir: str | Path, videos: list[SyntheticVideo], split: str, *, progress: bool = False) -> None:
    out = Path(out_dir)
    json_videos, json_anns = [], []
    for v in tqdm(videos, desc=f"write vipseg {split}", disable=not progress):
        C.check_synthetic(v)
        _check_categories(v)
        h, w = v.frames[0].shape[:2]
        stems = [f"{n:08d}" for n in C.frame_numbers(v.video_id, len(v.frames), step=3)]
        raw = raw_values(v)
        gen = IdGenerator(VIPSEG_CATEGORIES, zlib.crc32(v.video_id.encode()))
        color = {s: gen.color(v.segment_category[s]) for s in sorted(raw)}
        images, frame_anns = [], []
        for t, (frame, ids) in enumerate(zip(v.frames, v.id_maps)):
            u, inv = np.unique(ids, return_inverse=True)  # u [S], inv [H*W]
            inv = inv.reshape(ids.shape)
            raw_map = np.array([raw.get(int(s), 0) for s in u], np.int64)[inv]  # [H, W]
            if t == 0 and (raw_map == 0).any():  # the documented stray 200 in a void pixel (issue #1)
                raw_map.reshape(-1)[np.flatnonzero(raw_map == 0)[0]] = STRAY_VOID
            rgb_map = np.array([color.get(int(s), (0, 0, 0)) for s in u], np.uint8)[inv]  # [H, W, 3]
            C.save_jpg(out / "imgs" / v.video_id / f"{stems[t]}.jpg", frame)
            C.save_png(out / "panomasks" / v.video_id / f"{stems[t]}.png", raw_map, "I;16")
            C.save_png(out / "panomasksRGB" / v.video_id / f"{stems[t]}.png", rgb_map, "RGB")
            areas = np.bincount(inv.reshape(-1), minlength=len(u))
            segs = [{"id": int(rgb2id(np.array(color[int(s)]))), "category_id": int(v.segment_category[int(s)]),
                     "iscrowd": 0, "area": int(a)} for s, a in zip(u, areas) if int(s) != 0]
            images.append({"id": stems[t], "width": w, "height": h, "file_name": f"{stems[t]}.png"})
            frame_anns.append({"image_id": stems[t], "file_name": f"{stems[t]}.png", "segments_info": segs})
        json_videos.append({"video_id": v.video_id, "images": images})
        json_anns.append({"video_id": v.video_id, "annotations": frame_anns})
    # the categories the videos were drawn from (all 124 for a full synthetic set, a few for a small label
    # space): the reader's label space is this list, so a model can be sized to it
    used = sorted({c.id: c for v in videos for c in v.categories}.values(), key=lambda c: c.id) or VIPSEG_CATEGORIES
    cats_json = [{"id": c.id, "name": c.name, "isthing": int(c.isthing), "color": list(c.color or (0, 0, 0))}
                 for c in used]
    C.save_json(out / f"panoptic_gt_VIPSeg_{split}.json",
                {"videos": json_videos, "annotations": json_anns, "categories": cats_json})
    C.save_json(out / "panoVIPSeg_categories.json", cats_json)
    (out / f"{split}.txt").write_text("".join(f"{v.video_id}\n" for v in videos))
