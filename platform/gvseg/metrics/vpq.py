"""Video Panoptic Quality VPQ^k, exactly as VIPSeg's ``ClipPanoFCN/eval_vpq_vspw.py`` defines it.

For every span n in ``spans`` (default 1, 2, 4, 6, 8) and every window start 0..T-n of a video, the window's
frames are stacked into tubes and matched (``vpq_compute_single_core``):

- tube IoU = inter / (area_pred + area_gt - inter - |pred ∩ GT void|); TP = same category and IoU > 0.5
  (every such pair counts; no one-to-one enforcement, exactly like the official loop);
- GT area is the JSON ``area`` summed over the frames of the window that list the segment; prediction area
  is its PNG pixel count; a tube's category / iscrowd come from the first frame of the window listing it;
- FN = unmatched non-crowd GT tube; FP = unmatched predicted tube unless more than half of it lies on GT void
  or on the (last-inserted) crowd tube of its category;
- per class PQ = ΣIoU / (TP + FP/2 + FN/2), averaged over the classes with TP+FP+FN > 0 (all / things / stuff).

Quirks kept on purpose: frames of the prediction JSON align with GT frames by position; videos shorter than n
add nothing at span n; GT PNG ids absent from the window's JSON are ignored (neither segments nor void).
Where the official script divides by zero (no class with TP+FP+FN > 0) we return ``nan``.

Scale: PQ/SQ/RQ are in percent, like the script's ``vpq_all = 100 * pq``. Two headline means with explicit
names: ``vpq_mean_12468`` (the script's final ``vpq-final.txt`` number, spans 1,2,4,6,8) and
``vpq_mean_1246`` (VIPSeg paper and GvSeg tables, spans 1,2,4,6).

Speed: the official script re-reads each PNG once per span and window (~18x the reading time). Here each
frame pair is read once; a run-length-encoded ``np.unique`` of the joint (gt, pred) id gives a per-frame
intersection table ``[G+1, P+1]`` (video-level GT ids incl. void + "other", pred ids incl. void + "other"),
and windows of every span are differences of the cumulative table.

Array core: ``vpq_video(gt_ids [T,H,W], gt_segments, pred_ids [T,H,W], pred_segments, categories, spans)``
returns ``{span: PQAccumulator}``; ``vpq_from_counts`` does the same from ready intersection tables;
``summarize`` turns accumulators into the result dict.

Layers: this module holds VPQ alone and imports only ``panoptic_io`` (segment tables, ``pair_counts``). It
never imports ``stq`` nor the reverse; the split runner that reads the PNGs once and feeds both metrics is
``gvseg.metrics.vipseg`` (``vipseg.evaluate`` is ``gvseg eval --metric vpq``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from gvseg.metrics import panoptic_io as pio
from gvseg.metrics.panoptic_io import SegmentTable, compact, pair_counts, segment_table

SPANS = (1, 2, 4, 6, 8)
PAPER_SPANS = (1, 2, 4, 6)  # VIPSeg paper / GvSeg tables
OFFICIAL_SPANS = (1, 2, 4, 6, 8)  # eval_vpq_vspw.py final number
_MAX_WINDOW_ELEMS = 1 << 22  # cap on S*G*P per vectorised chunk (memory)


# ------------------------------------------------------------------------------------------- accumulators


@dataclass
class PQAccumulator:
    """Per-class sums over windows and videos for one span; index = position in the categories list."""

    iou: np.ndarray  # [C] float64 ΣIoU of TPs
    tp: np.ndarray  # [C] int64
    fp: np.ndarray  # [C] int64
    fn: np.ndarray  # [C] int64

    @classmethod
    def zeros(cls, num_classes: int) -> PQAccumulator:
        z = np.zeros(num_classes, np.int64)
        return cls(np.zeros(num_classes, np.float64), z.copy(), z.copy(), z.copy())

    def __iadd__(self, other: PQAccumulator) -> PQAccumulator:
        self.iou += other.iou
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        return self


# ------------------------------------------------------------------------------------------- frame tables


def check_prediction_frame(
    pi: np.ndarray, pu: np.ndarray, n: np.ndarray, pred: SegmentTable, f: int, known_cat: np.ndarray, where: str
) -> None:
    """The sanity checks of ``eval_vpq_vspw.py`` (KeyError there), as ValueError naming the PNG."""
    P = pred.num
    if (pi == P).any():
        bad = sorted(set(pu[pi == P].tolist()))
        raise ValueError(f"{where}: segment ids {bad} are in the PNG but not in the prediction JSON")
    pix = np.bincount(pi, weights=n, minlength=P + 1)[:P]
    listed = pred.listed[f]
    unlisted = (pix > 0) & ~listed & (pred.ids != pio.VOID)
    if unlisted.any():
        raise ValueError(
            f"{where}: segment ids {pred.ids[unlisted].tolist()} are in the PNG but not in this frame's JSON"
        )
    missing = listed & (pix == 0)
    if missing.any():
        raise ValueError(f"{where}: segment ids {pred.ids[missing].tolist()} are in the JSON but not in the PNG")
    unknown = listed & ~known_cat[f]
    if unknown.any():
        raise ValueError(
            f"{where}: segments {pred.ids[unknown].tolist()} have unknown category_id "
            f"{pred.cat_first[f][unknown].tolist()}"
        )


def dense_counts(frames: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], G1: int, P1: int) -> np.ndarray:
    """Per-frame sparse (gt index, pred index, count) -> dense [T, G1, P1] int64."""
    out = np.zeros((len(frames), G1 * P1), np.int64)
    for f, (gi, pi, n) in enumerate(frames):
        np.add.at(out[f], gi * P1 + pi, n)
    return out.reshape(len(frames), G1, P1)


# ------------------------------------------------------------------------------------------- VPQ core


def category_index(categories: Sequence[Mapping]) -> dict[int, int]:
    return {int(c["id"]): k for k, c in enumerate(categories)}


def _cat_positions(cats: np.ndarray, cat_index: Mapping[int, int], unknown: int) -> np.ndarray:
    """category ids -> positions in the categories list; unknown/unlisted -> ``unknown``."""
    lut = {**{c: unknown for c in np.unique(cats).tolist()}, **cat_index}
    flat = np.array([lut[c] for c in cats.ravel().tolist()], np.int64)
    return flat.reshape(cats.shape)


def _next_listed(listed: np.ndarray) -> np.ndarray:
    """[T, N] bool -> [T+1, N] int64: first frame >= t that lists the segment (T if none)."""
    T, N = listed.shape
    nxt = np.full((T + 1, N), T, np.int64)
    for t in range(T - 1, -1, -1):
        nxt[t] = np.where(listed[t], t, nxt[t + 1])
    return nxt


def vpq_from_counts(
    counts: np.ndarray,
    gt: SegmentTable,
    pred: SegmentTable,
    cat_index: Mapping[int, int],
    spans: Iterable[int] = SPANS,
    where: str = "",
) -> dict[int, PQAccumulator]:
    """VPQ accumulators of one video from its per-frame intersection tables.

    counts: [T, G+1, P+1] int64, rows = ``gt.ids`` + "other", cols = ``pred.ids`` + "other"."""
    T, G1, P1 = counts.shape
    G, P = G1 - 1, P1 - 1
    C = len(cat_index)
    gcat_all = _cat_positions(gt.cat_first, cat_index, C)  # [T, G]  unknown GT categories -> slot C
    pcat_all = _cat_positions(pred.cat_first, cat_index, C)  # [T, P]  (validated known where listed)
    cum = np.zeros((T + 1, G1, P1), np.int64)
    np.cumsum(counts, axis=0, out=cum[1:])
    garea_cum = np.concatenate([np.zeros((1, G), np.int64), np.cumsum(gt.area, 0)])  # [T+1, G] JSON area
    parea_cum = cum[:, :, :P].sum(1)  # [T+1, P] PNG pixel count
    gnext, pnext = _next_listed(gt.listed), _next_listed(pred.listed)
    void = gt.void_index
    g_ar, p_ar = np.arange(G), np.arange(P)

    out = {}
    for n in spans:
        acc = PQAccumulator.zeros(C + 1)
        S = T - n + 1  # window starts 0..T-n; none when the video is shorter than n
        chunk = max(1, _MAX_WINDOW_ELEMS // max(1, G1 * P1))
        for s0 in range(0, max(S, 0), chunk):
            s = np.arange(s0, min(S, s0 + chunk))
            e = s + n
            inter_all = cum[e] - cum[s]  # [S, G1, P1]
            inter = inter_all[:, :G, :P]  # [S, G, P]
            void_inter = inter_all[:, void, :P]  # [S, P]  |pred ∩ GT void|
            # tube properties from the first frame of the window listing the segment
            gf0, pf0 = gnext[s], pnext[s]  # [S, G], [S, P]
            gpres, ppres = gf0 < e[:, None], pf0 < e[:, None]
            gf0c, pf0c = np.minimum(gf0, T - 1), np.minimum(pf0, T - 1)
            gcat = np.where(gpres, gcat_all[gf0c, g_ar], C)
            pcat = np.where(ppres, pcat_all[pf0c, p_ar], C)
            gcrowd = gpres & gt.crowd[gf0c, g_ar]
            garea = garea_cum[e] - garea_cum[s]  # [S, G]
            parea = parea_cum[e] - parea_cum[s]  # [S, P]

            valid = (inter > 0) & gpres[:, :, None] & ppres[:, None, :] & ~gcrowd[:, :, None]
            valid &= gcat[:, :, None] == pcat[:, None, :]
            union = parea[:, None, :] + garea[:, :, None] - inter - void_inter[:, None, :]
            if (valid & (union == 0)).any():
                raise ValueError(f"{where}: tube union is 0 (GT JSON 'area' smaller than the PNG)")
            iou = np.zeros(inter.shape, np.float64)
            np.divide(inter, union, out=iou, where=valid)
            if (iou > 1.0).any():  # eval_vpq_vspw.py: assert iou <= 1.0
                raise ValueError(f"{where}: tube IoU > 1 (GT JSON 'area' smaller than the PNG pixel count)")
            tp = valid & (iou > 0.5)
            tp_cat = np.broadcast_to(gcat[:, :, None], tp.shape)[tp]
            acc.tp += np.bincount(tp_cat, minlength=C + 1)
            acc.iou += np.bincount(tp_cat, weights=iou[tp], minlength=C + 1)
            gmatched, pmatched = tp.any(2), tp.any(1)

            fn = gpres & ~gmatched & ~gcrowd
            acc.fn += np.bincount(gcat[fn], minlength=C + 1)

            ignored = void_inter.astype(np.float64)
            if gcrowd.any():
                ignored = ignored + _crowd_overlap(inter, gcrowd, gcat, pcat, gf0c, s, gt.order, g_ar)
            with np.errstate(divide="ignore", invalid="ignore"):
                frac = ignored / parea
            fp = ppres & ~pmatched & ~(frac > 0.5)
            acc.fp += np.bincount(pcat[fp], minlength=C + 1)
        out[int(n)] = PQAccumulator(acc.iou[:C], acc.tp[:C], acc.fp[:C], acc.fn[:C])
    return out


def _crowd_overlap(inter, gcrowd, gcat, pcat, gf0c, s, order, g_ar) -> np.ndarray:
    """|pred ∩ crowd tube of the pred's category| per window; rare (VIPSeg has no crowd), so a small loop.

    eval_vpq_vspw.py keeps one crowd tube per category: the last one inserted into the window's dict, i.e.
    the largest (first listing frame, position in that frame's JSON)."""
    out = np.zeros(gcat.shape[:1] + inter.shape[2:], np.float64)  # [S, P]
    for w in np.nonzero(gcrowd.any(1))[0]:
        gs = np.nonzero(gcrowd[w])[0]
        rank = (gf0c[w, gs] - s[w]) * (1 << 32) + order[gf0c[w, gs], gs]
        last = {}
        for g in gs[np.argsort(rank, kind="stable")]:
            last[int(gcat[w, g])] = g
        for p in range(inter.shape[2]):
            g = last.get(int(pcat[w, p]))
            if g is not None:
                out[w, p] = inter[w, g, p]
    return out


def vpq_video(
    gt_ids: np.ndarray,
    gt_segments: Sequence[Sequence[Mapping]],
    pred_ids: np.ndarray,
    pred_segments: Sequence[Sequence[Mapping]],
    categories: Sequence[Mapping],
    spans: Iterable[int] = SPANS,
    where: str = "video",
) -> dict[int, PQAccumulator]:
    """Array core: gt_ids/pred_ids [T, H, W] non-negative integer ids (< 2^32), per-frame segments_info."""
    gt_ids, pred_ids = np.asarray(gt_ids), np.asarray(pred_ids)
    if gt_ids.shape != pred_ids.shape or gt_ids.ndim != 3:
        raise ValueError(f"{where}: gt {gt_ids.shape} and pred {pred_ids.shape} must be equal [T, H, W]")
    if not (len(gt_segments) == len(pred_segments) == len(gt_ids)):
        raise ValueError(f"{where}: {len(gt_ids)} frames but {len(gt_segments)}/{len(pred_segments)} segment lists")
    for a in (gt_ids, pred_ids):
        if a.size and (a.min() < 0 or a.max() >= (1 << 32)):
            raise ValueError(f"{where}: ids must lie in [0, 2^32)")
    gt = segment_table(gt_segments, where, need_area=True)
    pred = segment_table(pred_segments, where)
    cat_index = category_index(categories)
    known = np.isin(pred.cat_first, list(cat_index))
    frames = []
    for f in range(len(gt_ids)):
        gu, pu, n = pair_counts(gt_ids[f], pred_ids[f])
        gi, pi = compact(gt.ids, gu), compact(pred.ids, pu)
        check_prediction_frame(pi, pu, n, pred, f, known, f"{where} frame {f}")
        frames.append((gi, pi, n))
    counts = dense_counts(frames, gt.num + 1, pred.num + 1)
    return vpq_from_counts(counts, gt, pred, cat_index, spans, where)


# ------------------------------------------------------------------------------------------- summary


def pq_average(acc: PQAccumulator, categories: Sequence[Mapping], isthing: bool | None):
    """``PQStat.pq_average``: mean over classes with TP+FP+FN > 0 (nan where the script divides by 0)."""
    pq = sq = rq = 0.0
    n = 0
    per_class = {}
    for k, c in enumerate(categories):
        if isthing is not None and (c.get("isthing", 0) == 1) != isthing:
            continue
        iou, tp, fp, fn = float(acc.iou[k]), int(acc.tp[k]), int(acc.fp[k]), int(acc.fn[k])
        if tp + fp + fn == 0:
            per_class[int(c["id"])] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "iou": 0.0, "tp": 0, "fp": 0, "fn": 0}
            continue
        n += 1
        pq_c = iou / (tp + 0.5 * fp + 0.5 * fn)
        sq_c = iou / tp if tp != 0 else 0
        rq_c = tp / (tp + 0.5 * fp + 0.5 * fn)
        per_class[int(c["id"])] = {"pq": pq_c, "sq": sq_c, "rq": rq_c, "iou": iou, "tp": tp, "fp": fp, "fn": fn}
        pq += pq_c
        sq += sq_c
        rq += rq_c
    nan = float("nan")
    avg = {"pq": pq / n if n else nan, "sq": sq / n if n else nan, "rq": rq / n if n else nan, "n": n}
    return avg, per_class


