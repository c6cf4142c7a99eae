"""Hungarian matching of predicted tubes to ground-truth tubes, on point-sampled masks (Mask2Former).

Contract
--------
``HungarianMatcher(cfg)(pred_logits [B, Q, C+1], pred_masks [B, Q, T, h, w], targets: list[Targets],
meta: QueryMeta | None) -> list of B pairs (pred_idx [n_b], tgt_idx [n_b])`` int64 on CPU, like DETR.

* cost = class_weight * (-p(class)) + mask_weight * BCE + dice_weight * dice, one [Q, K] matrix per clip built
  with matrix products (DETR ``models/matcher.py``), solved by ``scipy.optimize.linear_sum_assignment``. The
  B matrices go to the host in one transfer.
* **Gated by query type** (method.md; paper §3.1 VPS): with ``meta``, a pair that
  :meth:`QueryMeta.allowed` forbids (a thing target on a stuff / class-bank query, a stuff target on a grid
  query or on another class's bank query, an EVS target on another hint's query) costs ``_FORBIDDEN`` and is
  dropped from the assignment if the solver had to take it, so n_b <= min(Q, K_b). Each stuff target thus
  goes to its own class's bank query: stuff tubes are one per class in a clip, so the gate alone fixes that
  assignment (the class-bank reading of Eq. 9), and the Hungarian step only decides among thing queries.
  One implementation serves every task (EVS's matching by exemplar id is the gate with one allowed query per
  target), every layer and T = 1 or 3. Every call counts its matches by kind in :mod:`gvseg.counters`.
* Masks are compared on ``cfg.num_points`` random points, **the same points for every query, target and
  frame of a clip**; a tube's T frames are concatenated, so T=1 and T=3 run the same code (video Mask2Former).
* Predictions are sampled bilinearly (logits at 1/4); targets (bool, full resolution) by nearest lookup, so
  no float copy of the full-resolution masks is made. Points on ``Targets.ignore`` pixels are left out.
* A clip with no targets gives two empty index tensors.

The point helpers here are shared with the criterion.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from gvseg import counters
from gvseg.config import LossConfig
from gvseg.structures import QUERY_STUFF, QUERY_THING, QueryMeta, Targets

_FORBIDDEN = 1e6  # cost of a pair the query-type gate forbids; real costs are O(10)


def point_sample(x: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinear samples of x [N, C, H, W] at coords [N, P, 2] ((x, y) in [0, 1]) -> [N, C, P] (PointRend)."""
    return F.grid_sample(x, 2.0 * coords[:, :, None, :] - 1.0, align_corners=False)[..., 0]


