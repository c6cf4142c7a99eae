"""Masked-attention query decoder with SPA injection (Mask2Former decoder + GvSeg Eq. 5).

One layer, top to bottom (Mask2Former order):
  1. masked cross-attention to one level of the pixel-decoder memories (round robin 1/32, 1/16, 1/8). The
     mask is the previous prediction (sigmoid < 0.5 -> not attended); a query whose mask is empty everywhere
     attends everywhere instead (Mask2Former's guard, else softmax over nothing gives NaN).
  2. SPA injection, Eq. (5): ``q <- q + inject(l, prev_prediction)`` before self-attention. ``inject`` is a
     callback so this module knows nothing about matching: ``GvSeg`` passes GT descriptors for matched thing
     queries in training and predicted-mask descriptors at inference; ``None`` means no injection.
  3. self-attention among queries, 4. FFN (all post-norm, as Mask2Former).
Prediction heads run on the initial queries and after every layer (deep supervision): L+1 predictions.

Clip-level queries: a query predicts a tube over the T frames of its clip. Its cross-attention sees the
memories of all T frames at once (tokens ``T*h*w``, with a sine time encoding added when T > 1) and its
mask embedding is dotted with every frame's mask features -> ``pred_masks [B, Q, T, h4, w4]``.

Inputs to :meth:`MaskedAttentionDecoder.forward`
  queries      [B, Q, D]       initial query content (task-oriented init, see ``queries.py``)
  query_pos    [B, Q, D]       query positional embedding, added to q/k of every attention (DETR)
  memories     3 x [B*T, Dp, h_l, w_l] coarse to fine
  mask_features [B*T, Dp, h4, w4]
  num_frames   T
  inject       callable(layer_idx, prev_prediction_dict) -> [B, Q, D] | None, or None
Output dict
  pred_logits [B, Q, C+1], pred_masks [B, Q, T, h4, w4], queries [B, Q, D] (final, normed),
  pred_embeds [B, Q, D] (track embedding q-hat, 3-layer MLP), aux_outputs: L dicts {pred_logits, pred_masks}
  (the initial prediction and layers 1..L-1; the final layer's is the top level).
Q = 0 is allowed (everything comes back with a zero-sized Q axis).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gvseg.model.pixel_decoder import sine_pos_1d, sine_pos_2d

Injector = Callable[[int, dict[str, torch.Tensor]], "torch.Tensor | None"]


class MLP(nn.Module):
    """Plain MLP with ReLU between layers (DETR); names ``layers.i`` as Mask2Former's ``mask_embed``."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.multihead_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, mem: torch.Tensor, attn_mask: torch.Tensor | None,
                pos: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        out = self.multihead_attn(q + query_pos, mem + pos, mem, attn_mask=attn_mask, need_weights=False)[0]
        return self.norm(q + self.dropout(out))


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, query_pos: torch.Tensor, extra_pos: torch.Tensor | None = None) -> torch.Tensor:
        qk = q + query_pos if extra_pos is None else q + query_pos + extra_pos
        out = self.self_attn(qk, qk, q, need_weights=False)[0]
        return self.norm(q + self.dropout(out))


class FFNLayer(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor) -> torch.Tensor:
        return self.norm(q + self.dropout(self.linear2(self.dropout(F.relu(self.linear1(q))))))


