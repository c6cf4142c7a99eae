"""BURST HOTA / DetA / AssA (per class) and TrackMAP AP, aggregated as the BURST benchmark does.

Reproduces BURST-benchmark ``burstapi/eval/run.py`` with its vendored TrackEval
(``burstapi/thirdparty/trackeval/``: ``metrics/hota.py``, ``metrics/track_map.py``, ``datasets/burst.py``,
``datasets/burst_ow.py``, ``datasets/burst_helpers/{format_converter.py,burst_base.py,burst_ow_base.py}``;
TrackEval's own copies are identical up to config defaults). The three tasks of ``run.py --task``:

* ``exemplar_guided`` (default; gvseg's EVS): predicted track keys must be the sequence's GT track keys (an
  unknown key raises KeyError, as the official ``track_id_mapping`` lookup does); a track takes its GT
  track's class; tracks whose GT track has no non-distractor annotation are dropped. No det is removed.
* ``class_guided``: track ids are the model's own (per video) and each detection's class is its
  ``category_id`` (else the sequence's ``track_category_ids`` entry). Per (sequence, class, frame) TAO
  preprocessing: unmatched predicted dets (Hungarian on IoU >= 0.5) are removed where the frame has no GT
  det of the class and the class is not in the video's ``neg_category_ids``, and everywhere for a class in
  its ``not_exhaustive_category_ids``.
* ``open_world``: class-agnostic (every det is class 1, ``burst_ow_base.py``), the same preprocessing with
  class id 1 (quirk kept: so LVIS id 1 in a video's neg/not-exhaustive lists applies), evaluated three
  times: on all GT tracks, on the common ones, on the uncommon ones (``all_classes.json`` /
  ``common_classes.json`` / ``uncommon_classes.json`` there; here the GT filtered by the 78 common ids).
  Reported: OWTA = sqrt(DetRe·AssA), DetRe, AssA (``print_results_ow``); TrackMAP is not computed there.

Definitions and the quirks kept on purpose:

* **HOTA similarity = box IoU** (``iou="box"``, default). ``format_converter.py`` turns every GT and
  predicted mask into ``[int(x) for x in pycocotools.mask.toBbox(rle)]``, i.e. xywh with w = last column −
  first column + 1 (all 0 for an empty mask), truncated to whole pixels (a no-op: RLE boxes are whole
  pixels); ``burst_base._load_raw_file`` loads those boxes as the dets, and ``BURST._calculate_similarities``
  hands them to pycocotools ``iou``, which on [N, 4] arrays is ``bbIou``: no +1, zero without overlap.
  Published BURST numbers come from this, so it is the default; ``iou="mask"`` scores the masks (the
  dataset's stated intent) and differs on every imperfect prediction.
* **TrackMAP similarity = mask track IoU** (``BURST._iou_type() == 'mask'``), see ``trackmap.py``.
* HOTA per (sequence, class): TrackEval ``hota.py``, α = 0.05 … 0.95 (19 values, ``np.arange(0.05, 0.99,
  0.05)``); sequences combine by summing TP/FN/FP and TP-weighting AssA/AssRe/AssPr/LocA; each field is
  averaged over α.
* Classes = category ids of GT tracks (after TAO ``merged`` remapping), minus the 45 distractor ids, that are
  in the category file (the TAO category file shipped with BURST, not the GT JSON). H/A_all, _com, _unc are
  unweighted means over those classes / the 78-id common list / the rest (``print_results``); a class's AP
  is its TrackMAP ``AP_all`` averaged over the 10 IoU thresholds.
* Frames are matched by image path ``<dataset>/<seq_name>/<image>``: predicted frames not annotated in the
  GT are ignored; HOTA timesteps are the GT frames with at least one (non-distractor) GT det ("images
  without any ground truth information ... are ignored"), while TrackMAP tracks use every annotated frame.
* At most ``max_detections`` (300) predictions per frame, highest score first (TAO ``_limit_dets_per_image``).
* Empty masks: predictions should omit them (``encode_track_masks`` does). An empty RLE that is present anyway
  counts as a detection (box [0, 0, 0, 0]: a false positive) as in the official code;
  ``ignore_empty_pred=True`` drops it instead.

Inputs: BURST JSON (path or dict): {"split", "sequences": [{"id", "dataset", "seq_name", "width", "height",
"annotated_image_paths": [...], "track_category_ids": {"<tid>": cat}, "neg_category_ids"?,
"not_exhaustive_category_ids"?, "segmentations": [{"<tid>": {"rle": str, "score"?: float,
"category_id"?: int}}, ...]}]}; the prediction has the same schema (extra frames allowed).
Output: fractions in [0, 1] (the official script prints 100×): HOTA/DetA/AssA/LocA (+ AP) for all/com/unc, per
class, class counts, and ``definitions`` (which definition produced the headline numbers). A split without a
class gives NaN (the official ``print_results`` divides by zero there and crashes).

Verified against the official code: ``burstapi/eval/run.py`` (numpy aliases patched for numpy 2) and this
module agree to 1e-6 on HOTA/DetA/AssA/AP (all/common/uncommon) and OWTA/DetRe/AssA on a few hundred random
fixtures per task (non-rectangular masks, extra frames, distractors, merged ids, neg / not-exhaustive
classes, score ties, id 0).
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

from gvseg.metrics import trackmap
from gvseg.metrics.panoptic_io import load_json

__all__ = [
    "ALPHAS",
    "DISTRACTOR_IDS",
    "COMMON_IDS",
    "TASKS",
    "boxes_from_rles",
    "box_iou",
    "hota_sequence",
    "combine_sequences",
    "evaluate",
    "encode_track_masks",
]

# TrackEval hota.py: self.array_labels
ALPHAS = np.arange(0.05, 0.99, 0.05)  # [19]
_EPS = np.finfo("float").eps

# BURST-benchmark burstapi/thirdparty/trackeval/datasets/burst_helpers/format_converter.py (and burst_base.py):
# LVIS ids never evaluated ("we don't evaluate distractors").
DISTRACTOR_IDS = frozenset({
    20, 63, 108, 180, 188, 204, 212, 247, 303, 403, 407, 415, 490, 504, 507, 513, 529, 567,
    569, 588, 672, 691, 702, 708, 711, 720, 736, 737, 798, 813, 815, 827, 831, 851, 877, 883,
    912, 971, 976, 1130, 1133, 1134, 1169, 1184, 1220,
})

# BURST-benchmark burstapi/eval/run.py, print_results(): `known_list`, the 78 "common" LVIS ids.
COMMON_IDS = frozenset({
    4, 13, 1038, 544, 1057, 34, 35, 36, 41, 45, 58, 60, 579, 1091, 1097, 1099, 78, 79, 81, 91, 1115,
    1117, 95, 1122, 99, 1132, 621, 1135, 625, 118, 1144, 126, 642, 1155, 133, 1162, 139, 154, 174, 185,
    699, 1215, 714, 717, 1229, 211, 729, 221, 229, 747, 235, 237, 779, 276, 805, 299, 829, 852, 347,
    371, 382, 896, 392, 926, 937, 428, 429, 961, 452, 979, 980, 982, 475, 480, 993, 1001, 502, 1018,
})

TASKS = ("exemplar_guided", "class_guided", "open_world")  # run.py --task
OBJECT_CLASS = 1  # burst_ow_base.py: the one class-agnostic class id

_INT_FIELDS = ("HOTA_TP", "HOTA_FN", "HOTA_FP")
_ASS_FIELDS = ("AssA", "AssRe", "AssPr")
_REPORT_FIELDS = ("HOTA", "DetA", "AssA", "LocA", "DetRe", "DetPr", "AssRe", "AssPr", "RHOTA")


# ----------------------------------------------------------------------------------------------------------------
# HOTA core (TrackEval hota.py)
# ----------------------------------------------------------------------------------------------------------------


def _final_fields(res: dict) -> dict:
    """TrackEval HOTA._compute_final_fields: fields that depend only on the counts and AssA."""
    tp, fn, fp = res["HOTA_TP"], res["HOTA_FN"], res["HOTA_FP"]
    res["DetRe"] = tp / np.maximum(1, tp + fn)
    res["DetPr"] = tp / np.maximum(1, tp + fp)
    res["DetA"] = tp / np.maximum(1, tp + fn + fp)
    res["HOTA"] = np.sqrt(res["DetA"] * res["AssA"])
    res["RHOTA"] = np.sqrt(res["DetRe"] * res["AssA"])
    return res


def hota_sequence(gt_ids: list[np.ndarray], tracker_ids: list[np.ndarray], similarity: list[np.ndarray],
                  num_gt_ids: int, num_tracker_ids: int) -> dict:
    """HOTA of one sequence for one class.

    gt_ids[t]: [G_t] int ids in 0..num_gt_ids-1; tracker_ids[t]: [P_t] ids in 0..num_tracker_ids-1;
    similarity[t]: [G_t, P_t] IoU. Returns arrays [19] per α: HOTA_TP/FN/FP, AssA/AssRe/AssPr, LocA and the
    derived DetA, DetRe, DetPr, HOTA, RHOTA. Empty GT (all FP) or empty prediction (all FN) return early with
    LocA = 1, as TrackEval does.
    """
    n_a = len(ALPHAS)
    res = {f: np.zeros(n_a) for f in (*_INT_FIELDS, *_ASS_FIELDS, "LocA")}
    num_gt_dets = sum(len(g) for g in gt_ids)
    num_tracker_dets = sum(len(p) for p in tracker_ids)
    if num_tracker_dets == 0:
        res["HOTA_FN"] = num_gt_dets * np.ones(n_a)
        res["LocA"] = np.ones(n_a)
        return _final_fields(res)
    if num_gt_dets == 0:
        res["HOTA_FP"] = num_tracker_dets * np.ones(n_a)
        res["LocA"] = np.ones(n_a)
        return _final_fields(res)

    # Global association: soft per-id-pair overlap counts over all timesteps.
    potential = np.zeros((num_gt_ids, num_tracker_ids))
    gt_count = np.zeros((num_gt_ids, 1))
    tr_count = np.zeros((1, num_tracker_ids))
    for g, p, s in zip(gt_ids, tracker_ids, similarity):
        denom = s.sum(0)[None, :] + s.sum(1)[:, None] - s  # [G_t, P_t]
        sim_iou = np.zeros_like(s)
        ok = denom > 0 + _EPS
        sim_iou[ok] = s[ok] / denom[ok]
        potential[g[:, None], p[None, :]] += sim_iou
        gt_count[g] += 1
        tr_count[0, p] += 1
    global_alignment = potential / (gt_count + tr_count - potential)  # [num_gt_ids, num_tracker_ids]
    matches = np.zeros((n_a, num_gt_ids, num_tracker_ids))

    for g, p, s in zip(gt_ids, tracker_ids, similarity):
        if len(g) == 0:
            res["HOTA_FP"] += len(p)
            continue
        if len(p) == 0:
            res["HOTA_FN"] += len(g)
            continue
        score = global_alignment[g[:, None], p[None, :]] * s  # [G_t, P_t]
        rows, cols = linear_sum_assignment(-score)
        matched_sim = s[rows, cols]  # [M]
        hit = matched_sim[None, :] >= ALPHAS[:, None] - _EPS  # [19, M]
        n_hit = hit.sum(1)
        res["HOTA_TP"] += n_hit
        res["HOTA_FN"] += len(g) - n_hit
        res["HOTA_FP"] += len(p) - n_hit
        for a in np.nonzero(n_hit)[0]:
            res["LocA"][a] += sum(matched_sim[hit[a]])
            matches[a, g[rows[hit[a]]], p[cols[hit[a]]]] += 1

    # Association per α: Jaccard of the id pair's TP count against both ids' det counts, TP-weighted.
    tp = np.maximum(1, res["HOTA_TP"])  # [19]
    ass_a = matches / np.maximum(1, gt_count + tr_count - matches)
    ass_re = matches / np.maximum(1, gt_count)
    ass_pr = matches / np.maximum(1, tr_count)
    res["AssA"] = (matches * ass_a).sum((1, 2)) / tp
    res["AssRe"] = (matches * ass_re).sum((1, 2)) / tp
    res["AssPr"] = (matches * ass_pr).sum((1, 2)) / tp
    res["LocA"] = np.maximum(1e-10, res["LocA"]) / np.maximum(1e-10, res["HOTA_TP"])
    return _final_fields(res)


def combine_sequences(results: Iterable[dict]) -> dict:
    """TrackEval HOTA.combine_sequences: sum counts, TP-weighted AssA/AssRe/AssPr/LocA. No input -> empty class."""
    results = list(results)
    n_a = len(ALPHAS)
    res = {f: sum((r[f] for r in results), np.zeros(n_a)) for f in _INT_FIELDS}
    denom = np.maximum(1.0, res["HOTA_TP"])
    for f in _ASS_FIELDS:
        res[f] = sum((r[f] * r["HOTA_TP"] for r in results), np.zeros(n_a)) / denom
    loca = sum((r["LocA"] * r["HOTA_TP"] for r in results), np.zeros(n_a))
    res["LocA"] = np.maximum(1e-10, loca) / np.maximum(1e-10, res["HOTA_TP"])
    return _final_fields(res)


# ----------------------------------------------------------------------------------------------------------------
# Similarity (format_converter.py boxes; pycocotools bbIou / mask IoU)
# ----------------------------------------------------------------------------------------------------------------


def boxes_from_rles(rles: list[dict]) -> np.ndarray:
    """[N, 4] xywh boxes as ``format_converter.py`` builds them: ``[int(x) for x in toBbox(rle)]``.

    toBbox gives x = first column, y = first row, w = last column − x + 1, h = last row − y + 1 (a one-pixel
    mask is [x, y, 1, 1], an empty one [0, 0, 0, 0]); ``int`` truncates (whole pixels already, so a no-op).
    """
    if not rles:
        return np.zeros((0, 4))
    return np.trunc(np.asarray(mask_utils.toBbox(rles), np.float64).reshape(-1, 4))


def box_iou(gt_boxes: np.ndarray, pred_boxes: np.ndarray) -> np.ndarray:
    """[G, P] IoU of xywh boxes, vectorised; equals pycocotools ``iou`` on box arrays (``bbIou``: overlap
    w = min(x1 + w1, x2 + w2) − max(x1, x2), likewise h, no +1; 0 unless w > 0 and h > 0)."""
    g = np.asarray(gt_boxes, np.float64).reshape(-1, 1, 4)  # [G, 1, 4]
    p = np.asarray(pred_boxes, np.float64).reshape(1, -1, 4)  # [1, P, 4]
    w = np.minimum(g[..., 0] + g[..., 2], p[..., 0] + p[..., 2]) - np.maximum(g[..., 0], p[..., 0])  # [G, P]
    h = np.minimum(g[..., 1] + g[..., 3], p[..., 1] + p[..., 3]) - np.maximum(g[..., 1], p[..., 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    union = g[..., 2] * g[..., 3] + p[..., 2] * p[..., 3] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=inter > 0)


def _mask_iou(gt_rles: list, tr_rles: list) -> np.ndarray:
    """[G, P] mask IoU (pycocotools, not crowd)."""
    if not gt_rles or not tr_rles:
        return np.zeros((len(gt_rles), len(tr_rles)))
    return np.asarray(mask_utils.iou(gt_rles, tr_rles, [0] * len(tr_rles)), dtype=np.float64).reshape(
        len(gt_rles), len(tr_rles))


# iou option -> similarity of (GT dets, predicted dets) of one frame
_SIMILARITY: dict[str, Callable[[list, list], np.ndarray]] = {
    "box": lambda g, p: box_iou(np.array([d.box for d in g]), np.array([d.box for d in p])),
    "mask": lambda g, p: _mask_iou([d.rle for d in g], [d.rle for d in p]),
}

DEFINITIONS = {
    "box": "HOTA/DetA/AssA on mask bounding boxes (int xywh from toBbox), as the official BURST code scores them",
    "mask": "HOTA/DetA/AssA on mask IoU (iou=mask; the official BURST code scores boxes: numbers differ)",
    "AP": "AP = TrackMAP AP_all on mask track IoU (IoU 0.50:0.05:0.95), as BURST run.py prints it",
    "OWTA": "OWTA = sqrt(DetRe*AssA), open-world task, class-agnostic (BURST run.py print_results_ow)",
    "means": "_all/_com/_unc = unweighted means over {n_all}/{n_com}/{n_unc} classes (BURST print_results)",
}


# ----------------------------------------------------------------------------------------------------------------
# BURST data handling (format_converter.py + burst_base.py)
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Det:
    track: tuple  # (sequence id, track key): unique over the evaluation set
    cls: int  # category id after TAO `merged` remapping
    rle: dict
    score: float = 1.0
    box: np.ndarray | None = None


@dataclass
class _Seq:
    sid: str
    name: str  # the official sequence key "<split>-<dataset>-<seq_name>"; TrackMAP pools in its sorted order
    hw: tuple[int, int]
    keys: set[str]  # GT track keys (track_category_ids)
    track_cls: dict[str, int]  # GT tracks with a non-distractor annotation -> class
    neg: frozenset[int]
    nel: frozenset[int]  # not exhaustively labelled
    gt: list[list[_Det]]  # per annotated image
    pred: list[list[_Det]] = field(default_factory=list)


def _load(obj, what: str) -> tuple[dict, str]:
    if isinstance(obj, Mapping):
        return dict(obj), f"<{what} dict>"
    return load_json(obj), str(obj)  # a missing, non-JSON or non-UTF-8 file: one line naming it


def _load_categories(categories, gt: dict, gt_name: str) -> list[dict]:
    if categories is None:
        if "categories" not in gt:
            raise ValueError(f"{gt_name}: no 'categories' and no category file given")
        warnings.warn("BURST HOTA: no TAO category file given; using the GT JSON's 'categories' (the official "
                      "evaluation uses the TAO category file shipped with BURST)", stacklevel=3)
        return list(gt["categories"])
    if isinstance(categories, (str, Path)):
        categories = load_json(categories)
    if isinstance(categories, Mapping):
        categories = categories["categories"]
    return list(categories)


def _check_seq(seq: dict, name: str) -> None:
    for key in ("id", "dataset", "seq_name", "annotated_image_paths", "segmentations"):
        if key not in seq:
            raise ValueError(f"{name}: sequence {seq.get('id', '?')} has no {key!r}")
    if len(seq["segmentations"]) != len(seq["annotated_image_paths"]):
        raise ValueError(f"{name}: sequence {seq['id']} has {len(seq['segmentations'])} segmentation frames but "
                         f"{len(seq['annotated_image_paths'])} annotated_image_paths")


def _rle(seg: dict, h: int, w: int, name: str, where: str) -> dict:
    if "rle" not in seg:
        raise ValueError(f"{name}: {where} has no 'rle'")
    counts = seg["rle"]
    return {"counts": counts.encode() if isinstance(counts, str) else counts, "size": [h, w]}


def _load_gt(gt: dict, gt_name: str, merge: Mapping[int, int]) -> tuple[dict[str, _Seq], dict]:
    """GroundTruthBURSTFormatToTAOFormatConverter: per sequence, per annotated image, the non-distractor dets
    in file order. Returns (sequences by id, {(dataset, seq_name, image): (sequence id, frame index)})."""
    seqs: dict[str, _Seq] = {}
    image_index: dict[tuple, tuple[str, int]] = {}
    for seq in gt["sequences"]:
        _check_seq(seq, gt_name)
        sid = str(seq["id"])
        if sid in seqs:
            raise ValueError(f"{gt_name}: duplicate sequence id {sid}")
        h, w = int(seq["height"]), int(seq["width"])
        tcat = {str(k): int(v) for k, v in seq.get("track_category_ids", {}).items()}
        frames, track_cls = [], {}
        for fi, (img, segs) in enumerate(zip(seq["annotated_image_paths"], seq["segmentations"])):
            key = (seq["dataset"], seq["seq_name"], img)
            if key in image_index:
                raise ValueError(f"{gt_name}: image {'/'.join(key)} listed twice")
            image_index[key] = (sid, fi)
            dets = []
            for tid, seg in segs.items():
                if tid not in tcat:
                    raise ValueError(f"{gt_name}: sequence {sid} track {tid!r} has no track_category_ids entry")
                if tcat[tid] in DISTRACTOR_IDS:  # the converter skips distractor annotations (raw id)
                    continue
                cls = merge.get(tcat[tid], tcat[tid])
                track_cls[tid] = cls
                dets.append(_Det((sid, tid), cls, _rle(seg, h, w, gt_name, f"sequence {sid} frame {img} track {tid}")))
            frames.append(dets)
        name = f"{gt.get('split', '')}/{seq['dataset']}/{seq['seq_name']}".replace("/", "-")
        seqs[sid] = _Seq(sid, name, (h, w), set(tcat), track_cls, frozenset(seq.get("neg_category_ids") or ()),
                         frozenset(seq.get("not_exhaustive_category_ids") or ()), frames,
                         [[] for _ in frames])
    return seqs, image_index


def _pred_class(task: str, det: dict, seq: dict, key: str, g: _Seq, merge: Mapping[int, int],
                where: str) -> int | None:
    """PredictionBURSTFormatToTAOFormatConverter: the class of one predicted det (None: drop the det)."""
    if task == "exemplar_guided":
        tid = str(int(key))
        if tid not in g.keys:
            raise KeyError(f"{where}: predicted track id {key!r} is not a GT track id (GT ids {sorted(g.keys)}); "
                           f"for model-chosen ids use task='class_guided'")
        return g.track_cls.get(tid)  # None: the GT track is a distractor or never annotated
    if task == "open_world":
        return OBJECT_CLASS
    if "category_id" in det:
        cls = int(det["category_id"])
    elif str(key) in seq.get("track_category_ids", {}):
        cls = int(seq["track_category_ids"][str(key)])
    else:
        raise KeyError(f"{where}: class-guided det of track {key!r} has no 'category_id' and the sequence's "
                       f"track_category_ids has no entry for it")
    return merge.get(cls, cls)


def _load_predictions(pred: dict, pred_name: str, seqs: dict[str, _Seq], image_index: dict, merge: Mapping,
                      task: str, max_detections: int, ignore_empty_pred: bool) -> list[tuple[str, int, _Det]]:
    """Predicted dets on GT-annotated images, in the official list order (file order, then grouped by image
    and limited to ``max_detections`` per image by score), as (sequence id, frame index, det)."""
    out: list[tuple[str, int, _Det]] = []
    for seq in pred.get("sequences", []):
        _check_seq(seq, pred_name)
        psid = str(seq["id"])
        for img, segs in zip(seq["annotated_image_paths"], seq["segmentations"]):
            hit = image_index.get((seq["dataset"], seq["seq_name"], img))
            if hit is None or not segs:
                continue  # predictions may cover more frames than the GT annotates
            sid, fi = hit
            if task == "exemplar_guided":  # ids are looked up in the GT track_id_mapping of the sequence id
                if psid not in seqs:
                    raise KeyError(f"{pred_name}: sequence id {psid} is not in the GT")
                if sid != psid:
                    raise ValueError(f"{pred_name}: sequence id {psid} names image "
                                     f"{seq['dataset']}/{seq['seq_name']}/{img} of GT sequence {sid}")
            g = seqs[sid]
            h, w = g.hw
            for key, det in segs.items():
                where = f"{pred_name}: sequence {sid} ({seq['dataset']}/{seq['seq_name']}) frame {img}"
                cls = _pred_class(task, det, seq, key, g, merge, where)
                if cls is None:
                    continue
                rle = _rle(det, h, w, pred_name, f"{where} track {key}")
                if ignore_empty_pred and mask_utils.area(rle) == 0:
                    continue
                out.append((sid, fi, _Det((sid, str(int(key))), cls, rle, float(det.get("score", 1.0)))))
    # TAO _limit_dets_per_image: group by image (first-appearance order), keep the highest scores (stable)
    by_image: dict[tuple, list] = defaultdict(list)
    for item in out:
        by_image[item[:2]].append(item)
    limited = []
    for items in by_image.values():
        if max_detections and len(items) > max_detections:
            items = sorted(items, key=lambda it: it[2].score, reverse=True)[:max_detections]
        limited.extend(items)
    return limited


def _timesteps(g: _Seq, similarity: Callable, keep_gt: Callable[[int], bool]) -> list[tuple]:
    """HOTA timesteps of one sequence: the frames with a (kept) GT det, as (GT dets, predicted dets, [G, P])."""
    steps = []
    for fi, (dets, pdets) in enumerate(zip(g.gt, g.pred)):
        dets = [d for d in dets if keep_gt(d.cls)]
        if not dets:
            continue  # frames without GT annotation are not timesteps of the official evaluation
        tracks = [d.track for d in pdets]
        if len(set(tracks)) != len(tracks):
            raise ValueError(f"sequence {g.sid} frame {fi}: the prediction has the same track twice")
        steps.append((dets, pdets, similarity(dets, pdets)))
    return steps


def _hota_class(steps: list[tuple], cls: int, *, class_of: Callable[[_Det], int], preprocess: bool,
                neg: bool, nel: bool) -> dict:
    """burst_base ``get_preprocessed_seq_data`` for one class, then TrackEval HOTA ``eval_sequence``."""
    gt_ids, tr_ids, sims = [], [], []
    gt_map: dict = {}
    tr_map: dict = {}
    for dets, pdets, sim in steps:
        gi = np.array([i for i, d in enumerate(dets) if class_of(d) == cls], dtype=np.int64)
        pi = np.array([i for i, d in enumerate(pdets) if class_of(d) == cls], dtype=np.int64)
        s = sim[np.ix_(gi, pi)]
        if preprocess:  # class-guided / open-world: TAO removal of unmatched predicted dets
            unmatched = np.ones(len(pi), bool)
            if len(gi) and len(pi):
                score = np.where(s < 0.5 - _EPS, 0.0, s)
                rows, cols = linear_sum_assignment(-score)
                unmatched[cols[score[rows, cols] > 0 + _EPS]] = False
            if (len(gi) == 0 and not neg) or nel:
                pi, s = pi[~unmatched], s[:, ~unmatched]
        gt_ids.append(np.array([gt_map.setdefault(dets[i].track, len(gt_map)) for i in gi], dtype=np.int64))
        tr_ids.append(np.array([tr_map.setdefault(pdets[i].track, len(tr_map)) for i in pi], dtype=np.int64))
        sims.append(s)
    return hota_sequence(gt_ids, tr_ids, sims, len(gt_map), len(tr_map))


def _positive_ids(preds: list[tuple[str, int, _Det]], task: str) -> dict[tuple, int]:
    """Track id as TrackMAP stores it, reduced to what matters (> 0 or not): exemplar-guided ids are global
    GT ids (from 1); otherwise ``_make_track_ids_unique`` re-numbers an id used in several videos from
    max + 1, and keeps the model's id where it is used in one video only."""
    if task == "exemplar_guided":
        return defaultdict(lambda: 1)
    videos: dict[int, set] = defaultdict(set)
    for sid, _, d in preds:
        videos[int(d.track[1])].add(sid)
    return {d.track: (int(d.track[1]) if len(videos[int(d.track[1])]) == 1 else 1) for _, _, d in preds}