def point_index(coords: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """coords [..., P, 2] ((x, y) in [0, 1]) -> [..., P] linear pixel indices y * W + x (nearest, clamped):
    where :func:`gather_points` and ``Targets.masks_at`` look up."""
    ix = (coords[..., 0] * width).long().clamp_(0, width - 1)
    iy = (coords[..., 1] * height).long().clamp_(0, height - 1)
    return iy * width + ix


def gather_points(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Nearest lookup of masks [..., H, W] at coords [..., P, 2] ((x, y) in [0, 1]); the leading dims of
    ``coords`` must broadcast against those of ``masks``. Returns [..., P] of the masks' dtype."""
    flat = masks.flatten(-2)  # [..., H*W]
    lin = point_index(coords, *masks.shape[-2:])  # [..., P]
    lead = torch.broadcast_shapes(flat.shape[:-1], lin.shape[:-1])
    return torch.gather(flat.expand(*lead, flat.shape[-1]), -1, lin.expand(*lead, lin.shape[-1]))


@torch.no_grad()
def uncertain_point_coords(
    logits: torch.Tensor, num_points: int, oversample_ratio: float, importance_sample_ratio: float
) -> torch.Tensor:
    """PointRend / Mask2Former importance sampling: of ``oversample_ratio * P`` random points keep the
    ``importance_sample_ratio * P`` with the smallest |logit| (the uncertain boundary), then add uniform
    random points. logits [N, 1, h, w] -> coords [N, P, 2] in [0, 1]."""
    n = logits.shape[0]
    num_sampled = max(int(num_points * oversample_ratio), num_points)
    coords = torch.rand(n, num_sampled, 2, device=logits.device)
    uncertainty = -point_sample(logits.float(), coords)[:, 0].abs()  # [N, S]
    k = int(importance_sample_ratio * num_points)
    top = uncertainty.topk(k, dim=1).indices  # [N, k]
    picked = torch.gather(coords, 1, top[..., None].expand(n, k, 2))
    rand = torch.rand(n, num_points - k, 2, device=logits.device)
    return torch.cat([picked, rand], dim=1)


def check_targets(pred_masks: torch.Tensor, targets: list[Targets]) -> None:
    """Shapes of the targets against [B, Q, T, h, w] predictions; raises a ValueError naming the clip."""
    b, _, t = pred_masks.shape[:3]
    if len(targets) != b:
        raise ValueError(f"matcher: {len(targets)} targets for a batch of {b} clips")
    for i, tg in enumerate(targets):
        shape = tg.shape  # (K, T, H, W), coded targets included, without deriving their planes
        if len(shape) != 4 or shape[1] != t:
            raise ValueError(f"matcher: clip {i}: target masks {tuple(shape)} are not [K, T={t}, H, W]")
        if tg.labels.shape[0] != shape[0]:
            raise ValueError(f"matcher: clip {i}: {tg.labels.shape[0]} labels for {shape[0]} masks")


class HungarianMatcher:
    """One-to-one assignment of Q predictions to K ground-truth tubes per clip (see module docstring)."""

    def __init__(self, cfg: LossConfig):
        self.class_weight = cfg.class_weight
        self.mask_weight = cfg.mask_weight
        self.dice_weight = cfg.dice_weight
        self.num_points = cfg.num_points

    @torch.no_grad()
    def __call__(
        self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: list[Targets],
        meta: QueryMeta | None = None,
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        check_targets(pred_masks, targets)
        q = pred_logits.shape[1]
        costs = []
        for b, tg in enumerate(targets):  # [Q, K_b] each, on the device
            if tg.labels.numel() == 0 or q == 0:
                costs.append(pred_logits.new_zeros(q, tg.labels.numel(), dtype=torch.float32))
                continue
            if meta is None:
                costs.append(self.cost_matrix(pred_logits[b], pred_masks[b], tg))
                continue
            # The gate decides most of the matrix: only queries that may take some target of this clip get a
            # cost (VPS: the 100 grid queries and the bank queries of the stuff classes present, not all 66).
            ok = meta.allowed(b, tg)  # [Q, K]
            rows = ok.any(1).nonzero()[:, 0]  # [R]
            cost = torch.full((q, ok.shape[1]), _FORBIDDEN, device=ok.device)  # [Q, K]
            if rows.numel():
                sub = self.cost_matrix(pred_logits[b, rows], pred_masks[b, rows], tg)  # [R, K]
                cost[rows] = torch.where(ok[rows], sub.to(cost.device), cost[rows])
            costs.append(cost)
        host = torch.cat(costs, 1).cpu().numpy() if costs else np.zeros((0, 0), np.float32)  # one transfer
        out, k0 = [], 0
        for b, tg in enumerate(targets):
            k = int(tg.labels.shape[0])
            c = host[:, k0:k0 + k]
            k0 += k
            if k == 0 or c.shape[0] == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                out.append((empty, empty.clone()))
                continue
            if not np.isfinite(c).all():
                raise ValueError(f"matcher: clip {b}: non-finite matching cost (NaN/inf in the predictions?)")
            i, j = linear_sum_assignment(c)
            ok = c[i, j] < _FORBIDDEN / 2  # the solver takes forbidden pairs only when nothing else is left
            out.append((torch.as_tensor(i[ok], dtype=torch.int64), torch.as_tensor(j[ok], dtype=torch.int64)))
        _count(out, targets, meta)
        return out

    @torch.no_grad()
    def cost_matrix(self, logits: torch.Tensor, masks: torch.Tensor, tg: Targets) -> torch.Tensor:
        """logits [Q, C+1], masks [Q, T, h, w] (logits), one clip's targets -> cost [Q, K] float32."""
        device = masks.device
        with torch.autocast(device_type=device.type, enabled=False):
            q, t = masks.shape[:2]
            prob = logits.float().softmax(-1)  # [Q, C+1]
            cost_class = -prob[:, tg.labels.to(device)]  # [Q, K]

            coords = torch.rand(self.num_points, 2, device=device)  # shared by queries, targets, frames
            pred = point_sample(masks.float().reshape(1, q * t, *masks.shape[-2:]), coords[None])  # [1, Q*T, P]
            pred = pred.reshape(q, -1)  # [Q, T*P]
            index = point_index(coords, *tg.shape[-2:])[None].expand(t, -1)  # [T, P] pixel of each point
            tgt = tg.masks_at(index.to(device)).flatten(1).float()  # [K, T*P]
            ignored = tg.ignore_at(index.to(device))  # [T, P] | None
            if ignored is not None:  # points on ignore pixels count for nothing
                valid = (~ignored).flatten().float()  # [T*P]
                pred_v, n_valid, tgt_v = pred * valid, valid.sum().clamp_min(1.0), tgt * valid
            else:  # no ignore: skip three [Q, T*P] multiplications by ones
                valid, pred_v, n_valid, tgt_v = None, pred, float(tgt.shape[1]), tgt

            # BCE(x, y) = y*softplus(-x) + (1-y)*softplus(x) = softplus(x) - x*y (softplus(-x) = softplus(x) - x):
            # one softplus and one matmul per call instead of two of each (DETR's two-matmul form, regrouped)
            sp = F.softplus(pred)  # [Q, T*P]
            sp_sum = (sp if valid is None else sp * valid).sum(-1)  # [Q]
            cost_mask = (sp_sum[:, None] - pred_v @ tgt.T) / n_valid  # [Q, K]

            sig = pred.sigmoid()  # [Q, T*P]
            prob_v = sig if valid is None else sig * valid
            cost_dice = 1.0 - (2.0 * (prob_v @ tgt.T) + 1.0) / (prob_v.sum(-1)[:, None] + tgt_v.sum(-1)[None] + 1.0)

            return self.class_weight * cost_class + self.mask_weight * cost_mask + self.dice_weight * cost_dice


def _count(indices: list[tuple[torch.Tensor, torch.Tensor]], targets: list[Targets], meta: QueryMeta | None) -> None:
    """Tally which kind of query each matched target went to (the VPS bug this gate fixes: things on stuff)."""
    counters.add("match/calls")
    kind = meta.kind.cpu() if meta is not None else None
    for (qi, ti), tg in zip(indices, targets):
        if qi.numel() == 0:
            continue
        thing = tg.isthing.cpu().bool()[ti]  # [n]
        qk = kind[qi] if kind is not None else torch.full_like(qi, -1)
        counters.add("match/thing_gt", int(thing.sum()))
        counters.add("match/stuff_gt", int((~thing).sum()))
        counters.add("match/thing_gt_on_thing_q", int((thing & (qk == QUERY_THING)).sum()))
        counters.add("match/thing_gt_on_stuff_q", int((thing & (qk == QUERY_STUFF)).sum()))
        counters.add("match/stuff_gt_on_stuff_q", int((~thing & (qk == QUERY_STUFF)).sum()))
        counters.add("match/stuff_gt_on_thing_q", int((~thing & (qk == QUERY_THING)).sum()))
