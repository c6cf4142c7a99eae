"""VSPW mIoU / mVC_n (gvseg.metrics.semantic) on tiny synthetic VSPW-layout fixtures."""

import math

import numpy as np
import pytest
from PIL import Image

from gvseg.metrics import semantic
from gvseg.metrics.semantic import (
    NUM_CLASSES,
    accuracy_from_confusion,
    confusion_update,
    evaluate,
    miou_from_confusion,
    read_label_png,
    video_consistency,
)


def _naive_vc(gt, pred, n):
    """The VC_perclip.py definition written out literally: frame i against frames i+1..i+n-1."""
    accs = []
    for i in range(len(gt) - n):
        cons = np.ones(gt.shape[1:], bool)
        const = np.ones(gt.shape[1:], bool)
        for j in range(1, n):
            cons &= gt[i] == gt[i + j]
            const &= pred[i] == pred[i + j]
        accs.append((cons & const).sum() / cons.sum() if cons.sum() else float("nan"))
    return np.array(accs)


def _confusion(gts, preds):
    """The Evaluator's confusion matrix: label 0 -> 255, then - 1 (VSPW's remap), rows GT, columns prediction."""
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES))
    for g, p in zip(gts, preds):
        g = g.astype(np.int64)
        g[g == 0] = 255
        g = g - 1
        m = (g >= 0) & (g < NUM_CLASSES)
        cm += np.bincount(NUM_CLASSES * g[m] + p[m], minlength=NUM_CLASSES**2).reshape(NUM_CLASSES, -1)
    return cm


def _naive_miou(gts, preds):
    """The utils.py Evaluator definition: remap, one confusion matrix, mean over GT-present classes."""
    cm = _confusion(gts, preds)
    with np.errstate(invalid="ignore"):
        iou = np.diag(cm) / (cm.sum(1) + cm.sum(0) - np.diag(cm))
    present = cm.sum(1) > 0
    return np.nansum(iou * present) / present.sum()


def _official_evaluator(gts, preds):
    """VSPW_baseline utils.py Evaluator + test.py, written out literally: (Acc, Acc_class, mIoU, fwIoU)."""
    cm = _confusion(gts, preds)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.diag(cm).sum() / cm.sum()
        acc_class = np.nanmean(np.diag(cm) / cm.sum(axis=1))
        iu = np.diag(cm) / (cm.sum(1) + cm.sum(0) - np.diag(cm))
        isval = cm.sum(1) > 0
        miou = np.nansum(iu * isval) / isval.sum()
        freq = cm.sum(1) / cm.sum()
        fwiou = (freq[freq > 0] * iu[freq > 0]).sum()
    return acc, acc_class, miou, fwiou


def _save(path, arr, mode="L"):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    img = Image.frombytes(mode, (arr.shape[1], arr.shape[0]), arr.tobytes())  # values = L levels / P indices
    if mode == "P":  # a non-gray palette: readers must use the indices, not the colours
        img.putpalette([v for i in range(256) for v in (i, (7 * i) % 256, 255 - i)])
    img.save(path)


def _write_split(root, gt_videos, pred_videos, *, start=37, mode="L", split="val"):
    """VSPW layout: data/<video>/mask/<%08d>.png starting at `start`, plus <split>.txt; preds alongside."""
    for v, frames in gt_videos.items():
        for t, f in enumerate(frames):
            _save(root / "gt" / "data" / v / "mask" / f"{start + t:08d}.png", f, mode)
    for v, frames in pred_videos.items():
        for t, f in enumerate(frames):
            _save(root / "pred" / v / f"{start + t:08d}.png", f)
    (root / "gt" / f"{split}.txt").write_text("".join(f"{v}\n" for v in gt_videos))
    return root / "gt", root / "pred"


def _random_video(rng, t, h=6, w=7, values=(0, 1, 2, 255)):
    gt = rng.choice(np.array(values, np.uint8), size=(1, h, w)).repeat(t, 0)
    flip = rng.random((t, h, w)) < 0.15  # occasional changes so some pixels stay consistent
    gt[flip] = rng.choice(np.array(values, np.uint8), size=flip.sum())
    pred = np.clip(gt.astype(np.int64) - 1, 0, 3).astype(np.uint8)
    noise = rng.random((t, h, w)) < 0.2
    pred[noise] = rng.integers(0, 4, noise.sum())
    return gt, pred


