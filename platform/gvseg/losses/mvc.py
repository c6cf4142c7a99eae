"""Masked Video Consistency (paper 003, §2.2): train on a copy of the clip with random patches withheld.

    patch_mask(b, t, h, w, patch, ratio)  -> [B, T, 1, H, W] float, 1 = kept, 0 = withheld
    mask_clip(clip, cfg)                  -> Clip with frames * mask (same targets, no reference clip)
    mvc_loss(model, criterion, clip, cfg) -> scalar L^M = sum_k w_k L^M_k, the baseline loss on the masked clip

Eq. (1): M_ij = [v > r], v ~ U(0, 1), one draw per b x b patch (i, j) and per image (every frame of every
clip gets its own mask). Eq. (2): x^M = M ⊙ x. Eq. (3): ŷ^M = f(x^M). Eq. (4): the objective is
L + λ·L^M, where L^M is "defined according to the baseline model": here the same set criterion (CE + BCE +
dice, deep supervision, its own Hungarian matching) against the same targets, with the criterion's
weights. The engine adds ``loss_mvc`` with weight λ = ``loss.mvc.weight`` only when λ > 0.

Frames are already normalised, so a withheld patch is 0 = the ImageNet mean colour (what multiplying the
raw image by 0 and normalising would give up to a constant; a mean-grey patch carries no colour cue).
A partial patch at the right/bottom border is masked like a whole one. ``ratio`` 0 keeps everything.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

from gvseg.config import MVCConfig
from gvseg.structures import Clip

if TYPE_CHECKING:
    from gvseg.losses.criterion import SetCriterion


def patch_mask(b: int, t: int, h: int, w: int, patch: int, ratio: float, *, device: torch.device | str = "cpu",
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Eq. (1): [B, T, 1, H, W] float mask, constant over each patch x patch block, 1 with prob. 1 - ratio."""
    if patch < 1 or not 0.0 <= ratio <= 1.0:
        raise ValueError(f"loss.mvc: need patch >= 1 and 0 <= ratio <= 1, got patch={patch}, ratio={ratio}")
    gh, gw = math.ceil(h / patch), math.ceil(w / patch)
    v = torch.rand(b, t, 1, gh, gw, generator=generator, device="cpu").to(device)  # [B, T, 1, gh, gw]
    keep = (v > ratio).float()
    keep = keep.repeat_interleave(patch, dim=-2).repeat_interleave(patch, dim=-1)  # [B, T, 1, gh*p, gw*p]
    return keep[..., :h, :w]


def mask_clip(clip: Clip, cfg: MVCConfig, generator: torch.Generator | None = None) -> Clip:
    """Eq. (2): the clip with patches withheld; targets and exemplars unchanged, no reference clip."""
    b, t, _, h, w = clip.frames.shape
    m = patch_mask(b, t, h, w, cfg.patch, cfg.ratio, device=clip.frames.device, generator=generator)
    frames = clip.float_frames()  # normalised: a withheld patch is 0, the mean colour (module docstring)
    return Clip(frames * m.to(frames.dtype), clip.image_sizes, clip.frame_index, clip.video_ids,
                clip.targets, clip.exemplars, None)


def mvc_loss(model: torch.nn.Module, criterion: SetCriterion, clip: Clip, cfg: MVCConfig,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """L^M of Eq. (4): the criterion's weighted loss on the masked clip's predictions (Eq. 3)."""
    if clip.targets is None:
        raise ValueError("loss.mvc needs a clip with targets")
    masked = mask_clip(clip, cfg, generator)
    outputs = model(masked)  # ŷ^M, Eq. (3)
    indices = outputs.get("indices")
    losses = criterion(outputs, masked.targets, indices)
    return criterion.total(losses)
