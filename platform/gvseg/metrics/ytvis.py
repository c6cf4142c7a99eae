"""YouTube-VIS / OVIS video instance segmentation AP and AR, as the youtubevos cocoapi defines them.

Reference: ``ytvoseval.py`` / ``ytvos.py`` of youtubevos/cocoapi (vendored by Mask2Former under
``mask2former_video/data_video/datasets/ytvis_api/``) and pycocotools ``cocoeval.py``; see specs/metrics.md.

Definitions (every quirk is the official one):
* **Video IoU** of a result track d and a GT track g = sum_t |d_t & g_t| / sum_t |d_t | g_t| over frames,
  where a null frame adds nothing to the intersection and its partner's area to the union; 0 if the union
  is 0. Crowd GT uses the same plain IoU (``ytvoseval.py`` never passes ``iscrowd`` to the IoU).
* **Area** of a track = mean of its *truthy* per-frame areas (``[a for a in areas if a]``: nulls and zeros
  are dropped; 0 if none). GT takes its ``areas`` field; results take the RLE areas (``ytvos.loadRes``).
  Ranges: all [0, 1e10], small [0, 128^2], medium [128^2, 256^2], large [256^2, 1e10], bounds inclusive.
* **Matching** per (video, category), COCO greedy: results by score (stable sort, file order breaks ties),
  at most 100 per (video, category); GT sorted non-ignored first; IoU thresholds .50:.05:.95; crowd GT is
  ignored and may absorb several results; unmatched results outside the area range are ignored.
* **Accumulation**: 101 recall points, maxDets 1/10/100, results pooled over videos in sorted video-id
  order (mergesort by score); precision/recall -1 where a category has no non-ignored GT; each stat is
  the mean over entries > -1 (-1 if none).
* **Stats order**: AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ARs, ARm, ARl (fractions, not %).

Inputs of :func:`evaluate`:
  gt_json       path or dict, YTVIS format: ``videos`` (id, height, width, length/file_names),
                ``annotations`` (id, video_id, category_id, iscrowd, segmentations: [RLE|polygon|null] per
                frame, areas: [float|null] per frame), ``categories``. RLE ``counts`` may be a list
                (uncompressed, ``frPyObjects``) or a compressed string.
  results_json  path or list of ``{"video_id", "category_id", "segmentations": [RLE|null per frame], "score"}``.
Errors (``ValueError`` with the file and reason): an empty results list, result video ids not in the GT,
missing keys, a track whose frame count differs from its video's, masks whose size differs from the video.
Results for categories absent from the GT ``categories`` are dropped (as ``getAnnIds(catIds=...)`` does);
their number is reported as ``num_results_ignored``.

Output: ``{"AP": ..., ..., "ARl": ..., "stats": [12 floats], "per_category_AP": {cat_id: AP or nan}, ...}``.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils
from tqdm import tqdm

from gvseg.metrics.panoptic_io import load_json

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
# ytvoseval.py Params.setDetParams: linspace, not arange (arange drifts and breaks the t == .75 lookup).
IOU_THRS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)  # [10]
REC_THRS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)  # [101]
MAX_DETS = (1, 10, 100)
AREA_RNG = ((0**2, 1e5**2), (0**2, 128**2), (128**2, 256**2), (256**2, 1e5**2))
AREA_LBL = ("all", "small", "medium", "large")


@dataclass
class Track:
    """One GT annotation or one result, per-frame masks as compressed RLE (None = absent)."""

    id: int
    video_id: int
    category_id: int
    rles: list  # [T] dict | None
    mask_areas: np.ndarray  # [T] int64 pixel area per frame (0 where absent): the IoU's union terms
    avg_area: float  # mean of truthy per-frame areas: the area-range filter
    iscrowd: bool = False
    score: float = 0.0
    index: int = 0  # position in the source file (ties keep file order)


# --------------------------------------------------------------------------------------------- loading
def _load(obj, what: str):
    if isinstance(obj, (str, os.PathLike)):  # a missing, non-JSON or non-UTF-8 file: one line naming it
        return load_json(obj), str(obj)
    return obj, what


def _to_rle(segm, h: int, w: int, where: str):
    """Polygon / uncompressed RLE / compressed RLE -> compressed RLE (ytvos.annToRLE); falsy -> None."""
    if not segm:  # ytvoseval.py: ``if a:`` -- None and empty polygons are absent frames
        return None
    if isinstance(segm, list):  # polygon parts of one object, merged
        return mask_utils.merge(mask_utils.frPyObjects(segm, h, w))
    if not isinstance(segm, dict) or "counts" not in segm or "size" not in segm:
        raise ValueError(f"{where}: segmentation must be an RLE dict, a polygon list or null")
    if isinstance(segm["counts"], list):  # uncompressed RLE: Mask2Former applies frPyObjects
        return mask_utils.frPyObjects(segm, *segm["size"])
    return segm


def _truthy_mean(areas) -> float:
    """ytvos.py: ``l = [a for a in areas if a]; avg = mean(l) if l else 0`` (zeros dropped too)."""
    kept = [a for a in areas if a]
    return float(np.array(kept).mean()) if kept else 0


def _make_track(rles, h, w, where, **kw) -> Track:
    areas = np.zeros(len(rles), np.int64)
    present = [i for i, r in enumerate(rles) if r is not None]
    for i in present:
        if tuple(rles[i]["size"]) != (h, w):
            raise ValueError(f"{where}: frame {i} mask is {rles[i]['size'][0]}x{rles[i]['size'][1]} "
                             f"but the video is {h}x{w}")
    if present:
        areas[present] = mask_utils.area([rles[i] for i in present])
    return Track(rles=rles, mask_areas=areas, **kw)


def load_gt(gt_json) -> tuple[dict, list[int], list[Track]]:
    """-> (videos {id: (h, w, T)}, sorted category ids, GT tracks in file order)."""
    gt, where = _load(gt_json, "gt_json")
    if not isinstance(gt, dict) or "videos" not in gt or "annotations" not in gt:
        raise ValueError(f"{where}: not a YouTube-VIS GT file (needs 'videos' and 'annotations')")
    videos = {}
    for v in gt["videos"]:
        length = v.get("length", len(v.get("file_names", [])))
        videos[v["id"]] = (int(v["height"]), int(v["width"]), int(length))
    for ann in gt["annotations"]:  # a video without length/file_names takes its first track's length
        v = ann.get("video_id")
        if v in videos and videos[v][2] == 0:
            videos[v] = (*videos[v][:2], len(ann["segmentations"]))
    cat_ids = sorted(c["id"] for c in gt.get("categories", []))  # ytvoseval: sorted(getCatIds())
    tracks = []
    for i, ann in enumerate(gt["annotations"]):
        aw = f"{where}: annotation id {ann.get('id')}"
        if ann.get("video_id") not in videos:
            raise ValueError(f"{aw}: video_id {ann.get('video_id')} is not in 'videos'")
        h, w, length = videos[ann["video_id"]]
        segs = ann["segmentations"]
        if length and len(segs) != length:
            raise ValueError(f"{aw}: {len(segs)} segmentations but video {ann['video_id']} has {length} frames")
        rles = [_to_rle(s, h, w, f"{aw} frame {t}") for t, s in enumerate(segs)]
        track = _make_track(rles, h, w, aw, id=ann["id"], video_id=ann["video_id"],
                            category_id=ann["category_id"], avg_area=0.0,
                            iscrowd=bool(ann.get("iscrowd", 0)), index=i)
        # GT area range uses the ``areas`` field as given; computed from the masks only if it is missing.
        track.avg_area = _truthy_mean(ann["areas"] if "areas" in ann else track.mask_areas.tolist())
        tracks.append(track)
    return videos, cat_ids, tracks


def load_results(results_json, videos: dict) -> list[Track]:
    """Result tracks in file order, ids 1.. in file order (ytvos.loadRes)."""
    res, where = _load(results_json, "results_json")
    if not isinstance(res, list):
        raise ValueError(f"{where}: results must be a JSON list of per-track dicts")
    if not res:
        raise ValueError(f"{where}: results list is empty; nothing to evaluate")
    unknown = sorted({r.get("video_id") for r in res if isinstance(r, dict)} - set(videos), key=str)
    if unknown:
        raise ValueError(f"{where}: result video ids {unknown[:10]} are not in the GT videos")
    tracks = []
    for i, r in enumerate(res):
        rw = f"{where}: result {i}"
        missing = [k for k in ("video_id", "category_id", "segmentations", "score") if k not in r]
        if missing:
            raise ValueError(f"{rw}: missing keys {missing}")
        h, w, length = videos[r["video_id"]]
        if length and len(r["segmentations"]) != length:
            raise ValueError(f"{rw}: {len(r['segmentations'])} segmentations but video {r['video_id']} "
                             f"has {length} frames")
        rles = [_to_rle(s, h, w, f"{rw} frame {t}") for t, s in enumerate(r["segmentations"])]
        track = _make_track(rles, h, w, rw, id=i + 1, video_id=r["video_id"],
                            category_id=r["category_id"], avg_area=0.0, score=float(r["score"]), index=i)
        track.avg_area = _truthy_mean(track.mask_areas.tolist())  # loadRes: areas from the masks
        tracks.append(track)
    return tracks


# --------------------------------------------------------------------------------------------- IoU
def video_iou(dts: list[Track], gts: list[Track]) -> np.ndarray:
    """[D, G] video IoU = sum_t |d&g| / sum_t |d|g| (null-aware; 0 when the union is 0).

    One pycocotools call per frame over the present tracks: with every GT marked crowd, ``iou`` returns
    |d&g| / |d|, so |d&g| = rint(iou * |d|) exactly (areas are far below 2**53).
    """
    D, G = len(dts), len(gts)
    if D == 0 or G == 0:
        return np.zeros((D, G))
    T = len(dts[0].rles)
    inter = np.zeros((D, G), np.int64)
    for t in range(T):
        di = [i for i, d in enumerate(dts) if d.rles[t] is not None]
        gi = [j for j, g in enumerate(gts) if g.rles[t] is not None]
        if not di or not gi:
            continue
        frac = np.asarray(mask_utils.iou([dts[i].rles[t] for i in di], [gts[j].rles[t] for j in gi],
                                         [1] * len(gi)), np.float64).reshape(len(di), len(gi))
        area_d = np.array([dts[i].mask_areas[t] for i in di], np.float64)
        inter[np.ix_(di, gi)] += np.rint(frac * area_d[:, None]).astype(np.int64)
    sum_d = np.array([d.mask_areas.sum() for d in dts], np.int64)  # [D]
    sum_g = np.array([g.mask_areas.sum() for g in gts], np.int64)  # [G]
    union = sum_d[:, None] + sum_g[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


# --------------------------------------------------------------------------------------------- matching
def match(ious: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray, gt_ids: np.ndarray,
          dt_ids: np.ndarray, iou_thrs: np.ndarray = IOU_THRS):
    """COCO greedy matching (``evaluateVid``), vectorized over the T thresholds.

    ious [D, G] with D sorted by score and G sorted non-ignored first. For each result in turn, at each
    threshold t the official loop picks, among GT still free (or crowd) with IoU >= t, the *last* GT of
    maximal IoU among the non-ignored ones, else among the ignored ones.
    Returns dtm [T, D] (matched GT id, 0 = none), gtm [T, G] (matched result id), dt_ig [T, D] bool.
    """
    T, (D, G) = len(iou_thrs), ious.shape
    dtm = np.zeros((T, D), np.int64)
    gtm = np.zeros((T, G), np.int64)
    dt_ig = np.zeros((T, D), bool)
    if D == 0 or G == 0:
        return dtm, gtm, dt_ig
    thr = np.minimum(iou_thrs, 1 - 1e-10)[:, None]  # [T, 1]
    rows = np.arange(T)
    for d in range(D):
        ok = ((gtm == 0) | gt_crowd[None]) & (ious[d][None] >= thr)  # [T, G]
        m = np.full(T, -1)
        for part in (~gt_ignore, gt_ignore):  # non-ignored GT first; an ignored one only if none matched
            score = np.where(ok & part[None], ious[d][None], -1.0)[:, ::-1]  # reversed: argmax = last max
            best = G - 1 - np.argmax(score, axis=1)
            m = np.where((m < 0) & (score.max(1) >= 0), best, m)
        hit = m >= 0
        dtm[hit, d] = gt_ids[m[hit]]
        gtm[rows[hit], m[hit]] = dt_ids[d]
        dt_ig[hit, d] = gt_ignore[m[hit]]
    return dtm, gtm, dt_ig


def evaluate_video(ious, gts: list[Track], dts: list[Track], area_rng, max_det: int = MAX_DETS[-1]):
    """One (video, category, area range): ``evaluateVid``. None if there is neither GT nor result.

    ious: [D, G] for ``dts`` (already score-sorted, <= max_det) and ``gts`` (file order).
    Returns (scores [D], dtm [T, D], dt_ignore [T, D], gt_ignore [G]).
    """
    if not gts and not dts:
        return None
    lo, hi = area_rng
    g_ig = np.array([g.iscrowd or g.avg_area < lo or g.avg_area > hi for g in gts], bool)
    order = np.argsort(g_ig.astype(np.int8), kind="mergesort")  # ignored GT last, stable
    g_ig = g_ig[order]
    dts = dts[:max_det]
    dtm, _, dt_ig = match(ious[: len(dts)][:, order], g_ig, np.array([gts[i].iscrowd for i in order], bool),
                          np.array([gts[i].id for i in order], np.int64), np.array([d.id for d in dts], np.int64))
    # unmatched results outside the area range are ignored
    out_of_range = np.array([d.avg_area < lo or d.avg_area > hi for d in dts], bool)
    dt_ig = dt_ig | ((dtm == 0) & out_of_range[None])
    return np.array([d.score for d in dts], np.float64), dtm, dt_ig, g_ig


def accumulate(per_video: list, k_count: int):
    """precision [T, R, K, A, M] and recall [T, K, A, M] (-1 where undefined), as ``accumulate``.

    per_video[k][a]: list over videos (sorted id order) of evaluate_video outputs (None skipped).
    """
    T, R, A, M = len(IOU_THRS), len(REC_THRS), len(AREA_RNG), len(MAX_DETS)
    precision = -np.ones((T, R, k_count, A, M))
    recall = -np.ones((T, k_count, A, M))
    for k in range(k_count):
        for a in range(A):
            E = [e for e in per_video[k][a] if e is not None]
            if not E:
                continue
            gt_ig = np.concatenate([e[3] for e in E])
            npig = np.count_nonzero(gt_ig == 0)
            if npig == 0:
                continue
            for m, max_det in enumerate(MAX_DETS):
                scores = np.concatenate([e[0][:max_det] for e in E])
                inds = np.argsort(-scores, kind="mergesort")  # ties: earlier video first
                dtm = np.concatenate([e[1][:, :max_det] for e in E], axis=1)[:, inds]
                dt_ig = np.concatenate([e[2][:, :max_det] for e in E], axis=1)[:, inds]
                tps = (dtm != 0) & ~dt_ig  # matched to a GT with id 0 counts as unmatched, as officially
                fps = (dtm == 0) & ~dt_ig
                tp = np.cumsum(tps, axis=1).astype(np.float64)  # [T, D]
                fp = np.cumsum(fps, axis=1).astype(np.float64)
                nd = tp.shape[1]
                rc = tp / npig
                pr = tp / (fp + tp + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1] if nd else 0
                if nd == 0:
                    precision[:, :, k, a, m] = 0
                    continue
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # precision envelope
                for t in range(T):
                    idx = np.searchsorted(rc[t], REC_THRS, side="left")
                    # the official try/except leaves zeros from the first recall point not reached
                    precision[t, :, k, a, m] = np.where(idx < nd, pr[t, np.minimum(idx, nd - 1)], 0.0)
    return precision, recall


def summarize(precision: np.ndarray, recall: np.ndarray) -> np.ndarray:
    """The 12 stats in cocoapi order; each the mean over entries > -1, or -1 if there is none."""

    def _mean(ap: bool, iou_thr=None, area="all", max_dets=100):
        a, m = AREA_LBL.index(area), MAX_DETS.index(max_dets)
        s = precision[..., a, m] if ap else recall[..., a, m]
        if iou_thr is not None:
            s = s[np.where(iou_thr == IOU_THRS)[0]]
        return float(np.mean(s[s > -1])) if np.any(s > -1) else -1.0

    return np.array([
        _mean(True), _mean(True, 0.5), _mean(True, 0.75),
        _mean(True, area="small"), _mean(True, area="medium"), _mean(True, area="large"),
        _mean(False, max_dets=1), _mean(False, max_dets=10), _mean(False, max_dets=100),
        _mean(False, area="small"), _mean(False, area="medium"), _mean(False, area="large"),
    ])


# --------------------------------------------------------------------------------------------- driver
def evaluate(gt_json, results_json, *, progress: bool = True) -> dict:
    """YouTube-VIS / OVIS AP and AR of ``results_json`` against ``gt_json`` (see the module docstring)."""
    videos, cat_ids, gt_tracks = load_gt(gt_json)
    dt_tracks = load_results(results_json, videos)
    cat_set = set(cat_ids)
    kept = [d for d in dt_tracks if d.category_id in cat_set]

    gts, dts = defaultdict(list), defaultdict(list)  # (video, cat) -> tracks in file order
    for g in gt_tracks:
        if g.category_id in cat_set:
            gts[g.video_id, g.category_id].append(g)
    for d in kept:
        dts[d.video_id, d.category_id].append(d)

    vid_ids = sorted(videos)
    per_video = [[[] for _ in AREA_RNG] for _ in cat_ids]  # [K][A] -> list over videos
    for vid in tqdm(vid_ids, desc="YTVIS AP", unit="video", disable=not progress):
        cats_here = [(k, c) for k, c in enumerate(cat_ids) if gts.get((vid, c)) or dts.get((vid, c))]
        # top-100 results per (video, category) by score, stable (computeIoU); IoU for all of them at once
        vid_dts = {c: sorted(dts.get((vid, c), []), key=lambda d: -d.score)[: MAX_DETS[-1]] for _, c in cats_here}
        # only categories with both results and GT need IoUs: one pycocotools call per frame for them all
        both = [c for _, c in cats_here if vid_dts[c] and gts.get((vid, c))]
        ious_all = video_iou([d for c in both for d in vid_dts[c]], [g for c in both for g in gts[vid, c]])
        d0 = g0 = 0
        for k, c in cats_here:
            cd, cg = vid_dts[c], gts.get((vid, c), [])
            if c in both:
                ious = ious_all[d0 : d0 + len(cd), g0 : g0 + len(cg)]
                d0, g0 = d0 + len(cd), g0 + len(cg)
            else:
                ious = np.zeros((len(cd), len(cg)))
            for a, rng in enumerate(AREA_RNG):
                per_video[k][a].append(evaluate_video(ious, cg, cd, rng))

    precision, recall = accumulate(per_video, len(cat_ids))
    stats = summarize(precision, recall)
    out: dict = {name: float(v) for name, v in zip(STAT_NAMES, stats)}
    out["stats"] = stats.tolist()
    per_cat = {}
    for k, c in enumerate(cat_ids):
        s = precision[:, :, k, 0, -1]
        per_cat[c] = float(np.mean(s[s > -1])) if np.any(s > -1) else float("nan")
    out["per_category_AP"] = per_cat
    out["num_videos"] = len(vid_ids)
    out["num_results"] = len(dt_tracks)
    out["num_results_ignored"] = len(dt_tracks) - len(kept)
    return out