# ------------------------------------------------------------------------------------------ mIoU
def test_miou_hand_computed_with_ignore():
    gt = np.array([[0, 1, 1], [2, 255, 2]], np.uint8)  # raw 0 and 255 ignored; raw 1->class 0, 2->class 1
    pred = np.array([[5, 0, 1], [1, 7, 1]], np.uint8)  # 5 and 7 sit on ignored pixels: no effect
    cm = confusion_update(np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64), gt, pred)
    miou, iou = miou_from_confusion(cm)
    assert iou[0] == pytest.approx(1 / 2)  # tp 1, gt 2, pred 1
    assert iou[1] == pytest.approx(2 / 3)  # tp 2, gt 2, pred 3
    assert miou == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert np.isnan(iou[5]) and np.isnan(iou[7])


def test_miou_mean_only_over_gt_present_classes():
    gt = np.array([[1, 1, 1, 1]], np.uint8)
    pred = np.array([[0, 0, 9, 9]], np.uint8)  # class 9 predicted but absent from GT: not averaged
    miou, iou = miou_from_confusion(confusion_update(np.zeros((124, 125), np.int64), gt, pred))
    assert miou == pytest.approx(0.5) and np.isnan(iou[9])


def test_unassigned_255_is_a_miss():
    gt = np.array([[1, 1, 2, 2]], np.uint8)
    pred = np.array([[0, 255, 1, 1]], np.uint8)
    miou, iou = miou_from_confusion(confusion_update(np.zeros((124, 125), np.int64), gt, pred))
    assert iou[0] == pytest.approx(0.5) and iou[1] == pytest.approx(1.0)


def test_invalid_prediction_value_on_valid_pixel_raises():
    cm = np.zeros((124, 125), np.int64)
    with pytest.raises(ValueError, match=r"x\.png.*\[124\]"):
        confusion_update(cm, np.array([[1, 2]], np.uint8), np.array([[0, 124]], np.uint8), where="x.png")
    # the same value on an ignored pixel (raw 0 / 255) is fine
    confusion_update(cm, np.array([[0, 255]], np.uint8), np.array([[124, 200]], np.uint8))


def test_miou_matches_literal_definition_on_random_frames():
    rng = np.random.default_rng(0)
    gts = [rng.choice(np.array([0, 1, 2, 3, 50, 124, 255], np.uint8), (9, 11)) for _ in range(5)]
    preds = [rng.integers(0, 124, (9, 11)).astype(np.uint8) for _ in range(5)]
    preds = [np.where(rng.random(g.shape) < 0.6, np.clip(g.astype(int) - 1, 0, 123), p) for g, p in zip(gts, preds)]
    cm = np.zeros((124, 125), np.int64)
    for g, p in zip(gts, preds):
        confusion_update(cm, g, p)
    assert miou_from_confusion(cm)[0] == pytest.approx(_naive_miou(gts, preds), abs=1e-12)


def test_accuracies_hand_computed():
    gt = np.array([[1, 1, 1, 2, 0, 255]], np.uint8)  # class 0 x3, class 1 x1, two ignored pixels
    pred = np.array([[0, 0, 1, 1, 9, 9]], np.uint8)
    acc = accuracy_from_confusion(confusion_update(np.zeros((124, 125), np.int64), gt, pred))
    assert acc["pixel_acc"] == pytest.approx(3 / 4)
    assert acc["class_acc"] == pytest.approx((2 / 3 + 1) / 2)  # classes absent from GT drop out (NaN)
    # fwIoU = 3/4 * IoU0 (2/3) + 1/4 * IoU1 (1/2)
    assert acc["fwiou"] == pytest.approx(3 / 4 * 2 / 3 + 1 / 4 * 1 / 2)


def test_accuracies_without_valid_pixel():
    acc = accuracy_from_confusion(np.zeros((124, 125), np.int64))
    assert math.isnan(acc["pixel_acc"]) and math.isnan(acc["class_acc"]) and acc["fwiou"] == 0.0


