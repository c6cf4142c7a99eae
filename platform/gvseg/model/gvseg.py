"""GvSeg: the composed segmenter (paper §3, Fig. 3). Built by injection: ``build_gvseg(cfg, matcher)``.

    frames -> backbone (timm) -> pixel decoder -> task-oriented queries -> masked-attention decoder
                                                        (SPA injection before every self-attention, Eq. 5)

``forward(clip)`` runs one batch of B clips of T frames. The input is zero-padded to a multiple of 32
internally; masks come back cropped to ``ceil(H/4) x ceil(W/4)`` so they cover exactly the clip's
(padded-to-batch) H x W, the extent the matcher and criterion assume.

The matcher is injected (the engine builds one and hands it to both the model and the criterion), so this
module never imports ``gvseg.losses``. Every matching is gated by query type (``QueryMeta``): in VPS thing
targets only reach grid queries and each stuff target its class's bank query (method.md, §3.1 VPS).

SPA injection (Eq. 5, method.md), into thing / instance / exemplar queries only (stuff and class-bank queries
are never injected, Table 4d):
  * training: layer l's prediction before it (the initial one for l = 0) is matched to the targets; a query
    matched to a thing target gets the descriptor H (middle frame of the clip) of its GT object, or with
    probability ``decoder.predicted_descriptor_prob`` the H of its own predicted mask. Unmatched queries get
    0 (``decoder.inject_unmatched="zero"``, Eq. 5's 1^{l-1} H read literally) or the H of their own predicted
    mask (``"predicted"``: what every thing query gets at inference, so training sees the same inputs).
    Those matchings are kept as ``aux_outputs[l]["indices"]``: the criterion reuses them.
  * inference (and eval-mode validation): H of each thing query's previous-layer predicted mask
    (sigmoid > 0.5), middle frame, no matching.
Every injection is counted in :mod:`gvseg.counters` (``spa/inject_calls``, ``spa/inject_slots``,
``spa/inject_gt_slots``). The class bank (Eq. 9) is updated by the engine once per step from the key clip's
final matching (:meth:`QueryInit.update_bank`), never from the TCL reference clip.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gvseg import counters
from gvseg.config import (
    ModelConfig,
)
from gvseg.model.backbone import Backbone, build_backbone
from gvseg.model.decoder import MaskedAttentionDecoder, build_decoder
from gvseg.model.descriptor import compute_descriptor, descriptor_to_embedding, target_descriptors
from gvseg.model.pixel_decoder import build_pixel_decoder
from gvseg.model.queries import QueryInit, QuerySet, build_query_init
from gvseg.structures import QUERY_STUFF, Clip, QueryMeta, Targets

Indices = list[tuple[torch.Tensor, torch.Tensor]]
# (pred_logits [B, Q, C+1], pred_masks [B, Q, T, h, w], targets, meta) -> B pairs (query idx, target idx)
Matcher = Callable[[torch.Tensor, torch.Tensor, list[Targets], QueryMeta], Indices]


class GvSeg(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone: Backbone, pixel_decoder: nn.Module, query_init: QueryInit,
                 decoder: MaskedAttentionDecoder, matcher: Matcher | None = None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.query_init = query_init
        self.decoder = decoder
        self.matcher = matcher  # only needed to train (SPA injection and the final matching)
        self.dim = cfg.decoder.dim

    # ------------------------------------------------------------------------------------------ forward

    def forward(self, clip: Clip) -> dict:
        """Segment B clips of T frames.

        Returns a dict:
          pred_logits   [B, Q, C+1]          class logits (index C = no object)
          pred_masks    [B, Q, T, h4, w4]    mask logits, h4 = ceil(H/4), w4 = ceil(W/4)
          pred_embeds   [B, Q, D]            track embedding q-hat (3-layer MLP, Eq. 2 / 6)
          queries       [B, Q, D]            final decoder queries (normed)
          query_meta    QueryMeta            kind [Q], query_class [Q], query_ids [B, Q]: the matching gate
          query_kind, query_is_stuff, query_class [Q], query_ids [B, Q]: the same, flat (inference reads them)
          aux_outputs   list of L dicts      {pred_logits, pred_masks[, indices]}: the initial prediction
                                             and layers 1..L-1 (deep supervision); ``indices`` is the
                                             matching used for SPA injection into the next layer
          indices       list of B (q_idx, t_idx)   training with targets: the final layer's matching
          gt_descriptors list of B [K_b, u*v]      training with targets: H of each target in the middle frame
          pred_descriptors [B, Q, T, u*v]    eval only: H of each final mask per frame (Eq. 6)
        Q may be 0 (EVS without exemplars): every tensor then has a zero-sized Q axis.
        """
        b, t, _, h, w = clip.frames.shape
        hp, wp = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        # uint8 frames are normalised here, on the model's device (Mask2Former preprocess_image; Clip.float_frames)
        x = F.pad(clip.float_frames(), (0, wp - w, 0, hp - h)).flatten(0, 1)  # [B*T, 3, Hp, Wp]
        crop = (math.ceil(h / 4), math.ceil(w / 4))

        feats = self.backbone(x)  # {4,8,16,32: [B*T, C_s, Hp/s, Wp/s]}
        mask_features, memories = self.pixel_decoder(feats)  # [B*T, Dp, Hp/4, Wp/4], 3 x [B*T, Dp, h_l, w_l]
        qs = self.query_init(feats, b, t, (hp, wp), clip.image_sizes, clip.exemplars)  # content/pos [B, Q, D]
        meta = qs.meta
        flags = dict(query_meta=meta, query_kind=meta.kind, query_is_stuff=meta.is_stuff,
                     query_class=meta.query_class, query_ids=meta.query_ids)
        train = self.training and clip.targets is not None
        gt_desc = target_descriptors(clip.targets, clip.image_sizes, self.cfg.descriptor, self.dim) if train else None
        if qs.content.shape[1] == 0:
            return {**self._empty(b, t, crop, x), **flags, **({"gt_descriptors": gt_desc} if train else {})}
        match_log: list[Indices] = []
        inject = self._injector(clip, qs, t, crop, gt_desc, match_log)
        out = self.decoder(qs.content, qs.pos, memories, mask_features, t, inject)
        out["pred_masks"] = out["pred_masks"][..., : crop[0], : crop[1]]  # [B, Q, T, h4, w4]
        for i, aux in enumerate(out["aux_outputs"]):
            aux["pred_masks"] = aux["pred_masks"][..., : crop[0], : crop[1]]
            if i < len(match_log):
                aux["indices"] = match_log[i]
        out.update(flags)

        if train:
            out["indices"] = self._match(out["pred_logits"], out["pred_masks"], clip.targets, meta)
            out["gt_descriptors"] = gt_desc
        if not self.training:
            desc = self._mask_descriptors(out["pred_masks"].flatten(1, 2) > 0, clip.image_sizes)  # [B, Q*T, u*v]
            out["pred_descriptors"] = desc.view(b, out["pred_masks"].shape[1], t, -1)
        return out

    # ------------------------------------------------------------------------------------- descriptors

    def _mask_descriptors(self, masks: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """masks [B, N, h4, w4] bool at 1/4 -> H [B, N, u*v]; canvas = valid size at 1/4."""
        bsz, n = masks.shape[:2]
        canvas = torch.ceil(image_sizes.to(masks.device, torch.float32) / 4)  # [B, 2]
        canvas = canvas[:, None].expand(bsz, n, 2).reshape(-1, 2)
        desc = compute_descriptor(masks.flatten(0, 1), canvas, self.cfg.descriptor, self.dim, downsample=1)
        return desc.view(bsz, n, -1)

    def _embed(self, desc: torch.Tensor) -> torch.Tensor:
        """[..., u*v] -> [..., D]: Eq. 5 text, "flattened and interpolated to size d_model"."""
        shape = desc.shape[:-1]
        return descriptor_to_embedding(desc.reshape(-1, desc.shape[-1]), self.dim).view(*shape, self.dim)

    # ---------------------------------------------------------------------------------------- injection

    def _injector(self, clip: Clip, qs: QuerySet, t: int, crop: tuple[int, int],
                  gt_desc: list[torch.Tensor] | None, log: list[Indices]):
        """The callback ``decoder`` calls before each self-attention, or None when nothing is injected."""
        thing_q = (qs.meta.kind != QUERY_STUFF).nonzero().flatten()  # [Q_th] thing / instance / exemplar queries
        if not self.cfg.decoder.spa_inject or thing_q.numel() == 0:
            return None
        b, nq = qs.content.shape[:2]
        mid = t // 2  # method.md: inject H of the clip's middle frame
        dev = qs.content.device

        def predicted(prev: dict) -> torch.Tensor:  # [B, Q_th, D]: H of each thing query's predicted mask
            masks = prev["pred_masks"][:, thing_q, mid, : crop[0], : crop[1]] > 0  # [B, Q_th, h4, w4]
            return self._embed(self._mask_descriptors(masks, clip.image_sizes))

        if gt_desc is None:  # inference: every thing query carries the H of its own previous prediction
            def infer_inject(layer: int, prev: dict) -> torch.Tensor:
                counters.add("spa/inject_calls")
                counters.add("spa/inject_slots", b * thing_q.numel())
                out = qs.content.new_zeros(b, nq, self.dim)
                out[:, thing_q] = predicted(prev).to(out.dtype)
                return out
            return infer_inject

        if self.matcher is None:
            raise ValueError("GvSeg: training with decoder.spa_inject needs a matcher; build with build_gvseg(cfg, matcher)")
        targets = clip.targets
        counts = [int(tg.labels.shape[0]) for tg in targets]
        offsets = torch.tensor([0] + counts[:-1]).cumsum(0).tolist()
        gt_emb = self._embed(torch.cat(gt_desc).to(dev)) if sum(counts) else None  # [sumK, D], once per forward
        gt_thing = torch.cat([tg.isthing.to(dev) for tg in targets]) if sum(counts) else None  # [sumK]
        injectable = qs.meta.kind != QUERY_STUFF  # [Q]
        p_pred = self.cfg.decoder.predicted_descriptor_prob
        fill_unmatched = self.cfg.decoder.inject_unmatched == "predicted"

        def train_inject(layer: int, prev: dict) -> torch.Tensor | None:
            masks = prev["pred_masks"][..., : crop[0], : crop[1]]  # [B, Q, T, h4, w4]
            indices = self._match(prev["pred_logits"], masks, targets, qs.meta)
            log.append(indices)  # the criterion reuses it for this aux layer
            counters.add("spa/inject_calls")
            out = qs.content.new_zeros(b, nq, self.dim)
            if fill_unmatched:  # as at inference; matched slots are overwritten below
                out[:, thing_q] = predicted(prev).to(out.dtype)
                counters.add("spa/inject_slots", b * thing_q.numel())
            if not sum(counts):
                return out if fill_unmatched else None
            bi = torch.cat([torch.full((len(q),), i, dtype=torch.long) for i, (q, _) in enumerate(indices)]).to(dev)
            qi = torch.cat([q for q, _ in indices]).to(dev)
            ti = torch.cat([tt + o for (_, tt), o in zip(indices, offsets)]).to(dev)  # global target index
            keep = injectable[qi] & gt_thing[ti]
            bi, qi, ti = bi[keep], qi[keep], ti[keep]
            n = int(bi.numel())
            if n and float(torch.rand(())) < p_pred:  # H of the predicted masks, as at inference
                h_emb = self._embed(self._mask_descriptors(masks[bi, qi, mid][:, None] > 0, clip.image_sizes[bi])[:, 0])  # [M, D]
            else:
                h_emb = gt_emb[ti]
                counters.add("spa/inject_gt_slots", n)
            out[bi, qi] = h_emb.to(out.dtype)
            if not fill_unmatched:
                counters.add("spa/inject_slots", n)
            return out

        return train_inject

    def _match(self, logits: torch.Tensor, masks: torch.Tensor, targets: list[Targets], meta: QueryMeta) -> Indices:
        """The gated Hungarian matching (EVS: the gate leaves each hint's query exactly its own track)."""
        if self.matcher is None:
            raise ValueError("GvSeg: no matcher; build with build_gvseg(cfg, matcher) to train")
        return self.matcher(logits.detach(), masks.detach(), targets, meta)

    def _empty(self, b: int, t: int, crop: tuple[int, int], x: torch.Tensor) -> dict:
        c = self.cfg.num_classes
        z = x.new_zeros
        preds = {"pred_logits": z(b, 0, c + 1), "pred_masks": z(b, 0, t, *crop)}
        out = {**preds, "pred_embeds": z(b, 0, self.dim), "queries": z(b, 0, self.dim),
               "aux_outputs": [dict(preds) for _ in range(self.cfg.decoder.num_layers)]}
        if self.training:
            out["indices"] = [(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)) for _ in range(b)]
        else:
            uv = self.cfg.descriptor.angle_bins * self.cfg.descriptor.radius_bins
            out["pred_descriptors"] = z(b, 0, t, uv)
        return out


