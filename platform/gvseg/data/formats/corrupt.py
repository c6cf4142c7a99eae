"""Malformed datasets for the bad-input tests and ``gvseg data synth --corrupt``.

``write_corrupt(format, out_dir, split="corrupt") -> {video_id: kind}`` writes a small ``split`` of ``format``
under ``out_dir`` with the format's writer, then breaks one video per failure kind in place. Two videos
stay valid: ``ok`` (3 frames) and ``one_frame`` (a one-frame video is valid and must read). Keys are the
video ids the reader reports (KITTI-STEP renames sequences to ``%04d``; BURST ids are ``dataset/seq``), except
the YTVIS/OVIS empty video, which only its JSON entry can name (``videos[i]``).

``REASONS[kind]`` is a regular expression the ``DataError`` message must match. Kinds in ``NEEDS_FULL`` only
show when pixels are decoded (``read_dataset(..., validate="full")`` or ``load_frame/load_annotation``);
the rest are found by the default header-level read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from gvseg.structures import SyntheticVideo

REASONS = {
    "corrupt_frame": r"cannot read image header",
    "truncated_frame": r"corrupt or truncated image",
    "corrupt_mask": r"cannot read image header",
    "truncated_mask": r"corrupt or truncated image",
    "mask_size": r"is \d+x\d+ but",
    "stray_label": r"stray|not in segments_info",
    "unknown_category": r"unknown category id",
    "missing_field": r"missing field",
    "empty_video": r"empty video",
    "duplicate_frames": r"duplicate",
}
NEEDS_FULL = {"truncated_frame", "truncated_mask", "stray_label"}

_IMAGE_KINDS = ["corrupt_frame", "truncated_frame", "corrupt_mask", "truncated_mask", "mask_size"]
KINDS: dict[str, list[str]] = {
    "vipseg": [*_IMAGE_KINDS, "stray_label", "unknown_category", "missing_field", "empty_video", "duplicate_frames"],
    "vspw": [*_IMAGE_KINDS, "stray_label", "empty_video", "duplicate_frames"],
    "kitti-step": [*_IMAGE_KINDS, "stray_label", "empty_video", "duplicate_frames"],
    "ytvos": [*_IMAGE_KINDS, "stray_label", "missing_field", "empty_video", "duplicate_frames"],
    "davis": [*_IMAGE_KINDS, "empty_video", "duplicate_frames"],
    "ytvis": ["corrupt_frame", "truncated_frame", "mask_size", "unknown_category", "missing_field", "empty_video",
              "duplicate_frames"],
    "ovis": ["corrupt_frame", "truncated_frame", "mask_size", "unknown_category", "missing_field", "empty_video",
             "duplicate_frames"],
    "burst": ["corrupt_frame", "truncated_frame", "mask_size", "unknown_category", "missing_field", "empty_video",
              "duplicate_frames"],
}


def tiny_video(format: str, video_id: str, frames: int = 3, height: int = 32, width: int = 48) -> SyntheticVideo:
    """A stuff region (if the format has stuff), a void band and two things, the second entering at frame 1."""
    from gvseg.data.formats import categories_for

    cats = categories_for(format)
    things = [c for c in cats if c.isthing][:2]
    things = things if len(things) == 2 else [things[0], things[0]]
    stuff = next((c for c in cats if not c.isthing), None)
    yy, xx = np.mgrid[:height, :width]
    frames_out, maps = [], []
    for t in range(frames):
        m = np.zeros((height, width), np.int64)
        if stuff is not None:
            m[height // 2:] = 1
        m[height // 2 - 2:height // 2] = 0
        m[(yy - 10) ** 2 + (xx - 8 - 4 * t) ** 2 < 25] = 2
        if t >= 1:
            m[20:28, 30 + 2 * t:40 + 2 * t] = 3
        maps.append(m)
        frames_out.append(np.stack([(m * 60) % 256, (xx * 5) % 256, (yy * 7) % 256], -1).astype(np.uint8))
    seg_cat = {2: things[0].id, 3: things[1].id}
    if stuff is not None:
        seg_cat[1] = stuff.id
    return SyntheticVideo(video_id, frames_out, maps, seg_cat, [c for c in (stuff, *things) if c is not None])


def _record_id(format: str, index: int, video_id: str, kind: str) -> str:
    if format in ("ytvis", "ovis") and kind == "empty_video":
        return f"videos[{index}]"  # no file_names: the JSON entry is all that names it
    if format == "kitti-step":
        return f"{index:04d}"
    if format == "burst":
        return f"synthetic/{video_id}"
    return video_id


def _garbage(path: str | Path) -> None:
    Path(path).write_bytes(b"this is not an image\x00\x01\x02")


def _truncate(path: str | Path) -> None:
    """Cut the file inside its pixel data (after JPEG SOS / PNG IDAT), so the header still reads."""
    data = Path(path).read_bytes()
    start = max(data.find(b"\xff\xda"), data.find(b"IDAT"))
    start = start if start > 0 else 0
    Path(path).write_bytes(data[: (start + len(data)) // 2])


def _resave(path: str | Path, im: Image.Image, arr: np.ndarray) -> None:
    """Save ``arr`` over ``path`` in ``im``'s mode, keeping its palette."""
    if im.mode == "P":
        out = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.astype(np.uint8).tobytes())
        out.putpalette(im.getpalette())
    else:
        out = Image.fromarray(arr)
    out.save(path)


def _grow(path: str | Path) -> None:
    """Re-save a mask two rows taller, same mode and palette."""
    im = Image.open(path)
    arr = np.array(im)
    _resave(path, im, np.concatenate([arr, arr[-2:]], 0))


