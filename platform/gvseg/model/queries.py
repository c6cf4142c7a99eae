"""Task-oriented query initialisation (paper §3.1, Fig. 3a; Eq. 7-9).

Which queries a task gets (``N = decoder.num_queries``, ``K_st`` = stuff classes, ``K`` = all classes):
  task  task_oriented=True                                   task_oriented=False (Table 4a baseline)
  vis   N grid queries (Eq. 8)                                N learned queries
  vps   N grid queries (things) + K_st class-bank queries     N learned queries
  vss   K class-bank queries (Eq. 9)                          N learned queries (flagged stuff)
  evs   one exemplar query per hinted object (Eq. 7), padded to the batch's max with a learned pad query;
        EVS has no hint-free variant, so ``task_oriented`` does not change it.

* Grid (Eq. 8): the 1/32 backbone map of each frame is split into S x S cells over the clip's *valid* canvas
  (padding excluded). The feature at each cell centre is read with bilinear ``grid_sample`` and averaged over
  the clip's T frames, then an FFN maps it to D. N of the S^2 cells are drawn at random per clip in training,
  and a fixed seeded choice is used at test time. The query position is an FFN of the cell centre's sine code,
  so a query carries both appearance and location.
* Exemplar (Eq. 7): from the 1/8 backbone map of the hinted frame: a point samples it with ``grid_sample``
  (PointRend-style bilinear); a box or mask averages the cells inside it (a mask is area-weighted). A box
  smaller than one cell falls back to its centre point; an empty mask gives a zero feature (never NaN).
* Class bank (Eq. 9): ``class_bank [K_bank, D]`` buffer (so checkpoints carry it), momentum-updated from the
  decoder's output queries matched to each class (:meth:`QueryInit.update_bank`, no grad). Until
  ``bank_warmup`` update steps have passed, and for classes never seen, the learned ``bank_feat`` is used.

Output :class:`QuerySet`: ``content [B, Q, D]``, ``pos [B, Q, D]`` and ``meta`` (:class:`gvseg.structures.QueryMeta`):
``kind [Q]`` (grid = THING, bank = STUFF of ``query_class``, exemplar = EXEMPLAR of ``query_ids``, learned =
ANY, except VSS's learned queries = STUFF), the gate every matching obeys (method.md, §3.1 VPS). ``is_stuff``
(no SPA injection, class-identity association), ``query_class`` and ``query_ids`` read through to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from gvseg.config import ModelConfig
from gvseg.model.backbone import STRIDES
from gvseg.model.decoder import MLP
from gvseg.model.pixel_decoder import sine_pos_1d
from gvseg.structures import (
    QUERY_ANY,
    QUERY_EXEMPLAR,
    QUERY_STUFF,
    QUERY_THING,
    ClipExemplars,
    QueryMeta,
    Targets,
)

KIND_CODE = {"point": 0, "box": 1, "mask": 2}


@dataclass
class QuerySet:
    content: torch.Tensor  # [B, Q, D]
    pos: torch.Tensor  # [B, Q, D]
    meta: QueryMeta  # kind [Q], query_class [Q], query_ids [B, Q]

    @property
    def is_stuff(self) -> torch.Tensor:  # [Q] bool
        return self.meta.is_stuff

    @property
    def query_class(self) -> torch.Tensor:  # [Q] int64, bank class or -1
        return self.meta.query_class

    @property
    def query_ids(self) -> torch.Tensor:  # [B, Q] int64, EVS track id or -1
        return self.meta.query_ids


def _xy_code(xy: torch.Tensor, dim: int) -> torch.Tensor:
    """(x, y) in [0, 1] -> [.., dim] sine code (y half, x half, as the 2-D pixel encoding)."""
    half = dim // 2
    return torch.cat((sine_pos_1d(xy[..., 1], half), sine_pos_1d(xy[..., 0], dim - half)), -1)


class QueryInit(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone_channels: dict[int, int]):
        super().__init__()
        qc, d = cfg.queries, cfg.decoder.dim
        self.task, self.dim, self.task_oriented = cfg.task, d, qc.task_oriented
        self.num_queries = cfg.decoder.num_queries
        self.grid_stride, self.exemplar_stride = STRIDES[qc.grid_level], STRIDES[qc.exemplar_level]
        self.grid_size, self.test_seed = qc.grid_size, qc.test_seed
        self.momentum, self.warmup = qc.bank_momentum, qc.bank_warmup
        num_stuff = cfg.num_classes - cfg.num_thing_classes
        if num_stuff < 0:
            raise ValueError(f"model.num_thing_classes={cfg.num_thing_classes} > model.num_classes={cfg.num_classes}")

        # how many queries of each kind this task uses
        to = qc.task_oriented
        self.num_grid = self.num_queries if to and cfg.task in ("vis", "vps") else 0
        self.num_learned = self.num_queries if not to and cfg.task != "evs" else 0
        self.bank_offset = cfg.num_thing_classes if cfg.task == "vps" else 0  # bank slot k = class offset+k
        self.num_bank = (num_stuff if cfg.task == "vps" else cfg.num_classes if cfg.task == "vss" else 0) if to else 0
        if self.num_grid > self.grid_size ** 2:
            raise ValueError(f"decoder.num_queries={self.num_grid} > queries.grid_size**2={self.grid_size ** 2}: "
                             f"cannot pick that many distinct grid cells")

        if self.num_grid:
            self.grid_ffn = MLP(backbone_channels[self.grid_stride], d, d, 2)
            self.grid_pos = MLP(d, d, d, 2)
        if self.num_learned:  # Mask2Former's names, so convert_d2 can load them
            self.query_feat = nn.Embedding(self.num_learned, d)
            self.query_embed = nn.Embedding(self.num_learned, d)
        if cfg.task == "evs":
            self.exemplar_ffn = MLP(backbone_channels[self.exemplar_stride], d, d, 2)
            self.exemplar_pos = MLP(d, d, d, 2)
            self.pad_feat = nn.Parameter(torch.zeros(d))
        if self.num_bank:
            self.bank_feat = nn.Embedding(self.num_bank, d)  # used until the bank is warm
            self.bank_pos = nn.Embedding(self.num_bank, d)
        # Buffers exist for every task so that checkpoints have one layout.
        self.register_buffer("class_bank", torch.zeros(self.num_bank, d))
        self.register_buffer("bank_count", torch.zeros(self.num_bank, dtype=torch.long))  # updates per class
        self.register_buffer("bank_steps", torch.zeros((), dtype=torch.long))  # update calls so far

    # ------------------------------------------------------------------------------------------- flags

    def flags(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """kind [Q] and query_class [Q] for the hint-free tasks, in query order (grid, learned, then bank)."""
        learned_kind = QUERY_STUFF if self.task == "vss" else QUERY_ANY  # plain VSS queries are class queries too
        kind = torch.cat([torch.full((self.num_grid,), QUERY_THING, dtype=torch.long, device=device),
                          torch.full((self.num_learned,), learned_kind, dtype=torch.long, device=device),
                          torch.full((self.num_bank,), QUERY_STUFF, dtype=torch.long, device=device)])
        query_class = torch.cat([torch.full((self.num_grid + self.num_learned,), -1, dtype=torch.long, device=device),
                                 torch.arange(self.num_bank, device=device) + self.bank_offset])
        return kind, query_class

    # ----------------------------------------------------------------------------------------- forward

    def forward(self, feats: dict[int, torch.Tensor], batch: int, frames: int, pad_size: tuple[int, int],
                image_sizes: torch.Tensor, exemplars: list[ClipExemplars] | None = None,
                generator: torch.Generator | None = None) -> QuerySet:
        """feats: backbone maps {stride: [B*T, C, h, w]}; pad_size: (Hp, Wp) of the padded input;
        image_sizes [B, 2] valid (h, w)."""
        dev = feats[4].device
        if self.task == "evs":
            return self._exemplar_queries(feats[self.exemplar_stride], batch, frames, pad_size, exemplars)
        parts_c, parts_p = [], []
        if self.num_grid:
            c, p = self._grid_queries(feats[self.grid_stride], batch, frames, pad_size, image_sizes, generator)
            parts_c.append(c)
            parts_p.append(p)
        if self.num_learned:
            parts_c.append(self.query_feat.weight[None].expand(batch, -1, -1))
            parts_p.append(self.query_embed.weight[None].expand(batch, -1, -1))
        if self.num_bank:
            warm = (self.bank_count > 0) & (self.bank_steps >= self.warmup)  # [K_bank]
            content = torch.where(warm[:, None], self.class_bank.to(self.bank_feat.weight.dtype), self.bank_feat.weight)
            parts_c.append(content[None].expand(batch, -1, -1))
            parts_p.append(self.bank_pos.weight[None].expand(batch, -1, -1))
        kind, query_class = self.flags(dev)
        q = kind.shape[0]
        return QuerySet(torch.cat(parts_c, 1), torch.cat(parts_p, 1),
                        QueryMeta(kind, query_class, torch.full((batch, q), -1, dtype=torch.long, device=dev)))

    def _grid_queries(self, f: torch.Tensor, b: int, t: int, pad_size: tuple[int, int], image_sizes: torch.Tensor,
                      generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        s, n = self.grid_size, self.num_grid
        dev = f.device
        centres = (torch.arange(s, device=dev, dtype=torch.float32) + 0.5) / s  # [S]
        cy, cx = torch.meshgrid(centres, centres, indexing="ij")
        cell_xy = torch.stack((cx.flatten(), cy.flatten()), -1)  # [S*S, 2] in [0, 1] of the valid canvas
        # cell centres in feature-pixel units of each clip's valid canvas, clamped to the last valid feature
        # pixel so bilinear reads never mix in padding -> grid_sample coordinates
        valid = image_sizes.flip(-1).to(dev, torch.float32)  # [B, 2] (w, h) px
        u = cell_xy[None] * valid[:, None] / self.grid_stride - 0.5  # [B, S*S, 2]
        last = (torch.ceil(valid / self.grid_stride) - 1).clamp(min=0)  # [B, 2]
        u = torch.minimum(u.clamp(min=0), last[:, None]) + 0.5
        grid = torch.stack((u[..., 0] / f.shape[-1], u[..., 1] / f.shape[-2]), -1) * 2 - 1  # [B, S*S, 2]
        grid = grid.repeat_interleave(t, 0)[:, :, None]  # [B*T, S*S, 1, 2]
        sampled = F.grid_sample(f, grid.to(f.dtype), mode="bilinear", padding_mode="border", align_corners=False)  # [B*T, C, S*S, 1]
        cell_feat = sampled[..., 0].view(b, t, f.shape[1], s * s).mean(1).transpose(1, 2)  # [B, S*S, C]
        if self.training:  # Eq. (8): N random cells per clip
            r = torch.rand(b, s * s, generator=generator, device="cpu" if generator is None else generator.device)
            pick = r.argsort(1)[:, :n].to(dev)  # [B, N]
        else:  # fixed seeded choice, identical for every clip and call
            g = torch.Generator().manual_seed(self.test_seed)
            pick = torch.randperm(s * s, generator=g)[:n].sort().values.to(dev)[None].expand(b, n)
        feat = torch.gather(cell_feat, 1, pick[..., None].expand(-1, -1, cell_feat.shape[-1]))  # [B, N, C]
        xy = cell_xy[pick]  # [B, N, 2]
        return self.grid_ffn(feat), self.grid_pos(_xy_code(xy, self.dim).to(feat.dtype))

    def _exemplar_queries(self, f: torch.Tensor, b: int, t: int, pad_size: tuple[int, int],
                          exemplars: list[ClipExemplars] | None) -> QuerySet:
        dev, d = f.device, self.dim
        if exemplars is None or len(exemplars) != b:
            raise ValueError(f"task 'evs' needs clip.exemplars for each of the {b} clips "
                             f"(got {None if exemplars is None else len(exemplars)})")
        counts = [len(e.kind) for e in exemplars]
        q = max(counts, default=0)
        hp, wp = pad_size
        stride = self.exemplar_stride
        h8, w8 = f.shape[-2:]
        if q == 0:
            empty = f.new_zeros(b, 0, d)
            none = torch.zeros(0, dtype=torch.long, device=dev)
            return QuerySet(empty, empty, QueryMeta(none, none, torch.zeros(b, 0, dtype=torch.long, device=dev)))
        # flatten all exemplars of the batch: k = 0..sumK-1
        kind = torch.tensor([KIND_CODE[k] for e in exemplars for k in e.kind], device=dev)  # [sumK]
        frame = torch.cat([e.frame.to(dev) + i * t for i, e in enumerate(exemplars)])  # [sumK] global frame index
        pts = torch.cat([e.points.to(dev, torch.float32) for e in exemplars])  # [sumK, 2] (x, y) px
        boxes = torch.cat([e.boxes.to(dev, torch.float32) for e in exemplars])  # [sumK, 4] x1 y1 x2 y2 px
        masks = torch.cat([F.pad(e.masks.to(dev), (0, wp - e.masks.shape[-1], 0, hp - e.masks.shape[-2]))
                           for e in exemplars]).float()  # [sumK, Hp, Wp]
        nk = kind.shape[0]

        # cell weights for box / mask averaging, on the stride-8 grid: [sumK, h8, w8]
        cy = (torch.arange(h8, device=dev, dtype=torch.float32) + 0.5) * stride  # cell centres in px
        cx = (torch.arange(w8, device=dev, dtype=torch.float32) + 0.5) * stride
        inside = ((cx[None, None, :] >= boxes[:, 0, None, None]) & (cx[None, None, :] < boxes[:, 2, None, None])
                  & (cy[None, :, None] >= boxes[:, 1, None, None]) & (cy[None, :, None] < boxes[:, 3, None, None])).float()
        mask_w = F.avg_pool2d(masks[:, None], stride)[:, 0] if masks.numel() else masks.new_zeros(nk, h8, w8)  # area fraction
        weights = torch.where((kind == KIND_CODE["box"])[:, None, None], inside, mask_w)  # [sumK, h8, w8]
        wsum = weights.flatten(1).sum(1)  # [sumK]
        # a box too small to contain a cell centre, or a point: sample at the point / box centre
        box_ctr = (boxes[:, :2] + boxes[:, 2:]) / 2
        use_point = (kind == KIND_CODE["point"]) | ((kind == KIND_CODE["box"]) & (wsum == 0))
        p_xy = torch.where((kind == KIND_CODE["point"])[:, None], pts + 0.5, box_ctr)  # continuous px (pixel centre)
        grid = (p_xy / torch.tensor([wp, hp], device=dev) * 2 - 1)  # [sumK, 2]
        grid = grid[None, :, None].expand(f.shape[0], nk, 1, 2)  # every frame samples every point; pick below
        sampled = F.grid_sample(f, grid.to(f.dtype), mode="bilinear", padding_mode="border", align_corners=False)  # [B*T, C, sumK, 1]
        point_feat = sampled[frame, :, torch.arange(nk, device=dev), 0]  # [sumK, C]
        # weighted means, without copying a frame per object: [B*T, sumK, P] @ [B*T, P, C] then take own frame
        wfull = f.new_zeros(f.shape[0], nk, h8 * w8)
        wfull[frame, torch.arange(nk, device=dev)] = (weights.flatten(1) / wsum.clamp(min=1e-6)[:, None]).to(f.dtype)
        area_feat = torch.bmm(wfull, f.flatten(2).transpose(1, 2))[frame, torch.arange(nk, device=dev)]  # [sumK, C]
        feat = torch.where(use_point[:, None], point_feat, area_feat)  # [sumK, C]
        # location of the hint (point, or weighted centroid), normalised by the padded frame
        gy, gx = torch.meshgrid(cy / hp, cx / wp, indexing="ij")
        centroid = torch.stack(((weights * gx).flatten(1).sum(1), (weights * gy).flatten(1).sum(1)), -1) / wsum.clamp(min=1e-6)[:, None]
        loc = torch.where(use_point[:, None], p_xy / torch.tensor([wp, hp], device=dev), centroid)  # [sumK, 2]

        content_k = self.exemplar_ffn(feat)  # [sumK, D]
        pos_k = self.exemplar_pos(_xy_code(loc, d).to(content_k.dtype))  # [sumK, D]
        # scatter into padded [B, Q, D]
        bi = torch.cat([torch.full((c,), i, dtype=torch.long) for i, c in enumerate(counts)]).to(dev)
        qi = torch.cat([torch.arange(c) for c in counts]).to(dev)
        content = self.pad_feat.to(content_k.dtype).expand(b, q, d).clone()
        content[bi, qi] = content_k
        pos = content_k.new_zeros(b, q, d)
        pos[bi, qi] = pos_k
        ids = torch.full((b, q), -1, dtype=torch.long, device=dev)
        ids[bi, qi] = torch.cat([e.ids.to(dev) for e in exemplars])
        return QuerySet(content, pos, QueryMeta(torch.full((q,), QUERY_EXEMPLAR, dtype=torch.long, device=dev),
                                                torch.full((q,), -1, dtype=torch.long, device=dev), ids))

    # ----------------------------------------------------------------------------------- class bank

    @torch.no_grad()
    def update_bank(self, queries: torch.Tensor, indices: list[tuple[torch.Tensor, torch.Tensor]],
                    targets: list[Targets]) -> bool:
        """Eq. (9): momentum-update each bank class with the mean of the decoder queries matched to it.

        queries [B, Q, D] (decoder output), indices[b] = (query idx, target idx). Classes without a match this
        step keep their value; a class's first update copies the mean in (no bias towards the zero init).
        """
        if not self.num_bank:
            return False
        self.bank_steps += 1
        dev = queries.device
        bi = torch.cat([torch.full((len(q),), i, dtype=torch.long) for i, (q, _) in enumerate(indices)]).to(dev)
        qi = torch.cat([q.long().cpu() for q, _ in indices]).to(dev)
        labels = torch.cat([tg.labels.to(dev).long()[t.long().to(dev)] for (_, t), tg in zip(indices, targets)])
        slot = labels - self.bank_offset
        keep = (slot >= 0) & (slot < self.num_bank)
        if bi.numel() == 0:
            return True
        q = queries.detach()[bi[keep], qi[keep]].float()  # [M, D]
        slot = slot[keep]
        sums = torch.zeros(self.num_bank, q.shape[-1], device=dev).index_add_(0, slot, q)
        cnt = torch.zeros(self.num_bank, device=dev).index_add_(0, slot, torch.ones_like(slot, dtype=torch.float32))
        mean = sums / cnt.clamp(min=1)[:, None]
        seen = cnt > 0
        first = seen & (self.bank_count == 0)
        m = self.momentum
        new = torch.where(first[:, None], mean, m * self.class_bank + (1 - m) * mean)
        self.class_bank.copy_(torch.where(seen[:, None], new, self.class_bank))
        self.bank_count += seen.long()
        return True


def build_query_init(cfg: ModelConfig, backbone_channels: dict[int, int]) -> QueryInit:
    return QueryInit(cfg, backbone_channels)
