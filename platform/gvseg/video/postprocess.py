"""Per-task post-processing of ONE clip's outputs (batch element ``b``), frame by frame at output resolution,
plus the video-level VIS selection.

The clip functions take the model's class logits ``pred_logits [Q, C+1]`` (index C = no object) and mask logits
``pred_masks [Q, T, h4, w4]`` of one clip, an output size ``(H, W)`` and optionally ``allowed [Q, C]`` (the
query-type gate, :func:`allowed_classes`). Mask logits are bilinearly upsampled **one frame at a time and only
for the queries still in play** (never [Q, T, H, W] at once: 100 queries x 3 frames at 720p is 1.1 GB). Results
stay on the input device; callers move them off (``gvseg.video.stream`` does, per clip).

* :func:`allowed_classes`   the query-type gate: which real classes each query may produce (thing-only grid
  queries, one-class bank queries). Disallowed logits are set to -inf before every softmax below.
* :func:`instance_results`  VIS, one clip: the gated class probabilities [N, C] of the queries the tracker
  kept, their binary masks (sigmoid > ``mask_threshold``; MinVIS ``pred_masks > 0``) and per-frame mask scores
  (mean sigmoid inside the mask; Mask2Former ``instance_inference``). No score threshold, no label choice:
  labels are chosen per video.
* :func:`vis_topk`          VIS, one video: the ``k`` best (track, class) pairs over all tracks x classes
  (MinVIS / Mask2Former-VIS ``inference_video``); one track may appear with several classes.
* :func:`semantic_maps`     VSS: Mask2Former ``semantic_inference``, per pixel argmax over classes of
  ``sum_q p(c|q) * sigmoid(m_q)`` -> [T, H, W] int64, never void.
* :func:`panoptic_maps`     VPS: Mask2Former ``panoptic_inference`` over the clip (see its docstring); stuff
  of one class is one segment; void where nothing holds. :func:`vss_maps` picks VSS's rule by config.
* :func:`exemplar_maps`     EVS: each exemplar query's mask; a pixel goes to the most confident exemplar
  whose probability > 0.5, else background. Objects are blanked before their first frame. -> query map.
Empty inputs (Q = 0, nothing above threshold) give all-void maps / empty results, never errors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gvseg.config import PostprocessConfig
from gvseg.structures import QUERY_ANY, QUERY_EXEMPLAR, QUERY_STUFF, QUERY_THING


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, h, w] mask logits -> [N, H, W] (bilinear). N = 0 is fine."""
    if logits.shape[0] == 0:
        return logits.new_zeros(0, *size)
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)[0]


# ------------------------------------------------------------------------------------------- classes


def allowed_classes(out: dict, num_classes: int, num_thing_classes: int) -> torch.Tensor | None:
    """The query-type gate at inference, the same as the matcher's in training (``QueryMeta``): [Q, C] bool,
    True where query q may produce real class c; None (everything allowed) when the model emits no
    ``query_kind``. THING (grid) queries: thing classes [0, num_thing_classes) only; STUFF (class-bank)
    queries: their ``query_class`` only (any stuff class when it is -1); ANY and EXEMPLAR: every class. The
    no-object column is never gated, so it is not in the result."""
    kind = out.get("query_kind")
    if kind is None:
        return None
    if kind.dim() != 1:
        raise ValueError(f"allowed_classes: query_kind must be [Q], got shape {tuple(kind.shape)}")
    known = torch.tensor([QUERY_ANY, QUERY_THING, QUERY_STUFF, QUERY_EXEMPLAR], device=kind.device)
    bad = ~torch.isin(kind, known)
    if bad.any():
        raise ValueError(f"allowed_classes: unknown query_kind values {kind[bad].unique().tolist()}")
    c = torch.arange(num_classes, device=kind.device)  # [C]
    cls = out["query_class"].to(kind.device)[:, None]  # [Q, 1]
    thing = (c < num_thing_classes)[None]  # [1, C]
    stuff = torch.where(cls >= 0, cls == c[None], ~thing)  # [Q, C]
    k = kind[:, None]
    return torch.where(k == QUERY_THING, thing.expand_as(stuff), torch.where(k == QUERY_STUFF, stuff, torch.ones_like(stuff)))