def summarize(accs: Mapping[int, PQAccumulator], categories: Sequence[Mapping]) -> dict:
    """Accumulators per span -> result dict (percent). Keys: ``vpq_mean_1246``, ``vpq_mean_12468`` (+ ``_thing``
    / ``_stuff``), ``vpq_<n>``/``vpq_<n>_thing``/``vpq_<n>_stuff`` per span, ``spans`` (PQ/SQ/RQ/n per split)
    and ``per_class`` (per span, per category id: pq/sq/rq in percent, iou sum, tp/fp/fn)."""
    res: dict = {}
    spans_out: dict = {}
    per_class_out: dict = {}
    for n, acc in accs.items():
        split = {}
        for name, isthing in (("all", None), ("things", True), ("stuff", False)):
            avg, per_class = pq_average(acc, categories, isthing)
            split[name] = {"pq": 100 * avg["pq"], "sq": 100 * avg["sq"], "rq": 100 * avg["rq"], "n": avg["n"]}
            if isthing is None:
                names = {int(c["id"]): c.get("name", str(c["id"])) for c in categories}
                per_class_out[str(n)] = {
                    str(cid): {"name": names[cid], **{k: (100 * v if k in ("pq", "sq", "rq") else v)
                                                      for k, v in r.items()}}
                    for cid, r in per_class.items()
                }
        spans_out[str(n)] = split
        res[f"vpq_{n}"] = split["all"]["pq"]
        res[f"vpq_{n}_thing"] = split["things"]["pq"]
        res[f"vpq_{n}_stuff"] = split["stuff"]["pq"]
    for tag, want in (("1246", PAPER_SPANS), ("12468", OFFICIAL_SPANS)):
        if all(n in accs for n in want):
            for suffix, key in (("", "all"), ("_thing", "things"), ("_stuff", "stuff")):
                vals = [spans_out[str(n)][key]["pq"] for n in want]
                res[f"vpq{suffix}_mean_{tag}"] = sum(vals) / len(vals)
    res["spans"] = spans_out
    res["per_class"] = per_class_out
    return res
