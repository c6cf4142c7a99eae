"""YouTube-VIS / OVIS AP/AR (gvseg.metrics.ytvis) on tiny synthetic YTVIS-format fixtures."""

import contextlib
import copy
import io
import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from gvseg.metrics import ytvis
from gvseg.metrics.ytvis import STAT_NAMES, evaluate, video_iou


def _rle(mask, *, as_list=False):
    """Compressed RLE with a str `counts` (results / OVIS style) or uncompressed list counts (YTVIS GT)."""
    mask = np.asfortranarray(mask.astype(np.uint8))
    if as_list:  # column-major run lengths starting with zeros
        flat = mask.ravel(order="F")
        change = np.flatnonzero(np.diff(flat)) + 1
        bounds = np.concatenate([[0], change, [flat.size]])
        counts = np.diff(bounds).tolist()
        if flat.size and flat[0] == 1:
            counts = [0] + counts
        return {"size": list(mask.shape), "counts": counts}
    r = mask_utils.encode(mask)
    return {"size": r["size"], "counts": r["counts"].decode()}


def _box(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), np.uint8)
    m[y0:y1, x0:x1] = 1
    return m


def _gt(videos, anns, cats=(1, 2, 3)):
    """videos: {id: (h, w, T)}; anns: list of (video, cat, [mask|None per frame], iscrowd)."""
    out = {
        "videos": [{"id": v, "height": h, "width": w, "length": t,
                    "file_names": [f"{v:05d}/{i * 5:05d}.jpg" for i in range(t)]} for v, (h, w, t) in videos.items()],
        "annotations": [],
        "categories": [{"id": c, "name": f"c{c}", "supercategory": "x"} for c in cats],
    }
    for i, (v, c, masks, crowd) in enumerate(anns):
        out["annotations"].append({
            "id": i + 1, "video_id": v, "category_id": c, "iscrowd": crowd,
            "height": videos[v][0], "width": videos[v][1], "length": videos[v][2],
            "segmentations": [None if m is None else _rle(m, as_list=True) for m in masks],
            "areas": [None if m is None else float(np.sum(m)) for m in masks],
            "bboxes": [None if m is None else mask_utils.toBbox(mask_utils.encode(np.asfortranarray(m, np.uint8))).tolist()
                       for m in masks],
        })
    return out


def _res(v, c, masks, score):
    return {"video_id": v, "category_id": c, "score": score,
            "segmentations": [None if m is None else _rle(m) for m in masks]}


def _fixture():
    """Two videos, three categories, null frames, objects of small/medium/large size."""
    h, w = 300, 300
    videos = {3: (h, w, 3), 11: (h, w, 2)}
    anns = [
        (3, 1, [_box(h, w, 0, 20, 0, 30), None, _box(h, w, 5, 25, 0, 30)], 0),  # small
        (3, 2, [None, _box(h, w, 50, 200, 50, 200), _box(h, w, 60, 210, 50, 200)], 0),  # medium
        (11, 1, [_box(h, w, 0, 290, 0, 290), _box(h, w, 0, 280, 0, 290)], 0),  # large
        (11, 3, [_box(h, w, 100, 140, 100, 130), None], 0),
    ]
    return videos, anns


def _perfect_results(anns, scores=None):
    return [_res(v, c, masks, 0.9 - 0.1 * i if scores is None else scores[i]) for i, (v, c, masks, _) in enumerate(anns)]


def _stats(gt, res):
    return np.array(evaluate(copy.deepcopy(gt), copy.deepcopy(res), progress=False)["stats"])


