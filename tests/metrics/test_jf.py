"""J&F (davis2017-evaluation definitions) on tiny synthetic palette-PNG fixtures."""

import json

import numpy as np
import pytest
from PIL import Image

from gvseg.metrics import jf

VOC = [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128] + [0] * (768 - 15)


def write_png(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(np.asarray(arr, dtype=np.uint8), mode="P")
    im.putpalette(VOC)
    im.save(path)


def rect(h, w, y0, y1, x0, x1, val=1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = val
    return m


def write_davis(root, seqs, split="val"):
    """seqs: {name: [T, H, W] uint8} -> DAVIS layout with an ImageSets split file."""
    for name, frames in seqs.items():
        for t, f in enumerate(frames):
            write_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", f)
    (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(seqs) + "\n")


def write_pred(root, name, frames, skip=()):
    for t, f in enumerate(frames):
        if t not in skip:
            write_png(root / name / f"{t:05d}.png", f)


# ---- array core ----------------------------------------------------------------------------------------------


def test_jaccard_known_rectangles():
    gt = rect(20, 20, 0, 10, 0, 10)
    pred = rect(20, 20, 0, 10, 5, 15)  # inter 50, union 150
    assert jf.jaccard(gt, pred)[0] == pytest.approx(1 / 3)


def test_jaccard_empty_union_is_one_and_empty_pred_zero():
    z = np.zeros((2, 8, 8), bool)
    g = z.copy()
    g[1, 2:4, 2:4] = True
    np.testing.assert_array_equal(jf.jaccard(g, z), [1.0, 0.0])


def test_seg2bmap_offsets_towards_origin():
    seg = np.zeros((4, 4), bool)
    seg[1, 1] = True
    expected = np.zeros((4, 4), bool)
    expected[0:2, 0:2] = True  # the pixel plus its N, W, NW neighbours
    np.testing.assert_array_equal(jf.seg2bmap(seg), expected)


def test_seg2bmap_frame_edge_is_not_a_boundary():
    # the last row / column only compare along the border, so a mask filling the frame has no boundary
    assert not jf.seg2bmap(np.ones((3, 3), bool)).any()
    seg = np.zeros((3, 3), bool)
    seg[2, 2] = True
    b = jf.seg2bmap(seg)
    assert not b[2, 2]  # the bottom-right pixel is never a boundary
    assert b[1, 1] and b[1, 2] and b[2, 1]


def test_tolerance_pixels_davis_480p():
    assert jf.boundary_pixels((480, 854)) == 8.0  # ceil(0.008 * 979.6)
    assert jf.boundary_pixels((480, 854), bound_th=3) == 3


def test_boundary_f_one_pixel_shift_within_tolerance():
    gt = rect(40, 40, 10, 30, 10, 30)
    pred = rect(40, 40, 10, 30, 11, 31)  # tolerance ceil(0.008 * 56.6) = 1 px
    assert jf.boundary_f(gt, pred)[0] == 1.0
    far = rect(40, 40, 10, 30, 14, 34)
    assert 0 < jf.boundary_f(gt, far)[0] < 1


def test_boundary_f_empty_cases():
    z = np.zeros((1, 10, 10), bool)
    m = z.copy()
    m[0, 3:6, 3:6] = True
    assert jf.boundary_f(z, z)[0] == 1.0  # P = R = 1
    assert jf.boundary_f(m, z)[0] == 0.0  # only GT: P = 1, R = 0
    assert jf.boundary_f(z, m)[0] == 0.0  # only pred: P = 0, R = 1


def test_boundary_f_frames_independent():
    # a frame's dilation must not leak into the next one in the batched cv2 call
    a = np.zeros((2, 12, 12), bool)
    a[0, 10:12, 2:6] = True  # bottom edge of frame 0
    b = np.zeros((2, 12, 12), bool)
    b[1, 0:2, 2:6] = True  # top edge of frame 1
    np.testing.assert_array_equal(jf.boundary_f(a, b, bound_th=3), [0.0, 0.0])


def test_db_statistics_overlapping_decay_bins():
    v = np.arange(8) / 10  # bins [0:3], [2:5], [4:6], [5:8]
    mean, recall, decay = jf.db_statistics(v)
    assert mean == pytest.approx(0.35)
    assert recall == pytest.approx(2 / 8)  # 0.6, 0.7 (0.5 itself is not > 0.5)
    assert decay == pytest.approx(0.1 - 0.6)


def test_db_statistics_uint8_wrap_and_fix():
    v = np.linspace(1, 0, 300)
    assert np.isnan(jf.db_statistics(v)[2])  # official uint8 edges: last bin v[224:44] is empty
    assert jf.db_statistics(v, fix_decay_overflow=True)[2] > 0.5


# ---- DAVIS end to end -----------------------------------------------------------------------------------------


def _two_object_seq(t=5, h=24, w=32):
    frames = np.zeros((t, h, w), np.uint8)
    for i in range(t):
        frames[i, 2:10, 2 + i : 10 + i] = 1
        frames[i, 14:22, 18:28] = 2
    return frames


def test_davis_perfect_is_one(tmp_path):
    gt = _two_object_seq()
    write_davis(tmp_path / "gt", {"seqa": gt})
    write_pred(tmp_path / "pred", "seqa", gt)
    res = jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)
    assert res["num_objects"] == 2
    for k in ("J&F-Mean", "J-Mean", "F-Mean", "J-Recall", "F-Recall"):
        assert res[k] == 1.0
    assert res["J-Decay"] == 0.0
    assert set(res["per_object"]) == {"seqa_1", "seqa_2"}


def test_davis_empty_prediction_is_zero(tmp_path):
    gt = _two_object_seq()
    write_davis(tmp_path / "gt", {"seqa": gt})
    write_pred(tmp_path / "pred", "seqa", np.zeros_like(gt))
    res = jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)
    assert res["J-Mean"] == 0.0 and res["F-Mean"] == 0.0 and res["J&F-Mean"] == 0.0


