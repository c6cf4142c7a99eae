"""STQ (gvseg.metrics.stq): VIPSeg label construction (eval_stq_vspw.py), the deeplab2 numpy core, KITTI-STEP,
checked against hand-computed values and a slow dict-based reference of the same definitions."""

import json

import numpy as np
import pytest

from gvseg.metrics import panoptic_io as pio
from gvseg.metrics import stq, vipseg

CATS = [
    {"id": 0, "name": "person", "isthing": 1},
    {"id": 1, "name": "car", "isthing": 1},
    {"id": 2, "name": "sky", "isthing": 0},
    {"id": 3, "name": "road", "isthing": 0},
]
THINGS = (0, 1)


# ----------------------------------------------------------------------------------------- reference


def vipseg_label_maps(ids, segments):
    """eval_stq_vspw.py: 255/255 everywhere, then each listed segment writes category and video index."""
    order = {}
    for fs in segments:
        for s in fs:
            order.setdefault(s["id"], len(order))
    out = []
    for f, fs in zip(ids, segments):
        sem = np.full(f.shape, 255, np.int64)
        inst = np.full(f.shape, 255, np.int64)
        for s in fs:
            sem[f == s["id"]] = s["category_id"]
            inst[f == s["id"]] = order[s["id"]]
        out.append((sem << 16) + inst)
    return np.stack(out)


def reference_stq(seqs, num_classes, things, ignore=255):
    """deeplab2 STQuality semantics with dicts; seqs = {id: (gt_labels [T,H,W], pred_labels [T,H,W])}."""
    M = num_classes + 1
    total = np.zeros((M, M), np.int64)
    aq_sum, tubes = 0.0, 0
    for gl, pl in seqs.values():
        gsize, psize, inter = {}, {}, {}
        for y, p in zip(gl.reshape(len(gl), -1), pl.reshape(len(pl), -1)):
            sg, sp = y >> 16, p >> 16
            sg = np.where(sg == ignore, num_classes, sg)
            sp = np.where(sp == ignore, num_classes, sp)
            np.add.at(total, (sg, sp), 1)
            lm, pm = np.isin(sg, things), np.isin(sp, things)
            crowd = lm & ((y & 0xFFFF) == 0)
            lm, pm = lm & ~crowd, pm & ~crowd
            for k in y[lm].tolist():
                gsize[k] = gsize.get(k, 0) + 1
            for k in p[pm].tolist():
                psize[k] = psize.get(k, 0) + 1
            for a, b in zip(y[lm & pm].tolist(), p[lm & pm].tolist()):
                inter[(a, b)] = inter.get((a, b), 0) + 1
        for g, gs in gsize.items():
            inner = 0.0
            for p, ps in psize.items():
                if (g, p) in inter:
                    t = inter[(g, p)]
                    inner += t * (t / (ps + gs - t))
            aq_sum += inner / gs
        tubes += len(gsize)
    total[num_classes, :] = 0
    tp = np.diag(total)
    union = total.sum(0) + total.sum(1) - tp
    sq = (tp[union > 0] / union[union > 0]).sum() / (union > 0).sum()
    aq = aq_sum / max(tubes, 1e-15)
    return {"stq": np.sqrt(aq * sq), "aq": aq, "sq": sq}


def segs(ids, cat_of):
    return pio.segments_from_ids(ids, cat_of)


