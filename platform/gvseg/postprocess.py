"""Per-task post-processing of ONE clip's outputs (batch element ``b``), frame by frame at output resolution.

All functions take the model's ``pred_logits [Q, C+1]`` and mask logits ``pred_masks [Q, T, h4, w4]`` of one
clip and an output size ``(H, W)``. Mask logits are bilinearly upsampled **one frame at a time and only for
the queries that survive** (never [Q, T, H, W] at once: 100 queries x 3 frames at 720p would be 1.1 GB).
Results stay on the input device; callers move them off (``gvseg.inference`` does, per clip).

* :func:`instance_results`  VIS: one label per query (argmax over the C real classes), score = class
  probability; queries with score > ``score_threshold`` are kept, best ``topk`` first. Masks: logit > 0.
* :func:`semantic_maps`     VSS: Mask2Former semantic inference, per pixel argmax over classes of
  ``sum_q p(c|q) * sigmoid(m_q)`` (works for class-bank and plain queries alike). -> [T, H, W] int64.
* :func:`panoptic_maps`     VPS: Mask2Former panoptic inference. Queries with score > ``score_threshold``
  compete per pixel by ``score * sigmoid(mask)`` (overlaps resolved by score); a query keeps its segment
  only if the pixels it wins are >= ``overlap_threshold`` of its own mask (measured over the clip at 1/4).
  -> query map [T, H, W] (query index, -1 = void) + the surviving queries.
* :func:`exemplar_maps`     EVS: each exemplar query's mask; a pixel goes to the most confident exemplar
  whose probability > 0.5, else background. Objects are blanked before their first frame. -> query map.
Empty inputs (Q = 0, nothing above threshold) give all-void maps / empty results, never errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def upsample(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[N, h, w] mask logits -> [N, H, W] (bilinear). N = 0 is fine."""
    if logits.shape[0] == 0:
        return logits.new_zeros(0, *size)
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits[None].float(), size=size, mode="bilinear", align_corners=False)[0]


def class_scores(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[Q, C+1] -> best real class (scores [Q], labels [Q]); the no-object column is excluded."""
    probs = logits.float().softmax(-1)[:, :-1]
    if probs.shape[0] == 0:
        return probs.new_zeros(0), torch.zeros(0, dtype=torch.long, device=probs.device)
    return probs.max(-1)


@dataclass
class InstanceResult:
    query_idx: torch.Tensor  # [N] int64, into the clip's queries
    labels: torch.Tensor  # [N] int64
    scores: torch.Tensor  # [N] float
    masks: list[torch.Tensor]  # T x [N, H, W] bool


def instance_results(logits: torch.Tensor, masks: torch.Tensor, size: tuple[int, int], score_threshold: float,
                     topk: int = 100, keep: torch.Tensor | None = None) -> InstanceResult:
    """VIS. ``keep`` [Q] bool optionally restricts the queries further (e.g. tracked ones)."""
    scores, labels = class_scores(logits)
    ok = scores > score_threshold
    if keep is not None:
        ok &= keep
    idx = ok.nonzero().flatten()
    idx = idx[scores[idx].argsort(descending=True)][:topk]
    frames = [upsample(masks[idx, f], size) > 0 for f in range(masks.shape[1])]
    return InstanceResult(idx, labels[idx], scores[idx], frames)


def semantic_maps(logits: torch.Tensor, masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """VSS: [T, H, W] int64 class map (Mask2Former ``semantic_inference``); Q = 0 gives all zeros."""
    t = masks.shape[1]
    if masks.shape[0] == 0:
        return torch.zeros(t, *size, dtype=torch.long, device=masks.device)
    probs = logits.float().softmax(-1)[:, :-1]  # [Q, C]
    out = []
    for f in range(t):
        m = upsample(masks[:, f], size).sigmoid()  # [Q, H, W]
        out.append(torch.einsum("qc,qhw->chw", probs, m).argmax(0))  # [H, W]
    return torch.stack(out)


@dataclass
class PanopticResult:
    query_map: torch.Tensor  # [T, H, W] int64: query index, -1 = void
    query_idx: torch.Tensor  # [N] surviving queries
    labels: torch.Tensor  # [N]
    scores: torch.Tensor  # [N]


def panoptic_maps(logits: torch.Tensor, masks: torch.Tensor, size: tuple[int, int], score_threshold: float,
                  overlap_threshold: float = 0.8) -> PanopticResult:
    """VPS (see module docstring). Stuff segments of one class are merged later by the tracker (class id)."""
    t = masks.shape[1]
    scores, labels = class_scores(logits)
    cand = (scores > score_threshold).nonzero().flatten()  # [N0]
    void = torch.full((t, *size), -1, dtype=torch.long, device=masks.device)
    if cand.numel() == 0:
        return PanopticResult(void, cand, labels[cand], scores[cand])
    # which candidates keep a segment: decided on the whole tube at 1/4 resolution
    prob = masks[cand].float().sigmoid()  # [N0, T, h, w]
    win = (scores[cand, None, None, None] * prob).argmax(0)  # [T, h, w] index into cand
    won = torch.bincount(win.flatten(), minlength=cand.numel()).float()  # [N0]
    own = (prob >= 0.5).flatten(1).sum(1).float()  # [N0]
    survive = (won > 0) & (own > 0) & (won / own.clamp(min=1) >= overlap_threshold)
    lut = torch.where(survive, cand, torch.full_like(cand, -1))  # candidate -> query index or void
    maps = []
    for f in range(t):  # full resolution, one frame at a time
        p = upsample(masks[cand, f], size).sigmoid() * scores[cand, None, None]  # [N0, H, W]
        maps.append(lut[p.argmax(0)])
    keep = cand[survive]
    return PanopticResult(torch.stack(maps), keep, labels[keep], scores[keep])


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
