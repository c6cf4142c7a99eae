"""YouTube-VIS 2019/2021 and OVIS (video instance segmentation). datasets.md §3.

Layout read::

    ytvis: <root>/{split}.json (or {split}/instances.json, annotations/instances_{split}.json)
           <root>/{split}/JPEGImages/<file_names[t]>          e.g. "ff25f55852/00005.jpg"
    ovis:  <root>/annotations/annotations_{split}.json (or <root>/annotations_{split}.json)
           <root>/{split}/<file_names[t]>                     e.g. "<vid>/img_0000001.jpg"

"val" and "valid" are accepted for each other. Frames come from the JSON ``file_names`` (the release's
order), checked for duplicates. Per annotation, ``segmentations[t]`` is ``null`` (object absent), an RLE whose
``counts`` is a list (uncompressed, column-major; Mask2Former ``frPyObjects``) or a compressed string, or a
polygon list. Crowd annotations are kept with ``iscrowd`` set (the training mapper drops them). A JSON without
``annotations`` (valid/test) reads as unannotated (``None``); with them every frame is annotated (K may be 0).

Decoded annotation: ids = the JSON annotation ids, category ids = the JSON's (YTVIS 1..40, OVIS 1..25), masks
may overlap. ``write`` writes the same layout, alternating list and string RLE counts, ``null`` where absent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from gvseg.data.errors import DataError
from gvseg.data.formats import _common as C
from gvseg.structures import Category, FrameAnnotation, SyntheticVideo, VideoRecord

Variant = Literal["ytvis", "ovis"]

# YouTube-VIS 2021 (2019 differs: eagle/owl -> bird, ape -> monkey, hand removed; flying_disc, squirrel,
# whale added; youtube-vos.org vis.md). Names in id order 1..40; colours as in Mask2Former ytvis.py.
_YTVIS21 = [
    ("airplane", (106, 0, 228)), ("bear", (174, 57, 255)), ("bird", (255, 109, 65)), ("boat", (0, 0, 192)),
    ("car", (0, 0, 142)), ("cat", (255, 77, 255)), ("cow", (120, 166, 157)), ("deer", (209, 0, 151)),
    ("dog", (0, 226, 252)), ("duck", (179, 0, 194)), ("earless_seal", (174, 255, 243)),
    ("elephant", (110, 76, 0)), ("fish", (73, 77, 174)), ("flying_disc", (250, 170, 30)),
    ("fox", (0, 125, 92)), ("frog", (107, 142, 35)), ("giant_panda", (0, 82, 0)), ("giraffe", (72, 0, 118)),
    ("horse", (182, 182, 255)), ("leopard", (255, 179, 240)), ("lizard", (119, 11, 32)),
    ("monkey", (0, 60, 100)), ("motorbike", (0, 0, 230)), ("mouse", (130, 114, 135)),
    ("parrot", (165, 42, 42)), ("person", (220, 20, 60)), ("rabbit", (100, 170, 30)), ("shark", (183, 130, 88)),
    ("skateboard", (134, 134, 103)), ("snake", (5, 121, 0)), ("snowboard", (133, 129, 255)),
    ("squirrel", (188, 208, 182)), ("surfboard", (145, 148, 174)), ("tennis_racket", (255, 208, 186)),
    ("tiger", (166, 196, 102)), ("train", (0, 80, 100)), ("truck", (0, 0, 70)), ("turtle", (0, 143, 149)),
    ("whale", (0, 228, 0)), ("zebra", (199, 100, 0)),
]
YTVIS21_CATEGORIES = [Category(i + 1, n, True, c) for i, (n, c) in enumerate(_YTVIS21)]

# OVIS, ids 1..25 ("Vehical" spelled as in the release / DVIS).
_OVIS = ["Person", "Bird", "Cat", "Dog", "Horse", "Sheep", "Cow", "Elephant", "Bear", "Zebra", "Giraffe",
         "Poultry", "Giant_panda", "Lizard", "Parrot", "Monkey", "Rabbit", "Tiger", "Fish", "Turtle", "Bicycle",
         "Motorcycle", "Airplane", "Boat", "Vehical"]
OVIS_CATEGORIES = [Category(i + 1, n, True, _YTVIS21[i][1]) for i, n in enumerate(_OVIS)]

_ALIAS = {"val": "valid", "valid": "val"}


def _paths(root: Path, split: str, variant: Variant) -> tuple[Path, Path]:
    """(json, image root) for ``split``, trying the release's layouts and the val/valid alias."""
    for s in (split, _ALIAS.get(split, split)):
        if variant == "ovis":
            cands = [root / "annotations" / f"annotations_{s}.json", root / f"annotations_{s}.json"]
            img = root / s / "JPEGImages" if (root / s / "JPEGImages").is_dir() else root / s
        else:
            cands = [root / f"{s}.json", root / s / "instances.json", root / "annotations" / f"instances_{s}.json"]
            img = root / s / "JPEGImages"
        for js in cands:
            if js.is_file() or js.is_symlink():  # a dangling link / link loop: load_json names it
                return js, img
    raise DataError(root, f"no {variant} annotation JSON for split {split!r} (looked for {cands[0].name})")