def _trackmap_sequence(g: _Seq, cls: int, pred_tracks: dict, stored_id: Mapping) -> dict | None:
    """TrackMAP ``eval_sequence`` input of one (sequence, class) (burst_base ``_load_raw_file``): GT tracks of
    the class; predicted tracks of the class (by their first det) if the class is positive or negative for
    the video; tracks as {frame: RLE} over every annotated frame."""
    gt_tracks: dict[tuple, dict] = {}
    for fi, dets in enumerate(g.gt):
        for d in dets:
            if d.cls == cls:
                gt_tracks.setdefault(d.track, {})[fi] = d.rle
    dts = []
    if cls in set(g.track_cls.values()) | g.neg:
        dts = [t for t in pred_tracks.get(g.sid, {}).values() if t["cls"] == cls]
    dts = sorted(dts, key=lambda t: -t["score"])  # stable: creation order breaks ties (mergesort)
    if not gt_tracks and not dts:
        return None
    ious = trackmap.mask_track_ious([t["frames"] for t in dts], list(gt_tracks.values()))
    return trackmap.match_sequence(ious, [stored_id[t["track"]] for t in dts], list(range(1, len(gt_tracks) + 1)),
                                   [t["score"] for t in dts], not_exhaustively_labeled=cls in g.nel)


