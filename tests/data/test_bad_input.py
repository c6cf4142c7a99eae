"""Bad input: every malformed file gives a DataError naming the file (or the JSON and the place in it) and
the reason; with on_error="skip" the video is skipped and its error returned, never silently dropped."""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest

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