def read_split(root: str | Path, split: str, on_error: C.OnError = "fail", *, validate: C.Validate = "header",
               progress: bool = False, variant: Variant = "ytvis") -> tuple[list[VideoRecord], list[DataError]]:
    root = Path(root)
    js, img_root = _paths(root, split, variant)
    data = C.load_json(js, dict)
    cats = [Category(C.int_field(c, "id", js, f"categories[{i}]"), str(c.get("name", c["id"])), True)
            for i, c in enumerate(C.field(data, "categories", js, "top level", list))]
    C.check_unique_ids(js, [c.id for c in cats], "category ids")
    known = {c.id for c in cats}
    has_gt = "annotations" in data and data["annotations"] is not None
    per_video: dict[int, list] = {}
    anns = C.expect(data.get("annotations") or [], list, js, "field 'annotations'")
    for i, a in enumerate(anns):
        per_video.setdefault(C.field(a, "video_id", js, f"annotations[{i}]"), []).append((i, a))
    # a missing id is that video's own error (below), so these checks look only at the ids present
    C.check_unique_ids(js, [a["id"] for a in anns if "id" in a], "annotation ids")
    videos = C.field(data, "videos", js, "top level", list)
    C.check_unique_ids(js, [v["id"] for v in videos if isinstance(v, dict) and "id" in v], "video ids in 'videos'")
    items = list(enumerate(videos))
    build = lambda item: _build(js, img_root, item, per_video, has_gt, cats, known, variant, validate)
    return C.run_videos(items, build, on_error, f"{variant} {split}", progress)


def read_split_ovis(root: str | Path, split: str, on_error: C.OnError = "fail", **kw):
    return read_split(root, split, on_error, variant="ovis", **kw)


def _build(js: Path, img_root: Path, item, per_video, has_gt: bool, cats, known, variant, validate) -> VideoRecord:
    i, v = item
    names = v.get("file_names") if isinstance(v, dict) else None
    stem = Path(names[0]).parent.name if names else ""  # the frame folder: the video's name on disk
    where = f"videos[{i}] ({stem or 'no frames'})"
    vid = C.field(v, "id", js, where)
    names = C.field(v, "file_names", js, where, list)
    if not names:
        raise DataError(js, f"{where} (video {vid}): no frames (empty video)")
    for t, n in enumerate(names):
        C.expect(n, str, js, f"{where}: file_names[{t}]")
    C.check_unique(js, names, f"file_names in video {vid}")
    frames = [str(img_root / n) for n in names]
    h, w = C.int_field(v, "height", js, where), C.int_field(v, "width", js, where)
    if validate != "none":
        fh, fw = C.check_headers(vid, frames)
        if (fh, fw) != (h, w):
            raise DataError(frames[0], f"frame is {fh}x{fw} but the JSON says {h}x{w} for video {vid}")
    annotations: list = [[] for _ in names] if has_gt else [None] * len(names)
    for j, a in per_video.get(vid, []):
        aw = f"annotations[{j}] (video {vid}, {stem})"
        ann_id = C.int_field(a, "id", js, aw)
        cat = C.int_field(a, "category_id", js, aw)
        if cat not in known:
            raise DataError(js, f"{aw}: unknown category id {cat}")
        segs = C.field(a, "segmentations", js, aw, list)
        if len(segs) != len(names):
            raise DataError(js, f"{aw}: {len(segs)} segmentations for {len(names)} frames")
        for t, s in enumerate(segs):
            if s is not None:
                C.expect(s, (dict, list), js, f"{aw}: segmentations[{t}]")
                annotations[t].append((ann_id, cat, bool(a.get("iscrowd", 0)), s))
    annotations = [tuple(a) if a is not None else None for a in annotations]
    return VideoRecord(stem or str(vid), variant, frames, h, w, list(cats), annotations,
                       meta={"json_video_id": vid, "json": str(js)})


