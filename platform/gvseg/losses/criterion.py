"""Set criterion: class CE + point-sampled mask BCE + dice on matched tubes, with deep supervision.

Contract
--------
``SetCriterion(cfg, num_classes)(outputs, targets, indices=None) -> dict[str, Tensor]`` of **unweighted**
scalar losses; ``criterion.weight_dict`` maps every key to its weight (DETR style), and
``criterion.total(losses)`` is the weighted sum that is back-propagated (keys without a weight are left out).

* ``outputs``: ``pred_logits [B, Q, C+1]``, ``pred_masks [B, Q, T, h, w]`` (mask logits), optional
  ``aux_outputs`` (list of dicts with the same two keys, one per earlier decoder layer).
* ``indices``: the final layer's matching (from ``HungarianMatcher``), if the caller already has it (the
  model computed it in training); otherwise it is computed. An aux layer reuses ``aux_outputs[i]["indices"]``
  when the model already matched it (the matching that SPA injection into layer i+1 used, Eq. 5), so no
  Hungarian matching is computed twice; otherwise it is matched here. Every matching is gated by
  ``outputs["query_meta"]`` (a thing target never goes to a stuff query, nor the reverse).
* Keys: ``loss_ce``, ``loss_mask``, ``loss_dice`` and, with ``cfg.deep_supervision``, ``loss_ce_0``,
  ``loss_mask_0``, ... for each aux layer. ``weight_dict`` also carries ``loss_tcl``/``loss_tcl_aux``.
* CE over all queries, unmatched ones target "no object" (index C) weighted ``no_object_weight`` (0.1).
* BCE and dice use ``num_points`` importance-sampled points per frame (``oversample_ratio``,
  ``importance_sample_ratio``; PointRend), the T frames of a tube concatenated, ignore pixels left out.
* Normalised by the number of target tubes in the batch, all-reduced over ranks when ``torch.distributed``
  is initialised, and at least 1. No targets at all: mask losses are 0 (still attached to the graph).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gvseg.config import LossConfig
from gvseg.losses.matcher import (
    HungarianMatcher,
    check_targets,
    point_index,
    point_sample,
    uncertain_point_coords,
)
from gvseg.structures import Targets


class SetCriterion(nn.Module):
    def __init__(self, cfg: LossConfig, num_classes: int, matcher: HungarianMatcher | None = None):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.matcher = matcher if matcher is not None else HungarianMatcher(cfg)
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = cfg.no_object_weight  # the "no object" class is down-weighted (DETR)
        self.register_buffer("empty_weight", empty_weight, persistent=False)
        self.weight_dict: dict[str, float] = {
            "loss_ce": cfg.class_weight,
            "loss_mask": cfg.mask_weight,
            "loss_dice": cfg.dice_weight,
            "loss_tcl": cfg.contrastive.weight,
            "loss_tcl_aux": cfg.contrastive.aux_weight,
        }

    def add_aux_weights(self, num_aux: int) -> None:
        for i in range(num_aux):
            for k in ("loss_ce", "loss_mask", "loss_dice"):
                self.weight_dict[f"{k}_{i}"] = self.weight_dict[k]

    def total(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The training objective: ``sum(weight_dict[k] * losses[k])`` over the keys that have a weight. A loss
        without one (a diagnostic) is reported but never back-propagated. One definition, so the engine, the
        MVC term and the benchmarks all optimise the same number."""
        return sum(self.weight_dict[k] * v for k, v in losses.items() if k in self.weight_dict)

    def forward(
        self,
        outputs: dict,
        targets: list[Targets],
        indices: list[tuple[torch.Tensor, torch.Tensor]] | None = None,
    ) -> dict[str, torch.Tensor]:
        check_targets(outputs["pred_masks"], targets)
        num_masks = self._num_masks(targets, outputs["pred_logits"].device)
        meta = outputs.get("query_meta")
        if indices is None:
            indices = outputs.get("indices") or self.matcher(outputs["pred_logits"], outputs["pred_masks"], targets, meta)
        losses = self._losses(outputs, targets, indices, num_masks)
        if self.cfg.deep_supervision:
            aux = outputs.get("aux_outputs") or []
            self.add_aux_weights(len(aux))
            for i, aux_out in enumerate(aux):
                aux_idx = aux_out.get("indices") or self.matcher(aux_out["pred_logits"], aux_out["pred_masks"],
                                                                 targets, meta)
                for k, v in self._losses(aux_out, targets, aux_idx, num_masks).items():
                    losses[f"{k}_{i}"] = v
        return losses

    # ------------------------------------------------------------------------------------------ pieces

    def _losses(self, outputs: dict, targets: list[Targets], indices, num_masks: torch.Tensor) -> dict:
        out = {"loss_ce": self.loss_labels(outputs["pred_logits"], targets, indices)}
        out.update(self.loss_masks(outputs["pred_masks"], targets, indices, num_masks))
        return out

    def loss_labels(self, logits: torch.Tensor, targets: list[Targets], indices) -> torch.Tensor:
        """CE over every query; unmatched queries target "no object" (index C)."""
        b, q, _ = logits.shape
        if q == 0:  # EVS batch without a single hint: nothing to classify (CE over no query would be NaN)
            return logits.sum() * 0.0
        batch_idx, src_idx = _src_permutation(indices, logits.device)
        target_classes = torch.full((b, q), self.num_classes, dtype=torch.int64, device=logits.device)
        matched = [tg.labels.to(logits.device)[j.to(logits.device)] for tg, (_, j) in zip(targets, indices)]
        target_classes[batch_idx, src_idx] = torch.cat(matched) if matched else target_classes.new_zeros(0)
        return F.cross_entropy(logits.float().transpose(1, 2), target_classes, self.empty_weight.to(logits.device))

    def loss_masks(
        self, pred_masks: torch.Tensor, targets: list[Targets], indices, num_masks: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """Sigmoid BCE and dice of matched tubes on importance-sampled points, frames concatenated."""
        device = pred_masks.device
        t = pred_masks.shape[2]
        batch_idx, src_idx = _src_permutation(indices, device)
        n = batch_idx.numel()
        if n == 0:
            zero = pred_masks.sum() * 0.0  # keeps the graph (DDP needs every parameter used)
            return {"loss_mask": zero, "loss_dice": zero}
        src = pred_masks[batch_idx, src_idx].float()  # [N, T, h, w]
        src = src.flatten(0, 1)[:, None]  # [N*T, 1, h, w]
        p = self.cfg.num_points
        coords = uncertain_point_coords(src, p, self.cfg.oversample_ratio, self.cfg.importance_sample_ratio)
        logits = point_sample(src, coords)[:, 0]  # [N*T, P]

        # ground truth and validity at each row's own points, clip by clip (no copy of full-res masks)
        labels, valid = [], []
        row = 0
        for tg, (_, j) in zip(targets, indices):
            nb = j.numel()
            if nb == 0:
                continue
            c = coords[row * t:(row + nb) * t].view(nb, t, p, 2)  # [n_b, T, P, 2]
            index = point_index(c, *tg.shape[-2:])  # [n_b, T, P] pixel of each row's points
            labels.append(tg.masks_at(index, j))  # nearest lookup; coded targets compare codes
            ignored = tg.ignore_at(index)
            valid.append(~ignored if ignored is not None else torch.ones(nb, t, p, dtype=torch.bool, device=device))
            row += nb
        y = torch.cat(labels).flatten(1).float()  # [N, T*P]
        m = torch.cat(valid).flatten(1).float()  # [N, T*P]
        x = logits.view(n, t * p)  # [N, T*P]

        bce = F.binary_cross_entropy_with_logits(x, y, reduction="none") * m
        loss_mask = (bce.sum(1) / m.sum(1).clamp_min(1.0)).sum() / num_masks

        prob = x.sigmoid() * m
        dice = 1.0 - (2.0 * (prob * y).sum(1) + 1.0) / (prob.sum(1) + (y * m).sum(1) + 1.0)
        return {"loss_mask": loss_mask, "loss_dice": dice.sum() / num_masks}

    @staticmethod
    def _num_masks(targets: list[Targets], device: torch.device) -> torch.Tensor:
        n = torch.tensor(float(sum(int(tg.labels.numel()) for tg in targets)), device=device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(n)
            n = n / dist.get_world_size()
        return n.clamp_min(1.0)


def _src_permutation(indices, device) -> tuple[torch.Tensor, torch.Tensor]:
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(device)
    src_idx = torch.cat([src for src, _ in indices]).to(device)
    return batch_idx, src_idx
