"""VPQ^k (gvseg.metrics.vpq) against hand-computed cases and a slow dict-based reference that follows
eval_vpq_vspw.py's definitions window by window."""

from collections import defaultdict

import numpy as np
import pytest

from gvseg.metrics import panoptic_io as pio
from gvseg.metrics import vipseg, vpq

CATS = [
    {"id": 0, "name": "person", "isthing": 1},
    {"id": 1, "name": "car", "isthing": 1},
    {"id": 2, "name": "sky", "isthing": 0},
    {"id": 3, "name": "road", "isthing": 0},
]


def segs(ids, cat_of, **extra):
    """segments_info for one frame with PNG areas; extra[id] = dict overrides."""
    out = pio.segments_from_ids(ids, cat_of)
    for s in out:
        s.update(extra.get(s["id"], {}))
    return out


def video_segs(frames, cat_of):
    return [segs(f, cat_of) for f in frames]


# ----------------------------------------------------------------------------------------- reference


def reference_vpq(gt, gsegs, pred, psegs, categories, spans):
    """Window-by-window dict implementation of the official definitions (slow, obviously correct)."""
    stat = {n: defaultdict(lambda: {"iou": 0.0, "tp": 0, "fp": 0, "fn": 0}) for n in spans}
    T = len(gt)
    for n in spans:
        for s in range(T - n + 1):
            gtube, ptube = {}, {}
            for f in range(s, s + n):
                frame = {}
                for seg in gsegs[f]:
                    if seg["id"] in frame:
                        frame[seg["id"]]["area"] += seg["area"]
                    else:
                        frame[seg["id"]] = dict(seg)
                for i, seg in frame.items():
                    if i in gtube:
                        gtube[i]["area"] += seg["area"]
                    else:
                        gtube[i] = seg
                ids, cnt = np.unique(pred[f], return_counts=True)
                count = dict(zip(ids.tolist(), cnt.tolist()))
                pframe = {}
                for seg in psegs[f]:
                    pframe.setdefault(seg["id"], dict(seg, area=count[seg["id"]]))
                for i, seg in pframe.items():
                    if i in ptube:
                        ptube[i]["area"] += seg["area"]
                    else:
                        ptube[i] = seg
            key = gt[s : s + n].astype(np.int64) * (1 << 32) + pred[s : s + n].astype(np.int64)
            u, c = np.unique(key, return_counts=True)
            inter = {(int(k) >> 32, int(k) & 0xFFFFFFFF): int(v) for k, v in zip(u, c)}
            gm, pm = set(), set()
            for (g, p), x in inter.items():
                if g not in gtube or p not in ptube or gtube[g].get("iscrowd", 0) == 1:
                    continue
                if gtube[g]["category_id"] != ptube[p]["category_id"]:
                    continue
                iou = x / (ptube[p]["area"] + gtube[g]["area"] - x - inter.get((0, p), 0))
                if iou > 0.5:
                    st = stat[n][gtube[g]["category_id"]]
                    st["tp"] += 1
                    st["iou"] += iou
                    gm.add(g)
                    pm.add(p)
            crowd = {}
            for g, seg in gtube.items():
                if g in gm:
                    continue
                if seg.get("iscrowd", 0) == 1:
                    crowd[seg["category_id"]] = g
                    continue
                stat[n][seg["category_id"]]["fn"] += 1
            for p, seg in ptube.items():
                if p in pm:
                    continue
                ign = inter.get((0, p), 0)
                if seg["category_id"] in crowd:
                    ign += inter.get((crowd[seg["category_id"]], p), 0)
                if ign / seg["area"] > 0.5:
                    continue
                stat[n][seg["category_id"]]["fp"] += 1
    return stat


