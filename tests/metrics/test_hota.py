"""BURST HOTA / TrackMAP (BURST-benchmark burstapi/eval definitions) on tiny hand-built BURST-JSON fixtures."""

import json
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest

from gvseg.metrics import hota, trackmap

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


@pytest.mark.parametrize("iou, n_tp", [("mask", 12), ("box", 16)])
def test_partial_overlap_thresholds_and_loca(iou, n_tp):
    # a partial overlap is a TP only for the alphas up to its IoU
    g = np.zeros((H, W), bool)
    g[0:10, 0:10] = True  # 100 px, box [0, 0, 10, 10]
    p = np.zeros((H, W), bool)
    p[0:10, 0:10] = True
    p[0:6, 0:6] = False  # 64 px inside g
    p[10:12, 0:3] = True  # + 6 px outside: inter 64, union 106; box [0, 0, 10, 12]
    sim = {"mask": 64 / 106, "box": 100 / 120}[iou]  # TP for alphas 0.05 .. 0.60 (mask), .. 0.80 (box)
    res = run(burst(seq([{1: g}], {1: 5})), burst(seq([{1: p}], {1: 5})), iou=iou)
    assert res["HOTA_all"] == pytest.approx(n_tp / 19)
    assert res["DetA_all"] == pytest.approx(n_tp / 19)
    assert res["LocA_all"] == pytest.approx((n_tp * sim + (19 - n_tp) * 1.0) / 19)  # LocA is 1 where no TP


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


# ------------------------------------------------------------------------------------------ boxes (official)
def test_boxes_from_rles_follow_the_converter():
    # format_converter.py: [int(x) for x in toBbox(rle)]: xywh, w = last col - first col + 1
    one = np.zeros((H, W), bool)
    one[3, 5] = True
    ell = np.zeros((H, W), bool)
    ell[2, 1:7] = True
    ell[2:9, 1] = True  # an L: rows 2..8, cols 1..6
    boxes = hota.boxes_from_rles([mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
                                  for m in (one, ell, np.zeros((H, W), bool))])
    np.testing.assert_array_equal(boxes, [[5, 3, 1, 1], [1, 2, 6, 7], [0, 0, 0, 0]])


def test_box_iou_hand_computed():
    gt = np.array([[0, 0, 2, 1], [5, 3, 1, 1], [0, 0, 0, 0]], float)
    pr = np.array([[1, 0, 2, 1], [5, 3, 1, 1], [6, 3, 1, 1], [0, 0, 0, 0]], float)
    iou = hota.box_iou(gt, pr)
    assert iou[0, 0] == pytest.approx(1 / 3)  # overlap 1 px of 2 + 2 - 1: no +1 in the IoU
    assert iou[1, 1] == 1.0  # the same one-pixel box
    assert iou[1, 2] == 0.0  # touching pixels do not overlap
    assert (iou[2] == 0).all() and (iou[:, 3] == 0).all()  # an empty mask's box overlaps nothing
    assert hota.box_iou(np.zeros((0, 4)), pr).shape == (0, 4)


def test_box_iou_equals_pycocotools_bbiou():
    # BURST's _calculate_mask_ious receives the box arrays: pycocotools iou on [N, 4] arrays is bbIou
    rng = np.random.default_rng(0)
    a = np.c_[rng.integers(0, 20, (30, 2)), rng.integers(0, 9, (30, 2))].astype(float)
    b = np.c_[rng.integers(0, 20, (25, 2)), rng.integers(0, 9, (25, 2))].astype(float)
    ref = np.asarray(mask_utils.iou(a, b, [0] * len(b)))
    np.testing.assert_allclose(hota.box_iou(a, b), ref, rtol=0, atol=1e-15)


def test_hota_scores_boxes_by_default_masks_on_request():
    ell = np.zeros((H, W), bool)
    ell[0, 0:10] = True
    ell[0:10, 0] = True  # 19 px, box [0, 0, 10, 10]
    full = box(0, 10, 0, 10)  # 100 px, the same box
    gt, pred = burst(seq([{1: ell}], {1: 4})), burst(seq([{1: full}], {1: 4}))
    res = run(gt, pred)
    assert res["HOTA_all"] == 1.0
    assert "box" in res["definitions"]["HOTA_all"]
    assert run(gt, pred, iou="mask")["HOTA_all"] == pytest.approx(3 / 19)  # IoU 0.19: alphas .05, .10, .15


def test_unknown_task_or_iou_is_error():
    gt = burst(seq([{1: A}], {1: 4}))
    with pytest.raises(ValueError, match="task"):
        run(gt, gt, task="guided")
    with pytest.raises(ValueError, match="iou"):
        run(gt, gt, iou="polygon")


# ------------------------------------------------------------------------------------------ class-guided
def cg(frames, paths=None, sid=1, name="s1", **extra):
    """Class-guided prediction sequence: frames of {model track id: (mask, category, score)}."""
    s = seq([{k: m for k, (m, _, _) in f.items()} for f in frames], {}, paths, sid, name)
    for f, segs in zip(frames, s["segmentations"]):
        for k, (_, c, sc) in f.items():
            segs[str(k)].update(category_id=c, score=sc)
    return dict(s, **extra)