def test_accuracies_match_official_evaluator_on_random_frames():
    rng = np.random.default_rng(3)
    gts = [rng.choice(np.array([0, 1, 2, 3, 50, 124, 255], np.uint8), (9, 11)) for _ in range(5)]
    preds = [np.where(rng.random(g.shape) < 0.6, np.clip(g.astype(int) - 1, 0, 123), rng.integers(0, 124, g.shape))
             .astype(np.uint8) for g in gts]
    cm = np.zeros((124, 125), np.int64)
    for g, p in zip(gts, preds):
        confusion_update(cm, g, p)
    acc, acc_class, miou, fwiou = _official_evaluator(gts, preds)
    got = accuracy_from_confusion(cm)
    assert got["pixel_acc"] == pytest.approx(acc, abs=1e-12)
    assert got["class_acc"] == pytest.approx(acc_class, abs=1e-12)
    assert got["fwiou"] == pytest.approx(fwiou, abs=1e-12)
    assert miou_from_confusion(cm)[0] == pytest.approx(miou, abs=1e-12)


# ------------------------------------------------------------------------------------------ mVC
def test_vc_video_with_exactly_n_frames_gives_no_window():
    gt = np.ones((8, 2, 2), np.uint8)
    assert video_consistency(gt, gt, 8).size == 0
    assert video_consistency(np.ones((9, 2, 2), np.uint8), np.ones((9, 2, 2), np.uint8), 8).size == 1


def test_vc_skips_last_window_hand_computed():
    # T=4, n=2 -> windows i in range(2): (0,1), (1,2); the window (2,3) is skipped officially.
    gt = np.zeros((4, 1, 2), np.uint8)
    pred = np.array([[[1, 1]], [[1, 1]], [[1, 2]], [[3, 3]]], np.uint8)
    np.testing.assert_allclose(video_consistency(gt, pred, 2), [1.0, 0.5])  # (2,3) would give 0.0