def _set_pixel(path: str | Path, value) -> None:
    im = Image.open(path)
    arr = np.array(im)
    arr[0, 0] = value
    _resave(path, im, arr)


def _mask_paths(format: str, root: Path, rec, t: int) -> list[str]:
    h = rec.annotations[t]
    if format == "vipseg":  # break both forms: either may be read
        stem = Path(rec.frame_paths[t]).stem
        return [h[1], str(root / "panomasks" / rec.video_id / f"{stem}.png")]
    return [h]


def _edit_json(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _json_path(format: str, root: Path, split: str) -> Path:
    return {"vipseg": root / f"panoptic_gt_VIPSeg_{split}.json", "ytvis": root / f"{split}.json",
            "ovis": root / "annotations" / f"annotations_{split}.json",
            "burst": root / "annotations" / split / "all_classes.json",
            "ytvos": root / split / "meta.json"}[format]


def write_corrupt(format: str, out_dir: str | Path, split: str = "corrupt") -> dict[str, str]:
    from gvseg.data import formats

    root = Path(out_dir)
    kinds = ["ok", "one_frame", *KINDS[format]]
    videos = [tiny_video(format, f"{i}_{k}", frames=1 if k == "one_frame" else 3) for i, k in enumerate(kinds)]
    formats.write_synthetic(format, root, videos, split, progress=False)
    records, _ = formats.read_dataset(format, root, split, validate="none", progress=False)
    by_id = {r.video_id: r for r in records}
    expected = {}
    for i, (kind, v) in enumerate(zip(kinds, videos)):
        expected[_record_id(format, i, v.video_id, kind)] = kind
        _break(format, root, split, kind, i, by_id[_record_id(format, i, v.video_id, "")])
    return expected


def _break(format: str, root: Path, split: str, kind: str, index: int, rec) -> None:
    js = _json_path(format, root, split) if format in ("vipseg", "ytvis", "ovis", "burst", "ytvos") else None
    if kind in ("ok", "one_frame"):
        return
    if kind == "corrupt_frame":
        _garbage(rec.frame_paths[1])
    elif kind == "truncated_frame":
        _truncate(rec.frame_paths[1])
    elif kind == "corrupt_mask":
        for p in _mask_paths(format, root, rec, 1):
            _garbage(p)
    elif kind == "truncated_mask":
        for p in _mask_paths(format, root, rec, 1):
            _truncate(p)
    elif kind == "mask_size":
        if format in ("ytvis", "ovis"):
            _edit_json(js, lambda d: d["videos"][index].update(height=d["videos"][index]["height"] + 2))
        elif format == "burst":
            _edit_json(js, lambda d: d["sequences"][index].update(height=d["sequences"][index]["height"] + 2))
        else:
            for p in _mask_paths(format, root, rec, 1):
                _grow(p)
    elif kind == "stray_label":
        if format == "vipseg":
            paths = _mask_paths(format, root, rec, 1)
            _set_pixel(paths[0], (1, 2, 3))  # rgb2id 197121: not in segments_info
            _set_pixel(paths[1], 13000)  # class 130 does not exist
        else:
            value = {"vspw": 200, "ytvos": 77, "kitti-step": (50, 0, 0)}[format]
            _set_pixel(_mask_paths(format, root, rec, 1)[0], value)
    elif kind == "unknown_category":
        if format == "vipseg":
            def fn(d):
                d["annotations"][index]["annotations"][0]["segments_info"][0]["category_id"] = 999
        elif format == "burst":
            def fn(d):
                tc = d["sequences"][index]["track_category_ids"]
                tc[next(iter(tc))] = 999
        else:
            def fn(d):
                next(a for a in d["annotations"] if a["video_id"] == d["videos"][index]["id"])["category_id"] = 999
        _edit_json(js, fn)
    elif kind == "missing_field":
        if format == "vipseg":
            fn = lambda d: d["annotations"][index]["annotations"][0].pop("segments_info")
        elif format == "burst":
            fn = lambda d: d["sequences"][index].pop("track_category_ids")
        elif format == "ytvos":
            fn = lambda d: d["videos"][rec.video_id].pop("objects")
        else:
            def fn(d):
                next(a for a in d["annotations"] if a["video_id"] == d["videos"][index]["id"]).pop("segmentations")
        _edit_json(js, fn)
    elif kind == "empty_video":
        if format in ("ytvis", "ovis"):
            def fn(d):
                vid = d["videos"][index]["id"]
                d["videos"][index]["file_names"] = []
                d["annotations"] = [a for a in d["annotations"] if a["video_id"] != vid]
            _edit_json(js, fn)
        elif format == "burst":
            _edit_json(js, lambda d: d["sequences"][index].update(
                all_image_paths=[], annotated_image_paths=[], segmentations=[]))
        else:
            folder = Path(rec.frame_paths[0]).parent
            shutil.rmtree(folder)
            folder.mkdir()
    elif kind == "duplicate_frames":
        if format in ("ytvis", "ovis"):
            _edit_json(js, lambda d: d["videos"][index]["file_names"].__setitem__(1, d["videos"][index]["file_names"][0]))
        elif format == "burst":
            def fn(d):
                s = d["sequences"][index]
                for key in ("all_image_paths", "annotated_image_paths"):
                    s[key][1] = s[key][0]
            _edit_json(js, fn)
        else:  # the same frame name with another extension
            src = Path(rec.frame_paths[0])
            shutil.copy(src, src.with_suffix(".png" if src.suffix != ".png" else ".jpg"))
    else:
        raise ValueError(f"unknown corruption kind {kind!r}")
