"""Task-oriented temporal contrastive learning (GvSeg Eq. 10, Table 4b/4e).

Contract
--------
``TemporalContrastive(cfg, num_classes, dim)(key: Samples, ref: Samples)
-> {"loss_tcl": scalar, "loss_tcl_aux": scalar}`` (unweighted; weights ``cfg.weight`` / ``cfg.aux_weight``,
also in ``SetCriterion.weight_dict``). ``Samples`` are the matched track embeddings of a batch of key clips
and of their reference clips (``gather_samples`` builds them from ``pred_embeds`` and the matcher indices).

Each key sample is an anchor; candidates are the reference samples **of the same clip pair** (same video):
* things / instances (``isthing``): same id and ΔH = ||H_ref - H_key|| / ||H_key|| < τ (Eq. 10, computed on
  ground-truth descriptors) -> positive; same id with ΔH >= τ -> negative (``far_same_id="negative"``, the
  paper's wording) or excluded (``"ignore"``); other ids -> negative. A same-id pair whose descriptor is
  empty in either frame (object absent there) is excluded. ``thing_reference="frame"`` (the ablation, prior
  work) drops references more than ``frame_window`` frames away and takes every near same-id as positive.
* stuff / semantic classes: positives are the same class in the reference clip **and** in the class's FIFO
  queue (``stuff_reference="dataset"``); negatives are other classes there and their queues.
  ``stuff_reference="frame"`` disables the queue.
``symmetric`` (default): the reference clip's samples anchor too, against the key clip's (both clips are
segmented and both feed the queues), so each step's two clips are both key clips.
Loss (IDOL / CTVIS): per anchor with >= 1 positive and >= 1 negative,
``log(1 + sum_{p,n} exp(k.n - k.p)) = softplus(lse_n(k.n) + lse_p(-k.p))`` on raw dot products, averaged over
anchors; auxiliary ``(cos(k, c) - 1[c positive])^2`` averaged over all counted pairs. No anchors -> zeros
that stay attached to the graph.

Queue: ``queue [C, N_Q, D]``, ``queue_ptr [C]`` (next write slot), ``queue_count [C]`` (filled slots) are
registered buffers, so checkpoints carry them. After the loss (training mode), the key clip's stuff samples
are enqueued (detached); under DDP the (class, embedding) pairs of every rank are all-gathered first, so every
rank applies the same update.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from gvseg import counters
from gvseg.config import ContrastiveConfig
from gvseg.structures import Targets


@dataclass
class Samples:
    """K matched objects of a batch of clips, flattened over the batch."""

    embeds: torch.Tensor  # [K, D] track embeddings q-hat of the matched queries
    ids: torch.Tensor  # [K] int64 track ids (unique within a video)
    labels: torch.Tensor  # [K] int64 contiguous class
    isthing: torch.Tensor  # [K] bool
    clip: torch.Tensor  # [K] int64 index of the clip in the batch: key clip b pairs with reference clip b
    desc: torch.Tensor  # [K, u*v] ground-truth descriptor of the object in the clip's representative frame
    frame: torch.Tensor  # [K] int64 position of that frame in the video (used by thing_reference="frame")


def gather_samples(
    pred_embeds: torch.Tensor,
    indices: list[tuple[torch.Tensor, torch.Tensor]],
    targets: list[Targets],
    descriptors: list[torch.Tensor],
    frame: torch.Tensor | None = None,
) -> Samples:
    """Samples from model outputs: pred_embeds [B, Q, D], the matcher's indices, the targets, per-clip GT
    descriptors [K_b, u*v] (all K_b targets, e.g. ``target_descriptors``) and frame [B] (video position of
    the descriptors' frame; default 0)."""
    device = pred_embeds.device
    emb, ids, labels, isthing, clip, desc, frm = [], [], [], [], [], [], []
    for b, ((src, tgt), tg) in enumerate(zip(indices, targets)):
        src, tgt = src.to(device), tgt.to(device)
        emb.append(pred_embeds[b, src])
        ids.append(tg.ids.to(device)[tgt])
        labels.append(tg.labels.to(device)[tgt])
        isthing.append(tg.isthing.to(device)[tgt])
        clip.append(torch.full_like(src, b))
        desc.append(descriptors[b].to(device)[tgt])
        f = 0 if frame is None else frame[b]
        frm.append(torch.full_like(src, 0) + f)
    return Samples(torch.cat(emb), torch.cat(ids), torch.cat(labels), torch.cat(isthing).bool(),
                   torch.cat(clip), torch.cat(desc).float(), torch.cat(frm))


def delta_h(h_key: torch.Tensor, h_ref: torch.Tensor) -> torch.Tensor:
    """Eq. (10): ||h_ref - h_key||_2 / ||h_key||_2 over the last dim (broadcasting); +inf where h_key = 0."""
    num = torch.linalg.vector_norm(h_ref - h_key, dim=-1)
    den = torch.linalg.vector_norm(h_key, dim=-1).expand_as(num)
    return torch.where(den > 0, num / den.clamp_min(1e-12), torch.full_like(num, float("inf")))


def positive_mask(key: Samples, ref: Samples, cfg: ContrastiveConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(positive [A, R], negative [A, R]) bool over key anchors x reference samples (no queue)."""
    same_clip = key.clip[:, None] == ref.clip[None]
    same_id = key.ids[:, None] == ref.ids[None]
    same_label = key.labels[:, None] == ref.labels[None]
    if cfg.thing_reference == "video":  # Eq. (10): whole video, ΔH decides
        dh = delta_h(key.desc[:, None], ref.desc[None])  # [A, R]
        present = (key.desc.abs().sum(-1) > 0)[:, None] & (ref.desc.abs().sum(-1) > 0)[None]
        close = same_id & present & (dh < cfg.tau)
        far = same_id & present & ~close
        thing_pos = close
        thing_neg = ~same_id | (far if cfg.far_same_id == "negative" else torch.zeros_like(far))
    else:  # prior work: nearby frames only, every same id positive
        near = (key.frame[:, None] - ref.frame[None]).abs() <= cfg.frame_window
        thing_pos = same_id & near
        thing_neg = ~same_id & near
    anchor_thing = key.isthing[:, None]
    pos = same_clip & torch.where(anchor_thing, thing_pos, same_label)
    neg = same_clip & torch.where(anchor_thing, thing_neg, ~same_label)
    return pos, neg


class TemporalContrastive(nn.Module):
    def __init__(self, cfg: ContrastiveConfig, num_classes: int, dim: int):
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.dim = dim
        # One queue per class (not only stuff classes): in VSS every class is semantic, and 124 x 100 x 256
        # floats is 12 MB. Only non-thing samples are ever enqueued.
        self.register_buffer("queue", torch.zeros(num_classes, cfg.queue_size, dim))
        self.register_buffer("queue_ptr", torch.zeros(num_classes, dtype=torch.int64))
        self.register_buffer("queue_count", torch.zeros(num_classes, dtype=torch.int64))

    # ------------------------------------------------------------------------------------------- loss

    def forward(self, key: Samples, ref: Samples, update_queue: bool | None = None) -> dict[str, torch.Tensor]:
        for name, s in (("key", key), ("ref", ref)):
            if s.embeds.dim() != 2 or s.embeds.shape[1] != self.dim:
                raise ValueError(f"TemporalContrastive: {name} embeds {tuple(s.embeds.shape)} are not [K, {self.dim}]")
        zero = key.embeds.sum() * 0.0 + ref.embeds.sum() * 0.0  # attached: DDP needs every parameter used
        # ``symmetric``: the reference clip is a key clip too (it is segmented like the key, LossConfig.
        # reference_segmentation), so its samples anchor against the key clip's: Eq. (10) both ways.
        terms = [self._anchor_terms(key, ref)] + ([self._anchor_terms(ref, key)] if self.cfg.symmetric else [])
        loss_sum, anchors, aux_sum, pairs = (sum(t[i] for t in terms) for i in range(4))
        losses = {"loss_tcl": zero + loss_sum / anchors.clamp_min(1),  # mean over the anchors of both ways
                  "loss_tcl_aux": zero + aux_sum / pairs.clamp_min(1.0)}
        if update_queue if update_queue is not None else self.training:  # queues see only what anchored
            for s in (key, ref) if self.cfg.symmetric else (key,):
                stuff = ~s.isthing
                self.enqueue(s.labels[stuff], s.embeds[stuff])
        return losses

    def _anchor_terms(self, key: Samples, ref: Samples) -> tuple[torch.Tensor, ...]:
        """Eq. (10) with ``key``'s samples as anchors against ``ref``'s (and the queues): (sum of the
        per-anchor losses, anchors counted, sum of the auxiliary terms, pairs counted), all float scalars."""
        pos, neg = positive_mask(key, ref, self.cfg)  # [A, R]
        cand = ref.embeds  # [R, D]
        if self.cfg.stuff_reference == "dataset":  # stuff anchors also see the dataset-wide queues
            q_emb, q_lab = self._queue_items()  # [C*N_Q, D], [C*N_Q] (-1 = empty slot)
            stuff_anchor = (~key.isthing)[:, None]
            filled = (q_lab >= 0)[None]
            same = key.labels[:, None] == q_lab[None]
            pos = torch.cat([pos, stuff_anchor & filled & same], 1)
            neg = torch.cat([neg, stuff_anchor & filled & ~same], 1)
            cand = torch.cat([cand, q_emb.to(cand.dtype)], 0)
        self._count(key, pos, neg)
        none = key.embeds.new_zeros((), dtype=torch.float32)
        if key.embeds.shape[0] == 0 or cand.shape[0] == 0:
            return none, none, none, none
        dots = key.embeds.float() @ cand.float().T  # [A, R'] raw dot products (IDOL)
        lse_neg = _masked_lse(dots, neg)  # [A]
        lse_pos = _masked_lse(-dots, pos)
        anchor = pos.any(1) & neg.any(1)
        per_anchor = torch.where(anchor, F.softplus(lse_neg + lse_pos), torch.zeros_like(lse_pos))
        cos = F.normalize(key.embeds.float(), dim=-1) @ F.normalize(cand.float(), dim=-1).T
        counted = (pos | neg).float()
        aux = ((cos - pos.float()) ** 2 * counted).sum()
        return per_anchor.sum(), anchor.sum().float(), aux, counted.sum()

    def _count(self, key: Samples, pos: torch.Tensor, neg: torch.Tensor) -> None:
        """Anchors, positives and negatives by thing/stuff, and the queue fill, into gvseg.counters (one sync)."""
        th = key.isthing  # [A]
        st = ~th
        stats = torch.stack([th.sum(), (pos.any(1) & th).sum(), pos[th].sum(), neg[th].sum(),
                             st.sum(), (pos.any(1) & st).sum(), pos[st].sum(), neg[st].sum()]).tolist()
        for name, v in zip(("thing_anchors", "thing_anchors_with_pos", "thing_pos", "thing_neg",
                            "stuff_anchors", "stuff_anchors_with_pos", "stuff_pos", "stuff_neg"), stats):
            counters.add(f"tcl/{name}", int(v))
        if self.cfg.stuff_reference == "dataset":
            seen = self.queue_count > 0  # classes that ever sent a sample; thing classes never do
            counters.gauge("tcl/queue_fill", float(self.queue_count[seen].sum()) / max(int(seen.sum()) * self.cfg.queue_size, 1))
            counters.gauge("tcl/queue_classes", float(seen.sum()))

    # ------------------------------------------------------------------------------------------ queue

    def _queue_items(self) -> tuple[torch.Tensor, torch.Tensor]:
        c, n = self.queue_count.shape[0], self.cfg.queue_size
        slot = torch.arange(n, device=self.queue.device)[None].expand(c, n)
        cls = torch.arange(c, device=self.queue.device)[:, None].expand(c, n)
        labels = torch.where(slot < self.queue_count[:, None], cls, torch.full_like(cls, -1))
        return self.queue.reshape(c * n, -1), labels.reshape(-1)

    def queue_items(self, cls: int) -> torch.Tensor:
        """The class's queue, oldest first: [count, D]."""
        count, ptr = int(self.queue_count[cls]), int(self.queue_ptr[cls])
        n = self.cfg.queue_size
        order = (torch.arange(count, device=self.queue.device) + (ptr - count)) % n
        return self.queue[cls, order]

    @torch.no_grad()
    def enqueue(self, labels: torch.Tensor, embeds: torch.Tensor) -> None:
        """FIFO-append (class, embedding) pairs in order; the oldest entries are overwritten. Under DDP every
        rank gathers all ranks' pairs (rank order) and applies the same update."""
        labels, embeds = _all_gather_pairs(labels.long(), embeds.detach().float())
        if labels.numel() == 0:
            return
        if bool(((labels < 0) | (labels >= self.num_classes)).any()):
            raise ValueError(f"TemporalContrastive.enqueue: class ids must be in [0, {self.num_classes})")
        n = self.cfg.queue_size
        order = torch.sort(labels, stable=True).indices  # group by class, keep arrival order inside a class
        lab, emb = labels[order], embeds[order]
        counts = torch.bincount(lab, minlength=self.num_classes)  # [C]
        first = torch.cumsum(counts, 0) - counts  # start of each class's run
        rank = torch.arange(lab.numel(), device=lab.device) - first[lab]  # arrival rank within its class
        keep = rank >= counts[lab] - n  # more than N_Q new ones: only the newest N_Q land
        slot = (self.queue_ptr[lab] + rank) % n
        self.queue[lab[keep], slot[keep]] = emb[keep].to(self.queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + counts) % n)
        self.queue_count.copy_((self.queue_count + counts).clamp_max(n))


def _masked_lse(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """logsumexp over the masked entries of each row; rows with none give 0 (and no NaN gradient)."""
    filled = torch.where(mask, x, torch.full_like(x, float("-inf")))
    filled = torch.where(mask.any(1, keepdim=True), filled, torch.zeros_like(x))
    return torch.logsumexp(filled, dim=1)


def _all_gather_pairs(labels: torch.Tensor, embeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every rank's (labels [n_r], embeds [n_r, D]) in rank order; identity without DDP.
    Ranks hold different counts, so each pads to the largest with label -1 and drops the padding after."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return labels, embeds
    world = dist.get_world_size()
    n = torch.tensor([labels.numel()], device=labels.device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    top = int(max(int(s) for s in sizes))
    if top == 0:
        return labels, embeds
    pad_l = torch.full((top,), -1, dtype=labels.dtype, device=labels.device)
    pad_e = embeds.new_zeros(top, embeds.shape[1])
    pad_l[: labels.numel()] = labels
    pad_e[: labels.numel()] = embeds
    all_l = [torch.empty_like(pad_l) for _ in range(world)]
    all_e = [torch.empty_like(pad_e) for _ in range(world)]
    dist.all_gather(all_l, pad_l)
    dist.all_gather(all_e, pad_e)
    lab, emb = torch.cat(all_l), torch.cat(all_e)
    real = lab >= 0
    return lab[real], emb[real]