# ------------------------------------------------------------------------------------------ IoU
def test_video_iou_null_aware_hand_computed():
    h, w = 4, 5
    a = _box(h, w, 0, 2, 0, 2)  # 4 px
    b = _box(h, w, 0, 2, 1, 3)  # 4 px, 2 px overlap with a
    videos = {1: (h, w, 3)}
    gt = ytvis.load_gt(_gt(videos, [(1, 1, [None, a, a], 0)]))[2]
    dt = ytvis.load_results([_res(1, 1, [b, b, None], 0.5)], {1: (h, w, 3)})
    # frame 0: only d (+4 union), frame 1: both (2 / 6), frame 2: only g (+4 union)
    assert video_iou(dt, gt)[0, 0] == pytest.approx(2 / 14)
    empty = ytvis.load_results([_res(1, 1, [None, None, None], 0.5)], {1: (h, w, 3)})
    empty_gt = ytvis.load_gt(_gt(videos, [(1, 1, [None, None, None], 0)]))[2]
    assert video_iou(empty, empty_gt)[0, 0] == 0.0  # union 0 -> 0


def test_video_iou_matches_dense_masks():
    rng = np.random.default_rng(0)
    h, w, t = 23, 31, 4
    gmasks = [[(rng.random((h, w)) < 0.3).astype(np.uint8) if rng.random() < 0.8 else None for _ in range(t)]
              for _ in range(3)]
    dmasks = [[(rng.random((h, w)) < 0.4).astype(np.uint8) if rng.random() < 0.8 else None for _ in range(t)]
              for _ in range(4)]
    gts = ytvis.load_gt(_gt({1: (h, w, t)}, [(1, 1, m, 0) for m in gmasks]))[2]
    dts = ytvis.load_results([_res(1, 1, m, 0.5) for m in dmasks], {1: (h, w, t)})
    got = video_iou(dts, gts)
    for i, dm in enumerate(dmasks):
        for j, gm in enumerate(gmasks):
            z = np.zeros((h, w), np.uint8)
            inter = sum(((d if d is not None else z) & (g if g is not None else z)).sum() for d, g in zip(dm, gm))
            union = sum(((d if d is not None else z) | (g if g is not None else z)).sum() for d, g in zip(dm, gm))
            assert got[i, j] == pytest.approx(inter / union if union else 0.0, abs=1e-12)


# ------------------------------------------------------------------------------------------ AP / AR
def test_perfect_prediction_scores_one():
    videos, anns = _fixture()
    res = evaluate(_gt(videos, anns), _perfect_results(anns), progress=False)
    for name in STAT_NAMES:
        assert res[name] == pytest.approx(1.0), name  # every area range has one object
    assert res["per_category_AP"] == pytest.approx({1: 1.0, 2: 1.0, 3: 1.0})


def test_hand_computed_ap_two_detections_one_gt():
    h, w = 20, 20
    g = _box(h, w, 0, 10, 0, 10)  # 100 px
    d_hi = _box(h, w, 0, 6, 0, 10)  # IoU 0.6, higher score
    d_lo = _box(h, w, 0, 9, 0, 10)  # IoU 0.9, lower score
    gt = _gt({1: (h, w, 2)}, [(1, 1, [g, None], 0)], cats=(1,))
    res = evaluate(gt, [_res(1, 1, [d_hi, None], 0.9), _res(1, 1, [d_lo, None], 0.8)], progress=False)
    # t in .50,.55,.60: top result is a TP -> AP 1; t in .65..90: FP then TP -> AP .5; t=.95: nothing.
    assert res["AP"] == pytest.approx((3 * 1.0 + 6 * 0.5 + 0.0) / 10)
    assert res["AP50"] == pytest.approx(1.0) and res["AP75"] == pytest.approx(0.5)
    assert res["AR1"] == pytest.approx(0.3) and res["AR10"] == pytest.approx(0.9)
    assert res["APs"] == res["AP"] and res["APm"] == -1 and res["APl"] == -1  # no medium/large GT