class MaskedAttentionDecoder(nn.Module):
    def __init__(self, dim: int, num_heads: int, ffn_dim: int, num_layers: int, num_classes: int,
                 mask_dim: int, memory_dim: int, track_embed_layers: int = 3, dropout: float = 0.0,
                 num_levels: int = 3, spa_mode: str = "residual"):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"decoder.dim={dim} must be divisible by decoder.num_heads={num_heads}")
        if spa_mode not in ("residual", "pos"):
            raise ValueError(f"decoder.spa_mode={spa_mode!r}: expected 'residual' or 'pos'")
        self.num_heads, self.num_layers, self.num_levels, self.spa_mode = num_heads, num_layers, num_levels, spa_mode
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, num_heads, dropout) for _ in range(num_layers))
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, num_heads, dropout) for _ in range(num_layers))
        self.transformer_ffn_layers = nn.ModuleList(FFNLayer(dim, ffn_dim, dropout) for _ in range(num_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.level_embed = nn.Embedding(num_levels, dim)
        # Mask2Former projects memories only when their width differs from the decoder's.
        self.input_proj = nn.ModuleList(
            nn.Conv2d(memory_dim, dim, 1) if memory_dim != dim else nn.Identity() for _ in range(num_levels))
        self.class_embed = nn.Linear(dim, num_classes + 1)  # +1 = no-object
        self.mask_embed = MLP(dim, dim, mask_dim, 3)
        self.track_embed = MLP(dim, dim, dim, track_embed_layers)  # q-hat (Eq. 2, 6)

    # ------------------------------------------------------------------------------------------ heads

    def predict(self, q: torch.Tensor, mask_features: torch.Tensor, attn_size: tuple[int, int] | None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """q [B, Q, D], mask_features [B, T, Dp, h4, w4] -> logits [B, Q, C+1], masks [B, Q, T, h4, w4],
        normed q [B, Q, D], and the cross-attention mask for the next layer [B*heads, Q, T*h*w] (True =
        blocked) at ``attn_size`` (h, w), or None."""
        qn = self.decoder_norm(q)
        logits = self.class_embed(qn)  # [B, Q, C+1]
        emb = self.mask_embed(qn)  # [B, Q, Dp]
        masks = torch.einsum("bqc,btchw->bqthw", emb, mask_features)  # [B, Q, T, h4, w4]
        if attn_size is None:
            return logits, masks, qn, None
        b, nq, t = masks.shape[:3]
        with torch.no_grad():
            small = F.interpolate(masks.detach().flatten(1, 2).float(), size=attn_size, mode="bilinear",
                                  align_corners=False)  # [B, Q*T, h, w]
            blocked = (small.sigmoid() < 0.5).view(b, nq, -1)  # [B, Q, T*h*w]
            blocked &= ~blocked.all(-1, keepdim=True)  # guard: empty mask -> attend everywhere
            blocked = blocked[:, None].expand(b, self.num_heads, nq, blocked.shape[-1]).flatten(0, 1)  # [B*heads, Q, T*h*w]
        return logits, masks, qn, blocked

    # ---------------------------------------------------------------------------------------- forward

    def forward(self, queries: torch.Tensor, query_pos: torch.Tensor, memories: list[torch.Tensor],
                mask_features: torch.Tensor, num_frames: int, inject: Injector | None = None) -> dict:
        b, nq, d = queries.shape
        t = num_frames
        # memories -> tokens over all T frames of each clip, coarse to fine
        mems, poss, sizes = [], [], []
        for lvl, m in enumerate(memories):
            m = self.input_proj[lvl](m)  # [B*T, D, h, w]
            h, w = m.shape[-2:]
            sizes.append((h, w))
            pos = sine_pos_2d(h, w, d, m.device)[None]  # [1, D, h, w]
            if t > 1:  # time enters as a sine code of the frame index (Mask2Former-VIS 3D encoding)
                tt = (torch.arange(t, device=m.device, dtype=torch.float32) + 0.5) / t
                pos = pos + sine_pos_1d(tt, d)[:, :, None, None]  # [T, D, h, w]
            mems.append(m.view(b, t, d, h * w).permute(0, 1, 3, 2).reshape(b, t * h * w, d))  # [B, T*h*w, D]
            pos = pos.flatten(2).transpose(1, 2).reshape(1, -1, d) + self.level_embed.weight[lvl]  # [1, T*h*w, D]
            poss.append(pos.expand(b, -1, -1).to(m.dtype))
        mf = mask_features.view(b, t, *mask_features.shape[1:])  # [B, T, Dp, h4, w4]

        q = queries
        logits, masks, _, attn_mask = self.predict(q, mf, sizes[0])
        preds = [{"pred_logits": logits, "pred_masks": masks}]
        for i in range(self.num_layers):
            lvl = i % self.num_levels
            q = self.transformer_cross_attention_layers[i](q, mems[lvl], attn_mask, poss[lvl], query_pos)  # [B, Q, D]
            h_spa = inject(i, preds[-1]) if inject is not None else None  # [B, Q, D] | None
            if h_spa is not None and self.spa_mode == "residual":
                q = q + h_spa.to(q.dtype)  # Eq. (5): q^l <- q^l + 1^{l-1} H, before SelfAttn
            q = self.transformer_self_attention_layers[i](
                q, query_pos, h_spa.to(q.dtype) if (h_spa is not None and self.spa_mode == "pos") else None)
            q = self.transformer_ffn_layers[i](q)  # [B, Q, D]
            next_size = sizes[(i + 1) % self.num_levels] if i + 1 < self.num_layers else None
            logits, masks, qn, attn_mask = self.predict(q, mf, next_size)
            preds.append({"pred_logits": logits, "pred_masks": masks})

        qn = self.decoder_norm(q)
        return {
            "pred_logits": preds[-1]["pred_logits"],  # [B, Q, C+1]
            "pred_masks": preds[-1]["pred_masks"],  # [B, Q, T, h4, w4]
            "queries": qn,  # [B, Q, D]
            "pred_embeds": self.track_embed(qn),  # [B, Q, D]
            "aux_outputs": preds[:-1],  # L x {pred_logits, pred_masks}
        }


def build_decoder(cfg, num_classes: int, mask_dim: int, memory_dim: int) -> MaskedAttentionDecoder:
    """``cfg``: :class:`gvseg.config.DecoderConfig`."""
    return MaskedAttentionDecoder(dim=cfg.dim, num_heads=cfg.num_heads, ffn_dim=cfg.ffn_dim,
                                  num_layers=cfg.num_layers, num_classes=num_classes, mask_dim=mask_dim,
                                  memory_dim=memory_dim, track_embed_layers=cfg.track_embed_layers,
                                  dropout=cfg.dropout, spa_mode=getattr(cfg, "spa_mode", "residual"))
