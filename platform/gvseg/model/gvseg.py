"""GvSeg: the composed segmenter (paper §3, Fig. 3). Built by injection: ``build_gvseg(cfg, loss_cfg)``.

    frames -> backbone (timm) -> pixel decoder -> task-oriented queries -> masked-attention decoder
                                                        (SPA injection before every self-attention, Eq. 5)

``forward(clip)`` runs one batch of B clips of T frames. The input is zero-padded to a multiple of 32
internally; masks come back cropped to ``ceil(H/4) x ceil(W/4)`` so they cover exactly the clip's
(padded-to-batch) H x W, the extent the matcher and criterion assume.

SPA injection (Eq. 5, method.md):
  * training: layer l's prediction before it (the initial one for l = 0) is Hungarian-matched to the
    targets (EVS: matched by exemplar id, which is the task's definition); a matched *thing* query gets the
    descriptor H (middle frame of the clip) of its GT object, or with probability
    ``decoder.predicted_descriptor_prob`` the H of its own predicted mask; everything else gets 0. Stuff /
    class queries are never injected (Table 4d).
  * inference (and eval-mode validation): H of each thing query's previous-layer predicted mask
    (sigmoid > 0.5), middle frame, no matching.
The class bank (VSS / VPS stuff) is updated from the final layer's matching in every training forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gvseg.config import (
    BackboneConfig,
    DecoderConfig,
    DescriptorConfig,
    LossConfig,
    ModelConfig,
    PixelDecoderConfig,
    QueryInitConfig,
)
from gvseg.model.backbone import Backbone, build_backbone
from gvseg.model.decoder import MaskedAttentionDecoder, build_decoder
from gvseg.model.pixel_decoder import build_pixel_decoder
from gvseg.model.queries import QueryInit, QuerySet, build_query_init
from gvseg.structures import Clip, Targets

Indices = list[tuple[torch.Tensor, torch.Tensor]]


class GvSeg(nn.Module):
    def __init__(self, cfg: ModelConfig, backbone: Backbone, pixel_decoder: nn.Module, query_init: QueryInit,
                 decoder: MaskedAttentionDecoder, matcher=None):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.pixel_decoder = pixel_decoder
        self.query_init = query_init
        self.decoder = decoder
        self.matcher = matcher  # HungarianMatcher, only needed to train with SPA injection / the class bank
        self.dim = cfg.decoder.dim

    # ------------------------------------------------------------------------------------------ forward

    def forward(self, clip: Clip) -> dict:
        """Segment B clips of T frames.

        Returns a dict:
          pred_logits   [B, Q, C+1]          class logits (index C = no object)
          pred_masks    [B, Q, T, h4, w4]    mask logits, h4 = ceil(H/4), w4 = ceil(W/4)
          pred_embeds   [B, Q, D]            track embedding q-hat (3-layer MLP, Eq. 2 / 6)
          queries       [B, Q, D]            final decoder queries (normed)
          query_is_stuff [Q] bool            stuff / class queries (no SPA, class-identity association)
          query_class   [Q] int64            class of each class-bank query, -1 otherwise
          query_ids     [B, Q] int64         EVS: track id of each exemplar query, -1 otherwise / padding
          aux_outputs   list of L dicts      {pred_logits, pred_masks[, indices]}: the initial prediction
                                             and layers 1..L-1 (deep supervision); ``indices`` is the
                                             matching used for SPA injection into the next layer
          indices       list of B (q_idx, t_idx)   training with targets: the final layer's matching
          pred_descriptors       [B, Q, T, u*v]  eval only: H of each final mask per frame (Eq. 6)
          pred_descriptor_embeds [B, Q, T, D]    eval only: the same, interpolated to D
        Q may be 0 (EVS without exemplars): every tensor then has a zero-sized Q axis.
        """
        b, t, _, h, w = clip.frames.shape
        hp, wp = math.ceil(h / 32) * 32, math.ceil(w / 32) * 32
        x = F.pad(clip.frames, (0, wp - w, 0, hp - h)).flatten(0, 1)  # [B*T, 3, Hp, Wp]
        crop = (math.ceil(h / 4), math.ceil(w / 4))

        feats = self.backbone(x)  # {4,8,16,32: [B*T, C_s, Hp/s, Wp/s]}
        mask_features, memories = self.pixel_decoder(feats)  # [B*T, Dp, Hp/4, Wp/4], 3 x [B*T, Dp, h_l, w_l]
        qs = self.query_init(feats, b, t, (hp, wp), clip.image_sizes, clip.exemplars)  # content/pos [B, Q, D]
        if qs.content.shape[1] == 0:
            return self._empty(b, t, crop, qs, x)

        match_log: list[Indices] = []
        inject = self._injector(clip, qs, t, crop, match_log)
        out = self.decoder(qs.content, qs.pos, memories, mask_features, t, inject)
        out["pred_masks"] = out["pred_masks"][..., : crop[0], : crop[1]]  # [B, Q, T, h4, w4]
        for i, aux in enumerate(out["aux_outputs"]):
            aux["pred_masks"] = aux["pred_masks"][..., : crop[0], : crop[1]]
            if i < len(match_log):
                aux["indices"] = match_log[i]
        out.update(query_is_stuff=qs.is_stuff, query_class=qs.query_class, query_ids=qs.query_ids)

        if self.training and clip.targets is not None:
            out["indices"] = self._match(out["pred_logits"], out["pred_masks"], clip.targets, qs)
            self.query_init.update_bank(out["queries"], out["indices"], clip.targets)
        if not self.training:
            desc = self._mask_descriptors(out["pred_masks"].flatten(1, 2) > 0, clip.image_sizes)  # [B, Q*T, u*v]
            nq = out["pred_masks"].shape[1]
            out["pred_descriptors"] = desc.view(b, nq, t, -1)
            out["pred_descriptor_embeds"] = self._embed(desc).view(b, nq, t, self.dim)
        return out

    # ------------------------------------------------------------------------------------- descriptors

    def _mask_descriptors(self, masks: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """masks [B, N, h4, w4] bool at 1/4 -> H [B, N, u*v]; canvas = valid size at 1/4."""
        from gvseg.model.descriptor import compute_descriptor

        bsz, n = masks.shape[:2]
        canvas = torch.ceil(image_sizes.to(masks.device, torch.float32) / 4)  # [B, 2]
        canvas = canvas[:, None].expand(bsz, n, 2).reshape(-1, 2)
        desc = compute_descriptor(masks.flatten(0, 1), canvas, self.cfg.descriptor, self.dim, downsample=1)
        return desc.view(bsz, n, -1)

    def _embed(self, desc: torch.Tensor) -> torch.Tensor:
        from gvseg.model.descriptor import descriptor_to_embedding

        shape = desc.shape[:-1]
        return descriptor_to_embedding(desc.reshape(-1, desc.shape[-1]), self.dim).view(*shape, self.dim)

    # ---------------------------------------------------------------------------------------- injection

    def _injector(self, clip: Clip, qs: QuerySet, t: int, crop: tuple[int, int], log: list[Indices]):
        """The callback ``decoder`` calls before each self-attention, or None when nothing is injected."""
        thing_q = (~qs.is_stuff).nonzero().flatten()  # [Q_th] thing / instance queries
        if not self.cfg.decoder.spa_inject or thing_q.numel() == 0:
            return None
        b, nq = qs.content.shape[:2]
        mid = t // 2  # method.md: inject H of the clip's middle frame
        dev = qs.content.device

        if not (self.training and clip.targets is not None):
            def infer_inject(layer: int, prev: dict) -> torch.Tensor:
                masks = prev["pred_masks"][:, thing_q, mid, : crop[0], : crop[1]] > 0  # [B, Q_th, h4, w4]
                h_emb = self._embed(self._mask_descriptors(masks, clip.image_sizes))  # [B, Q_th, D]
                out = h_emb.new_zeros(b, nq, self.dim)
                out[:, thing_q] = h_emb
                return out
            return infer_inject

        if self.matcher is None and self.cfg.task != "evs":
            raise ValueError("GvSeg: training with decoder.spa_inject needs a matcher; build with build_gvseg(cfg, loss_cfg)")
        from gvseg.model.descriptor import compute_descriptor

        targets = clip.targets
        counts = [int(tg.labels.shape[0]) for tg in targets]
        offsets = torch.tensor([0] + counts[:-1]).cumsum(0).tolist()
        if sum(counts):  # GT descriptors of every target's middle frame, once per forward
            gt_masks = torch.cat([tg.masks[:, mid] for tg in targets]).to(dev)  # [sumK, H, W]
            canvas = torch.cat([clip.image_sizes[i].to(dev, torch.float32).expand(c, 2) for i, c in enumerate(counts)])
            gt_emb = self._embed(compute_descriptor(gt_masks, canvas, self.cfg.descriptor, self.dim))  # [sumK, D]
            gt_thing = torch.cat([tg.isthing.to(dev) for tg in targets])  # [sumK]
        is_thing_q = ~qs.is_stuff  # [Q]
        p_pred = self.cfg.decoder.predicted_descriptor_prob

        def train_inject(layer: int, prev: dict) -> torch.Tensor | None:
            masks = prev["pred_masks"][..., : crop[0], : crop[1]]  # [B, Q, T, h4, w4]
            indices = self._match(prev["pred_logits"], masks, targets, qs)
            log.append(indices)
            if not sum(counts):
                return None
            bi = torch.cat([torch.full((len(q),), i, dtype=torch.long) for i, (q, _) in enumerate(indices)]).to(dev)
            qi = torch.cat([q for q, _ in indices]).to(dev)
            ti = torch.cat([tt + o for (_, tt), o in zip(indices, offsets)]).to(dev)  # global target index
            keep = is_thing_q[qi] & gt_thing[ti]
            bi, qi, ti = bi[keep], qi[keep], ti[keep]
            if float(torch.rand(())) < p_pred:  # H of the predicted masks, as at inference
                h_emb = self._pred_desc(masks[bi, qi, mid] > 0, clip.image_sizes.to(dev)[bi])  # [M, D]
            else:
                h_emb = gt_emb[ti]
            out = qs.content.new_zeros(b, nq, self.dim)
            out[bi, qi] = h_emb.to(out.dtype)
            return out

        return train_inject

    def _pred_desc(self, masks: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """masks [N, h4, w4] bool, image_sizes [N, 2] -> embedded H [N, D]."""
        from gvseg.model.descriptor import compute_descriptor

        canvas = torch.ceil(image_sizes.to(masks.device, torch.float32) / 4)
        return self._embed(compute_descriptor(masks, canvas, self.cfg.descriptor, self.dim, downsample=1))

    def _match(self, logits: torch.Tensor, masks: torch.Tensor, targets: list[Targets], qs: QuerySet) -> Indices:
        """Hungarian matching, or for EVS the fixed exemplar-id assignment (query k stands for its hint)."""
        if self.cfg.task == "evs":
            out = []
            for ids, tg in zip(qs.query_ids, targets):
                qi, ti = (ids[:, None] == tg.ids.to(ids.device)[None]).nonzero(as_tuple=True)
                out.append((qi.cpu(), ti.cpu()))
            return out
        if self.matcher is None:
            raise ValueError("GvSeg: no matcher; build with build_gvseg(cfg, loss_cfg) to train")
        return self.matcher(logits.detach(), masks.detach(), targets)

    def _empty(self, b: int, t: int, crop: tuple[int, int], qs: QuerySet, x: torch.Tensor) -> dict:
        c = self.cfg.num_classes
        z = x.new_zeros
        preds = {"pred_logits": z(b, 0, c + 1), "pred_masks": z(b, 0, t, *crop)}
        out = {**preds, "pred_embeds": z(b, 0, self.dim), "queries": z(b, 0, self.dim),
               "aux_outputs": [dict(preds) for _ in range(self.cfg.decoder.num_layers)],
               "query_is_stuff": qs.is_stuff, "query_class": qs.query_class, "query_ids": qs.query_ids}
        if self.training:
            out["indices"] = [(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long)) for _ in range(b)]
        else:
            uv = self.cfg.descriptor.angle_bins * self.cfg.descriptor.radius_bins
            out["pred_descriptors"] = z(b, 0, t, uv)
            out["pred_descriptor_embeds"] = z(b, 0, t, self.dim)
        return out


# ------------------------------------------------------------------------------------------------ build


def build_gvseg(cfg: ModelConfig, loss_cfg: LossConfig | None = None) -> GvSeg:
    """Compose GvSeg from ``cfg``; ``loss_cfg`` (default ``LossConfig()``) configures the matcher used for SPA
    injection and the class bank in training."""
    if cfg.task not in ("vis", "vss", "vps", "evs"):
        raise ValueError(f"model.task={cfg.task!r}: expected one of vis, vss, vps, evs")
    backbone = build_backbone(cfg.backbone)
    pixel_decoder = build_pixel_decoder(cfg.pixel_decoder, backbone.channels)
    query_init = build_query_init(cfg, backbone.channels)
    decoder = build_decoder(cfg.decoder, cfg.num_classes, mask_dim=cfg.pixel_decoder.dim,
                            memory_dim=cfg.pixel_decoder.dim)
    matcher = None
    try:
        from gvseg.losses.matcher import HungarianMatcher

        matcher = HungarianMatcher(loss_cfg if loss_cfg is not None else LossConfig())
    except ImportError:  # inference-only installs may leave out the losses
        matcher = None
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


def debug_model_config(task: str = "vps", num_classes: int = 4, num_thing_classes: int = 2) -> ModelConfig:
    """A model that runs on CPU in well under a second per 64x64 clip: timm ``test_resnet`` (0.4M params),
    FPN pixel decoder, width 32, 3 decoder layers, 10 instance queries, a 4x4 query grid."""
    return ModelConfig(
        task=task,  # type: ignore[arg-type]
        num_classes=num_classes,
        num_thing_classes=num_thing_classes,
        backbone=BackboneConfig(name="test_resnet"),
        pixel_decoder=PixelDecoderConfig(kind="fpn", dim=32, num_layers=1, num_heads=4, num_points=2, ffn_dim=64),
        decoder=DecoderConfig(num_layers=3, dim=32, num_heads=4, ffn_dim=64, num_queries=10),
        descriptor=DescriptorConfig(angle_bins=12, radius_bins=6, num_points=50),
        queries=QueryInitConfig(grid_size=4, bank_warmup=2),
    )