def _pred_tracks(preds: list[tuple[str, int, _Det]]) -> dict[str, dict]:
    """burst_base ``_compute_vid_mappings``: per sequence, tracks in first-appearance order with the class of
    their first det, {frame: RLE} (a later det in the same frame overwrites) and the mean det score."""
    tracks: dict[str, dict] = defaultdict(dict)
    for sid, fi, d in preds:
        t = tracks[sid].setdefault(d.track, {"track": d.track, "cls": d.cls, "frames": {}, "scores": []})
        t["frames"][fi] = d.rle
        t["scores"].append(d.score)
    for seq_tracks in tracks.values():
        for t in seq_tracks.values():
            t["score"] = float(np.mean(t["scores"]))
    return tracks


def _class_means(per_class: dict, names: dict[str, list[str]], fields: Iterable[str]) -> dict:
    out: dict = {}
    for split_name, split_names in names.items():
        for f in fields:
            out[f"{f}_{split_name}"] = (float(sum(per_class[n][f] for n in split_names) / len(split_names))
                                        if split_names else float("nan"))
        out[f"num_classes_{split_name}"] = len(split_names)
    return out


def _open_world(seqs: Iterable[_Seq], similarity: Callable, iou: str) -> dict:
    """run.py ``main_ow``: class-agnostic HOTA on all / common / uncommon GT tracks (one class, id 1)."""
    subsets = {"all": lambda c: True, "com": lambda c: c in COMMON_IDS, "unc": lambda c: c not in COMMON_IDS}
    per_subset: dict[str, list[dict]] = {k: [] for k in subsets}
    for g in seqs:
        for name, keep in subsets.items():
            steps = _timesteps(g, similarity, keep)
            per_subset[name].append(_hota_class(steps, OBJECT_CLASS, class_of=lambda d: OBJECT_CLASS,
                                                preprocess=True, neg=OBJECT_CLASS in g.neg, nel=OBJECT_CLASS in g.nel))
    out: dict = {}
    for name, results in per_subset.items():
        comb = combine_sequences(results)
        for f in ("OWTA", "DetRe", "AssA", "HOTA", "DetA", "LocA"):
            out[f"{f}_{name}"] = float(np.mean(comb["RHOTA" if f == "OWTA" else f]))  # OWTA = sqrt(DetRe*AssA)
    out["definitions"] = {"OWTA_all": DEFINITIONS["OWTA"] + "; " + DEFINITIONS[iou].replace("HOTA/DetA/AssA",
                                                                                          "OWTA/DetRe/AssA")}
    return out


