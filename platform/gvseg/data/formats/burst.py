"""BURST (exemplar-guided and class-guided tracking on TAO videos). datasets.md §6.

Layout read (annotations from the BURST release, frames from TAO)::

    <root>/annotations/{split}/all_classes.json        (or <root>/{split}/all_classes.json)
    <root>/annotations/{split}/first_frame_annotations.json     val/test: exemplars
    <frames_root>/<dataset>/<seq_name>/<image path>     frames_root (burstapi's images_base_dir) defaults
                                                        to <root>/frames/{split}

JSON: ``sequences[i]`` has ``dataset``, ``seq_name``, ``width``, ``height``, ``annotated_image_paths``,
``all_image_paths``, ``track_category_ids {"<tid>": cat}`` and ``segmentations``, one dict per annotated
frame ``{"<tid>": {"rle": str, ...}}``. Track ids are string keys, cast to int; a track absent from a frame
has no entry. ``frames="annotated"`` (default: the 1 fps frames that are evaluated) or ``"all"``.

Exemplars: from ``first_frame_annotations.json`` when present (each track once, in its first frame, with
``point`` as a dict ``{"x","y"}`` or a list ``[x, y]`` and ``bbox`` xywh): one point, one box and one mask
exemplar per track. Without it (train), each track's first annotated mask gives a mask and a box exemplar.
Decoded annotation: ids = track ids, category ids = the JSON's (LVIS ids in the release).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from tqdm import tqdm

from gvseg.data.errors import DataError
from gvseg.data.formats import _common as C
from gvseg.data.formats.ytvis import compressed_rle
from gvseg.data.formats.ytvos import OBJECT
from gvseg.structures import Category, Exemplar, FrameAnnotation, SyntheticVideo, VideoRecord

DATASET = "synthetic"  # the TAO source-dataset folder the writer uses


def _ann_dir(root: Path, split: str) -> Path:
    for d in (root / "annotations" / split, root / split):
        if (d / "all_classes.json").is_file() or (d / "all_classes.json").is_symlink():
            return d
    raise DataError(root / "annotations" / split / "all_classes.json", "file is missing")


def _categories(data: dict, root: Path, js: Path) -> list[Category] | None:
    cats = data.get("categories")
    if cats is None and (root / "info" / "categories.json").is_file():
        js = root / "info" / "categories.json"
        cats = C.load_json(js)
    if cats is None:
        return None
    if isinstance(cats, dict):  # {"<id>": "name"}
        return [Category(_int_key(k, js, "categories"), str(v), True) for k, v in cats.items()]
    return [Category(C.int_field(c, "id", js, f"categories[{i}]"), str(c.get("name", c["id"])), True)
            for i, c in enumerate(C.expect(cats, list, js, "field 'categories'"))]


def _int_key(key: str, js: Path, where: str) -> int:
    """A JSON object key that must be an integer id ("<tid>" track keys, category ids)."""
    if not key.strip().lstrip("-").isdigit():
        raise DataError(js, f"{where}: key {key!r} is not an integer id")
    return int(key)


def read_split(root: str | Path, split: str, on_error: C.OnError = "fail", *, validate: C.Validate = "header",
               progress: bool = False, frames_root: str | Path | None = None,
               frames: Literal["annotated", "all"] = "annotated", annotations: str = "all_classes"
               ) -> tuple[list[VideoRecord], list[DataError]]:
    root = Path(root)
    adir = _ann_dir(root, split)
    js = adir / f"{annotations}.json"
    data = C.load_json(js, dict)
    cats = _categories(data, root, js)
    first_js = adir / "first_frame_annotations.json"
    first = {}
    if first_js.is_file():
        for i, s in enumerate(C.field(C.load_json(first_js, dict), "sequences", first_js, "top level", list)):
            key = (C.field(s, "dataset", first_js, f"sequences[{i}]"), C.field(s, "seq_name", first_js, f"sequences[{i}]"))
            first[key] = s
    froot = Path(frames_root) if frames_root is not None else root / "frames" / split
    seqs = C.field(data, "sequences", js, "top level", list)
    C.check_unique_ids(js, [f"{s.get('dataset')}/{s.get('seq_name')}" for s in seqs if isinstance(s, dict)],
                       "sequences (dataset/seq_name)")
    items = list(enumerate(seqs))
    build = lambda item: _build(js, first_js, froot, item, cats, first, frames, validate)
    return C.run_videos(items, build, on_error, f"burst {split}", progress)


def _tracks(js: Path, where: str, seq: dict, paths: list[str]) -> list[dict[int, str]]:
    """Per annotated frame: {track id: rle string}."""
    segs = C.field(seq, "segmentations", js, where, list)
    if len(segs) != len(paths):
        raise DataError(js, f"{where}: {len(segs)} segmentations for {len(paths)} annotated_image_paths")
    out = []
    for j, frame in enumerate(segs):
        d = {}
        for tid, obj in C.expect(frame, dict, js, f"{where} segmentations[{j}]").items():
            fw = f"{where} segmentations[{j}][{tid!r}]"
            d[_int_key(tid, js, fw)] = C.field(obj, "rle", js, fw, str)
        out.append(d)
    return out


def _build(js: Path, first_js: Path, froot: Path, item, cats, first: dict, frames_kind: str,
           validate: C.Validate) -> VideoRecord:
    i, seq = item
    where = f"sequences[{i}]"
    dataset = C.field(seq, "dataset", js, where, str)
    name = C.field(seq, "seq_name", js, where, str)
    where = f"{where} ({dataset}/{name})"
    h, w = C.int_field(seq, "height", js, where), C.int_field(seq, "width", js, where)
    ann_paths = C.field(seq, "annotated_image_paths", js, where, list)
    all_paths = (seq.get("all_image_paths") or ann_paths) if frames_kind == "all" else ann_paths
    for t, p in enumerate(all_paths):
        C.expect(p, str, js, f"{where}: image path [{t}]")
    if not all_paths:
        raise DataError(js, f"{where}: no frames (empty video)")
    C.check_unique(js, all_paths, f"image paths in {where}")
    index = {p: t for t, p in enumerate(all_paths)}
    missing = [p for p in ann_paths if p not in index]
    if missing:
        raise DataError(js, f"{where}: annotated frames {missing[:3]} are not in all_image_paths")
    track_cat = {_int_key(k, js, f"{where} track_category_ids"): int(C.expect(v, int, js, f"{where} track_category_ids[{k!r}]"))
                 for k, v in C.field(seq, "track_category_ids", js, where, dict).items()}
    known = {c.id for c in cats} if cats is not None else None
    for tid, c in track_cat.items():
        if known is not None and c not in known:
            raise DataError(js, f"{where}: track {tid} has unknown category id {c}")
    per_frame = _tracks(js, where, seq, ann_paths)
    annotations: list = [None] * len(all_paths)
    for p, tracks in zip(ann_paths, per_frame):
        for tid in tracks:
            if tid not in track_cat:
                raise DataError(js, f"{where}: track {tid} is not in track_category_ids")
        annotations[index[p]] = tuple((tid, track_cat[tid], rle) for tid, rle in sorted(tracks.items()))
    frame_paths = [str(froot / dataset / name / p) for p in all_paths]
    if validate != "none":
        fh, fw = C.check_headers(f"{dataset}/{name}", frame_paths)
        if (fh, fw) != (h, w):
            raise DataError(frame_paths[0], f"frame is {fh}x{fw} but the JSON says {h}x{w}")
    if (dataset, name) in first:
        exemplars = _first_frame_exemplars(first_js, first[(dataset, name)], index, h, w)
    else:
        exemplars = _derived_exemplars(annotations, h, w)
    categories = cats if cats is not None else [Category(c, f"category {c}", True) for c in sorted(set(track_cat.values()))]
    return VideoRecord(f"{dataset}/{name}", "burst", frame_paths, h, w, categories or list(OBJECT), annotations,
                       exemplars, meta={"dataset": dataset, "seq_name": name, "id": seq.get("id"),
                                        "fps": seq.get("fps"), "json": str(js)})


def _point(p, path: Path, where: str) -> tuple[float, float]:
    if isinstance(p, dict):  # burstapi demo.py
        return float(C.field(p, "x", path, where)), float(C.field(p, "y", path, where))
    if isinstance(p, list | tuple) and len(p) == 2:  # ANNOTATION_FORMAT.md: "x coord, y coord"
        return float(p[0]), float(p[1])
    raise DataError(path, f"{where}: point {p!r} is neither {{'x','y'}} nor [x, y]")


def _first_frame_exemplars(js: Path, seq: dict, index: dict[str, int], h: int, w: int) -> list[Exemplar]:
    where = f"sequence {seq.get('dataset')}/{seq.get('seq_name')}"
    paths = C.field(seq, "annotated_image_paths", js, where)
    segs = C.field(seq, "segmentations", js, where)
    out = []
    for p, frame in zip(paths, segs):
        if not frame:
            continue
        if p not in index:
            raise DataError(js, f"{where}: exemplar frame {p} is not a frame of the video")
        t = index[p]
        for tid, obj in sorted(frame.items(), key=lambda kv: int(kv[0])):
            ow = f"{where} track {tid}"
            if "point" in obj:
                out.append(Exemplar(int(tid), t, "point", point=_point(obj["point"], js, ow)))
            if "bbox" in obj:
                out.append(Exemplar(int(tid), t, "box", box=tuple(float(x) for x in obj["bbox"])))
            rle = C.field(obj, "rle", js, ow)
            out.append(Exemplar(int(tid), t, "mask", source=("rle", {"size": [h, w], "counts": rle})))
    return out


def _derived_exemplars(annotations: list, h: int, w: int) -> list[Exemplar]:
    from pycocotools import mask as mask_util

    out, seen = [], set()
    for t, objs in enumerate(annotations):
        for tid, _, rle in objs or ():
            if tid in seen:
                continue
            seen.add(tid)
            box = mask_util.toBbox({"size": [h, w], "counts": rle.encode()}).tolist()
            out.append(Exemplar(tid, t, "box", box=tuple(box)))
            out.append(Exemplar(tid, t, "mask", source=("rle", {"size": [h, w], "counts": rle})))
    return out


def load_annotation(record: VideoRecord, t: int) -> FrameAnnotation:
    objs = record.annotations[t]
    h, w = record.height, record.width
    where = f"{record.meta.get('json')}: {record.video_id} frame {t}"
    rles = [C.rle_object({"size": [h, w], "counts": r}, h, w, where) for *_, r in objs]
    stack = C.decode_stack(rles, h, w, where)  # [H, W, K]
    return C.indexed_if_disjoint(np.array([o[0] for o in objs], np.int64), np.array([o[1] for o in objs], np.int64),
                                 stack, np.zeros(len(objs), bool), areas=C.rle_areas(rles))


# ----------------------------------------------------------------------------------------------- write


def inside_point(mask: np.ndarray) -> dict[str, int]:
    """A pixel of ``mask`` nearest its centroid (a centroid can fall outside a non-convex mask)."""
    ys, xs = np.nonzero(mask)
    k = np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2)
    return {"x": int(xs[k]), "y": int(ys[k])}


def write(out_dir: str | Path, videos: list[SyntheticVideo], split: str, *, progress: bool = False) -> None:
    """All frames annotated (dense, for evaluation); first_frame_annotations.json for non-train splits."""
    out = Path(out_dir)
    table: dict[int, Category] = {}
    seqs, firsts = [], []
    for i, v in enumerate(tqdm(videos, desc=f"write burst {split}", disable=not progress)):
        C.check_synthetic(v)
        table.update({c.id: c for c in v.categories})
        h, w = v.frames[0].shape[:2]
        paths = [f"frame{n:04d}.jpg" for n in C.frame_numbers(v.video_id, len(v.frames), step=30)]
        for p, frame in zip(paths, v.frames):
            C.save_jpg(out / "frames" / split / DATASET / v.video_id / p, frame)
        segs, first_segs, seen = [], [], set()
        for ids in v.id_maps:
            frame, ff = {}, {}
            for s in sorted(set(np.unique(ids).tolist()) - {0}):
                m = ids == s
                rle = compressed_rle(m)["counts"]
                frame[str(s)] = {"rle": rle, "is_gt": True, "score": 1.0}
                if s not in seen:
                    seen.add(s)
                    ys, xs = np.nonzero(m)
                    bbox = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
                    ff[str(s)] = {"rle": rle, "is_gt": True, "score": 1.0, "bbox": bbox, "point": inside_point(m)}
            segs.append(frame)
            first_segs.append(ff)
        seq = {"id": i + 1, "width": w, "height": h, "seq_name": v.video_id, "dataset": DATASET, "fps": 30,
               "all_image_paths": paths, "annotated_image_paths": paths, "neg_category_ids": [],
               "not_exhaustive_category_ids": [],
               "track_category_ids": {str(s): int(v.segment_category[s]) for s in C.present_segments(v)}}
        seqs.append({**seq, "segmentations": segs})
        firsts.append({**seq, "segmentations": first_segs})
    cats = [{"id": c.id, "name": c.name, "synset": c.name, "def": "", "synonyms": [c.name]}
            for c in sorted(table.values(), key=lambda c: c.id)]
    adir = out / "annotations" / split
    C.save_json(adir / "all_classes.json", {"split": split, "categories": cats, "sequences": seqs})
    if not split.startswith("train"):
        C.save_json(adir / "first_frame_annotations.json", {"split": split, "categories": cats, "sequences": firsts})
