"""VIPSeg-format evaluation: VPQ^k and STQ of a whole split from one pass over its PNGs.

Why a module of its own: on VIPSeg files the two metrics share their expensive part. Each GT and prediction
frame is read once and reduced to a joint histogram (``panoptic_io.pair_counts``) over the video's compact
segment ids (``panoptic_io.SegmentTable``); VPQ (``vpq.vpq_from_counts``, all spans) and STQ
(``stq.vipseg_labels`` + ``stq.stq_sequence``) are both computed from those tables. The scan needs both
metrics, so it sits above ``vpq`` and ``stq``, which stay independent of each other (neither imports the
other); KITTI-STEP, scored by STQ alone, has its own front end in ``stq``.

``scan_video`` scores one video, ``scan_vipseg`` a split (parallel over videos, one video's tables held at a
time); ``evaluate`` is ``gvseg eval --metric vpq`` (VPQ, with ``with_stq=True`` also STQ from the same pass)
and ``evaluate_stq`` STQ alone (``eval_stq_vspw.py``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from gvseg.metrics import panoptic_io as pio
from gvseg.metrics import stq, vpq
from gvseg.metrics.panoptic_io import map_videos, pair_counts
from gvseg.metrics.stq import STQSequence
from gvseg.metrics.vpq import SPANS, PQAccumulator


@dataclass
class VideoResult:
    """What one video contributes: VPQ accumulators per span (empty without VPQ), STQ statistics (or None)."""

    video_id: str
    vpq: dict[int, PQAccumulator] = field(default_factory=dict)
    stq: STQSequence | None = None


def scan_video(
    video: pio.PanopticVideo,
    categories: Sequence[Mapping],
    spans: Sequence[int] = SPANS,
    with_vpq: bool = True,
    with_stq: bool = False,
    stq_num_classes: int = 124,
    stq_ignore_label: int = 255,
    stq_things: Sequence[int] | None = None,
) -> VideoResult:
    """One pass over one video: each GT and prediction PNG is read once; VPQ (all spans) and STQ both come from
    the per-frame intersection tables."""
    gt = pio.segment_table(video.gt_segments, f"GT JSON video {video.video_id!r}", need_area=with_vpq)
    pred = pio.segment_table(video.pred_segments, f"prediction JSON video {video.video_id!r}")
    cat_index = vpq.category_index(categories)
    known = np.isin(pred.cat_first, list(cat_index))
    frames = []
    for f, (gp, pp) in enumerate(zip(video.gt_paths, video.pred_paths)):
        g = pio.read_id_png(gp)
        if not os.path.isfile(pp):
            raise FileNotFoundError(f"{pp}: prediction frame missing (GT frame {gp})")
        p = pio.read_id_png(pp)
        if g.shape != p.shape:
            raise ValueError(f"{pp}: prediction is {p.shape[0]}x{p.shape[1]} but GT {gp} is {g.shape[0]}x{g.shape[1]}")
        gu, pu, n = pair_counts(g, p)
        gi, pi = pio.compact(gt.ids, gu), pio.compact(pred.ids, pu)
        if with_vpq:
            vpq.check_prediction_frame(pi, pu, n, pred, f, known, pp)
        frames.append((gi, pi, n))
    out = VideoResult(video.video_id)
    if with_vpq:
        counts = vpq.dense_counts(frames, gt.num + 1, pred.num + 1)
        out.vpq = vpq.vpq_from_counts(counts, gt, pred, cat_index, spans, f"video {video.video_id!r}")
    if with_stq:
        # eval_stq_vspw.py: things = categories with isthing
        things = stq_things if stq_things is not None else [int(c["id"]) for c in categories if c.get("isthing", 0)]
        gl_tab = stq.vipseg_labels(gt, stq_ignore_label)  # [T, G+1] label per compact id and frame
        pl_tab = stq.vipseg_labels(pred, stq_ignore_label)
        gl = np.concatenate([gl_tab[f, gi] for f, (gi, _, _) in enumerate(frames)]) if frames else np.zeros(0, np.int64)
        pl = np.concatenate([pl_tab[f, pi] for f, (_, pi, _) in enumerate(frames)]) if frames else np.zeros(0, np.int64)
        n = np.concatenate([fr[2] for fr in frames]) if frames else np.zeros(0, np.int64)
        out.stq = stq.stq_sequence(
            gl, pl, n, num_classes=stq_num_classes, things=things, ignore_label=stq_ignore_label,
            length=len(frames), where=f"video {video.video_id!r}",
        )
    return out


def scan_vipseg(
    split: pio.PanopticSplit,
    *,
    spans: Sequence[int] = SPANS,
    with_vpq: bool = True,
    with_stq: bool = False,
    stq_num_classes: int = 124,
    stq_ignore_label: int = 255,
    stq_things: Sequence[int] | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> tuple[dict[int, PQAccumulator], dict[str, STQSequence]]:
    """Run :func:`scan_video` over a split; returns (VPQ accumulators per span, STQ stats per video)."""
    C = len(split.categories)
    accs = {int(n): PQAccumulator.zeros(C) for n in spans}
    seqs: dict[str, STQSequence] = {}
    fn = partial(
        scan_video, categories=split.categories, spans=tuple(spans), with_vpq=with_vpq, with_stq=with_stq,
        stq_num_classes=stq_num_classes, stq_ignore_label=stq_ignore_label, stq_things=stq_things,
    )
    for r in map_videos(fn, split.videos, workers, progress, "VPQ/STQ" if with_stq else "VPQ"):
        for n, a in r.vpq.items():
            accs[n] += a
        if r.stq is not None:
            seqs[r.video_id] = r.stq
    return accs, seqs


def evaluate(
    gt: str | os.PathLike,
    pred: str | os.PathLike,
    *,
    progress: bool = True,
    workers: int | None = None,
    spans: Sequence[int] = SPANS,
    with_stq: bool = False,
    gt_json: str | None = None,
    gt_png_dir: str | None = None,
    pred_json: str | None = None,
    **options,
) -> dict:
    """VPQ of a VIPSeg-format prediction directory against a VIPSeg-format GT (root dir or JSON file).

    ``with_stq=True`` adds the STQ keys (``stq``, ``aq``, ``sq``) from the same single pass."""
    if options:
        raise TypeError(f"vipseg.evaluate: unknown options {sorted(options)}")
    if pio.detect_format(gt) != "vipseg":
        raise ValueError(f"{gt}: VPQ needs VIPSeg-format ground truth (panomasksRGB/ + JSON)")
    split = pio.load_vipseg(gt, pred, gt_json=gt_json, gt_png_dir=gt_png_dir, pred_json=pred_json)
    accs, seqs = scan_vipseg(split, spans=spans, with_stq=with_stq, workers=workers, progress=progress)
    res = vpq.summarize(accs, split.categories)
    res["num_videos"] = len(split.videos)
    if with_stq:
        res.update(stq.stq_result(seqs, num_classes=124, ignore_label=255))
    return res


def evaluate_stq(
    gt: str | os.PathLike,
    pred: str | os.PathLike,
    *,
    progress: bool = True,
    workers: int | None = None,
    num_classes: int | None = None,
    things: Sequence[int] | None = None,
    ignore_label: int = stq.IGNORE_LABEL,
    gt_json: str | None = None,
    gt_png_dir: str | None = None,
    pred_json: str | None = None,
) -> dict:
    """STQ alone of a VIPSeg-format prediction (``eval_stq_vspw.py``), through the same one-pass scan."""
    nc = stq.VIPSEG_NUM_CLASSES if num_classes is None else num_classes
    data = pio.load_vipseg(gt, pred, gt_json=gt_json, gt_png_dir=gt_png_dir, pred_json=pred_json)
    _, seqs = scan_vipseg(data, spans=(), with_vpq=False, with_stq=True, stq_num_classes=nc,
                          stq_ignore_label=ignore_label, stq_things=things, workers=workers, progress=progress)
    res = stq.stq_result(seqs, num_classes=nc, ignore_label=ignore_label)
    res["num_videos"] = len(seqs)
    return res