def test_class_guided_reads_model_track_ids_and_classes():
    # the file: track ids are the model's own (100, 200) and each det carries its category
    gt = burst(seq([{1: A, 2: B}, {1: A, 2: B}], {1: 4, 2: 5}))
    pred = burst(cg([{100: (A, 4, 0.9), 200: (B, 5, 0.8)}, {100: (A, 4, 0.9), 300: (B, 7, 0.5)}]))
    res = run(gt, pred, task="class_guided")
    assert res["per_class"]["cls4"]["HOTA"] == 1.0
    # cls5: TP in frame 0, FN in frame 1: DetA 1/2, A(g, p) = 1 / (2 + 1 - 1) = 1/2
    assert res["per_class"]["cls5"]["HOTA"] == pytest.approx(0.5)
    assert res["HOTA_all"] == pytest.approx(0.75)
    with pytest.raises(KeyError, match="track id '100'"):  # the exemplar-guided task still insists on GT ids
        run(gt, pred)


def test_class_guided_unmatched_dets_follow_tao_rules():
    # frame 1 has no class-4 GT: the class-4 det there is dropped, unless class 4 is a negative class of the
    # video, where it is a false positive (TP 1, FP 1: DetA 1/2, A = 1 / (1 + 2 - 1) = 1/2, HOTA 1/2)
    gt_seq = seq([{1: A}, {2: B}], {1: 4, 2: 5})
    pred = burst(cg([{100: (A, 4, 1.0)}, {100: (B, 4, 1.0), 200: (B, 5, 1.0)}]))
    assert run(burst(gt_seq), pred, task="class_guided")["per_class"]["cls4"]["HOTA"] == 1.0
    neg = dict(gt_seq, neg_category_ids=[4])
    assert run(burst(neg), pred, task="class_guided")["per_class"]["cls4"]["HOTA"] == pytest.approx(0.5)
    # a not-exhaustively-labelled class drops unmatched dets even where the frame has its GT
    gt2 = seq([{1: A}, {1: A}], {1: 4})
    pred2 = burst(cg([{100: (A, 4, 1.0), 101: (B, 4, 1.0)}, {100: (A, 4, 1.0)}]))
    assert run(burst(gt2), pred2, task="class_guided")["HOTA_all"] < 1.0
    nel = dict(gt2, not_exhaustive_category_ids=[4])
    assert run(burst(nel), pred2, task="class_guided")["HOTA_all"] == 1.0


def test_class_guided_missing_class_is_error():
    gt = burst(seq([{1: A}], {1: 4}))
    pred = burst(seq([{100: A}], {}))
    with pytest.raises(KeyError, match="category_id"):
        run(gt, pred, task="class_guided")


# ------------------------------------------------------------------------------------------ open world
def test_open_world_is_class_agnostic_and_split_by_gt_class():
    # GT A (common class 4) and B (uncommon class 5) in both frames; the prediction finds A with a wrong class
    gt = burst(seq([{1: A, 2: B}, {1: A, 2: B}], {1: 4, 2: 5}))
    pred = burst(cg([{7: (A, 13, 1.0)}, {7: (A, 13, 1.0)}]))
    res = run(gt, pred, task="open_world")
    assert res["OWTA_com"] == 1.0
    assert res["OWTA_unc"] == 0.0 and res["DetRe_unc"] == 0.0
    assert res["DetRe_all"] == pytest.approx(0.5) and res["AssA_all"] == 1.0
    assert res["OWTA_all"] == pytest.approx(np.sqrt(0.5))  # OWTA = sqrt(DetRe * AssA)


# ------------------------------------------------------------------------------------------ TrackMAP
def test_trackmap_perfect_is_one_and_reported_per_split():
    gt = burst(seq([{1: A, 2: B}, {1: A, 2: B}], {1: 4, 2: 5}))
    res = run(gt, burst(cg([{1: (A, 4, 0.9), 2: (B, 5, 0.8)}] * 2)), task="class_guided")
    # precision = tp / (tp + fp + np.spacing(1)): 1 - 2e-16, as in the official code
    assert (res["AP_all"], res["AP_com"], res["AP_unc"]) == pytest.approx((1.0, 1.0, 1.0), abs=1e-12)
    assert res["per_class"]["cls4"]["AP"] == pytest.approx(1.0, abs=1e-12)
    assert "TrackMAP" in res["definitions"]["AP_all"]