def test_davis_known_iou(tmp_path):
    t, h, w = 4, 20, 30
    gt = np.stack([rect(h, w, 0, 10, 0, 10)] * t)
    pred = np.stack([rect(h, w, 0, 10, 5, 15)] * t)
    write_davis(tmp_path / "gt", {"s": gt})
    write_pred(tmp_path / "pred", "s", pred)
    res = jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)
    f = jf.boundary_f(gt[1:-1], pred[1:-1]).mean()
    assert res["J-Mean"] == pytest.approx(1 / 3)
    assert res["J-Recall"] == 0.0
    assert res["J&F-Mean"] == pytest.approx((1 / 3 + f) / 2)


def test_davis_first_and_last_frames_excluded(tmp_path):
    gt = _two_object_seq()
    write_davis(tmp_path / "gt", {"seqa": gt})
    pred = gt.copy()
    pred[-1] = 0  # wrong last frame
    write_pred(tmp_path / "pred", "seqa", pred, skip={0})  # and no first frame at all
    res = jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)
    assert res["J&F-Mean"] == 1.0


def test_davis_object_count_from_first_frame_and_void(tmp_path):
    gt = _two_object_seq()
    gt[:, 0, :] = 255  # void row: background in the semi-supervised task
    gt[0][gt[0] == 2] = 0  # object 2 absent from the first frame -> only 1 object evaluated
    write_davis(tmp_path / "gt", {"s": gt})
    pred = gt.copy()
    pred[pred == 255] = 0
    pred[pred == 2] = 0
    write_pred(tmp_path / "pred", "s", pred)
    res = jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)
    assert res["num_objects"] == 1 and res["J&F-Mean"] == 1.0


def test_davis_mean_pools_objects_over_sequences(tmp_path):
    a = _two_object_seq()
    b = np.stack([rect(24, 32, 4, 12, 4, 12)] * 5)
    write_davis(tmp_path / "gt", {"a": a, "b": b})
    write_pred(tmp_path / "pred", "a", a)
    write_pred(tmp_path / "pred", "b", np.zeros_like(b))
    res = jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)
    assert res["J-Mean"] == pytest.approx(2 / 3)  # (1 + 1 + 0) / 3 objects, not (1 + 0) / 2 sequences


