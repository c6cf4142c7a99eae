"""Test-time augmentation by per-pixel voting (paper 003, §2.4, Eq. 8): flips and scales, ties to the
higher resolution.

    vote(labels [N, ...], priority [N]) -> [...]         the per-pixel mode over N predictions
    semantic_tta(model, frames [T, 3, H, W], scales=(0.9, 1.0, 1.1, 1.2), flip=True, size=, cfg=) -> [T, H, W] int64

``vote``: for every pixel, the label predicted most often over the N augmentations wins. On a tie between
labels, the label predicted by the highest-``priority`` input (the highest input resolution) among the tied
labels wins ("we prioritize the result corresponding to the higher resolution input"); inputs of equal
priority (a scale and its flip) fall back to their order. Vectorised as N x N label comparisons (N is small:
8 for 4 scales x 2 flips), never one-hot over classes. Any integer labels work, void (-1) included; N = 1
returns the input; N = 0 raises.

``semantic_tta`` (VSS): each augmentation rescales the clip by ``s`` (bilinear) and optionally mirrors it,
runs the model, takes the VSS class map at the output size (the recipe's ``postprocess.vss_maps`` with ``cfg``,
else Mask2Former's ``semantic_maps``; the mirrored map is mirrored back), and the maps are voted with
priority = scale. ``video.stream.predict_video`` runs it per clip when ``postprocess.tta_scales`` is set.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from gvseg.config import ModelConfig


def vote(labels: torch.Tensor, priority: Sequence[float] | torch.Tensor | None = None) -> torch.Tensor:
    """Eq. (8): per-pixel mode of ``labels`` [N, ...]; ties go to the highest-priority input's label."""
    if labels.ndim < 1 or labels.shape[0] == 0:
        raise ValueError(f"vote: need at least one prediction, got shape {tuple(labels.shape)}")
    n = labels.shape[0]
    if n == 1:
        return labels[0].clone()
    pr = torch.zeros(n) if priority is None else torch.as_tensor(priority, dtype=torch.float64)
    if pr.shape != (n,):
        raise ValueError(f"vote: {n} predictions but {tuple(pr.shape)} priorities")
    # rank: n-1 for the highest priority; equal priorities keep input order (earlier first)
    order = sorted(range(n), key=lambda i: (float(pr[i]), -i))
    rank = torch.empty(n, dtype=torch.long)
    rank[torch.tensor(order)] = torch.arange(n)
    rank = rank.to(labels.device).view(n, *([1] * (labels.ndim - 1)))
    count = (labels[:, None] == labels[None]).sum(1)  # [N, ...] votes for input i's label
    # best label = the most votes; among equal counts, the label whose supporter has the top rank. A label's
    # supporters share its count, so ranking inputs by (count, rank) picks the right one directly.
    key = count * n + rank  # [N, ...]
    best = key.argmax(0, keepdim=True)  # [1, ...]
    return labels.gather(0, best)[0]


@torch.no_grad()
def semantic_tta(model: torch.nn.Module, frames: torch.Tensor, *, scales: Sequence[float] = (0.9, 1.0, 1.1, 1.2),
                 flip: bool = True, video_id: str = "", start: int = 0, size: tuple[int, int] | None = None,
                 cfg: ModelConfig | None = None) -> torch.Tensor:
    """VSS clip TTA: ``frames`` [T, 3, H, W] normalised -> [T, *size] int64 voted class map (``size``: default
    the input's). With ``cfg``, each augmentation's map is the recipe's VSS post-processing (``vss_mode``, the
    query-type gate: ``video.postprocess.vss_maps``), as ``gvseg predict --tta`` runs it; without, Mask2Former's
    ``semantic_inference``."""
    from gvseg.structures import Clip
    from gvseg.video.postprocess import allowed_classes, semantic_maps, vss_maps

    t, _, h, w = frames.shape
    size = size or (h, w)
    dev = frames.device
    maps, prio = [], []
    for s in scales:
        sh, sw = max(1, round(h * s)), max(1, round(w * s))
        x = frames if (sh, sw) == (h, w) else F.interpolate(frames, size=(sh, sw), mode="bilinear",
                                                            align_corners=False)  # [T, 3, sh, sw]
        for mirrored in ((False, True) if flip else (False,)):
            xi = x.flip(-1) if mirrored else x
            clip = Clip(xi[None], torch.tensor([[sh, sw]], device=dev), torch.arange(start, start + t, device=dev)[None],
                        [video_id])
            out = model(clip)
            logits, masks = out["pred_logits"][0].float(), out["pred_masks"][0].float()  # [Q, C+1], [Q, T, h4, w4]
            if cfg is None:
                sem = semantic_maps(logits, masks, size)  # [T, *size]
            else:
                gate = allowed_classes(out, cfg.num_classes, cfg.num_thing_classes) if cfg.postprocess.class_gate else None
                sem = vss_maps(logits, masks, size, cfg.postprocess, gate)
            maps.append(sem.flip(-1) if mirrored else sem)
            prio.append(s)
    return vote(torch.stack(maps), prio)
