"""BURST exemplar-guided HOTA (TrackEval / BURST-benchmark definitions) on tiny BURST-JSON fixtures."""

import json

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from gvseg.metrics import hota

H, W = 12, 16
# 4 and 13 are in the common list; 5 and 7 are not; 20 is a distractor; 41 is merged into 40
CATS = [{"id": i, "name": f"cls{i}"} for i in (4, 5, 7, 13, 20)] + [
    {"id": 40, "name": "cls40", "merged": [{"id": 41, "name": "cls41"}]},
    {"id": 41, "name": "cls41"},
]


def box(y0, y1, x0, x1):
    m = np.zeros((H, W), bool)
    m[y0:y1, x0:x1] = True
    return m


def rle(m):
    return mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))["counts"].decode()


A = box(0, 5, 0, 5)
B = box(6, 11, 8, 13)


def seq(frames, tcat, paths=None, sid=1, name="s1"):
    """frames: list of {track id (int): mask}; tcat: {track id: category}."""
    paths = paths or [f"frame{i:04d}.jpg" for i in range(len(frames))]
    return {
        "id": sid, "dataset": "YFCC100M", "seq_name": name, "width": W, "height": H, "fps": 1,
        "annotated_image_paths": paths,
        "track_category_ids": {str(k): v for k, v in tcat.items()},
        "neg_category_ids": [], "not_exhaustive_category_ids": [],
        "segmentations": [{str(k): {"rle": rle(m), "is_gt": True, "score": 1.0} for k, m in f.items()}
                          for f in frames],
    }


def burst(*seqs):
    return {"split": "val", "categories": CATS, "sequences": list(seqs)}


def run(gt, pred, **kw):
    return hota.evaluate(gt, pred, progress=False, categories=CATS, **kw)


def test_constants_match_benchmark_sizes():
    assert len(hota.DISTRACTOR_IDS) == 45
    assert len(hota.COMMON_IDS) == 78
    assert len(hota.ALPHAS) == 19


def test_perfect_prediction_is_one(tmp_path):
    gt = burst(seq([{1: A, 2: B}, {1: A, 2: B}], {1: 4, 2: 5}))
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "pred.json").write_text(json.dumps(gt))
    cat_file = tmp_path / "tao_categories.json"
    cat_file.write_text(json.dumps(CATS))
    res = hota.evaluate(tmp_path / "gt.json", tmp_path / "pred.json", progress=False, categories=cat_file)
    for k in ("HOTA_all", "DetA_all", "AssA_all", "LocA_all", "HOTA_com", "HOTA_unc"):
        assert res[k] == 1.0
    assert res["num_classes_com"] == 1 and res["num_classes_unc"] == 1


def test_empty_prediction_is_zero():
    gt = burst(seq([{1: A, 2: B}, {1: A}], {1: 4, 2: 5}))
    pred = burst(seq([{}, {}], {1: 4, 2: 5}))
    res = run(gt, pred)
    assert res["HOTA_all"] == 0.0 and res["DetA_all"] == 0.0 and res["AssA_all"] == 0.0


def test_swapped_ids_lower_assa():
    # two same-class tracks; the prediction swaps them in frame 2: every det is a TP (DetA = 1), but each
    # GT id is matched to each predicted id once: A(g, p) = 1 / (2 + 2 - 1), so AssA = 1/3.
    gt = burst(seq([{1: A, 2: B}, {1: A, 2: B}], {1: 4, 2: 4}))
    pred = burst(seq([{1: A, 2: B}, {1: B, 2: A}], {1: 4, 2: 4}))
    res = run(gt, pred)
    assert res["DetA_all"] == 1.0
    assert res["AssA_all"] == pytest.approx(1 / 3)
    assert res["HOTA_all"] == pytest.approx(np.sqrt(1 / 3))


def test_partial_overlap_thresholds_and_loca():
    # a partial overlap is a TP only for the alphas up to its IoU
    g = np.zeros((H, W), bool)
    g[0:10, 0:10] = True  # 100 px
    p = np.zeros((H, W), bool)
    p[0:10, 0:10] = True
    p[0:6, 0:6] = False  # 64 px inside g
    p[10:12, 0:3] = True  # + 6 px outside: inter 64, union 106
    iou = 64 / 106
    assert 0.60 < iou < 0.65  # TP for 12 alphas: 0.05 .. 0.60
    res = run(burst(seq([{1: g}], {1: 5})), burst(seq([{1: p}], {1: 5})))
    assert res["HOTA_all"] == pytest.approx(12 / 19)
    assert res["DetA_all"] == pytest.approx(12 / 19)
    assert res["LocA_all"] == pytest.approx((12 * iou + 7 * 1.0) / 19)  # LocA is 1 where there is no TP


