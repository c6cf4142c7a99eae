"""Bad input: every malformed file gives a DataError naming the file (or the JSON and the place in it) and
the reason; with on_error="skip" the video is skipped and its error returned, never silently dropped."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from gvseg.data import formats
from gvseg.data.errors import DataError
from gvseg.data.formats.corrupt import KINDS, NEEDS_FULL, REASONS, write_corrupt

FORMATS = sorted(KINDS)


def _mentions(err: DataError, rid: str) -> bool:
    return re.search(rf"(?<!\w){re.escape(rid)}(?!\w)", str(err)) is not None


@pytest.fixture(scope="module", params=FORMATS)
def corrupt(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    return request.param, root, write_corrupt(request.param, root)


def test_skip_full_reports_every_broken_video(corrupt):
    fmt, root, expected = corrupt
    records, errors = formats.read_dataset(fmt, root, "corrupt", on_error="skip", validate="full")
    good = {rid for rid, k in expected.items() if k in ("ok", "one_frame")}
    assert {r.video_id for r in records} == good
    assert len(errors) == len(expected) - len(good)
    for rid, kind in expected.items():
        if rid in good:
            continue
        mine = [e for e in errors if _mentions(e, rid)]
        assert len(mine) == 1, f"{kind}: {[str(e) for e in errors]}"
        assert re.search(REASONS[kind], mine[0].reason), f"{kind}: {mine[0]}"
        assert str(mine[0]) == f"{mine[0].path}: {mine[0].reason}"


def test_header_level_catches_structural_errors(corrupt):
    fmt, root, expected = corrupt
    records, errors = formats.read_dataset(fmt, root, "corrupt", on_error="skip")
    for rid, kind in expected.items():
        caught = any(_mentions(e, rid) for e in errors)
        if kind in ("ok", "one_frame"):
            assert not caught
        elif kind not in NEEDS_FULL:
            assert caught, f"{fmt} {kind} not found by the header-level read"
    # what the header pass let through still fails, with a DataError, once decoded
    for r in records:
        kind = expected[r.video_id]
        if kind in NEEDS_FULL:
            with pytest.raises(DataError, match=REASONS[kind]):
                for t in range(len(r)):
                    formats.load_frame(r, t)
                    formats.load_annotation(r, t)


def test_fail_raises_data_error(corrupt):
    fmt, root, _ = corrupt
    with pytest.raises(DataError):
        formats.read_dataset(fmt, root, "corrupt", on_error="fail", validate="full")


def test_one_frame_video_reads(corrupt):
    fmt, root, expected = corrupt
    records, _ = formats.read_dataset(fmt, root, "corrupt", on_error="skip", validate="full")
    rid = next(r for r, k in expected.items() if k == "one_frame")
    rec = next(r for r in records if r.video_id == rid)
    assert len(rec) == 1
    ann = formats.load_annotation(rec, 0)
    assert ann is not None and ann.masks.shape[1:] == (rec.height, rec.width) and len(ann.ids) >= 1


def test_data_error_pickles_and_formats():
    e = DataError("/x/y.png", "mask is 4x5 but frame is 4x6")
    assert str(e) == "/x/y.png: mask is 4x5 but frame is 4x6" and isinstance(e, ValueError)
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.path, e2.reason, str(e2)) == (e.path, e.reason, str(e))


def test_missing_split_list_raises(tmp_path):
    with pytest.raises(DataError, match="split list is missing"):
        formats.read_dataset("vipseg", tmp_path, "train")


def test_unknown_format_and_bad_on_error(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset format"):
        formats.read_dataset("coco", tmp_path, "train")
    with pytest.raises(ValueError, match="on_error"):
        formats.read_dataset("vipseg", tmp_path, "train", on_error="ignore")


def test_vipseg_stray_raw_value_names_file(tmp_path):
    from PIL import Image

    from gvseg.data.formats.corrupt import tiny_video

    formats.write_synthetic("vipseg", tmp_path, [tiny_video("vipseg", "v")], "train")
    rec = formats.read_dataset("vipseg", tmp_path, "train", form="raw")[0][0]
    path = rec.annotations[2][1]
    arr = np.array(Image.open(path))
    arr[1, 1] = 12600  # class 126 > 124
    Image.fromarray(arr).save(path)
    with pytest.raises(DataError, match=r"stray label values \[12600\]") as ei:
        formats.load_annotation(rec, 2)
    assert ei.value.path == path


def test_mask_size_message(tmp_path):
    from gvseg.data.formats.corrupt import _grow, tiny_video

    formats.write_synthetic("vspw", tmp_path, [tiny_video("vspw", "v")], "train")
    rec = formats.read_dataset("vspw", tmp_path, "train")[0][0]
    _grow(rec.annotations[0])
    with pytest.raises(DataError, match="mask is 34x48 but frame is 32x48"):
        formats.read_dataset("vspw", tmp_path, "train")


# ================================================================================================ the table
# Each case breaks one thing in a tiny valid dataset (one 3-frame video "v" per format, copied per case) and
# expects a DataError whose message is one line, names the file (``path``) and says why (``reason``), from
# ``read_dataset(..., validate="full")``; ``"ok"`` cases are valid data that must read. ``gvseg eval`` and the
# video/synthetic paths follow in their own tables. The CLI path is proven once by subprocess (test_cli_*).

SPLIT = "train"
TRUNCATED = r"corrupt or truncated image|cannot read image header \(OSError: Truncated"  # where the cut falls
JSONS = {"vipseg": "panoptic_gt_VIPSeg_train.json", "ytvis": "train.json", "ovis": "annotations/annotations_train.json",
         "burst": "annotations/train/all_classes.json", "ytvos": "train/meta.json"}
LISTS = {"vipseg-raw": "train.txt", "vspw": "train.txt", "davis": "ImageSets/2017/train.txt"}


@dataclass
class Ctx:
    """Paths of the case's copy: the first video's frames / masks, its frame folder, the JSON."""
    root: Path
    frames: list[Path]
    masks: list[Path]
    json: Path | None
    mask_dir: Path | None = None

    @property
    def frame_dir(self) -> Path:
        return self.frames[0].parent


@dataclass
class Case:
    name: str
    fmt: str  # a reader format, or "vipseg-raw" (the raw form: the converted JSON removed)
    mutate: Callable[[Ctx], Any]  # breaks the copy; returns the path the error must name
    reason: str  # regex the reason must match ("ok": the data is valid and must read)
    kw: dict = field(default_factory=dict)


def _reader(fmt: str) -> tuple[str, dict]:
    return ("vipseg", {"form": "raw"}) if fmt == "vipseg-raw" else (fmt, {})


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """One tiny valid dataset per format, written once; cases copy it."""
    from gvseg.data.formats.corrupt import tiny_video

    cache: dict[str, Path] = {}

    def get(fmt: str) -> Path:
        if fmt not in cache:
            base = tmp_path_factory.mktemp(fmt)
            wfmt = "vipseg" if fmt == "vipseg-raw" else fmt
            formats.write_synthetic(wfmt, base, [tiny_video(wfmt, "v")], SPLIT, progress=False)
            if fmt == "vipseg-raw":
                shutil.rmtree(base / "panomasksRGB")
                (base / "panoptic_gt_VIPSeg_train.json").unlink()
            cache[fmt] = base
        return cache[fmt]

    return get


def _ctx(fmt: str, base: Path, root: Path) -> Ctx:
    rf, kw = _reader(fmt)
    rec = formats.read_dataset(rf, base, SPLIT, progress=False, **kw)[0][0]
    move = lambda p: root / Path(p).relative_to(base)
    masks = []
    for a in rec.annotations:
        if isinstance(a, str):
            masks.append(move(a))
        elif isinstance(a, tuple) and a and a[0] in ("raw", "rgb"):
            masks.append(move(a[1]))
    js = root / JSONS[fmt] if fmt in JSONS else None
    return Ctx(root, [move(f) for f in rec.frame_paths], masks, js, masks[0].parent if masks else None)


# -------------------------------------------------------------------------------------------- mutations


def _self_loop(p: Path) -> Path:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    else:
        p.unlink()
    os.symlink(p.name, p)  # p -> p: ELOOP
    return p


def _dangling(p: Path) -> Path:
    p.unlink()
    os.symlink(p.name + ".gone", p)
    return p


def _truncate(p: Path) -> Path:
    b = p.read_bytes()
    p.write_bytes(b[: len(b) // 2])
    return p


def _garbage(p: Path) -> Path:
    p.write_bytes(b"this is not an image")
    return p


def _resize(p: Path) -> Path:
    im = Image.open(p)
    im.resize((im.width, im.height + 2)).save(p, quality=95)
    return p


def _grow_mask(p: Path) -> Path:
    from gvseg.data.formats.corrupt import _grow

    _grow(p)
    return p


def _set_pixel(p: Path, value) -> Path:
    from gvseg.data.formats.corrupt import _set_pixel as sp

    sp(p, value)
    return p


def _empty_dir(p: Path) -> Path:
    for f in p.iterdir():
        f.unlink()
    return p


def _root_loop(c: Ctx) -> Path:
    return _self_loop(c.root)


def _root_file(c: Ctx) -> Path:
    shutil.rmtree(c.root)
    c.root.write_text("not a folder")
    return c.root


def _orphan_mask(c: Ctx) -> Path:
    p = c.masks[0].with_name("99999999" + c.masks[0].suffix)
    shutil.copy(c.masks[0], p)
    return p


def _edit(c: Ctx, fn: Callable[[Any], Any]) -> Path:
    d = json.loads(c.json.read_text())
    fn(d)  # edits in place (its return value, e.g. of a pop, is ignored)
    c.json.write_text(json.dumps(d))
    return c.json


def _wrap_in_list(p: Path) -> Path:
    p.write_text(json.dumps([json.loads(p.read_text())]))
    return p


def _non_utf8(p: Path) -> Path:
    raw = p.read_bytes()
    i = raw.index(b'"') + 1
    p.write_bytes(raw[:i] + b"\xe9" + raw[i:])  # a Latin-1 byte in a key: what a bad converter writes
    return p


def _split_list(c: Ctx, fmt: str) -> Path:
    return c.root / LISTS[fmt]


def _vipseg_frame(d, key, value):
    d["annotations"][0]["annotations"][0][key] = value


def _vipseg_seg(d, key, value):
    d["annotations"][0]["annotations"][0]["segments_info"][0][key] = value


def _burst_seq(d, key, value):
    d["sequences"][0][key] = value


def _ytvis_ann(d, key, value):
    d["annotations"][0][key] = value


# ------------------------------------------------------------------------------------------------ cases

FRAME_FOLDER_FORMATS = ["vipseg", "vipseg-raw", "vspw", "kitti-step", "ytvos", "davis"]
JSON_FRAME_FORMATS = ["ytvis", "ovis", "burst"]
MASK_FORMATS = ["vipseg", "vipseg-raw", "vspw", "kitti-step", "ytvos", "davis"]

CASES: list[Case] = []
for f in FRAME_FOLDER_FORMATS + JSON_FRAME_FORMATS:
    CASES += [
        Case("frame_dir_symlink_loop", f, lambda c: _self_loop(c.frame_dir), r"symlink loop"),
        Case("frame_symlink_loop", f, lambda c: _self_loop(c.frames[1]), r"^(frame )?is a symlink loop$"),
        Case("frame_broken_symlink", f, lambda c: _dangling(c.frames[1]), r"broken symlink"),
        Case("frame_truncated", f, lambda c: _truncate(c.frames[1]), TRUNCATED),
        Case("frame_garbage", f, lambda c: _garbage(c.frames[1]), r"cannot read image header"),
        Case("frame_other_size", f, lambda c: _resize(c.frames[2]), r"frame is \d+x\d+ but"),
        Case("root_symlink_loop", f, _root_loop, r"dataset root is a symlink loop"),
        Case("root_is_a_file", f, _root_file, r"dataset root is not a folder"),
    ]
for f in FRAME_FOLDER_FORMATS:
    CASES.append(Case("frame_dir_empty", f, lambda c: _empty_dir(c.frame_dir), r"no frames \(empty video\)"))
for f in JSON_FRAME_FORMATS:
    CASES.append(Case("frame_missing", f, lambda c: (c.frames[1].unlink(), c.frames[1])[1], r"file is missing"))
for f in MASK_FORMATS:
    CASES += [
        Case("mask_truncated", f, lambda c: _truncate(c.masks[1]), TRUNCATED),
        Case("mask_garbage", f, lambda c: _garbage(c.masks[1]), r"cannot read image header"),
        Case("mask_symlink_loop", f, lambda c: _self_loop(c.masks[1]), r"symlink loop"),
        Case("mask_dir_symlink_loop", f, lambda c: _self_loop(c.mask_dir), r"symlink loop"),
        Case("mask_other_size", f, lambda c: _grow_mask(c.masks[0]), r"mask is \d+x\d+ but frame is"),
    ]
    if f != "vipseg":  # the converted form lists its masks in the JSON
        CASES.append(Case("mask_without_frame", f, _orphan_mask, r"no matching frame"))
CASES += [
    Case("stray_value", "vipseg-raw", lambda c: _set_pixel(c.masks[1], 12600), r"stray label values \[12600\]"),
    Case("stray_value", "vspw", lambda c: _set_pixel(c.masks[1], 200), r"stray label values \[200\]"),
    Case("stray_value", "kitti-step", lambda c: _set_pixel(c.masks[1], (30, 0, 0)), r"stray trainIds \[30\]"),
    Case("stray_value", "ytvos", lambda c: _set_pixel(c.masks[1], 9), r"stray label values \[9\]"),
    Case("segment_not_in_json", "vipseg", lambda c: _set_pixel(c.masks[1], (1, 2, 3)), r"not in segments_info"),
    Case("raw_masks_resaved_8bit", "vipseg-raw",
         lambda c: (Image.fromarray((np.array(Image.open(c.masks[0])) % 256).astype(np.uint8)).save(c.masks[0]),
                    c.masks[0])[1], r"raw panomask is 8-bit \(mode L\).*wrapped"),
]
for f in ("vipseg-raw", "vspw", "davis"):
    CASES += [
        Case("split_list_duplicate_video", f,
             lambda c, f=f: (_split_list(c, f).write_text("v\nv\n"), _split_list(c, f))[1], r"duplicate video ids"),
        Case("split_list_not_utf8", f,
             lambda c, f=f: (_split_list(c, f).write_bytes(b"v\xe9\n"), _split_list(c, f))[1], r"not UTF-8"),
        Case("split_list_missing", f, lambda c, f=f: (_split_list(c, f).unlink(), _split_list(c, f))[1],
             r"split list is missing"),
    ]
for f in JSONS:
    CASES += [
        Case("json_not_utf8", f, lambda c: _non_utf8(c.json), r"not UTF-8 text: byte 0xe9 at offset \d+"),
        Case("json_invalid", f, lambda c: (c.json.write_text('{"videos": ['), c.json)[1], r"invalid JSON"),
        Case("json_top_level_list", f, lambda c: _wrap_in_list(c.json), r"top level must be an object, got a list"),
        Case("json_symlink_loop", f, lambda c: _self_loop(c.json), r"is a symlink loop"),
    ]
    if f != "vipseg":  # VIPSeg without its converted JSON is the raw form (an "ok" case below)
        CASES.append(Case("json_missing", f, lambda c, f=f: (c.json.unlink(), c.root if f in ("ytvis", "ovis") else c.json)[1],
             r"file is missing|no \w+ annotation JSON"))
CASES += [
    # VIPSeg, converted form
    Case("annotations_an_int", "vipseg", lambda c: _edit(c, lambda d: d.update(annotations=3)),
         r"field 'annotations' must be a list, got an integer 3"),
    Case("videos_an_object", "vipseg", lambda c: _edit(c, lambda d: d.update(videos={"v": {}})),
         r"field 'videos' must be a list, got an object"),
    Case("video_annotations_an_int", "vipseg", lambda c: _edit(c, lambda d: d["annotations"][0].update(annotations=1)),
         r"video v: field 'annotations' must be a list"),
    Case("segment_id_text", "vipseg", lambda c: _edit(c, lambda d: _vipseg_seg(d, "id", "abc")),
         r"segments_info\[0\]: field 'id' must be an integer, got a string 'abc'"),
    Case("segment_category_float", "vipseg", lambda c: _edit(c, lambda d: _vipseg_seg(d, "category_id", 1.5)),
         r"field 'category_id' must be an integer, got a number 1.5"),
    Case("segments_info_an_object", "vipseg", lambda c: _edit(c, lambda d: _vipseg_frame(d, "segments_info", {})),
         r"field 'segments_info' must be a list"),
    Case("segment_missing_id", "vipseg", lambda c: _edit(c, lambda d: d["annotations"][0]["annotations"][0]
                                                        ["segments_info"][0].pop("id")), r"missing field 'id'"),
    Case("segment_unknown_category", "vipseg", lambda c: _edit(c, lambda d: _vipseg_seg(d, "category_id", 999)),
         r"unknown category id 999"),
    Case("duplicate_segment_id", "vipseg", lambda c: _edit(c, lambda d: d["annotations"][0]["annotations"][0]
                                                          ["segments_info"].append(
        dict(d["annotations"][0]["annotations"][0]["segments_info"][0]))), r"duplicate segment id"),
    Case("duplicate_video", "vipseg", lambda c: _edit(c, lambda d: d["videos"].append(d["videos"][0])),
         r"duplicate video_id in 'videos': \['v'\]"),
    Case("duplicate_video_annotations", "vipseg", lambda c: _edit(c, lambda d: d["annotations"].append(d["annotations"][0])),
         r"duplicate video_id 'v'"),
    Case("duplicate_image_id", "vipseg", lambda c: _edit(c, lambda d: d["annotations"][0]["annotations"].__setitem__(
        1, dict(d["annotations"][0]["annotations"][1], image_id=d["annotations"][0]["annotations"][0]["image_id"]))),
         r"duplicate image_id"),
    Case("image_id_not_a_frame", "vipseg", lambda c: _edit(c, lambda d: _vipseg_frame(d, "image_id", "00000000")),
         r"frame '00000000' is not in"),
    Case("image_id_a_list", "vipseg", lambda c: _edit(c, lambda d: _vipseg_frame(d, "image_id", [1])),
         r"field 'image_id' must be a string or an integer, got a list"),
    Case("file_name_an_int", "vipseg", lambda c: _edit(c, lambda d: _vipseg_frame(d, "file_name", 7)),
         r"field 'file_name' must be a string"),
    Case("categories_an_object", "vipseg", lambda c: _edit(c, lambda d: d.update(categories={"a": 1})),
         r"field 'categories' must be a list"),
    Case("duplicate_category", "vipseg", lambda c: _edit(c, lambda d: d["categories"].append(d["categories"][0])),
         r"duplicate category ids"),
    # YouTube-VIS / OVIS
    Case("segmentations_an_int", "ytvis", lambda c: _edit(c, lambda d: _ytvis_ann(d, "segmentations", 5)),
         r"field 'segmentations' must be a list, got an integer 5"),
    Case("segmentation_a_string", "ytvis", lambda c: _edit(c, lambda d: d["annotations"][0]["segmentations"]
                                                          .__setitem__(0, "rle")), r"segmentations\[0\] must be"),
    Case("segmentations_too_few", "ytvis", lambda c: _edit(c, lambda d: d["annotations"][0]["segmentations"].pop()),
         r"2 segmentations for 3 frames"),
    Case("height_text", "ytvis", lambda c: _edit(c, lambda d: d["videos"][0].update(height="sixty-four")),
         r"field 'height' must be an integer, got a string 'sixty-four'"),
    Case("duplicate_video_id", "ytvis", lambda c: _edit(c, lambda d: d["videos"].append(d["videos"][0])),
         r"duplicate video ids in 'videos': \['1'\]"),
    Case("duplicate_annotation_id", "ytvis", lambda c: _edit(c, lambda d: _ytvis_ann(d, "id", d["annotations"][1]["id"])),
         r"duplicate annotation ids"),
    Case("file_names_a_string", "ytvis", lambda c: _edit(c, lambda d: d["videos"][0].update(file_names="v/00000.jpg")),
         r"field 'file_names' must be a list"),
    Case("file_name_an_int", "ytvis", lambda c: _edit(c, lambda d: d["videos"][0]["file_names"].__setitem__(1, 5)),
         r"file_names\[1\] must be a string"),
    Case("category_id_text", "ytvis", lambda c: _edit(c, lambda d: _ytvis_ann(d, "category_id", "cat")),
         r"field 'category_id' must be an integer, got a string 'cat'"),
    Case("unknown_category", "ytvis", lambda c: _edit(c, lambda d: _ytvis_ann(d, "category_id", 99)),
         r"unknown category id 99"),
    Case("annotations_an_object", "ytvis", lambda c: _edit(c, lambda d: d.update(annotations={"a": 1})),
         r"field 'annotations' must be a list, got an object"),
    Case("videos_missing", "ytvis", lambda c: _edit(c, lambda d: d.pop("videos")), r"missing field 'videos'"),
    Case("video_not_an_object", "ytvis", lambda c: _edit(c, lambda d: d["videos"].__setitem__(0, 3)),
         r"videos\[0\].* must be an object, got an integer"),
    Case("duplicate_video_id", "ovis", lambda c: _edit(c, lambda d: d["videos"].append(d["videos"][0])),
         r"duplicate video ids"),
    Case("segmentations_an_int", "ovis", lambda c: _edit(c, lambda d: _ytvis_ann(d, "segmentations", 5)),
         r"field 'segmentations' must be a list"),
    Case("width_null", "ovis", lambda c: _edit(c, lambda d: d["videos"][0].update(width=None)),
         r"field 'width' must be an integer, got null"),
    # YouTube-VOS meta.json
    Case("meta_videos_a_list", "ytvos", lambda c: _edit(c, lambda d: d.update(videos=list(d["videos"]))),
         r"field 'videos' must be an object, got a list"),
    Case("meta_objects_a_list", "ytvos", lambda c: _edit(c, lambda d: d["videos"]["v"].update(objects=[1, 2])),
         r"video v: field 'objects' must be an object, got a list"),
    Case("meta_object_id_text", "ytvos", lambda c: _edit(c, lambda d: d["videos"]["v"]["objects"].update(a={})),
         r"object id 'a' is not a PNG index"),
    Case("meta_video_an_int", "ytvos", lambda c: _edit(c, lambda d: d["videos"].update(v=3)),
         r"video v must be an object, got an integer"),
    Case("meta_objects_missing", "ytvos", lambda c: _edit(c, lambda d: d["videos"]["v"].pop("objects")),
         r"missing field 'objects'"),
    # BURST
    Case("track_category_ids_a_list", "burst", lambda c: _edit(c, lambda d: _burst_seq(d, "track_category_ids", [1])),
         r"field 'track_category_ids' must be an object, got a list"),
    Case("track_key_text", "burst", lambda c: _edit(c, lambda d: d["sequences"][0]["track_category_ids"].update(x=1)),
         r"key 'x' is not an integer id"),
    Case("track_category_text", "burst", lambda c: _edit(c, lambda d: d["sequences"][0]["track_category_ids"]
                                                        .update({"2": "car"})), r"must be an integer, got a string"),
    Case("segmentation_frame_a_list", "burst", lambda c: _edit(c, lambda d: d["sequences"][0]["segmentations"]
                                                              .__setitem__(0, [])), r"segmentations\[0\] must be an object"),
    Case("rle_an_int", "burst", lambda c: _edit(c, lambda d: next(iter(d["sequences"][0]["segmentations"][0].values()))
                                               .update(rle=5)), r"field 'rle' must be a string"),
    Case("height_text", "burst", lambda c: _edit(c, lambda d: _burst_seq(d, "height", "tall")),
         r"field 'height' must be an integer, got a string 'tall'"),
    Case("duplicate_sequence", "burst", lambda c: _edit(c, lambda d: d["sequences"].append(d["sequences"][0])),
         r"duplicate sequences \(dataset/seq_name\)"),
    Case("sequences_an_object", "burst", lambda c: _edit(c, lambda d: d.update(sequences={})),
         r"field 'sequences' must be a list"),
    Case("unknown_category", "burst", lambda c: _edit(c, lambda d: d["sequences"][0]["track_category_ids"]
                                                     .update({"2": 999})), r"unknown category id 999"),
    Case("image_paths_a_string", "burst", lambda c: _edit(c, lambda d: _burst_seq(d, "annotated_image_paths", "a.jpg")),
         r"field 'annotated_image_paths' must be a list"),
    # KITTI-STEP
    Case("split_folder_missing", "kitti-step", lambda c: (shutil.rmtree(c.root / "images" / SPLIT),
                                                          c.root / "images" / SPLIT)[1], r"split folder is missing"),
    # valid data that must read
    Case("raw_form_without_json_reads", "vipseg-raw", lambda c: c.root, "ok"),
    Case("json_missing_reads_the_raw_form", "vipseg", lambda c: (c.json.unlink(), c.json)[1], "ok"),
    Case("segment_id_digit_string_reads", "vipseg", lambda c: _edit(c, lambda d: [
        s.update(id=str(s["id"])) for a in d["annotations"][0]["annotations"] for s in a["segments_info"]] and None),
         "ok"),
    Case("ytvos_meta_without_category_reads", "ytvos", lambda c: _edit(c, lambda d: [
        o.pop("category", None) for o in d["videos"]["v"]["objects"].values()] and None), "ok"),
    Case("burst_height_as_digit_string_reads", "burst", lambda c: _edit(c, lambda d: _burst_seq(d, "height", "32")),
         "ok"),
    Case("ytvis_height_as_digit_string_reads", "ytvis", lambda c: _edit(c, lambda d: d["videos"][0].update(height="32")),
         "ok"),
]


def _one_line(e: BaseException) -> None:
    assert "\n" not in str(e), repr(str(e))


@pytest.mark.parametrize("case", CASES, ids=[f"{c.fmt}-{c.name}" for c in CASES])
def test_bad_input_table(case: Case, pristine, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(pristine(case.fmt), root, symlinks=True)
    ctx = _ctx(case.fmt, pristine(case.fmt), root)
    named = case.mutate(ctx)
    fmt, kw = _reader(case.fmt)
    if case.reason == "ok":
        records, errors = formats.read_dataset(fmt, root, SPLIT, validate="full", progress=False, **kw)
        assert len(records) == 1 and not errors
        return
    with pytest.raises(DataError) as ei:
        formats.read_dataset(fmt, root, SPLIT, validate="full", progress=False, **kw)
    e = ei.value
    _one_line(e)
    assert str(e) == f"{e.path}: {e.reason}"
    assert str(named) in str(e), f"{named} not named in: {e}"
    assert re.search(case.reason, e.reason), e.reason
    # skip mode: the same error is returned (never dropped), unless the whole split cannot be read
    if not any(s in case.name for s in ("root", "json", "split", "videos", "top_level", "duplicate_video",
                                        "annotations_an", "sequences_an", "categories", "duplicate_category",
                                        "duplicate_annotation", "duplicate_sequence", "meta_videos",
                                        "duplicate_video_annotations")):
        records, errors = formats.read_dataset(fmt, root, SPLIT, on_error="skip", validate="full", progress=False, **kw)
        assert records == [] and len(errors) == 1 and str(errors[0]) == str(e)


def test_table_has_at_least_100_cases_over_every_format():
    assert len(CASES) + len(VIDEO_CASES) + len(EVAL_CASES) >= 100
    assert {c.fmt for c in CASES} >= {"vipseg", "vipseg-raw", "kitti-step", "ytvis", "ovis", "vspw", "ytvos",
                                      "davis", "burst"}


# ------------------------------------------------------------------------------- video input (gvseg predict)


def _write_mp4(path: Path, frames: int = 5) -> Path:
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (48, 32))
    for t in range(frames):
        w.write(np.full((32, 48, 3), 40 * t, np.uint8))
    w.release()
    return path


def _frame_folder(path: Path, n: int = 3) -> Path:
    path.mkdir()
    for t in range(n):
        Image.fromarray(np.full((32, 48, 3), 50 * t, np.uint8)).save(path / f"{t:05d}.jpg")
    return path


def _dup_names(d: Path) -> Path:
    shutil.copy(d / "00000.jpg", d / "00000.png")
    return d


VIDEO_CASES = [  # (name, make(tmp) -> (input, path named), reason regex or "ok")
    ("mp4_truncated", lambda t: (_truncate(_write_mp4(t / "a.mp4")),) * 2, r"decoding stopped|cannot open|no decodable"),
    ("mp4_garbage", lambda t: (_garbage(_write_mp4(t / "a.mp4")),) * 2, r"cannot open video|no decodable"),
    ("mp4_empty_file", lambda t: ((t / "a.mp4").write_bytes(b""), t / "a.mp4", t / "a.mp4")[1:], r"cannot open|no decodable"),
    ("mp4_missing", lambda t: (t / "a.mp4",) * 2, r"file is missing"),
    ("mp4_symlink_loop", lambda t: (_self_loop(_write_mp4(t / "a.mp4")),) * 2, r"is a symlink loop"),
    ("mp4_broken_symlink", lambda t: (_dangling(_write_mp4(t / "a.mp4")),) * 2, r"broken symlink"),
    ("not_a_video_extension", lambda t: ((t / "a.txt").write_text("x"), t / "a.txt", t / "a.txt")[1:], r"not a video file"),
    ("folder_symlink_loop", lambda t: (_self_loop(_frame_folder(t / "f")),) * 2, r"is a symlink loop"),
    ("folder_empty", lambda t: ((t / "f").mkdir(), t / "f", t / "f")[1:], r"no frames"),
    ("folder_frame_symlink_loop", lambda t: (_frame_folder(t / "f"), _self_loop(t / "f" / "00001.jpg")),
     r"frame is a symlink loop"),
    ("folder_frame_broken_symlink", lambda t: (_frame_folder(t / "f"), _dangling(t / "f" / "00001.jpg")),
     r"frame is a broken symlink"),
    ("folder_frame_truncated", lambda t: (_frame_folder(t / "f"), _truncate(t / "f" / "00001.jpg")),
     TRUNCATED),
    ("folder_frame_garbage", lambda t: (_frame_folder(t / "f"), _garbage(t / "f" / "00001.jpg")),
     r"cannot read image header"),
    ("folder_frame_other_size", lambda t: (_frame_folder(t / "f"), _resize(t / "f" / "00002.jpg")), r"frame is \d+x\d+"),
    ("folder_duplicate_names", lambda t: (_dup_names(_frame_folder(t / "f")),) * 2, r"duplicate frame names"),
    ("mp4_valid_reads", lambda t: (_write_mp4(t / "a.mp4"),) * 2, "ok"),
    ("folder_valid_reads", lambda t: (_frame_folder(t / "f"),) * 2, "ok"),
]


@pytest.mark.parametrize("name,make,reason", VIDEO_CASES, ids=[c[0] for c in VIDEO_CASES])
def test_video_input_table(name, make, reason, tmp_path):
    inp, named = make(tmp_path)
    if reason == "ok":
        rec = formats.read_video(inp)
        assert len(list(formats.iter_frames(inp))) == len(rec) >= 3
        return
    with pytest.raises(DataError) as ei:
        rec = formats.read_video(inp)
        for _ in formats.iter_frames(inp):  # what predict streams: every frame, none dropped
            pass
        assert len(list(formats.iter_frames(inp))) == len(rec)
    _one_line(ei.value)
    assert str(named) in str(ei.value) and re.search(reason, ei.value.reason), str(ei.value)


# ------------------------------------------------------------------------------------------------ gvseg eval


@pytest.fixture(scope="module")
def eval_pair(pristine, tmp_path_factory):
    """A VIPSeg GT (converted form) and a perfect prediction of it (pan_pred + pred.json)."""
    gt = pristine("vipseg")
    pred = tmp_path_factory.mktemp("pred")
    shutil.copytree(gt / "panomasksRGB", pred / "pan_pred")
    shutil.copy(gt / "panoptic_gt_VIPSeg_train.json", pred / "pred.json")
    return gt, pred


def _pred_json(t):
    return t["pred"] / "pred.json"


def _gt_json(t):
    return t["gt"] / "panoptic_gt_VIPSeg_train.json"


def _jedit(p: Path, fn) -> Path:
    d = json.loads(p.read_text())
    fn(d)
    p.write_text(json.dumps(d))
    return p


EVAL_CASES = [  # (name, mutate(paths) -> path named, reason regex or "ok")
    ("pred_json_not_utf8", lambda t: _non_utf8(_pred_json(t)), r"not UTF-8 text: byte 0xe9"),
    ("pred_json_invalid", lambda t: (_pred_json(t).write_text("{"), _pred_json(t))[1], r"not valid JSON"),
    ("pred_json_missing", lambda t: (_pred_json(t).unlink(), _pred_json(t))[1], r"JSON file not found"),
    ("pred_json_no_annotations", lambda t: _jedit(_pred_json(t), lambda d: d.pop("annotations")),
     r"has no 'annotations'"),
    ("pred_json_video_missing", lambda t: _jedit(_pred_json(t), lambda d: d.update(annotations=[])),
     r"no prediction for video 'v'"),
    ("pred_json_frame_missing", lambda t: _jedit(_pred_json(t), lambda d: d["annotations"][0]["annotations"].pop()),
     r"2 predicted frames but the GT has 3"),
    ("gt_json_not_utf8", lambda t: _non_utf8(_gt_json(t)), r"not UTF-8 text"),
    ("gt_json_invalid", lambda t: (_gt_json(t).write_text("[1,"), _gt_json(t))[1], r"not valid JSON"),
    ("gt_dir_missing", lambda t: (shutil.rmtree(t["gt"]), t["gt"])[1], r"not found"),
    ("perfect_prediction_scores", lambda t: t["gt"], "ok"),
]


@pytest.mark.parametrize("name,mutate,reason", EVAL_CASES, ids=[c[0] for c in EVAL_CASES])
def test_eval_table(name, mutate, reason, eval_pair, tmp_path, capsys):
    from gvseg.cli import main

    t = {"gt": tmp_path / "gt", "pred": tmp_path / "pred"}
    shutil.copytree(eval_pair[0], t["gt"])
    shutil.copytree(eval_pair[1], t["pred"])
    named = mutate(t)
    out = tmp_path / "res.json"
    rc = main(["eval", "--metric", "vpq", "--gt", str(t["gt"]), "--pred", str(t["pred"]), "--out", str(out),
               "--quiet", "--option", "workers=0"])
    cap = capsys.readouterr()
    if reason == "ok":
        assert rc == 0 and out.is_file() and json.loads(out.read_text())["results"]["vpq_1"] == pytest.approx(100.0)
        return
    lines = cap.err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, cap.err
    assert str(named) in lines[0] and re.search(reason, lines[0]), lines[0]
    assert not out.exists() and "vpq" not in cap.out  # nothing half-written, no table claimed


def test_cli_eval_non_utf8_pred_json_is_one_line_exit_2(eval_pair, tmp_path):
    """The CLI path once, end to end in a subprocess: exit 2 and one stderr line naming the file."""
    pred = tmp_path / "pred"
    shutil.copytree(eval_pair[1], pred)
    _non_utf8(pred / "pred.json")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "platform")}
    r = subprocess.run([sys.executable, "-m", "gvseg.cli", "eval", "--metric", "vpq", "--gt", str(eval_pair[0]),
                        "--pred", str(pred), "--quiet"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{pred / 'pred.json'}: not UTF-8 text" in r.stderr and "Traceback" not in r.stderr


# --------------------------------------------------------------------------------- data.synthetic and Ray


def _synth_cfg(root):
    from gvseg.config import DataConfig, SyntheticConfig

    synth = SyntheticConfig(videos=2, frames=2, height=32, width=40, thing_classes=1, stuff_classes=1)
    return DataConfig(format="vipseg", root=str(root), synthetic=True, synth=synth)


def test_synthetic_refuses_a_non_empty_folder_without_stamp(tmp_path):
    from gvseg.data.pipeline import build_records

    typo = tmp_path / "VIPSeg"  # e.g. the parent of the real set, or somebody's data
    (typo / "imgs").mkdir(parents=True)
    (typo / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"not empty and has no \.gvseg_synth\.json stamp") as ei:
        build_records(_synth_cfg(typo), "train")
    assert ei.value.path == str(typo) and "\n" not in str(ei.value)
    assert sorted(p.name for p in typo.iterdir()) == ["imgs", "notes.txt"]  # untouched


def test_synthetic_root_that_is_a_file_or_a_loop(tmp_path):
    from gvseg.data.pipeline import build_records

    (tmp_path / "f").write_text("x")
    with pytest.raises(DataError, match="is a file, not a folder"):
        build_records(_synth_cfg(tmp_path / "f"), "train")
    os.symlink("loop", tmp_path / "loop")
    with pytest.raises(DataError, match="data.root is a symlink loop"):
        build_records(_synth_cfg(tmp_path / "loop"), "train")


def test_synthetic_generation_says_where_it_writes(tmp_path, capsys):
    from gvseg.data.pipeline import SYNTH_STAMP, build_records

    new = tmp_path / "typo_root"
    assert len(build_records(_synth_cfg(new), "train")) == 1
    assert f"writing a synthetic vipseg set to {new.resolve()}" in capsys.readouterr().err
    assert (new / SYNTH_STAMP).is_file()
    build_records(_synth_cfg(new), "train")  # stamped and unchanged: reused, nothing written or said
    assert "writing" not in capsys.readouterr().err


def test_ray_failure_unwraps_the_data_error():
    from gvseg.runtime.ray_train import find_data_error

    inner = DataError("/d/imgs/v/0001.jpg", "corrupt or truncated image (OSError: truncated)")

    class WorkerGroupError(RuntimeError):  # the shape of Ray Train's: worker_failures {rank: error}
        def __init__(self, failures):
            super().__init__("Training failed due to worker errors")
            self.worker_failures = failures

    try:
        try:
            raise inner
        except DataError as e:
            raise RuntimeError("UDF failed") from e
    except RuntimeError as wrapped:
        err = WorkerGroupError({0: ValueError("collateral"), 1: wrapped})
    found = find_data_error(err)
    assert isinstance(found, DataError) and str(found) == str(inner)
    assert find_data_error(WorkerGroupError({0: ValueError("x")})) is None


def test_vipseg_raw_form_converts_for_evaluation(pristine, tmp_path):
    """Raw VIPSeg (16-bit panomasks, no JSON) is scored through the official conversion: the converted GT
    decodes to the same segments (categories and masks) as the raw masks."""
    from gvseg.data.formats import vipseg

    recs = formats.read_dataset("vipseg", pristine("vipseg-raw"), SPLIT, progress=False)[0]
    js = vipseg.convert_raw(recs, tmp_path / "gt", SPLIT)
    assert js.is_file() and not list((tmp_path / "gt").glob("*.partial"))
    data = json.loads(js.read_text())
    rec = recs[0]
    for t, handle in enumerate(rec.annotations):
        raw = formats.load_annotation(rec, t)
        segs = next(a for a in data["annotations"][0]["annotations"] if a["image_id"] == Path(handle[1]).stem)
        info = tuple((s["id"], s["category_id"], False) for s in segs["segments_info"])
        rgb = vipseg.decode_rgb(str(tmp_path / "gt" / "panomasksRGB" / rec.video_id / segs["file_name"]), info,
                                rec.height, rec.width)
        key = lambda a: sorted((int(c), m.tobytes()) for c, m in zip(a.category_ids, a.masks))
        assert key(raw) == key(rgb)