def random_video(rng, T=4, H=10, W=12):
    gt = np.zeros((T, H, W), np.uint32)
    gt[:, : H // 2], gt[:, H // 2 :] = 11, 12
    for t in range(T):
        for k, i in enumerate((21, 22, 23)):
            y, x = (2 * k + t) % (H - 3), (3 * k + t) % (W - 4)
            gt[t, y : y + 3, x : x + 4] = i
        gt[t, rng.random((H, W)) < 0.08] = 0
    cat_of = {11: 2, 12: 3, 21: 0, 22: 0, 23: 1}
    gsegs = [segs(f, cat_of) for f in gt]
    if rng.random() < 0.5:  # a thing first in the video: instance 0 -> crowd
        gsegs[0] = sorted(gsegs[0], key=lambda s: -s["id"])
    pred = np.roll(gt, int(rng.integers(0, 3)), axis=2)
    pred = np.where(rng.random(pred.shape) < 0.05, 0, pred)
    pred[:, :, -2:][pred[:, :, -2:] == 21] = 31  # partial ID switch
    pred[:, 0, :2] = 55  # an id the prediction JSON does not list
    pcat = {11: 2, 12: 3, 21: 0, 22: int(rng.integers(0, 2)), 23: 1, 31: 0}
    psegs = [[s for s in segs(f, {**pcat, 55: 0}) if s["id"] != 55] for f in pred]
    return gt, gsegs, pred, psegs


def vipseg_seq(gt, gsegs, pred, psegs):
    g = vipseg_label_maps(gt, gsegs)
    p = vipseg_label_maps(pred, psegs)
    return stq.stq_video(g, p, num_classes=124, things=THINGS)


# ----------------------------------------------------------------------------------------- hand cases


def test_perfect_prediction_is_one():
    rng = np.random.default_rng(0)
    gt, gsegs, _, _ = random_video(rng)
    st = vipseg_seq(gt, gsegs, gt, gsegs)
    res = stq.stq_result({"v": st}, num_classes=124)
    assert res["stq"] == pytest.approx(1.0) and res["aq"] == pytest.approx(1.0) and res["sq"] == pytest.approx(1.0)


def test_hand_computed_aq_and_sq():
    # 1 frame, 1x4. GT: [car#1, car#1, car#1, road]; pred: [car#A, car#A, car#B, road]
    # labels: (sem << 16) + inst, inst 0 would be crowd so GT car has inst 1.
    car, road = 1, 3
    g = np.array([[[car << 16 | 1, car << 16 | 1, car << 16 | 1, road << 16]]], np.int64)
    p = np.array([[[car << 16 | 5, car << 16 | 5, car << 16 | 6, road << 16]]], np.int64)
    res = stq.stq_result({"v": stq.stq_video(g, p, num_classes=124, things=THINGS)}, num_classes=124)
    aq = (2 * (2 / 3) + 1 * (1 / 3)) / 3  # Σ_p TPA * IoU / |g|
    assert res["aq"] == pytest.approx(aq, abs=1e-12)
    assert res["sq"] == pytest.approx(1.0)
    assert res["stq"] == pytest.approx(np.sqrt(aq), abs=1e-12)


def test_aq_divides_by_total_tubes_not_mean_of_sequences():
    car = 1
    one = np.array([[[car << 16 | 1, car << 16 | 1]]], np.int64)
    seq_a = stq.stq_video(one, one, num_classes=124, things=THINGS)  # 1 tube, perfect
    g = np.array([[[car << 16 | 1, car << 16 | 2, car << 16 | 3]]], np.int64)
    p = np.array([[[3 << 16, 3 << 16, 3 << 16]]], np.int64)  # 3 tubes, missed (predicted road)
    seq_b = stq.stq_video(g, p, num_classes=124, things=THINGS)
    res = stq.stq_result({"a": seq_a, "b": seq_b}, num_classes=124)
    assert res["aq"] == pytest.approx(1 / 4)  # (1 + 0) / 4 tubes, not (1 + 0) / 2 sequences
    assert res["per_sequence"]["a"]["aq"] == 1.0 and res["per_sequence"]["b"]["aq"] == 0.0


def test_crowd_rule_when_first_segment_is_a_thing():
    # GT frame: id 7 (person) listed first -> instance 0 -> crowd; id 8 (person) -> instance 1.
    gt = np.array([[[7, 7, 8, 8]]], np.uint32)
    gsegs = [[{"id": 7, "category_id": 0, "iscrowd": 0, "area": 2}, {"id": 8, "category_id": 0, "iscrowd": 0, "area": 2}]]
    good = np.array([[[1, 1, 2, 2]]], np.uint32)
    messy = np.array([[[2, 1, 2, 2]]], np.uint32)  # differs only on the crowd region
    ps = [[{"id": 1, "category_id": 0}, {"id": 2, "category_id": 0}]]
    r1 = stq.stq_result({"v": vipseg_seq(gt, gsegs, good, ps)}, num_classes=124)
    r2 = stq.stq_result({"v": vipseg_seq(gt, gsegs, messy, ps)}, num_classes=124)
    assert r1["num_tubes"] == 1  # the crowd segment is no tube
    assert r1["aq"] == r2["aq"] == 1.0  # pred pixels on crowd leave the association term
    # listed the other way round, id 8 is the crowd and id 7 a tube: now the mess on id 7 costs AQ
    gsegs_rev = [gsegs[0][::-1]]
    r3 = stq.stq_result({"v": vipseg_seq(gt, gsegs_rev, messy, ps)}, num_classes=124)
    assert r3["aq"] < 1.0


def test_unlabelled_prediction_is_fn_and_adds_the_void_column():
    gt = np.array([[[5, 5, 5, 5]]], np.uint32)
    gsegs = [[{"id": 5, "category_id": 3, "iscrowd": 0, "area": 4}]]
    pred = np.array([[[9, 9, 0, 44]]], np.uint32)  # id 0 and id 44 (not in JSON) are unlabelled
    ps = [[{"id": 9, "category_id": 3}]]
    res = stq.stq_result({"v": vipseg_seq(gt, gsegs, pred, ps)}, num_classes=124)
    # road IoU = 2/4; the ignore column has union 2 > 0 and IoU 0, and deeplab2 averages over it too
    assert res["sq"] == pytest.approx((0.5 + 0.0) / 2)
    assert res["per_class_iou"] == {"3": 0.5, "124": 0.0}


@pytest.mark.parametrize("seed", range(4))
def test_vipseg_path_matches_reference(seed, tmp_path):
    rng = np.random.default_rng(seed)
    videos = {f"{i}_v": random_video(rng, T=3 + i) for i in range(2)}
    gt_v = {k: ([f"{t:08d}" for t in range(len(v[0]))], list(v[0]), v[1]) for k, v in videos.items()}
    pr_v = {k: ([f"{t:08d}" for t in range(len(v[0]))], list(v[2]), v[3]) for k, v in videos.items()}
    pio.write_vipseg(tmp_path / "gt", gt_v, CATS)
    pio.write_vipseg(tmp_path / "pred", pr_v, kind="pred")
    res = vipseg.evaluate_stq(tmp_path / "gt", tmp_path / "pred", workers=1, progress=False)
    ref = reference_stq(
        {k: (vipseg_label_maps(v[0], v[1]), vipseg_label_maps(v[2], v[3])) for k, v in videos.items()}, 124, THINGS
    )
    for key in ("stq", "aq", "sq"):
        assert res[key] == pytest.approx(ref[key], abs=1e-12), key
    arr = stq.stq_result({k: vipseg_seq(*v) for k, v in videos.items()}, num_classes=124)
    assert arr["stq"] == pytest.approx(res["stq"], abs=1e-12)


def test_confusion_counts_are_int64():
    g = np.zeros((1, 2, 2), np.int64) + (3 << 16)
    st = stq.stq_video(g, g, num_classes=124, things=THINGS)
    assert st.confusion.dtype == np.int64


def test_out_of_range_class_is_an_error():
    g = np.zeros((1, 1, 2), np.int64) + (200 << 16)
    with pytest.raises(ValueError, match="outside 0..123"):
        stq.stq_video(g, g, num_classes=124, things=THINGS)


# ----------------------------------------------------------------------------------------- KITTI-STEP


def write_kitti(root, seqs):
    for sid, frames in seqs.items():
        for t, (sem, inst) in enumerate(frames):
            pio.write_kitti_step_png(root / sid / f"{t:06d}.png", sem, inst)


def kitti_video(rng, T=3, H=8, W=10):
    frames = []
    for t in range(T):
        sem = np.zeros((H, W), np.int64)  # road
        sem[:2] = 255  # void
        inst = np.zeros((H, W), np.int64)
        sem[3:6, t : t + 3], inst[3:6, t : t + 3] = 13, 300 + t // 2  # car, id > 255 (and an ID switch)
        sem[5:8, 6:9], inst[5:8, 6:9] = 11, 1000  # person
        sem[6:8, 0:2], inst[6:8, 0:2] = 11, 0  # person crowd
        sem[2, :3] = 12  # rider: not a thing in the STEP protocol
        inst[2, :3] = 7
        frames.append((sem, inst))
    return frames


def test_kitti_step_matches_reference_and_perfect_is_one(tmp_path):
    rng = np.random.default_rng(5)
    gt = {"0002": kitti_video(rng), "0006": kitti_video(rng, T=2)}
    pred = {k: [(np.where(s == 255, 0, s), np.where(i == 300, 301, i)) for s, i in v] for k, v in gt.items()}
    write_kitti(tmp_path / "gt" / "panoptic_maps" / "val", gt)
    write_kitti(tmp_path / "pred", pred)
    write_kitti(tmp_path / "perfect", gt)
    res = stq.evaluate(tmp_path / "gt", tmp_path / "pred", dataset="kitti-step", workers=1, progress=False)
    lab = lambda v: np.stack([(s << 16) + i for s, i in v])
    ref = reference_stq({k: (lab(gt[k]), lab(pred[k])) for k in gt}, 19, stq.KITTI_STEP_THINGS)
    for key in ("stq", "aq", "sq"):
        assert res[key] == pytest.approx(ref[key], abs=1e-12), key
    assert res["aq"] < 1.0 and res["num_tubes"] == 5  # 0002: cars 300, 301 + person 1000; 0006: 300 + 1000
    perfect = stq.evaluate(tmp_path / "gt", tmp_path / "perfect", workers=2, progress=False)
    assert perfect["stq"] == pytest.approx(1.0)


def test_kitti_step_missing_prediction_frame_names_it(tmp_path):
    gt = {"0002": kitti_video(np.random.default_rng(0), T=2)}
    write_kitti(tmp_path / "gt", gt)
    write_kitti(tmp_path / "pred", {"0002": gt["0002"][:1]})
    with pytest.raises(FileNotFoundError, match="000001.png"):
        stq.evaluate(tmp_path / "gt", tmp_path / "pred", dataset="kitti-step", workers=1, progress=False)


def test_vipseg_pred_json_missing_video_is_an_error(tmp_path):
    rng = np.random.default_rng(1)
    gt, gsegs, pred, psegs = random_video(rng, T=2)
    pio.write_vipseg(tmp_path / "gt", {"a": (["0", "1"], list(gt), gsegs)}, CATS)
    pj = pio.write_vipseg(tmp_path / "pred", {"b": (["0", "1"], list(pred), psegs)}, kind="pred")
    assert json.loads(pj.read_text())["annotations"][0]["video_id"] == "b"
    with pytest.raises(ValueError, match="no prediction for video 'a'"):
        vipseg.evaluate_stq(tmp_path / "gt", tmp_path / "pred", workers=1, progress=False)