def test_hota_sequence_counts_by_hand():
    # one GT id, two predicted ids; frame 0 matched to p0, frame 1 to p1, frame 2 unmatched GT
    gt_ids = [np.array([0]), np.array([0]), np.array([0])]
    tr_ids = [np.array([0]), np.array([1]), np.array([], dtype=np.int64)]
    sims = [np.ones((1, 1)), np.ones((1, 1)), np.zeros((1, 0))]
    res = hota.hota_sequence(gt_ids, tr_ids, sims, 1, 2)
    np.testing.assert_array_equal(res["HOTA_TP"], 2)
    np.testing.assert_array_equal(res["HOTA_FN"], 1)
    np.testing.assert_array_equal(res["HOTA_FP"], 0)
    # A(g, p0) = 1 / (3 + 1 - 1) = 1/3, likewise p1; AssA = (1/3 + 1/3) / 2
    np.testing.assert_allclose(res["AssA"], 1 / 3)
    np.testing.assert_allclose(res["DetA"], 2 / 3)


def test_classes_are_averaged_unweighted_and_split():
    # class 4 (common) perfect with 3 dets; class 5 (uncommon) missed with 1 det
    gt = burst(seq([{1: A, 2: B}, {1: A}, {1: A}], {1: 4, 2: 5}))
    pred = burst(seq([{1: A}, {1: A}, {1: A}], {1: 4, 2: 5}))
    res = run(gt, pred)
    assert res["HOTA_com"] == 1.0 and res["HOTA_unc"] == 0.0
    assert res["HOTA_all"] == 0.5  # not det-weighted (which would give 0.75)
    assert set(res["per_class"]) == {"cls4", "cls5"}


def test_distractors_and_categories_from_file():
    # track 2 is a distractor (20): never evaluated, its predictions dropped; track 3's class 7 is absent from
    # the category file given, so it is not evaluated either; class 41 is merged into 40.
    gt = burst(seq([{1: A, 2: B, 3: B, 4: A}], {1: 4, 2: 20, 3: 7, 4: 41}))
    pred = burst(seq([{1: A, 2: A, 4: A}], {1: 4, 2: 20, 3: 7, 4: 41}))
    cats = [c for c in CATS if c["id"] != 7]
    res = hota.evaluate(gt, pred, progress=False, categories=cats)
    assert set(res["per_class"]) == {"cls4", "cls40"}
    assert res["HOTA_all"] == 1.0


def test_extra_and_unannotated_frames_are_ignored():
    gt = burst(seq([{1: A}, {1: A}, {}], {1: 4}, paths=["f0.jpg", "f2.jpg", "f4.jpg"]))
    # prediction at a higher frame rate, wrong on the extra frames and on the GT frame with no annotation
    pred = burst(seq([{1: A}, {1: B}, {1: A}, {1: B}, {1: B}],
                     {1: 4}, paths=["f0.jpg", "f1.jpg", "f2.jpg", "f3.jpg", "f4.jpg"]))
    assert run(gt, pred)["HOTA_all"] == 1.0


def test_empty_pred_mask_counts_as_det_unless_ignored():
    gt = burst(seq([{1: A}, {1: A}], {1: 4}))
    pred = burst(seq([{1: A}, {1: A}], {1: 4}))
    pred["sequences"][0]["segmentations"][1]["1"]["rle"] = rle(np.zeros((H, W), bool))
    official = run(gt, pred)
    assert official["DetA_all"] == pytest.approx(1 / 3)  # TP 1, FN 1, FP 1
    assert run(gt, pred, ignore_empty_pred=True)["DetA_all"] == pytest.approx(1 / 2)


def test_unknown_predicted_id_is_error(tmp_path):
    gt = burst(seq([{1: A}, {1: A}], {1: 4}))
    pred = burst(seq([{1: A}, {1: A, 9: B}], {1: 4, 9: 4}))
    (tmp_path / "pred.json").write_text(json.dumps(pred))
    with pytest.raises(KeyError, match=r"pred.json.*track id '9'"):
        run(gt, tmp_path / "pred.json")


def test_unknown_sequence_is_error():
    gt = burst(seq([{1: A}], {1: 4}))
    pred = burst(seq([{1: A}], {1: 4}, sid=7))
    with pytest.raises(KeyError, match="sequence id 7"):
        run(gt, pred)


def test_split_mismatch_is_error():
    gt = burst(seq([{1: A}], {1: 4}))
    pred = dict(burst(seq([{1: A}], {1: 4})), split="test")
    with pytest.raises(ValueError, match="split"):
        run(gt, pred)


def test_missing_category_file_falls_back_to_gt_with_warning():
    gt = burst(seq([{1: A}], {1: 4}))
    with pytest.warns(UserWarning, match="category file"):
        res = hota.evaluate(gt, gt, progress=False)
    assert res["HOTA_all"] == 1.0


def test_no_gt_tracks_gives_nan():
    gt = burst(seq([{}], {}))
    res = run(gt, gt)
    assert np.isnan(res["HOTA_all"]) and res["num_classes_all"] == 0


def test_encode_track_masks_omits_empty():
    enc = hota.encode_track_masks({1: A, 2: np.zeros((H, W), bool)})
    assert list(enc) == ["1"]
    back = mask_utils.decode({"size": [H, W], "counts": enc["1"]["rle"].encode()})
    np.testing.assert_array_equal(back.astype(bool), A)