def test_permuting_results_and_gt_annotations_changes_nothing():
    videos, anns = _fixture()
    rng = np.random.default_rng(3)
    res = _perfect_results(anns)
    h, w = 300, 300
    res += [_res(3, 1, [_box(h, w, 2, 22, 3, 30), None, None], 0.77),
            _res(11, 3, [_box(h, w, 90, 140, 100, 140), None], 0.66),
            _res(11, 2, [None, _box(h, w, 0, 50, 0, 50)], 0.55)]
    gt = _gt(videos, anns)
    base = _stats(gt, res)
    gt_perm = copy.deepcopy(gt)
    rng.shuffle(gt_perm["annotations"])
    res_perm = [res[i] for i in rng.permutation(len(res))]
    np.testing.assert_array_equal(_stats(gt_perm, res_perm), base)
    assert base[0] < 1.0  # the extra results matter


def test_empty_prediction_scores_zero():
    videos, anns = _fixture()
    res = [_res(v, c, [None] * len(m), 0.5) for v, c, m, _ in anns]  # every frame null
    stats = _stats(_gt(videos, anns), res)
    assert (stats[[0, 1, 2, 6, 7, 8]] == 0).all()


def test_list_and_string_rle_give_identical_results():
    videos, anns = _fixture()
    gt_list = _gt(videos, anns)
    gt_str = copy.deepcopy(gt_list)
    for ann in gt_str["annotations"]:
        ann["segmentations"] = [None if s is None else _rle(mask_utils.decode(mask_utils.frPyObjects(s, *s["size"])))
                                for s in ann["segmentations"]]
    res = _perfect_results(anns)
    res[0]["segmentations"][0] = _rle(_box(300, 300, 0, 15, 0, 30))
    np.testing.assert_array_equal(_stats(gt_list, res), _stats(gt_str, res))


def test_polygon_gt_equals_its_mask():
    h, w = 40, 50
    poly = [[5.0, 5.0, 30.0, 5.0, 30.0, 25.0, 5.0, 25.0]]  # x, y pairs
    gt = _gt({1: (h, w, 1)}, [(1, 1, [np.ones((h, w))], 0)], cats=(1,))
    gt["annotations"][0]["segmentations"] = [poly]
    poly_mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(poly, h, w)))
    res = evaluate(gt, [_res(1, 1, [poly_mask], 0.9)], progress=False)
    assert res["AP"] == pytest.approx(1.0)


def test_crowd_gt_is_ignored_and_absorbs_results():
    h, w = 40, 40
    g1, g2 = _box(h, w, 0, 10, 0, 10), _box(h, w, 20, 40, 20, 40)
    res = [_res(1, 1, [g2], 0.95), _res(1, 1, [g2.copy()], 0.94), _res(1, 1, [g1], 0.9)]
    crowd = evaluate(_gt({1: (h, w, 1)}, [(1, 1, [g1], 0), (1, 1, [g2], 1)], cats=(1,)), res, progress=False)
    # both top results match the crowd GT: ignored, neither TP nor FP; the crowd is not a GT to recall
    assert crowd["AP"] == pytest.approx(1.0) and crowd["AR1"] == pytest.approx(0.0)
    plain = evaluate(_gt({1: (h, w, 1)}, [(1, 1, [g1], 0), (1, 1, [g2], 0)], cats=(1,)), res, progress=False)
    assert plain["AP"] == pytest.approx(2 / 3 * 0.5 + 1.0 * 0.5, abs=0.01)  # the duplicate is a false positive


def test_gt_area_range_uses_mean_of_non_null_areas_field():
    h, w = 300, 300
    small = _box(h, w, 0, 10, 0, 10)
    gt = _gt({1: (h, w, 3)}, [(1, 1, [small, None, small], 0)], cats=(1,))
    gt["annotations"][0]["areas"] = [70000.0, None, 80000.0]  # the field, not the masks, decides: large
    res = evaluate(gt, [_res(1, 1, [small, None, small], 0.9)], progress=False)
    assert res["APl"] == pytest.approx(1.0) and res["APs"] == -1 and res["APm"] == -1
    gt["annotations"][0]["areas"] = [0.0, None, 20000.0]  # zeros are dropped like nulls: mean 20000, medium
    res = evaluate(gt, [_res(1, 1, [small, None, small], 0.9)], progress=False)
    assert res["APm"] == pytest.approx(1.0) and res["APl"] == -1