def evaluate(gt_json, pred_json, *, task: str = "exemplar_guided", iou: str = "box", progress: bool = True,
             categories=None, max_detections: int = 300, ignore_empty_pred: bool = False,
             track_map: bool = True) -> dict:
    """BURST HOTA (+ TrackMAP AP) for one of ``TASKS``.

    gt_json / pred_json: path or loaded dict in the BURST format; categories: path to the TAO/BURST category
    JSON (a list, or a dict with "categories"), or the list itself; None falls back to the GT's "categories"
    with a warning. iou: "box" (official) or "mask". track_map: also compute AP (guided tasks).
    Returns {"HOTA_all", "HOTA_com", "HOTA_unc", "DetA_*", "AssA_*", "LocA_*", "AP_*", "num_classes_*",
    "per_class": {name: {field: value}}, "definitions": {key: text}}, all fractions; open_world returns
    {"OWTA_*", "DetRe_*", "AssA_*", "HOTA_*", "DetA_*", "LocA_*"} for all/com/unc instead.
    """
    if task not in TASKS:
        raise ValueError(f"BURST: unknown task {task!r}; choose one of {TASKS}")
    if iou not in _SIMILARITY:
        raise ValueError(f"BURST: unknown iou {iou!r}; choose one of {sorted(_SIMILARITY)}")
    gt, gt_name = _load(gt_json, "GT")
    pred, pred_name = _load(pred_json, "prediction")
    cats = _load_categories(categories, gt, gt_name)
    if "split" in pred and pred["split"] != gt.get("split"):  # format_converter.py asserts the same split
        raise ValueError(f"{pred_name}: split {pred['split']!r} differs from the GT split {gt.get('split')!r}")

    # TAO `merged` categories: ids listed under a category's "merged" are evaluated as that category.
    merge = {m["id"]: c["id"] for c in cats for m in c.get("merged", [])}
    seqs, image_index = _load_gt(gt, gt_name, merge)
    preds = _load_predictions(pred, pred_name, seqs, image_index, merge, task, max_detections, ignore_empty_pred)
    for sid, fi, d in preds:
        seqs[sid].pred[fi].append(d)
    if iou == "box":
        all_dets = [d for g in seqs.values() for frame in (*g.gt, *g.pred) for d in frame]
        for d, b in zip(all_dets, boxes_from_rles([d.rle for d in all_dets])):  # one toBbox call for the set
            d.box = b
    similarity = _SIMILARITY[iou]
    order = sorted(seqs.values(), key=lambda g: g.name)  # run.py: sorted(seq_list)
    bar = tqdm(order, disable=not progress, desc=f"HOTA (BURST {task})")

    if task == "open_world":
        return _open_world(bar, similarity, iou)

    # ---- Classes (burst_base): GT track classes in the category file, minus distractors ----------------------
    seen = {c for g in seqs.values() for c in g.track_cls.values()}
    name_to_id = {c["name"]: int(c["id"]) for c in cats}
    class_names = [c["name"] for c in cats if c["id"] in seen and c["id"] not in DISTRACTOR_IDS]
    class_ids = {name_to_id[n] for n in class_names}
    pred_tracks = _pred_tracks(preds) if track_map else {}
    stored_id = _positive_ids(preds, task)

    per_class_seq: dict[int, list[dict]] = defaultdict(list)
    per_class_map: dict[int, list] = defaultdict(list)
    for g in bar:
        steps = _timesteps(g, similarity, lambda c: True)
        present = {d.cls for dets, pdets, _ in steps for d in (*dets, *pdets)} & class_ids
        for cls in sorted(present):
            per_class_seq[cls].append(_hota_class(steps, cls, class_of=lambda d: d.cls,
                                                  preprocess=task != "exemplar_guided", neg=cls in g.neg,
                                                  nel=cls in g.nel))
        if track_map:
            for cls in sorted(class_ids & (set(g.track_cls.values()) | {t["cls"] for t in
                                                                        pred_tracks.get(g.sid, {}).values()})):
                per_class_map[cls].append(_trackmap_sequence(g, cls, pred_tracks, stored_id))

    # ---- Aggregate (run.py print_results): unweighted class means --------------------------------------------
    per_class = {}
    for name in class_names:
        cid = name_to_id[name]
        comb = combine_sequences(per_class_seq.get(cid, []))
        per_class[name] = {f: float(np.mean(comb[f])) for f in _REPORT_FIELDS}
        if track_map:
            per_class[name]["AP"] = float(np.mean(trackmap.combine_sequences(per_class_map.get(cid, []))["AP"]))
    splits = {
        "all": class_names,
        "com": [n for n in class_names if name_to_id[n] in COMMON_IDS],
        "unc": [n for n in class_names if name_to_id[n] not in COMMON_IDS],
    }
    out = _class_means(per_class, splits, ("HOTA", "DetA", "AssA", "LocA", *(("AP",) if track_map else ())))
    out["per_class"] = per_class
    means = DEFINITIONS["means"].format(n_all=len(splits["all"]), n_com=len(splits["com"]),
                                        n_unc=len(splits["unc"]))
    out["definitions"] = {"HOTA_all": f"{DEFINITIONS[iou]}; task {task}; {means}"}
    if track_map:
        out["definitions"]["AP_all"] = DEFINITIONS["AP"]
    return out


def encode_track_masks(masks: Mapping[int, np.ndarray]) -> dict[str, dict]:
    """One frame's {track id: [H, W] bool mask} -> BURST `segmentations` entry {"<tid>": {"rle": str}}.

    Empty masks are omitted, never encoded (BURST ANNOTATION_FORMAT: absent tracks have no entry).
    """
    out = {}
    for tid, m in masks.items():
        m = np.asarray(m)
        if m.ndim != 2:
            raise ValueError(f"track {tid}: mask must be [H, W], got {m.shape}")
        if not m.any():
            continue
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        out[str(int(tid))] = {"rle": rle["counts"].decode("ascii")}
    return out