def test_vc_uses_raw_gt_zero_and_255():
    gt = np.zeros((5, 2, 2), np.uint8)
    gt[:, 0] = 255  # void and "others": ignored in mIoU but they count as consistent here
    steady = np.full((5, 2, 2), 7, np.uint8)
    flicker = np.arange(5, dtype=np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    assert video_consistency(gt, steady, 3).tolist() == [1.0, 1.0]
    assert video_consistency(gt, flicker, 3).tolist() == [0.0, 0.0]


def test_vc_prediction_needs_only_be_constant_not_correct():
    gt = np.full((4, 3, 3), 5, np.uint8)
    np.testing.assert_allclose(video_consistency(gt, np.full_like(gt, 99), 2), [1.0, 1.0])


def test_vc_window_without_consistent_pixel_is_nan():
    gt = np.arange(4, dtype=np.uint8)[:, None, None].repeat(2, 1)  # changes everywhere, every frame
    accs = video_consistency(gt, gt, 2)
    assert accs.shape == (2,) and np.isnan(accs).all()


@pytest.mark.parametrize("n", [2, 3, 8])
def test_vc_matches_literal_definition(n):
    rng = np.random.default_rng(n)
    gt, pred = _random_video(rng, 12)
    np.testing.assert_allclose(video_consistency(gt, pred, n), _naive_vc(gt, pred, n), equal_nan=True)


def test_vc_long_static_video_past_counter_saturation():
    rng = np.random.default_rng(5)
    gt, pred = _random_video(rng, 300, h=2, w=3)  # runs longer than 255 frames saturate the uint8 counters
    gt[:, 0, 0] = 4
    pred[:, 0, 0] = 3
    for n in (16, 255):
        np.testing.assert_allclose(video_consistency(gt, pred, n), _naive_vc(gt, pred, n), equal_nan=True)


# ------------------------------------------------------------------------------------------ evaluate()
def test_evaluate_end_to_end_matches_definitions_and_workers(tmp_path):
    rng = np.random.default_rng(1)
    vids = {"0_aaa": 10, "1_bbb": 17, "2_ccc": 8, "3_ddd": 20}  # 8 frames: no mVC8 window
    gts, preds = {}, {}
    for v, t in vids.items():
        gts[v], preds[v] = _random_video(rng, t)
    gt_root, pred_root = _write_split(tmp_path, gts, preds, mode="P")  # palette GT: indices are used
    res = evaluate(gt_root, pred_root, progress=False, workers=1)
    assert res["miou"] == pytest.approx(_naive_miou([f for v in gts.values() for f in v],
                                                    [f for v in preds.values() for f in v]), abs=1e-12)
    for n in (8, 16):
        pooled = np.concatenate([_naive_vc(gts[v], preds[v], n) for v in vids])
        assert res[f"mvc{n}"] == pytest.approx(np.nanmean(pooled), abs=1e-12)  # pooled, not per video
        assert res["vc_windows"][n] == sum(max(t - n, 0) for t in vids.values())
    assert res["num_videos"] == 4 and res["num_frames"] == sum(vids.values())
    acc, acc_class, _, fwiou = _official_evaluator([f for v in gts.values() for f in v],
                                                   [f for v in preds.values() for f in v])
    assert (res["pixel_acc"], res["class_acc"], res["fwiou"]) == pytest.approx((acc, acc_class, fwiou), abs=1e-12)
    per_video = [_official_evaluator(gts[v], preds[v]) for v in vids]  # test.py: total / number of videos
    assert res["video_miou"] == pytest.approx(np.mean([r[2] for r in per_video]), abs=1e-12)
    assert res["video_fwiou"] == pytest.approx(np.mean([r[3] for r in per_video]), abs=1e-12)
    assert evaluate(gt_root, pred_root, progress=False, workers=2) == res


def test_vc_pools_windows_across_videos(tmp_path):
    n = 8
    good = np.ones((n + 1, 2, 2), np.uint8)  # 1 window, acc 1
    bad_gt = np.ones((n + 3, 2, 2), np.uint8)  # 3 windows, acc 0 (prediction flickers)
    bad_pred = (np.arange(n + 3) % 2).astype(np.uint8)[:, None, None].repeat(2, 1).repeat(2, 2)
    gt_root, pred_root = _write_split(tmp_path, {"a": good, "b": bad_gt}, {"a": good - 1, "b": bad_pred})
    res = evaluate(gt_root, pred_root, progress=False, workers=1, spans=(n,))
    assert res["mvc8"] == pytest.approx(0.25)  # a per-video mean would give 0.5


def test_evaluate_perfect_and_empty_predictions(tmp_path):
    rng = np.random.default_rng(2)
    gt, _ = _random_video(rng, 18, values=(1, 2, 3))
    perfect = gt - 1
    root, pred_root = _write_split(tmp_path / "p", {"v": gt}, {"v": perfect})
    res = evaluate(root, pred_root, progress=False, workers=1)
    assert res["miou"] == 1.0 and res["mvc8"] == 1.0 and res["mvc16"] == 1.0
    root, pred_root = _write_split(tmp_path / "e", {"v": gt}, {"v": np.full_like(gt, 255)})
    assert evaluate(root, pred_root, progress=False, workers=1)["miou"] == 0.0


def test_evaluate_without_split_file_lists_data_folder(tmp_path):
    gt = np.ones((3, 2, 2), np.uint8)
    root, pred_root = _write_split(tmp_path, {"v": gt}, {"v": gt - 1})
    (root / "val.txt").unlink()
    res = evaluate(root, pred_root, progress=False, workers=1)
    assert res["num_videos"] == 1 and math.isnan(res["mvc8"])  # no video longer than 8 frames


def test_evaluate_errors_name_the_file(tmp_path):
    gt = np.ones((3, 4, 4), np.uint8)
    pred = np.zeros_like(gt)
    pred[1, 0, 0] = 130
    root, pred_root = _write_split(tmp_path, {"v": gt}, {"v": pred})
    with pytest.raises(ValueError, match=r"pred/v/00000038\.png.*130"):
        evaluate(root, pred_root, progress=False, workers=1)
    (pred_root / "v" / "00000038.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"00000038\.png"):
        evaluate(root, pred_root, progress=False, workers=1)
    _save(pred_root / "v" / "00000038.png", np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="prediction is 4x5 but GT is 4x4"):
        evaluate(root, pred_root, progress=False, workers=1)


def test_read_label_png_modes(tmp_path):
    arr = np.array([[0, 3, 255]], np.uint8)
    _save(tmp_path / "l.png", arr, "L")
    _save(tmp_path / "p.png", arr, "P")
    Image.fromarray(np.zeros((1, 3, 3), np.uint8)).save(tmp_path / "rgb.png")
    assert read_label_png(tmp_path / "l.png").tolist() == arr.tolist()
    assert read_label_png(tmp_path / "p.png").tolist() == arr.tolist()
    with pytest.raises(ValueError, match="rgb.png.*mode RGB"):
        read_label_png(tmp_path / "rgb.png")
    (tmp_path / "bad.png").write_bytes((tmp_path / "l.png").read_bytes()[:40])  # truncated
    with pytest.raises(ValueError, match="bad.png"):
        read_label_png(tmp_path / "bad.png")
    with pytest.raises(FileNotFoundError, match="VSPW layout"):
        semantic.list_videos(tmp_path / "nowhere", "val")
