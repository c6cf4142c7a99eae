"""Segmentation and Tracking Quality STQ = sqrt(AQ * SQ), as deeplab2's numpy ``STQuality`` computes it.

Two front ends feed the same core:

- **VIPSeg** (``eval_stq_vspw.py``): per frame, semantic = instance = 255 everywhere, then every JSON segment
  of the frame writes its ``category_id`` (last listing wins) and a per-video instance index = order of first
  appearance of its id in the video's ``segments_info`` lists (stuff included, from 0). label =
  (semantic << 16) + instance, 124 classes, ignore 255, things = categories with ``isthing``. Prediction
  pixels with id 0 or an id missing from the JSON become semantic 255: a false negative for the GT class.
- **KITTI-STEP** (deeplab2 numpy, whole frames): semantic = R (trainId, 255 void), instance = G*256 + B,
  19 classes, things = person (11) and car (13); void is not masked beforehand.

Core (``STQuality.update_state`` / ``result``), per sequence:

- Crowd: GT pixels of a thing class with instance 0 leave the association term, for GT and prediction.
- AQ_seq = Σ_g (1/|g|) Σ_p TPA(p,g) * IoU(p,g) over GT thing tubes g (key = full label) and predicted thing
  tubes p (class-agnostic among things); |p| counts every non-crowd pixel of p, GT void/stuff included.
- AQ = Σ_seq AQ_seq / total number of GT tubes (not a mean of per-sequence AQ).
- SQ = IoU over the dataset-wide confusion matrix ([C+1, C+1], ignore mapped to C, its GT row removed);
  the mean runs over every entry with union > 0, which includes the ignore *column* whenever a prediction
  leaves valid GT pixels unlabelled (it then adds a class with IoU 0: official behaviour, kept).
- Counts are int64 (deeplab2's current numpy version accumulates float32/float64 and drifts ~2e-8).

Arrays: ``stq_sequence(gt_label [K], pred_label [K], count [K], ...)`` takes a sparse joint histogram of a
whole sequence (labels int64); ``stq_video(gt_labels [T,H,W], pred_labels [T,H,W], ...)`` builds it from dense
label maps. ``stq_result`` merges sequences. STQ/AQ/SQ are fractions in [0, 1] (the script prints them so).
An empty split (no GT tube) gives AQ = 0, as deeplab2 (division by max(0, 1e-15)).

Layers: the shared per-frame counting (``pair_counts``, ``map_videos``) and the segment tables live in
``panoptic_io``, the only module this one imports; it holds the core and the KITTI-STEP front end
(``evaluate``). VIPSeg's labels are built here (``vipseg_labels``) but scanned by ``vipseg.scan_vipseg`` in one
pass with VPQ (``vipseg.evaluate_stq``); ``vpq`` and this module never import each other.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from gvseg.metrics import panoptic_io as pio
from gvseg.metrics.panoptic_io import map_videos, pair_counts

VIPSEG_NUM_CLASSES = 124  # eval_stq_vspw.py: n_classes = 124
KITTI_STEP_NUM_CLASSES = 19
KITTI_STEP_THINGS = (11, 13)  # person, car (deeplab2 / STEP); Video K-Net's 11..18 differs
IGNORE_LABEL = 255
BIT_SHIFT = 16
OFFSET = 1 << 24  # eval_stq_vspw.py passes 2**24; any value > max label gives the same numbers
_EPS = 1e-15


@dataclass
class STQSequence:
    """Sufficient statistics of one sequence."""

    confusion: np.ndarray  # [M, M] int64 semantic confusion (rows GT, cols prediction), M = C+1 if ignore >= C
    aq_sum: float  # Σ_g (1/|g|) Σ_p TPA * IoU
    num_tubes: int  # GT thing tubes (non-crowd)
    length: int  # frames


def _matrix_size(num_classes: int, ignore_label: int) -> tuple[int, np.ndarray]:
    if ignore_label >= num_classes:
        return num_classes + 1, np.arange(num_classes)
    return num_classes, np.array([i for i in range(num_classes) if i != ignore_label])


def stq_sequence(
    gt_label: np.ndarray,
    pred_label: np.ndarray,
    count: np.ndarray,
    *,
    num_classes: int,
    things: Sequence[int],
    ignore_label: int = IGNORE_LABEL,
    bit_shift: int = BIT_SHIFT,
    length: int = 0,
    where: str = "sequence",
) -> STQSequence:
    """Statistics of one sequence from its joint histogram: ``count[k]`` pixels have GT label ``gt_label[k]``
    and predicted label ``pred_label[k]`` (labels = (semantic << bit_shift) + instance; repeats allowed)."""
    gl = np.asarray(gt_label, np.int64).ravel()
    pl = np.asarray(pred_label, np.int64).ravel()
    n = np.asarray(count, np.int64).ravel()
    size, _ = _matrix_size(num_classes, ignore_label)
    sem_g, sem_p = gl >> bit_shift, pl >> bit_shift
    if ignore_label > num_classes:  # deeplab2 maps the ignore value to index num_classes
        sem_g = np.where(sem_g == ignore_label, num_classes, sem_g)
        sem_p = np.where(sem_p == ignore_label, num_classes, sem_p)
    for name, sem in (("ground-truth", sem_g), ("predicted", sem_p)):
        bad = (sem < 0) | (sem >= size)
        if bad.any():
            raise ValueError(
                f"{where}: {name} semantic classes {sorted(set(sem[bad].tolist()))[:10]} are outside "
                f"0..{num_classes - 1} and not the ignore label {ignore_label}"
            )
    confusion = np.zeros(size * size, np.int64)
    np.add.at(confusion, sem_g * size + sem_p, n)

    things_arr = np.asarray(list(things), np.int64)
    thing_g, thing_p = np.isin(sem_g, things_arr), np.isin(sem_p, things_arr)
    crowd = thing_g & ((gl & ((1 << bit_shift) - 1)) == 0)  # instance 0 of a thing class
    lmask, pmask = thing_g & ~crowd, thing_p & ~crowd

    gkeys, ginv = np.unique(gl[lmask], return_inverse=True)
    gsize = np.bincount(ginv, weights=n[lmask], minlength=len(gkeys)).astype(np.int64)
    pkeys, pinv = np.unique(pl[pmask], return_inverse=True)
    psize = np.bincount(pinv, weights=n[pmask], minlength=len(pkeys)).astype(np.int64)
    both = lmask & pmask
    pair = gl[both] * OFFSET + pl[both]
    pkey_u, pair_inv = np.unique(pair, return_inverse=True)
    tpa = np.bincount(pair_inv, weights=n[both], minlength=len(pkey_u)).astype(np.int64)
    gi = np.searchsorted(gkeys, pkey_u // OFFSET)
    pi = np.searchsorted(pkeys, pkey_u % OFFSET)
    # deeplab2: tpa * (tpa / (tpa + fpa + fna)) with fpa = |p| - tpa, fna = |g| - tpa
    union = tpa + (psize[pi] - tpa) + (gsize[gi] - tpa)
    inner = np.bincount(gi, weights=tpa * (tpa / np.maximum(union, 1)), minlength=len(gkeys))
    aq_sum = float(np.sum((1.0 / np.maximum(gsize, 1)) * inner)) if len(gkeys) else 0.0
    return STQSequence(confusion.reshape(size, size), aq_sum, int(len(gkeys)), int(length))


def stq_result(
    seqs: Mapping[str, STQSequence], *, num_classes: int, ignore_label: int = IGNORE_LABEL
) -> dict:
    """``STQuality.result``: {'stq', 'aq', 'sq', 'num_tubes', 'per_class_iou', 'per_sequence'}."""
    size, include = _matrix_size(num_classes, ignore_label)
    removal = np.zeros((size, size), np.int64)
    removal[include, :] = 1  # drop the GT-ignore row: pixels with void GT never count
    total = np.zeros((size, size), np.int64)
    per_seq = {}
    tubes = [s.num_tubes for s in seqs.values()]
    aq_sums = [s.aq_sum for s in seqs.values()]
    for sid, s in seqs.items():
        conf = s.confusion * removal
        total += conf
        sq_s = _miou(conf)[0]
        aq_s = s.aq_sum / max(s.num_tubes, _EPS)
        per_seq[str(sid)] = {"stq": float(np.sqrt(aq_s * sq_s)), "aq": float(aq_s), "sq": float(sq_s),
                             "length": s.length, "num_tubes": s.num_tubes}
    aq = float(np.sum(aq_sums) / max(np.sum(tubes), _EPS)) if seqs else 0.0
    sq, ious, unions = _miou(total)
    per_class = {str(c): float(ious[c]) for c in range(size) if unions[c] > 0}
    return {"stq": float(np.sqrt(aq * sq)), "aq": aq, "sq": float(sq), "num_tubes": int(np.sum(tubes)),
            "per_class_iou": per_class, "per_sequence": per_seq}


def _miou(conf: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    inter = conf.diagonal()
    fps = conf.sum(0) - inter
    fns = conf.sum(1) - inter
    unions = inter + fps + fns
    ious = inter.astype(np.float64) / np.maximum(unions, _EPS)
    k = np.count_nonzero(unions)
    return (float(np.sum(ious) / k) if k else float("nan")), ious, unions


# ------------------------------------------------------------------------------------------- front ends


def vipseg_labels(table: pio.SegmentTable, ignore: int = IGNORE_LABEL) -> np.ndarray:
    """eval_stq_vspw.py label per (frame, compact id) of a ``panoptic_io.SegmentTable``: [T, N+1] int64.

    Listed in the frame -> (category << 16) + video first-appearance index; otherwise (255 << 16) + 255. The
    last column is the "other" bucket (ids in no JSON of the video)."""
    T, N = table.listed.shape
    if table.inst.max(initial=0) >= (1 << BIT_SHIFT):
        raise ValueError("STQ: more than 65536 segments in one video overflow the 16-bit instance field")
    void = (255 << BIT_SHIFT) + 255
    lab = np.full((T, N + 1), void, np.int64)
    lab[:, :N] = np.where(table.listed, (table.cat_last << BIT_SHIFT) + table.inst[None, :], void)
    return lab


def stq_video(
    gt_labels: np.ndarray,
    pred_labels: np.ndarray,
    *,
    num_classes: int,
    things: Sequence[int],
    ignore_label: int = IGNORE_LABEL,
    bit_shift: int = BIT_SHIFT,
    where: str = "video",
) -> STQSequence:
    """Array core: dense label maps [T, H, W] (non-negative ints < 2^32) -> sequence statistics."""
    gt_labels, pred_labels = np.asarray(gt_labels), np.asarray(pred_labels)
    if gt_labels.shape != pred_labels.shape or gt_labels.ndim != 3:
        raise ValueError(f"{where}: gt {gt_labels.shape} and pred {pred_labels.shape} must be equal [T, H, W]")
    parts = [pair_counts(g, p) for g, p in zip(gt_labels, pred_labels)]
    cat = (lambda i: np.concatenate([q[i] for q in parts]) if parts else np.zeros(0, np.int64))
    return stq_sequence(cat(0), cat(1), cat(2), num_classes=num_classes, things=things,
                        ignore_label=ignore_label, bit_shift=bit_shift, length=len(parts), where=where)


def kitti_step_sequence(
    seq: pio.KittiStepSequence, *, num_classes: int, things: Sequence[int], ignore_label: int
) -> tuple[str, STQSequence]:
    """One KITTI-STEP sequence: whole frames, labels (R << 16) + G*256 + B for GT and prediction."""
    gls, pls, ns = [], [], []
    for gp, pp in zip(seq.gt_paths, seq.pred_paths):
        g, p = pio.read_id_png(gp), pio.read_id_png(pp)
        if g.shape != p.shape:
            raise ValueError(f"{pp}: prediction is {p.shape[0]}x{p.shape[1]} but GT {gp} is {g.shape[0]}x{g.shape[1]}")
        gu, pu, n = pair_counts(g, p)
        gls.append(pio.kitti_step_label(gu))
        pls.append(pio.kitti_step_label(pu))
        ns.append(n)
    st = stq_sequence(np.concatenate(gls), np.concatenate(pls), np.concatenate(ns), num_classes=num_classes,
                      things=things, ignore_label=ignore_label, length=len(ns), where=f"sequence {seq.seq_id}")
    return seq.seq_id, st


def evaluate(
    gt: str | os.PathLike,
    pred: str | os.PathLike,
    *,
    progress: bool = True,
    workers: int | None = None,
    dataset: str | None = None,
    num_classes: int | None = None,
    things: Sequence[int] | None = None,
    ignore_label: int = IGNORE_LABEL,
    split: str = "val",
) -> dict:
    """STQ of a KITTI-STEP prediction directory: ``gt`` = folder of ``<seq>/<frame>.png`` (or root with
    panoptic_maps/<split>/), ``pred`` alike. VIPSeg's STQ comes from the joint one-pass scan,
    ``gvseg.metrics.vipseg.evaluate_stq`` (``gvseg eval --metric stq`` picks by the GT layout)."""
    fmt = (dataset or pio.detect_format(gt)).lower().replace("_", "-")
    if fmt != "kitti-step":
        raise ValueError(f"{gt}: stq.evaluate scores KITTI-STEP; for {fmt!r} use gvseg.metrics.vipseg.evaluate_stq")
    nc = KITTI_STEP_NUM_CLASSES if num_classes is None else num_classes
    th = KITTI_STEP_THINGS if things is None else tuple(things)
    sequences = pio.load_kitti_step(gt, pred, split=split)
    fn = partial(kitti_step_sequence, num_classes=nc, things=th, ignore_label=ignore_label)
    seqs = dict(map_videos(fn, sequences, workers, progress, "STQ"))
    res = stq_result(seqs, num_classes=nc, ignore_label=ignore_label)
    res["num_videos"] = len(seqs)
    return res