def test_davis_split_file_and_plain_folder(tmp_path):
    gt = _two_object_seq()
    write_davis(tmp_path / "gt", {"seqa": gt})
    write_png(tmp_path / "gt" / "Annotations" / "480p" / "other" / "00000.png", gt[0])  # not in val.txt
    write_pred(tmp_path / "pred", "seqa", gt)
    assert jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)["num_objects"] == 2
    plain = tmp_path / "gt" / "Annotations" / "480p"
    (plain / "other").joinpath("00000.png").unlink()
    (plain / "other").rmdir()
    assert jf.evaluate(plain, tmp_path / "pred", progress=False)["J&F-Mean"] == 1.0


def test_davis_missing_frame_is_error(tmp_path):
    gt = _two_object_seq()
    write_davis(tmp_path / "gt", {"seqa": gt})
    write_pred(tmp_path / "pred", "seqa", gt, skip={2})
    with pytest.raises(FileNotFoundError, match="00002.png"):
        jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)


def test_davis_unknown_object_id_is_error(tmp_path):
    gt = _two_object_seq()
    write_davis(tmp_path / "gt", {"seqa": gt})
    pred = gt.copy()
    pred[3, 0, 0] = 3
    write_pred(tmp_path / "pred", "seqa", pred)
    with pytest.raises(ValueError, match=r"00003.png.*object id\(s\) \[3\]"):
        jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)


def test_davis_shape_mismatch_is_error(tmp_path):
    gt = _two_object_seq()
    write_davis(tmp_path / "gt", {"seqa": gt})
    write_pred(tmp_path / "pred", "seqa", np.zeros((5, 10, 10), np.uint8))
    with pytest.raises(ValueError, match="prediction is 10x10"):
        jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)


# ---- YouTube-VOS -------------------------------------------------------------------------------------------


def test_youtube_vos_mid_video_object_and_seen_split(tmp_path):
    t, h, w = 4, 16, 16
    gt = np.zeros((t, h, w), np.uint8)
    gt[:, 1:6, 1:6] = 1
    gt[2:, 9:14, 9:14] = 2  # object 2 first appears in frame 2
    stems = ["00000", "00005", "00010", "00015"]
    for s, f in zip(stems, gt):
        write_png(tmp_path / "gt" / "Annotations" / "v1" / f"{s}.png", f)
    meta = {"videos": {"v1": {"objects": {"1": {"category": "cat", "frames": stems},
                                          "2": {"category": "zebra", "frames": stems[2:]}}}}}
    (tmp_path / "gt" / "meta.json").write_text(json.dumps(meta))
    pred = gt.copy()
    pred[1, 9:14, 9:14] = 2  # before object 2 appears: not scored for it (its J starts after frame 2)
    pred[3][pred[3] == 1] = 0  # object 1 lost in the last frame: scored (no last-frame exclusion)
    for s, f in zip(stems[1:], pred[1:]):  # the first frame is the given reference
        write_png(tmp_path / "pred" / "v1" / f"{s}.png", f)
    res = jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False, seen_categories=["cat"])
    assert res["per_object"]["v1_1"]["J-Mean"] == pytest.approx(2 / 3)  # frames 1, 2, 3 -> 1, 1, 0
    assert res["per_object"]["v1_2"]["J-Mean"] == 1.0  # frame 3 only
    assert res["J-seen"] == pytest.approx(2 / 3) and res["J-unseen"] == 1.0
    assert res["Overall"] == pytest.approx(
        np.mean([res["J-seen"], res["F-seen"], res["J-unseen"], res["F-unseen"]]))


def test_youtube_vos_unknown_id_is_error(tmp_path):
    gt = np.zeros((3, 8, 8), np.uint8)
    gt[:, 1:4, 1:4] = 1
    for i, f in enumerate(gt):
        write_png(tmp_path / "gt" / "Annotations" / "v" / f"{5 * i:05d}.png", f)
    (tmp_path / "gt" / "meta.json").write_text(json.dumps({"videos": {}}))
    pred = gt.copy()
    pred[2, 6, 6] = 4
    for i, f in enumerate(pred):
        write_png(tmp_path / "pred" / "v" / f"{5 * i:05d}.png", f)
    with pytest.raises(ValueError, match=r"00010.png.*\[4\]"):
        jf.evaluate(tmp_path / "gt", tmp_path / "pred", progress=False)