def test_trackmap_hand_computed_precision_curve():
    # one GT track; the higher-scored predicted track misses (FP), the lower-scored one is exact (TP):
    # tp [0, 1], fp [1, 1] -> precision [0, 1/2], made monotone [1/2, 1/2]; every recall point reads 1/2
    gt = burst(seq([{1: A}, {1: A}], {1: 4}))
    pred = burst(cg([{5: (B, 4, 0.9), 6: (A, 4, 0.5)}, {5: (B, 4, 0.9), 6: (A, 4, 0.5)}]))
    assert run(gt, pred, task="class_guided")["AP_all"] == pytest.approx(0.5)
    # swapping the scores puts the TP first: AP 1
    pred = burst(cg([{5: (B, 4, 0.5), 6: (A, 4, 0.9)}, {5: (B, 4, 0.5), 6: (A, 4, 0.9)}]))
    assert run(gt, pred, task="class_guided")["AP_all"] == pytest.approx(1.0)


def test_trackmap_uses_mask_track_iou_while_hota_uses_boxes():
    ell = np.zeros((H, W), bool)
    ell[0, 0:10] = True
    ell[0:10, 0] = True
    gt = burst(seq([{1: ell}], {1: 4}))
    res = run(gt, burst(cg([{1: (box(0, 10, 0, 10), 4, 1.0)}])), task="class_guided")
    assert res["HOTA_all"] == 1.0  # same box
    assert res["AP_all"] == 0.0  # mask track IoU 19/100 < 0.5


def test_mask_track_iou_hand_computed():
    enc = lambda m: mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # noqa: E731
    a, b = box(0, 2, 0, 2), box(0, 2, 1, 3)  # 4 px each, 2 px overlap
    dt = [{0: enc(a), 1: enc(a)}]
    gt = [{0: enc(b), 2: enc(b)}]
    # frame 0: inter 2, union 6; frame 1 only dt: +4; frame 2 only gt: +4 -> 2 / 14
    np.testing.assert_allclose(trackmap.mask_track_ious(dt, gt), [[2 / 14]])


def test_trackmap_dt_id_zero_quirk():
    # TrackMAP marks a GT as matched by storing the dt id and tests `> 0`: a dt with id 0 leaves it free
    ious = np.ones((2, 1))
    res = trackmap.match_sequence(ious, [0, 5], [1], [0.9, 0.8])
    np.testing.assert_array_equal(res["dt_matches"][0], [1, 1])  # both matched
    res = trackmap.match_sequence(ious, [3, 5], [1], [0.9, 0.8])
    np.testing.assert_array_equal(res["dt_matches"][0], [1, -1])


def test_trackmap_ignores_unmatched_when_not_exhaustive_and_no_gt_is_minus_one():
    res = trackmap.match_sequence(np.zeros((1, 1)), [3], [1], [0.9], not_exhaustively_labeled=True)
    assert res["dt_ignore"].all()
    assert (trackmap.combine_sequences([res])["AP"] == 0).all()  # a GT, nothing matched
    no_gt = trackmap.match_sequence(np.zeros((1, 0)), [3], [], [0.9])
    assert (trackmap.combine_sequences([no_gt])["AP"] == -1).all()
    assert trackmap.match_sequence(np.zeros((0, 0)), [], [], []) is None


def test_max_detections_keeps_the_highest_scores_per_frame():
    gt = burst(seq([{1: A}], {1: 4}))
    pred = burst(cg([{5: (B, 4, 0.9), 6: (A, 4, 0.5)}]))
    assert run(gt, pred, task="class_guided")["DetA_all"] == pytest.approx(1 / 2)  # TP + FP
    assert run(gt, pred, task="class_guided", max_detections=1)["DetA_all"] == 0.0  # only the FP is kept


# ------------------------------------------------------------------------------------------ official numbers
OFFICIAL = json.loads((Path(__file__).parent / "fixtures" / "burst_official.json").read_text())
_ROWS = {"exemplar_guided": ("HOTA", "DetA", "AssA", "AP"), "class_guided": ("HOTA", "DetA", "AssA", "AP"),
         "open_world": ("OWTA", "DetRe", "AssA")}


@pytest.mark.parametrize("task", sorted(_ROWS))
def test_equals_numbers_printed_by_official_burst_eval(task):
    # random fixtures (non-rectangular masks, 2x-frame-rate predictions, distractors, merged ids, neg and
    # not-exhaustive classes, score ties) scored by BURST-benchmark burstapi/eval/run.py; for open_world its
    # common/uncommon GT files were the all-classes GT filtered by the 78 common ids
    case = OFFICIAL["cases"][task]
    res = hota.evaluate(case["gt"], case["pred"], task=task, categories=OFFICIAL["categories"], progress=False)
    for row in _ROWS[task]:
        for split, key in (("all", "all"), ("common", "com"), ("uncommon", "unc")):
            assert 100 * res[f"{row}_{key}"] == pytest.approx(case["official"][row][split], abs=1e-6), (row, split)
    if task != "open_world":  # mask IoU is not what the official code scores
        masks = hota.evaluate(case["gt"], case["pred"], task=task, iou="mask", categories=OFFICIAL["categories"],
                              progress=False)
        assert abs(100 * masks["HOTA_all"] - case["official"]["HOTA"]["all"]) > 0.1