# ------------------------------------------------------------------------------------------ oracle
def test_single_frame_videos_equal_pycocotools_cocoeval():
    """With one frame per video, video AP is image AP: pycocotools COCOeval (segm) is an independent oracle."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(7)
    h, w = 300, 300
    videos, anns, res = {}, [], []
    for v in range(1, 7):
        videos[v] = (h, w, 1)
        for j in range(rng.integers(1, 4)):
            s = (20, 150, 280)[(v + j) % 3] + int(rng.integers(0, 10))  # small / medium / large objects
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            c = int(rng.integers(1, 4))
            m = _box(h, w, y, y + s, x, x + s)
            anns.append((v, c, [m], 0))
            for _ in range(rng.integers(0, 3)):
                dy, dx = rng.integers(-s // 3, s // 3 + 1, 2)
                res.append(_res(v, c if rng.random() < 0.8 else int(rng.integers(1, 4)),
                                [np.roll(m, (dy, dx), (0, 1))], float(rng.random())))
        res.append(_res(v, int(rng.integers(1, 4)), [_box(h, w, 0, 40, 0, 60)], float(rng.random())))
    gt = _gt(videos, anns)
    ours = _stats(gt, res)

    coco_gt = COCO()
    coco_gt.dataset = {
        "images": [{"id": v, "height": h, "width": w} for v in videos],
        "annotations": [{"id": a["id"], "image_id": a["video_id"], "category_id": a["category_id"],
                         "iscrowd": 0, "segmentation": a["segmentations"][0], "area": a["areas"][0],
                         "bbox": a["bboxes"][0]} for a in gt["annotations"]],
        "categories": gt["categories"],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes([{"image_id": r["video_id"], "category_id": r["category_id"],
                                    "segmentation": r["segmentations"][0], "score": r["score"]} for r in res])
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.params.areaRng = [list(r) for r in ytvis.AREA_RNG]  # YTVIS: 128^2 / 256^2, COCO images: 32^2 / 96^2
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert (ours > 0).all()  # every stat is defined and non-trivial on this fixture
    np.testing.assert_allclose(ours, ev.stats, rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------------------ errors
def test_input_errors_are_clear(tmp_path):
    videos, anns = _fixture()
    gt = _gt(videos, anns)
    with pytest.raises(ValueError, match="empty"):
        evaluate(gt, [], progress=False)
    path = tmp_path / "results.json"
    path.write_text(json.dumps([_res(99, 1, [None], 0.5)]))
    with pytest.raises(ValueError, match=r"results\.json.*\[99\].*not in the GT"):
        evaluate(gt, path, progress=False)
    with pytest.raises(ValueError, match="2 segmentations but video 3 has 3 frames"):
        evaluate(gt, [_res(3, 1, [None, None], 0.5)], progress=False)
    with pytest.raises(ValueError, match="missing keys"):
        evaluate(gt, [{"video_id": 3, "category_id": 1, "segmentations": [None] * 3}], progress=False)
    with pytest.raises(ValueError, match="mask is 5x5 but the video is 300x300"):
        evaluate(gt, [_res(3, 1, [np.ones((5, 5)), None, None], 0.5)], progress=False)


def test_evaluate_reads_json_files(tmp_path):
    videos, anns = _fixture()
    (tmp_path / "valid.json").write_text(json.dumps(_gt(videos, anns)))
    (tmp_path / "results.json").write_text(json.dumps(_perfect_results(anns)))
    assert evaluate(tmp_path / "valid.json", tmp_path / "results.json", progress=False)["AP"] == pytest.approx(1.0)