def load_annotation(record: VideoRecord, t: int) -> FrameAnnotation:
    objs = record.annotations[t]
    h, w = record.height, record.width
    where = f"{record.meta.get('json', record.video_id)}: video {record.meta.get('json_video_id')} frame {t}"
    rles = [segmentation_rle(s, h, w, where) for *_, s in objs]
    stack = C.decode_stack(rles, h, w, where)  # [H, W, K]
    return C.indexed_if_disjoint(np.array([o[0] for o in objs], np.int64), np.array([o[1] for o in objs], np.int64),
                                 stack, np.array([o[2] for o in objs], bool), areas=C.rle_areas(rles))


def segmentation_rle(segm, height: int, width: int, where: str) -> dict:
    """RLE (list or string counts) or polygons -> one compressed RLE (``C.rle_object``)."""
    from pycocotools import mask as mask_util

    if isinstance(segm, dict):
        if "counts" not in segm:
            raise DataError(where, "RLE without 'counts'")
        return C.rle_object(segm, height, width, where)
    if isinstance(segm, list):  # polygons [[x0, y0, x1, y1, ...], ...]
        polys = [p for p in segm if len(p) >= 6]
        if not polys:
            return mask_util.encode(np.zeros((height, width), np.uint8, order="F"))
        return mask_util.merge(mask_util.frPyObjects(polys, height, width))
    raise DataError(where, f"segmentation of type {type(segm).__name__} is neither RLE nor polygon")


# ----------------------------------------------------------------------------------------------- write


def uncompressed_rle(mask: np.ndarray) -> dict:
    """[H, W] bool -> {"size", "counts": list} column-major run lengths starting with zeros (YTVIS style)."""
    flat = mask.reshape(-1, order="F").astype(np.int8)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(flat)) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0] == 1:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(mask.shape), "counts": rle["counts"].decode()}


def write(out_dir: str | Path, videos: list[SyntheticVideo], split: str, *, progress: bool = False,
          variant: Variant = "ytvis") -> None:
    out = Path(out_dir)
    # the categories the videos were drawn from (the whole list for a full synthetic set): the reader's label
    # space is this list, so a small synthetic label space stays small
    table = {c.id: c for v in videos for c in v.categories} or \
        {c.id: c for c in (OVIS_CATEGORIES if variant == "ovis" else YTVIS21_CATEGORIES)}
    json_videos, json_anns = [], []
    for vi, v in enumerate(tqdm(videos, desc=f"write {variant} {split}", disable=not progress)):
        C.check_synthetic(v)
        h, w = v.frames[0].shape[:2]
        if variant == "ovis":
            names = [f"{v.video_id}/img_{t + 1:07d}.jpg" for t in range(len(v.frames))]
            img_root = out / split
        else:  # every 5th original frame: 00000, 00005, ...
            names = [f"{v.video_id}/{5 * t:05d}.jpg" for t in range(len(v.frames))]
            img_root = out / split / "JPEGImages"
        for name, frame in zip(names, v.frames):
            C.save_jpg(img_root / name, frame)
        video_json_id = vi + 1
        json_videos.append({"id": video_json_id, "width": w, "height": h, "length": len(names), "file_names": names})
        for s in C.present_segments(v):
            segs, areas, boxes = [], [], []
            for ids in v.id_maps:
                m = ids == s
                if not m.any():
                    segs.append(None), areas.append(None), boxes.append(None)
                    continue
                # alternate list and string counts so readers meet both (datasets.md §9)
                segs.append(uncompressed_rle(m) if len(json_anns) % 2 == 0 else compressed_rle(m))
                ys, xs = np.nonzero(m)
                areas.append(float(m.sum()))
                boxes.append([float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                              float(ys.max() - ys.min() + 1)])
            json_anns.append({"id": len(json_anns) + 1, "video_id": video_json_id,
                              "category_id": int(v.segment_category[s]), "iscrowd": 0, "height": h, "width": w,
                              "length": len(names), "segmentations": segs, "areas": areas, "bboxes": boxes})
    cats = [{"id": c.id, "name": c.name, "supercategory": "object"} for c in sorted(table.values(), key=lambda c: c.id)]
    data = {"info": {"description": "gvseg synthetic"}, "licenses": [], "videos": json_videos,
            "annotations": json_anns, "categories": cats}
    js = out / "annotations" / f"annotations_{split}.json" if variant == "ovis" else out / f"{split}.json"
    C.save_json(js, data)


def write_ovis(out_dir: str | Path, videos: list[SyntheticVideo], split: str, *, progress: bool = False) -> None:
    write(out_dir, videos, split, progress=progress, variant="ovis")
