"""TrackMAP (track-level AP) as the BURST benchmark reports it beside HOTA.

Reproduces BURST-benchmark ``burstapi/thirdparty/trackeval/metrics/track_map.py`` (identical to TrackEval
``trackeval/metrics/track_map.py``, adapted there from TAO), with the track representation of
``datasets/burst.py``: ``iou_type = 'mask'``, so tracks are compared by **mask** track IoU
Σ_t |d∩g| / Σ_t |d∪g| over the union of the images of both tracks (an image where only one track has a mask adds
its area to the union). Note the contrast with BURST HOTA, which scores boxes: the official code does both.

Per (sequence, class), in the official order (see :func:`match_sequence`):

* predicted tracks sorted by score (the mean of their detection scores), stable for ties; for each IoU
  threshold 0.50:0.05:0.95 (``min(thr, 1 - 1e-10)``) each predicted track in turn takes, among the GT tracks
  not yet matched, the one with the highest IoU >= thr − eps (of equal IoUs the **last**);
* a class marked not exhaustively labelled in the video ignores its unmatched predicted tracks.

Combining sequences (:func:`combine_sequences`): all sequences' predicted tracks sorted by score (stable, in
sequence order), COCO-style cumulative TP/FP, precision made monotone, sampled at 101 recall points
(``searchsorted(..., 'left')``, 0 past the last recall); AP per threshold = mean of those 101 values; a class
with no GT track has AP −1 (and the official class mean then averages that −1 in, a quirk kept here).

Quirks kept on purpose: a GT track counts as matched at a threshold only if the stored predicted track id is
``> 0`` (``gt_m[...] > 0``), so a predicted track whose (unique-ified) id is 0 does not block its GT track from
a second match; ``np.spacing(1)`` in the precision denominator. Only the ``all`` area/time range is computed
(the BURST table prints ``AP_all`` only).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pycocotools.mask as mask_utils

__all__ = ["IOU_THRESHOLDS", "RECALL_THRESHOLDS", "mask_track_ious", "match_sequence", "combine_sequences"]

# track_map.py default config
IOU_THRESHOLDS = np.arange(0.5, 0.96, 0.05)  # [10]
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01) + 1), endpoint=True)  # [101]
_EPS = np.finfo("float").eps


def mask_track_ious(dt_tracks: Sequence[Mapping], gt_tracks: Sequence[Mapping],
                    areas: Mapping[int, float] | None = None) -> np.ndarray:
    """[D, G] mask track IoU (``_compute_mask_track_iou``) of tracks given as {image key: RLE}.

    Per image the pairwise intersections come from one pycocotools IoU call (i = iou·(a+b)/(1+iou), rounded
    to the integer pixel count it is), so the cost is one small matrix per image rather than a merge per pair.
    """
    n_d, n_g = len(dt_tracks), len(gt_tracks)
    if n_d == 0 or n_g == 0:
        return np.zeros((n_d, n_g))
    d_area = np.array([sum(float(mask_utils.area(r)) for r in t.values()) for t in dt_tracks])  # [D]
    g_area = np.array([sum(float(mask_utils.area(r)) for r in t.values()) for t in gt_tracks])  # [G]
    inter = np.zeros((n_d, n_g))
    by_image: dict = {}
    for j, t in enumerate(gt_tracks):
        for img, r in t.items():
            by_image.setdefault(img, ([], [], [], []))[0].append(j)
            by_image[img][1].append(r)
    for i, t in enumerate(dt_tracks):
        for img, r in t.items():
            if img in by_image:
                by_image[img][2].append(i)
                by_image[img][3].append(r)
    for g_idx, g_rles, d_idx, d_rles in by_image.values():
        if not d_idx:
            continue
        iou = np.asarray(mask_utils.iou(d_rles, g_rles, [0] * len(g_rles)), np.float64).reshape(len(d_idx),
                                                                                                 len(g_idx))
        a_d = mask_utils.area(d_rles).astype(np.float64)[:, None]
        a_g = mask_utils.area(g_rles).astype(np.float64)[None, :]
        inter[np.ix_(d_idx, g_idx)] += np.rint(iou * (a_d + a_g) / (1.0 + iou))  # [d, g] pixel counts
    union = d_area[:, None] + g_area[None, :] - inter
    out = np.zeros_like(inter)
    ok = union > 0 + _EPS
    out[ok] = inter[ok] / union[ok]
    return out


def match_sequence(ious: np.ndarray, dt_ids: Sequence[int], gt_ids: Sequence[int], dt_scores: Sequence[float],
                   not_exhaustively_labeled: bool = False) -> dict | None:
    """``TrackMAP.eval_sequence`` for the ``all`` range. dt tracks must already be sorted by score (descending,
    stable). ious: [D, G]. Returns None when there is neither a GT nor a predicted track (skipped later)."""
    n_d, n_g, n_t = len(dt_ids), len(gt_ids), len(IOU_THRESHOLDS)
    if n_d == 0 and n_g == 0:
        return None
    gt_m = np.full((n_t, n_g), -1.0)
    dt_m = np.full((n_t, n_d), -1.0)
    if n_d and n_g:
        for k, thr in enumerate(IOU_THRESHOLDS):
            for d in range(n_d):
                best, m = min(thr, 1 - 1e-10), -1
                for g in np.nonzero(ious[d] >= best - _EPS)[0]:  # others can never pass the running test
                    if gt_m[k, g] > 0:  # quirk: a stored dt id 0 does not mark the GT as matched
                        continue
                    if ious[d, g] < best - _EPS:
                        continue
                    best, m = ious[d, g], g
                if m >= 0:
                    dt_m[k, d] = gt_ids[m]
                    gt_m[k, m] = dt_ids[d]
    dt_ig = np.zeros((n_t, n_d), bool)
    if not_exhaustively_labeled:
        dt_ig = dt_m == -1
    return {"dt_matches": dt_m, "dt_scores": np.asarray(dt_scores, np.float64), "dt_ignore": dt_ig,
            "num_gt": n_g}


def combine_sequences(results: Iterable[dict | None]) -> dict:
    """``TrackMAP.combine_sequences`` (``all`` range): {"AP": [10], "AR": [10]}; −1 where no GT track."""
    results = [r for r in results if r is not None]
    n_t, n_r = len(IOU_THRESHOLDS), len(RECALL_THRESHOLDS)
    precision = -np.ones((n_t, n_r))
    recall = -np.ones(n_t)
    num_gt = sum(r["num_gt"] for r in results)
    if results and num_gt:
        scores = np.concatenate([r["dt_scores"] for r in results])
        order = np.argsort(-scores, kind="mergesort")
        dt_m = np.concatenate([r["dt_matches"] for r in results], axis=1)[:, order]  # [10, D]
        dt_ig = np.concatenate([r["dt_ignore"] for r in results], axis=1)[:, order]
        tps = np.cumsum((dt_m != -1) & ~dt_ig, axis=1).astype(np.float64)
        fps = np.cumsum((dt_m == -1) & ~dt_ig, axis=1).astype(np.float64)
        for k in range(n_t):
            tp, fp = tps[k], fps[k]
            rc = tp / num_gt
            recall[k] = rc[-1] if len(tp) else 0
            pr = tp / (fp + tp + np.spacing(1))
            pr = np.maximum.accumulate(pr[::-1])[::-1]  # monotone non-increasing (the official backward loop)
            idx = np.searchsorted(rc, RECALL_THRESHOLDS, side="left")
            precision[k] = np.where(idx < len(pr), pr[np.minimum(idx, max(len(pr) - 1, 0))] if len(pr) else 0, 0)
    ap = np.array([p[p > -1].mean() if (p > -1).any() else -1.0 for p in precision])
    return {"AP": ap, "AR": recall}