def random_video(rng, T=5, H=12, W=16, crowd=False, noise=True):
    """GT with things + stuff (moving boxes), void, unknown GT ids, JSON-area noise, duplicate listings,
    category flips and JSON-only segments; a perturbed prediction whose JSON matches its PNG."""
    gt = np.zeros((T, H, W), np.uint32)
    gt[:, : H // 2] = 11  # sky
    gt[:, H // 2 :] = 12  # road
    boxes = [(21, 0), (22, 0), (23, 1)]
    for t in range(T):
        for k, (i, _) in enumerate(boxes):
            y, x = 1 + (k * 3 + t) % (H - 4), (k * 5 + 2 * t) % (W - 4)
            gt[t, y : y + 3 + k % 2, x : x + 4] = i
        gt[t, rng.random((H, W)) < 0.05] = 0  # void
        if noise and t == 1:
            gt[t, 0, :3] = 99  # a GT id that no JSON lists
    cat_of = {11: 2, 12: 3, 21: 0, 22: 0, 23: 1, 99: 0}
    gsegs = []
    for t in range(T):
        fs = [s for s in segs(gt[t], cat_of) if s["id"] != 99]
        if noise:
            for s in fs:
                s["area"] += int(rng.integers(0, 3))  # JSON area >= PNG area (IoU stays <= 1)
            if t == 2:
                fs.append({"id": 40, "category_id": 1, "iscrowd": 0, "area": 5})  # JSON only, no pixels
            if t == 3:
                fs.append(dict(fs[0]))  # duplicate listing: areas add up
            if t == 4 and T > 4:
                for s in fs:
                    if s["id"] == 22:
                        s["category_id"] = 1  # category flips after the first frame
        if crowd:
            for s in fs:
                if s["id"] == 23 and t % 2 == 0:
                    s["iscrowd"] = 1
        gsegs.append(fs)
    pred = gt.copy()
    pred[pred == 99] = 0
    pred = np.roll(pred, int(rng.integers(0, 2)), axis=2)
    pred[:, :, 0][rng.random((T, H)) < 0.5] = 0
    remap = {11: 5, 12: 6, 21: 7, 22: 8, 23: 9}
    out = np.zeros_like(pred)
    for a, b in remap.items():
        out[pred == a] = b
    swap_t = int(rng.integers(1, max(T, 2)))
    m7, m8 = out[swap_t:] == 7, out[swap_t:] == 8
    out[swap_t:][m7], out[swap_t:][m8] = 8, 7  # an ID switch
    out[:, -2:, -3:] = 77  # a false positive over road
    pcat = {5: 2, 6: 3, 7: 0, 8: 0, 9: int(rng.integers(0, 2)), 77: 0}
    psegs = video_segs(out, pcat)
    return gt, gsegs, out, psegs


def as_acc_dict(accs):
    return {n: {CATS[k]["id"]: (a.iou[k], a.tp[k], a.fp[k], a.fn[k]) for k in range(len(CATS))} for n, a in accs.items()}


# ----------------------------------------------------------------------------------------- hand cases


def test_hand_computed_iou_subtracts_pred_on_void():
    # GT: id 1 (person) on cols 0..2 (6 px), void col 3. Pred id 9 (person) on cols 1..3 (6 px):
    # inter 4, pred∩void 2 -> IoU = 4 / (6 + 6 - 4 - 2) = 2/3.
    gt = np.array([[[1, 1, 1, 0], [1, 1, 1, 0]]], np.uint32)
    pred = np.array([[[0, 9, 9, 9], [0, 9, 9, 9]]], np.uint32)
    accs = vpq.vpq_video(gt, video_segs(gt, {1: 0}), pred, video_segs(pred, {9: 0}), CATS, spans=(1,))
    a = accs[1]
    assert (a.tp[0], a.fp[0], a.fn[0]) == (1, 0, 0)
    assert a.iou[0] == pytest.approx(2 / 3, abs=1e-12)
    res = vpq.summarize(accs, CATS)
    assert res["vpq_1"] == pytest.approx(100 * 2 / 3, abs=1e-9)
    assert res["spans"]["1"]["all"]["n"] == 1 and np.isnan(res["vpq_1_stuff"])


def test_hand_computed_wrong_class_is_fn_and_fp():
    gt = np.array([[[1, 1, 1, 2], [1, 1, 1, 2]]], np.uint32)
    pred = np.array([[[9, 9, 9, 8], [9, 9, 9, 8]]], np.uint32)
    accs = vpq.vpq_video(gt, video_segs(gt, {1: 0, 2: 2}), pred, video_segs(pred, {9: 1, 8: 2}), CATS, (1,))
    a = accs[1]
    assert (a.tp.tolist(), a.fp.tolist(), a.fn.tolist()) == ([0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0])
    res = vpq.summarize(accs, CATS)
    assert res["vpq_1"] == pytest.approx(100 / 3)  # (0 + 0 + 100) / 3 classes with TP+FP+FN > 0
    assert res["vpq_1_thing"] == 0.0 and res["vpq_1_stuff"] == 100.0


def test_gt_area_comes_from_json_not_png():
    gt = np.array([[[1, 1, 1, 1], [1, 1, 0, 0]]], np.uint32)  # 6 px of id 1
    pred = np.array([[[9, 9, 9, 9], [9, 9, 0, 0]]], np.uint32)
    gs = [[{"id": 1, "category_id": 0, "iscrowd": 0, "area": 10}]]  # JSON says 10
    a = vpq.vpq_video(gt, gs, pred, video_segs(pred, {9: 0}), CATS, (1,))[1]
    assert a.iou[0] == pytest.approx(6 / (6 + 10 - 6))


def test_void_rule_unmatched_pred_mostly_on_void_is_not_fp():
    gt = np.zeros((1, 2, 4), np.uint32)
    gt[0, :, :2] = 1
    pred = np.zeros_like(gt)
    pred[0, 0, 1:] = 9  # 3 px: 1 on GT id 1, 2 on void -> 2/3 > 1/2 on void: ignored
    a = vpq.vpq_video(gt, video_segs(gt, {1: 0}), pred, video_segs(pred, {9: 1}), CATS, (1,))[1]
    assert a.fp.sum() == 0 and a.fn[0] == 1
    pred[0, 1, 0] = 9  # 4 px, 2 on void: exactly half -> counted
    a = vpq.vpq_video(gt, video_segs(gt, {1: 0}), pred, video_segs(pred, {9: 1}), CATS, (1,))[1]
    assert a.fp[1] == 1


def test_tube_category_is_the_first_frame_of_the_window():
    gt = np.ones((2, 2, 2), np.uint32)
    gs = [[{"id": 1, "category_id": 0, "iscrowd": 0, "area": 4}], [{"id": 1, "category_id": 1, "iscrowd": 0, "area": 4}]]
    pred = np.full_like(gt, 9)
    ps = [[{"id": 9, "category_id": 0}], [{"id": 9, "category_id": 0}]]
    accs = vpq.vpq_video(gt, gs, pred, ps, CATS, (1, 2))
    assert accs[2].tp[0] == 1 and accs[2].fn.sum() == 0  # window [0, 2): person (frame 0) matches
    assert accs[1].tp[0] == 1 and accs[1].fn[1] == 1  # frame 1 alone: a car GT, unmatched


def test_crowd_rule_pred_on_crowd_not_fp():
    gt = np.zeros((1, 2, 4), np.uint32)
    gt[0, :, :3] = 1
    gs = [[{"id": 1, "category_id": 0, "iscrowd": 1, "area": 6}]]
    pred = np.zeros_like(gt)
    pred[0, :, 1:] = 9  # 4 px on the crowd, 2 on void
    a = vpq.vpq_video(gt, gs, pred, video_segs(pred, {9: 0}), CATS, (1,))[1]
    assert (a.tp.sum(), a.fp.sum(), a.fn.sum()) == (0, 0, 0)


# ----------------------------------------------------------------------------------------- invariances


def test_perfect_prediction_scores_100_everywhere():
    rng = np.random.default_rng(0)
    gt, gsegs, _, _ = random_video(rng, T=9, noise=False)
    gsegs_png = video_segs(gt, {11: 2, 12: 3, 21: 0, 22: 0, 23: 1, 99: 0})
    accs = vpq.vpq_video(gt, gsegs_png, gt, gsegs_png, CATS)
    res = vpq.summarize(accs, CATS)
    for k in ("vpq_mean_1246", "vpq_mean_12468", "vpq_thing_mean_12468", "vpq_stuff_mean_1246"):
        assert res[k] == pytest.approx(100.0)


def test_permuting_ids_changes_nothing():
    rng = np.random.default_rng(1)
    gt, gsegs, pred, psegs = random_video(rng, T=9)
    base = vpq.summarize(vpq.vpq_video(gt, gsegs, pred, psegs, CATS), CATS)
    perm = {5: 1234567, 6: 3, 7: 70000, 8: 16777215, 9: 2, 77: 5}
    pred2 = np.zeros_like(pred)
    for a, b in perm.items():
        pred2[pred == a] = b
    psegs2 = [[dict(s, id=perm[s["id"]]) for s in fs] for fs in psegs]
    gperm = {11: 8, 12: 500, 21: 9, 22: 65536, 23: 7, 99: 98, 40: 41}
    gt2 = np.zeros_like(gt)
    for a, b in gperm.items():
        gt2[gt == a] = b
    gsegs2 = [[dict(s, id=gperm[s["id"]]) for s in fs] for fs in gsegs]
    other = vpq.summarize(vpq.vpq_video(gt2, gsegs2, pred2, psegs2, CATS), CATS)
    assert other["vpq_mean_12468"] == pytest.approx(base["vpq_mean_12468"], abs=1e-12)
    assert other["per_class"] == base["per_class"]


def test_track_swap_lowers_long_spans_only():
    T = 4
    gt = np.zeros((T, 4, 8), np.uint32)
    gt[:, :, :4], gt[:, :, 4:] = 1, 2  # two persons of equal size
    pred = gt.copy() + 10
    pred[2:] = np.where(gt[2:] == 1, 12, 11)  # ids swapped from frame 2 on
    cat = {1: 0, 2: 0, 11: 0, 12: 0}
    res = vpq.summarize(vpq.vpq_video(gt, video_segs(gt, cat), pred, video_segs(pred, cat), CATS, (1, 2, 4)), CATS)
    assert res["vpq_1"] == pytest.approx(100.0)
    assert res["vpq_2"] < 100.0 and res["vpq_4"] == 0.0


def test_empty_prediction_scores_zero():
    rng = np.random.default_rng(2)
    gt, gsegs, _, _ = random_video(rng, T=8)
    pred = np.zeros_like(gt)
    res = vpq.summarize(vpq.vpq_video(gt, gsegs, pred, [[] for _ in gt], CATS), CATS)
    assert res["vpq_mean_12468"] == 0.0 and res["vpq_mean_1246"] == 0.0


def test_videos_shorter_than_span_add_nothing():
    rng = np.random.default_rng(3)
    gt, gsegs, pred, psegs = random_video(rng, T=3)
    accs = vpq.vpq_video(gt, gsegs, pred, psegs, CATS)
    assert all(int(accs[n].tp.sum() + accs[n].fp.sum() + accs[n].fn.sum()) == 0 for n in (4, 6, 8))
    assert accs[2].fn.sum() + accs[2].tp.sum() > 0
    assert np.isnan(vpq.summarize(accs, CATS)["vpq_4"])  # the official script divides by zero here


@pytest.mark.parametrize("seed", range(6))
def test_matches_reference_on_random_videos(seed):
    rng = np.random.default_rng(100 + seed)
    gt, gsegs, pred, psegs = random_video(rng, T=9, crowd=seed % 2 == 1)
    spans = (1, 2, 4, 6, 8)
    ours = as_acc_dict(vpq.vpq_video(gt, gsegs, pred, psegs, CATS, spans))
    ref = reference_vpq(gt, gsegs, pred, psegs, CATS, spans)
    for n in spans:
        for c in CATS:
            r = ref[n][c["id"]]
            iou, tp, fp, fn = ours[n][c["id"]]
            assert (tp, fp, fn) == (r["tp"], r["fp"], r["fn"]), (n, c)
            assert iou == pytest.approx(r["iou"], abs=1e-12)


# ----------------------------------------------------------------------------------------- on disk


def write_pair(tmp_path, videos, shuffle_pred_image_ids=False):
    """Write GT (panomasksRGB + JSON) and predictions (pan_pred + pred.json) in the real layout."""
    import json

    gt_v, pred_v = {}, {}
    for vid, (gt, gsegs, pred, psegs) in videos.items():
        stems = [f"{100 + 7 * t:08d}" for t in range(len(gt))]  # not starting at 0, not consecutive
        gt_v[vid] = (stems, list(gt), gsegs)
        pred_v[vid] = (stems, list(pred), psegs)
    pio.write_vipseg(tmp_path / "gt", gt_v, CATS)
    pjson = pio.write_vipseg(tmp_path / "pred", pred_v, kind="pred")
    if shuffle_pred_image_ids:  # wrong image_ids on purpose: frames align by position
        data = json.loads(pjson.read_text())
        for a in data["annotations"]:
            ids = [fa["image_id"] for fa in a["annotations"]][::-1]
            for fa, i in zip(a["annotations"], ids):
                fa["image_id"] = i
        pjson.write_text(json.dumps(data))
    return tmp_path / "gt", tmp_path / "pred"


def test_evaluate_on_disk_matches_array_core_and_aligns_by_position(tmp_path):
    rng = np.random.default_rng(7)
    videos = {"0_a": random_video(rng, T=9), "1_b": random_video(rng, T=3, crowd=True)}
    gt_dir, pred_dir = write_pair(tmp_path, videos, shuffle_pred_image_ids=True)
    res = vipseg.evaluate(gt_dir, pred_dir, workers=1, progress=False)
    accs = {n: vpq.PQAccumulator.zeros(len(CATS)) for n in vpq.SPANS}
    for gt, gsegs, pred, psegs in videos.values():
        for n, a in vpq.vpq_video(gt, gsegs, pred, psegs, CATS).items():
            accs[n] += a
    want = vpq.summarize(accs, CATS)
    for k in ("vpq_mean_1246", "vpq_mean_12468", "vpq_thing_mean_1246", "vpq_stuff_mean_12468", "vpq_8"):
        assert res[k] == pytest.approx(want[k], abs=1e-12)
    assert res["vpq_mean_1246"] == pytest.approx(np.mean([want[f"vpq_{n}"] for n in (1, 2, 4, 6)]))
    assert res["num_videos"] == 2


def test_evaluate_parallel_equals_serial_and_stq_rides_along(tmp_path):
    rng = np.random.default_rng(8)
    videos = {f"{i}_v": random_video(rng, T=7 + i) for i in range(3)}
    gt_dir, pred_dir = write_pair(tmp_path, videos)
    serial = vipseg.evaluate(gt_dir, pred_dir, workers=1, progress=False)
    par = vipseg.evaluate(gt_dir, pred_dir, workers=2, progress=False, with_stq=True)
    assert par["vpq_mean_12468"] == pytest.approx(serial["vpq_mean_12468"], abs=1e-12)
    assert 0.0 <= par["stq"] <= 1.0 and "aq" in par and "sq" in par


def _simple_disk(tmp_path):
    gt = np.zeros((2, 4, 6), np.uint32)
    gt[:, :, :3] = 1
    pred = gt + 0
    videos = {"v": (gt, video_segs(gt, {1: 0}), pred, video_segs(pred, {1: 0}))}
    return write_pair(tmp_path, videos)


def test_missing_prediction_frame_names_the_file(tmp_path):
    gt_dir, pred_dir = _simple_disk(tmp_path)
    missing = sorted((pred_dir / "pan_pred" / "v").glob("*.png"))[1]
    missing.unlink()
    with pytest.raises(FileNotFoundError, match=missing.name):
        vipseg.evaluate(gt_dir, pred_dir, workers=1, progress=False)


def test_size_mismatch_names_the_file(tmp_path):
    gt_dir, pred_dir = _simple_disk(tmp_path)
    f = sorted((pred_dir / "pan_pred" / "v").glob("*.png"))[0]
    pio.write_id_png(f, np.ones((5, 6), np.uint32))
    with pytest.raises(ValueError, match=f"{f.name}.*5x6"):
        vipseg.evaluate(gt_dir, pred_dir, workers=1, progress=False)


@pytest.mark.parametrize("bad", ["png_only", "json_only", "unknown_category"])
def test_prediction_json_png_disagreement_is_an_error(tmp_path, bad):
    import json

    gt_dir, pred_dir = _simple_disk(tmp_path)
    data = json.loads((pred_dir / "pred.json").read_text())
    frame = data["annotations"][0]["annotations"][0]
    if bad == "png_only":
        frame["segments_info"] = []
        match = r"\[1\] are in the PNG but not in"
    elif bad == "json_only":
        frame["segments_info"].append({"id": 5, "category_id": 0})
        match = r"\[5\] are in the JSON but not in the PNG"
    else:
        frame["segments_info"][0]["category_id"] = 57
        match = "unknown category_id"
    (pred_dir / "pred.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=match):
        vipseg.evaluate(gt_dir, pred_dir, workers=1, progress=False)


def test_iou_above_one_from_bad_gt_area_is_an_error():
    gt = np.ones((1, 2, 2), np.uint32)
    gs = [[{"id": 1, "category_id": 0, "iscrowd": 0, "area": 1}]]  # PNG has 4 px
    with pytest.raises(ValueError, match="IoU > 1"):
        vpq.vpq_video(gt, gs, gt, video_segs(gt, {1: 0}), CATS, (1,))