# ------------------------------------------------------------------------------------------------ build


def build_gvseg(cfg: ModelConfig, matcher: Matcher | None = None) -> GvSeg:
    """Compose GvSeg from ``cfg``. ``matcher`` (the engine's ``HungarianMatcher``, shared with the criterion) is
    needed to train; inference needs none."""
    if cfg.task not in ("vis", "vss", "vps", "evs"):
        raise ValueError(f"model.task={cfg.task!r}: expected one of vis, vss, vps, evs")
    backbone = build_backbone(cfg.backbone)
    pixel_decoder = build_pixel_decoder(cfg.pixel_decoder, backbone.channels)
    query_init = build_query_init(cfg, backbone.channels)
    decoder = build_decoder(cfg.decoder, cfg.num_classes, mask_dim=cfg.pixel_decoder.dim,
                            memory_dim=cfg.pixel_decoder.dim)
    model = GvSeg(cfg, backbone, pixel_decoder, query_init, decoder, matcher)
    if cfg.pretrained:
        model.load_report = load_pretrained(model, cfg.pretrained)
    return model


def load_pretrained(model: GvSeg, path: str):
    """Whole-model init from a local file: ``.pkl`` = Mask2Former detectron2 (converted), else a torch state
    dict (optionally under ``"model"``). Returns the :class:`~gvseg.model.backbone.LoadReport`."""
    from gvseg.model.convert_d2 import load_d2_checkpoint, load_into

    if path.endswith(".pkl"):
        return load_d2_checkpoint(model, path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: model.pretrained not found") from e
    except Exception as e:
        raise ValueError(f"{path}: model.pretrained is not a torch state dict ({e})") from e
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    return load_into(model, state, path)