def class_probs(logits: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """[Q, C+1] logits -> [Q, C+1] probabilities (softmax over C+1), disallowed real classes at exactly 0."""
    logits = logits.float()
    if allowed is not None:
        gate = torch.cat([allowed, allowed.new_ones(allowed.shape[0], 1)], 1)  # no-object always allowed
        logits = logits.masked_fill(~gate, float("-inf"))
    return logits.softmax(-1)


def class_scores(logits: torch.Tensor, allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """[Q, C+1] -> best real class (scores [Q], labels [Q]); the no-object column is excluded."""
    probs = class_probs(logits, allowed)[:, :-1]
    if probs.shape[0] == 0:
        return probs.new_zeros(0), torch.zeros(0, dtype=torch.long, device=probs.device)
    return probs.max(-1)


# ----------------------------------------------------------------------------------------------- VIS


@dataclass
class InstanceResult:
    query_idx: torch.Tensor  # [N] int64, into the clip's queries
    probs: torch.Tensor  # [N, C] float, gated class probabilities (no-object excluded)
    masks: list[torch.Tensor]  # T x [N, H, W] bool
    mask_scores: torch.Tensor  # [T, N] float, mean sigmoid inside each frame's mask (0 where it is empty)


def instance_results(logits: torch.Tensor, masks: torch.Tensor, size: tuple[int, int], keep: torch.Tensor,
                     allowed: torch.Tensor | None = None, mask_threshold: float = 0.5) -> InstanceResult:
    """VIS, one clip: the queries in ``keep`` [Q] bool (the tracked ones), in query order.

    No score threshold and no label choice here: both belong to the whole video (:func:`vis_topk`), so a
    query that is weak in one clip still contributes its masks and probabilities to its track."""
    idx = keep.nonzero().flatten()  # [N]
    probs = class_probs(logits, allowed)[idx, :-1]  # [N, C]
    frames, scores = [], []
    for f in range(masks.shape[1]):  # full resolution, one frame at a time
        p = upsample(masks[idx, f], size).sigmoid()  # [N, H, W]
        m = p > mask_threshold  # MinVIS: pred_masks > 0
        area = m.flatten(1).sum(1)  # [N]
        scores.append((p * m).flatten(1).sum(1) / area.clamp(min=1))  # Mask2Former instance_inference
        frames.append(m)
    ms = torch.stack(scores) if scores else probs.new_zeros(0, idx.numel())
    return InstanceResult(idx, probs, frames, ms)


def _score_class_x_mask(probs: torch.Tensor, mask_scores: torch.Tensor) -> torch.Tensor:
    return probs * mask_scores[:, None]  # Mask2Former instance_inference


def _score_class(probs: torch.Tensor, mask_scores: torch.Tensor) -> torch.Tensor:
    return probs  # MinVIS / Mask2Former-VIS inference_video


VIS_SCORES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "class_x_mask": _score_class_x_mask,
    "class": _score_class,
}


def vis_topk(track_ids: Sequence[int] | torch.Tensor, probs, mask_scores, k: int = 10,
             score: str = "class_x_mask") -> list[tuple[int, int, float]]:
    """VIS, one video: the ``k`` best (track, class) pairs -> ``[(track_id, class, score)]``, best first.

    ``probs`` [N, C]: each track's class probabilities (mean over the frames it appears in); ``mask_scores``
    [N]: its mask score. Top-k runs over all N x C pairs at once (MinVIS / Mask2Former-VIS), so one track may
    appear with several classes and a strong track may fill several of the k slots. Pairs scoring 0 (a class
    the query-type gate forbids) are never emitted; ties go to the lower track row, then the lower class."""
    if score not in VIS_SCORES:
        raise ValueError(f"vis_topk: score={score!r}: expected one of {sorted(VIS_SCORES)}")
    ids = torch.as_tensor(track_ids, dtype=torch.long).flatten()  # [N]
    probs = torch.as_tensor(probs, dtype=torch.float64)  # [N, C]
    n = ids.numel()
    if n == 0 or probs.numel() == 0 or k <= 0:
        return []
    s = VIS_SCORES[score](probs.view(n, -1), torch.as_tensor(mask_scores, dtype=torch.float64).view(n))  # [N, C]
    flat = s.flatten()  # [N*C], row-major: pair i = (track i // C, class i % C)
    order = torch.argsort(-flat, stable=True)[:k]  # stable: deterministic ties
    order = order[flat[order] > 0]
    c = s.shape[1]
    return [(int(ids[i // c]), int(i % c), float(flat[i])) for i in order.tolist()]


# ----------------------------------------------------------------------------------------------- VSS


def semantic_maps(logits: torch.Tensor, masks: torch.Tensor, size: tuple[int, int],
                  allowed: torch.Tensor | None = None) -> torch.Tensor:
    """VSS: [T, H, W] int64 class map (Mask2Former ``semantic_inference``); Q = 0 gives all zeros."""
    t = masks.shape[1]
    if masks.shape[0] == 0:
        return torch.zeros(t, *size, dtype=torch.long, device=masks.device)
    probs = class_probs(logits, allowed)[:, :-1]  # [Q, C]
    out = []
    for f in range(t):
        m = upsample(masks[:, f], size).sigmoid()  # [Q, H, W]
        out.append(torch.einsum("qc,qhw->chw", probs, m).argmax(0))  # [H, W]
    return torch.stack(out)


# ----------------------------------------------------------------------------------------------- VPS


@dataclass
class PanopticResult:
    segment_map: torch.Tensor  # [T, H, W] int64: segment index, -1 = void
    query_idx: torch.Tensor  # [S] each segment's query (merged stuff: its highest-scoring query)
    labels: torch.Tensor  # [S] int64
    scores: torch.Tensor  # [S] float
    isthing: torch.Tensor  # [S] bool

    def label_map(self) -> torch.Tensor:
        """[T, H, W] int64 class map, -1 = void."""
        lut = torch.cat([self.labels, self.labels.new_full((1,), -1)])  # segment -1 -> void
        return lut[self.segment_map]


def panoptic_maps(logits: torch.Tensor, masks: torch.Tensor, size: tuple[int, int], num_thing_classes: int,
                  allowed: torch.Tensor | None = None, object_mask_threshold: float = 0.8,
                  overlap_threshold: float = 0.8, mask_threshold: float = 0.5) -> PanopticResult:
    """VPS: Mask2Former ``panoptic_inference`` on a clip of T frames.

    1. Softmax over C+1 (gated): a query is a candidate only if its argmax is **not** no-object and that
       score > ``object_mask_threshold``.
    2. Each pixel goes to the candidate with the largest ``score * sigmoid(mask)``, and is kept for it only
       where that candidate's sigmoid >= ``mask_threshold``; elsewhere it is void.
    3. A candidate keeps its segment only if the pixels it wins are >= ``overlap_threshold`` of its own mask
       (sigmoid >= ``mask_threshold``); pixels won by a dropped candidate stay void (not reassigned).
    4. Stuff candidates (label >= ``num_thing_classes``) of one class are one segment; thing candidates
       stay separate instances, even of one class.

    Survival (3) is decided once per clip on the **whole tube at 1/4 resolution**, as the video peers
    decide per tube (DVIS / Video K-Net VPS), rather than per frame as Mask2Former does per image: a query
    then has one fate within a clip (no segment blinking between its frames), the tracker gets one decision
    per query per clip, and the decision needs no full-resolution masks. Only candidates are upsampled,
    one frame at a time; dropped candidates must still compete so that their pixels stay void."""
    t = masks.shape[1]
    void = torch.full((t, *size), -1, dtype=torch.long, device=masks.device)
    probs = class_probs(logits, allowed)  # [Q, C+1]
    if probs.shape[0] == 0:
        return _empty_panoptic(void)
    scores, labels = probs.max(-1)  # [Q]: no-object competes in the argmax (Mask2Former)
    cand = ((labels != probs.shape[1] - 1) & (scores > object_mask_threshold)).nonzero().flatten()  # [N0]
    if cand.numel() == 0:
        return _empty_panoptic(void)
    s, lab = scores[cand], labels[cand]  # [N0]

    # (2)-(3) on the tube at 1/4 resolution
    prob = masks[cand].float().sigmoid()  # [N0, T, h, w]
    win = (s[:, None, None, None] * prob).argmax(0)  # [T, h, w], index into cand
    own_mask = prob >= mask_threshold  # [N0, T, h, w]
    held = own_mask.gather(0, win[None])[0]  # [T, h, w]: the winner's own mask covers the pixel
    won = torch.bincount(win.flatten(), minlength=cand.numel()).float()  # [N0]
    kept = torch.bincount(win[held], minlength=cand.numel())  # [N0] pixels it would actually label
    own = own_mask.flatten(1).sum(1).float()  # [N0]
    survive = (won > 0) & (own > 0) & (kept > 0) & (won / own.clamp(min=1) >= overlap_threshold)
    surv = survive.nonzero().flatten()  # [S0] positions in cand
    if surv.numel() == 0:
        return _empty_panoptic(void)

    # (4) segments: one per thing candidate, one per stuff class
    isthing = lab[surv] < num_thing_classes
    key = torch.where(isthing, probs.shape[1] + surv, lab[surv])  # stuff: its class; thing: unique
    _, seg = torch.unique(key, return_inverse=True)  # [S0] segment of each survivor
    by_score = torch.argsort(-s[surv], stable=True)
    grouped = by_score[torch.argsort(seg[by_score], stable=True)]  # by segment, best score first
    first = torch.ones_like(grouped, dtype=torch.bool)
    first[1:] = seg[grouped][1:] != seg[grouped][:-1]
    rep = surv[grouped[first]]  # [S] each segment's best candidate, in segment order
    lut = torch.full((cand.numel(),), -1, dtype=torch.long, device=masks.device)
    lut[surv] = seg  # candidate -> segment, -1 = dropped (its pixels stay void)

    maps = []
    for f in range(t):  # full resolution, one frame at a time
        p = upsample(masks[cand, f], size).sigmoid()  # [N0, H, W]
        w = (s[:, None, None] * p).argmax(0)  # [H, W]
        ok = p.gather(0, w[None])[0] >= mask_threshold  # the per-pixel mask >= 0.5 rule
        maps.append(torch.where(ok, lut[w], -1))
    return PanopticResult(torch.stack(maps), cand[rep], lab[rep], s[rep], lab[rep] < num_thing_classes)


def _empty_panoptic(void: torch.Tensor) -> PanopticResult:
    none = torch.zeros(0, dtype=torch.long, device=void.device)
    return PanopticResult(void, none, none, none.float(), none.bool())


def vss_maps(logits: torch.Tensor, masks: torch.Tensor, size: tuple[int, int], cfg: PostprocessConfig,
             allowed: torch.Tensor | None = None) -> torch.Tensor:
    """VSS by ``cfg.vss_mode``: [T, H, W] int64 class map (-1 = void, "panoptic" mode only)."""
    return VSS_MODES[cfg.vss_mode](logits, masks, size, cfg, allowed)


def _vss_semantic(logits, masks, size, cfg: PostprocessConfig, allowed) -> torch.Tensor:
    return semantic_maps(logits, masks, size, allowed)


def _vss_panoptic(logits, masks, size, cfg: PostprocessConfig, allowed) -> torch.Tensor:
    # every class counts as stuff: a class map does not care about instances
    return panoptic_maps(logits, masks, size, 0, allowed, cfg.object_mask_threshold, cfg.overlap_threshold,
                         cfg.mask_threshold).label_map()


VSS_MODES = {"semantic": _vss_semantic, "panoptic": _vss_panoptic}


# ----------------------------------------------------------------------------------------------- EVS


def exemplar_maps(masks: torch.Tensor, size: tuple[int, int], valid: torch.Tensor | None = None,
                  start_frame: torch.Tensor | None = None) -> torch.Tensor:
    """EVS: [T, H, W] int64 query map (-1 = background). ``valid`` [Q] masks out padding queries;
    ``start_frame`` [Q] blanks an object in frames before its hint."""
    q, t = masks.shape[:2]
    out = []
    for f in range(t):
        p = upsample(masks[:, f], size).sigmoid()  # [Q, H, W]
        allowed = torch.ones(q, dtype=torch.bool, device=masks.device)
        if valid is not None:
            allowed &= valid
        if start_frame is not None:
            allowed &= start_frame <= f
        p = p * allowed[:, None, None]
        if q == 0:
            out.append(torch.full(size, -1, dtype=torch.long, device=masks.device))
            continue
        best, arg = p.max(0)
        out.append(torch.where(best > 0.5, arg, torch.full_like(arg, -1)))
    return torch.stack(out) if out else torch.zeros(0, *size, dtype=torch.long, device=masks.device)
