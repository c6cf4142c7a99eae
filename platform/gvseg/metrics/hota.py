"""BURST exemplar-guided HOTA (per class), aggregated as the BURST benchmark does.

Definitions follow TrackEval `trackeval/metrics/hota.py` (HOTA) and BURST-benchmark `burstapi/eval/run.py` +
`burstapi/thirdparty/trackeval/datasets/burst_helpers/{burst_base.py,format_converter.py}` (data handling):

* Similarity = mask IoU from pycocotools on the RLEs (rows GT dets, columns predicted dets, in file order).
* HOTA per (sequence, class): global alignment score A(g, p) = Σ_t sim_iou / (n_g + n_p − Σ_t sim_iou) with
  sim_iou = S / (row sum + column sum − S); per timestep a Hungarian match maximising A(g, p)·S(g, p);
  for α = 0.05 … 0.95 (19 values, `np.arange(0.05, 0.99, 0.05)`) a match is a TP if S >= α − eps.
  DetA = TP / (TP + FN + FP), AssA = Σ_TP A_α(g, p) / TP, HOTA = sqrt(DetA · AssA), LocA = mean S over TPs.
* Per class: sequences are combined by summing TP/FN/FP and TP-weighting AssA/AssRe/AssPr/LocA, then every
  field is averaged over α.
* Classes = category ids of GT tracks (after TAO `merged` remapping), minus the 45 distractor ids, that are in the
  category file; names come from that file (the TAO category file shipped with BURST, not the GT JSON).
  H_all / H_com / H_unc = unweighted means over those classes / the ones in the fixed 78-id common list / the rest.
* Exemplar-guided: a predicted track key must be a GT track key of that sequence (an unknown key raises, the
  official code raises KeyError); its class is the GT track's class. Predicted tracks whose GT track has no
  non-distractor annotation are dropped, like the official converter.
* Frames are matched by image path `<dataset>/<seq_name>/<annotated_image_path>`: predicted frames that are not
  annotated in the GT are ignored, and so are predictions on GT frames that carry no (non-distractor) GT
  annotation (burst_base `_load_raw_file`: "images without any ground truth information ... are ignored").
  As in the official converter, ids are only checked on predicted frames that match a GT annotated image.
* At most `max_detections` (300) predictions per frame, highest score first (TAO `_limit_dets_per_image`).
* Empty masks: predictions should omit them (`encode_track_masks` does). An empty RLE that is present anyway
  counts as a detection (a false positive) like in the official code; `ignore_empty_pred=True` drops it instead.

Inputs: BURST JSON (path or dict): {"split", "sequences": [{"id", "dataset", "seq_name", "width", "height",
"annotated_image_paths": [...], "track_category_ids": {"<tid>": cat}, "segmentations": [{"<tid>": {"rle": str,
"score"?: float}}, ...]}]}; the prediction has the same schema (extra frames allowed).
Output: fractions in [0, 1] (the official script prints 100×): HOTA/DetA/AssA/LocA for all/com/unc, per class,
and counts. No class to evaluate -> NaN.
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from scipy.optimize import linear_sum_assignment
from tqdm import tqdm

__all__ = [
    "ALPHAS",
    "DISTRACTOR_IDS",
    "COMMON_IDS",
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
# BURST data handling
# ----------------------------------------------------------------------------------------------------------------


def _load(obj, what: str) -> tuple[dict, str]:
    if isinstance(obj, Mapping):
        return dict(obj), f"<{what} dict>"
    path = Path(obj)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} JSON not found")
    with open(path) as f:
        return json.load(f), str(path)


def _load_categories(categories, gt: dict, gt_name: str) -> list[dict]:
    if categories is None:
        if "categories" not in gt:
            raise ValueError(f"{gt_name}: no 'categories' and no category file given")
        warnings.warn("BURST HOTA: no TAO category file given; using the GT JSON's 'categories' (the official "
                      "evaluation uses the TAO category file shipped with BURST)", stacklevel=3)
        return list(gt["categories"])
    if isinstance(categories, (str, Path)):
        with open(categories) as f:
            categories = json.load(f)
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


def _ious(gt_rles: list, tr_rles: list) -> np.ndarray:
    """[G, P] mask IoU (burst_base `_calculate_mask_ious`, pycocotools, not crowd)."""
    if not gt_rles or not tr_rles:
        return np.zeros((len(gt_rles), len(tr_rles)))
    return np.asarray(mask_utils.iou(gt_rles, tr_rles, [0] * len(tr_rles)), dtype=np.float64).reshape(
        len(gt_rles), len(tr_rles))


def _limit_dets(dets: list[tuple], max_dets: int) -> list[tuple]:
    """TAO `_limit_dets_per_image`: keep the `max_dets` highest-scoring detections (stable for ties)."""
    if not max_dets or len(dets) <= max_dets:
        return dets
    return sorted(dets, key=lambda d: d[3], reverse=True)[:max_dets]


def evaluate(gt_json, pred_json, *, progress: bool = True, categories=None, max_detections: int = 300,
             ignore_empty_pred: bool = False) -> dict:
    """BURST exemplar-guided HOTA.

    gt_json / pred_json: path or loaded dict in the BURST format; categories: path to the TAO/BURST category
    JSON (a list, or a dict with "categories"), or the list itself; None falls back to the GT's "categories"
    with a warning. Returns {"HOTA_all", "HOTA_com", "HOTA_unc", "DetA_*", "AssA_*", "LocA_*",
    "num_classes_{all,com,unc}", "per_class": {name: {field: value}}}, all fractions.
    """
    gt, gt_name = _load(gt_json, "GT")
    pred, pred_name = _load(pred_json, "prediction")
    cats = _load_categories(categories, gt, gt_name)
    split = gt.get("split")
    if "split" in pred and pred["split"] != split:
        # format_converter.py asserts the same split
        raise ValueError(f"{pred_name}: split {pred['split']!r} differs from the GT split {split!r}")

    # TAO `merged` categories: ids listed under a category's "merged" are evaluated as that category.
    merge = {m["id"]: c["id"] for c in cats for m in c.get("merged", [])}

    # ---- GT: per sequence, per annotated image: dets (track key, class, rle) in file order --------------------
    gt_seqs: dict[str, dict] = {}
    image_index: dict[tuple, tuple[str, int]] = {}  # (dataset, seq_name, image path) -> (seq id, frame index)
    for seq in gt["sequences"]:
        _check_seq(seq, gt_name)
        sid = str(seq["id"])
        if sid in gt_seqs:
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
                if tcat[tid] in DISTRACTOR_IDS:  # converter skips distractor annotations (raw id)
                    continue
                cls = merge.get(tcat[tid], tcat[tid])
                track_cls[tid] = cls
                dets.append((tid, cls, _rle(seg, h, w, gt_name, f"sequence {sid} frame {img} track {tid}")))
            frames.append(dets)
        gt_seqs[sid] = {"frames": frames, "track_cls": track_cls, "keys": set(tcat), "hw": (h, w),
                        "pred": [[] for _ in frames]}

    # ---- Classes (burst_base): GT track classes in the category file, minus distractors ----------------------
    seen = {c for s in gt_seqs.values() for c in s["track_cls"].values()}
    name_to_id = {c["name"]: int(c["id"]) for c in cats}
    class_names = [c["name"] for c in cats if c["id"] in seen and c["id"] not in DISTRACTOR_IDS]
    class_ids = {name_to_id[n] for n in class_names}

    # ---- Predictions: exemplar-guided conversion (format_converter.py) --------------------------------------
    for seq in pred.get("sequences", []):
        _check_seq(seq, pred_name)
        psid = str(seq["id"])
        for img, segs in zip(seq["annotated_image_paths"], seq["segmentations"]):
            hit = image_index.get((seq["dataset"], seq["seq_name"], img))
            if hit is None or not segs:
                continue  # predictions may cover more frames than the GT annotates
            sid, fi = hit
            if psid not in gt_seqs:
                raise KeyError(f"{pred_name}: sequence id {psid} is not in the GT {gt_name}")
            if sid != psid:
                raise ValueError(f"{pred_name}: sequence id {psid} names image "
                                 f"{seq['dataset']}/{seq['seq_name']}/{img} of GT sequence {sid}")
            g = gt_seqs[sid]
            h, w = g["hw"]
            for key, det in segs.items():
                tid = str(int(key))
                if tid not in g["keys"]:
                    raise KeyError(f"{pred_name}: sequence {sid} ({seq['dataset']}/{seq['seq_name']}) frame {img}: "
                                   f"predicted track id {key!r} is not a GT track id (GT ids {sorted(g['keys'])})")
                if tid not in g["track_cls"]:
                    continue  # GT track is a distractor or never annotated: the converter drops it
                rle = _rle(det, h, w, pred_name, f"sequence {sid} frame {img} track {key}")
                if ignore_empty_pred and mask_utils.area(rle) == 0:
                    continue
                g["pred"][fi].append((tid, g["track_cls"][tid], rle, float(det.get("score", 1.0))))

    # ---- Per (sequence, class) HOTA -----------------------------------------------------------------------
    per_class_seq: dict[int, list[dict]] = defaultdict(list)
    for sid, g in tqdm(gt_seqs.items(), disable=not progress, desc="HOTA (BURST)"):
        steps = []  # (gt dets, pred dets, iou [G, P]) for frames with GT annotations
        for dets, pdets in zip(g["frames"], g["pred"]):
            if not dets:
                continue  # frames without GT annotation are not timesteps of the official evaluation
            pdets = _limit_dets(pdets, max_detections)
            ids = [d[0] for d in pdets]
            if len(set(ids)) != len(ids):
                raise ValueError(f"{pred_name}: sequence {sid} predicts the same track twice in one frame")
            steps.append((dets, pdets, _ious([d[2] for d in dets], [d[2] for d in pdets])))
        for cls in sorted({c for c in g["track_cls"].values() if c in class_ids}):
            gt_ids, tr_ids, sims = [], [], []
            gt_map, tr_map = {}, {}
            for dets, pdets, iou in steps:
                gi = [i for i, d in enumerate(dets) if d[1] == cls]
                pi = [i for i, d in enumerate(pdets) if d[1] == cls]
                gt_ids.append(np.array([gt_map.setdefault(dets[i][0], len(gt_map)) for i in gi], dtype=np.int64))
                tr_ids.append(np.array([tr_map.setdefault(pdets[i][0], len(tr_map)) for i in pi], dtype=np.int64))
                sims.append(iou[np.ix_(gi, pi)])
            per_class_seq[cls].append(hota_sequence(gt_ids, tr_ids, sims, len(gt_map), len(tr_map)))

    # ---- Aggregate (run.py print_results): unweighted class means --------------------------------------------
    per_class = {}
    for name in class_names:
        comb = combine_sequences(per_class_seq.get(name_to_id[name], []))
        per_class[name] = {f: float(np.mean(comb[f])) for f in _REPORT_FIELDS}
    splits = {
        "all": class_names,
        "com": [n for n in class_names if name_to_id[n] in COMMON_IDS],
        "unc": [n for n in class_names if name_to_id[n] not in COMMON_IDS],
    }
    out: dict = {}
    for split_name, names in splits.items():
        for f in ("HOTA", "DetA", "AssA", "LocA"):
            out[f"{f}_{split_name}"] = (float(sum(per_class[n][f] for n in names) / len(names))
                                        if names else float("nan"))
        out[f"num_classes_{split_name}"] = len(names)
    out["per_class"] = per_class
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
