"""Pixel decoders: backbone features -> per-pixel mask features + multi-scale memories for the query decoder.

Contract (all three kinds)
  input   ``feats = {4: [N, C_0, H/4, W/4], 8: [N, C_1, H/8, W/8], 16: [...], 32: [...]}`` (N = B*T frames)
  output  ``mask_features [N, D, H/4, W/4]`` and ``multi_scale``, a list of 3 maps ``[N, D, h_l, w_l]``
          ordered coarse to fine (1/32, 1/16, 1/8): the order the masked-attention decoder cycles through
          (Mask2Former ``transformer_decoder``: ``level_index = i % num_feature_levels``).

Kinds (``PixelDecoderConfig.kind``)
  * ``msdeform`` :class:`MSDeformPixelDecoder`: the paper's Mask2Former pixel decoder. A 6-layer multi-scale
    deformable-attention encoder (Deformable DETR) over 1/8, 1/16, 1/32 with 8 heads x 4 points, then one FPN
    step to 1/4. The sampling is written with ``F.grid_sample`` (:func:`ms_deform_attn`): the CUDA op samples
    at ``loc * size - 0.5`` with zero padding, which is exactly ``grid_sample(2*loc-1, align_corners=False,
    padding_mode="zeros")``, so there is nothing to compile.
  * ``dense``    :class:`DenseAttnPixelDecoder`: full self-attention over the 1/32 + 1/16 tokens only (cheap:
    1/16 of the 1/8 token count), FPN for 1/8 and 1/4. The fast option.
  * ``fpn``      :class:`FPNPixelDecoder`: a plain FPN, no attention. The tiny CPU option for tests.

Parameter names of :class:`MSDeformPixelDecoder` follow Mask2Former's ``msdeformattn.py`` (``input_proj``,
``encoder.layers.i.self_attn.sampling_offsets``, ``adapter_1``, ``layer_1``, ``mask_features``) so that
:mod:`gvseg.model.convert_d2` is a rename table. There is no padding mask: like Mask2Former we let padded
pixels take part (they are zeros after normalisation-padding and the crop discards them).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gvseg.config import PixelDecoderConfig

LEVELS = (32, 16, 8)  # strides of the decoder memories, coarse to fine


# ------------------------------------------------------------------------------------ positional encoding


def sine_pos_2d(h: int, w: int, dim: int, device: torch.device, temperature: float = 10000.0) -> torch.Tensor:
    """DETR/Mask2Former normalised sine encoding of an h x w grid -> ``[dim, h, w]`` (y half, then x half)."""
    npf = dim // 2
    scale, eps = 2 * math.pi, 1e-6
    y = (torch.arange(1, h + 1, device=device, dtype=torch.float32) - 0.5) / (h + eps) * scale  # [h]
    x = (torch.arange(1, w + 1, device=device, dtype=torch.float32) - 0.5) / (w + eps) * scale  # [w]
    dim_t = temperature ** (2 * (torch.arange(npf, device=device) // 2) / npf)  # [npf]

    def enc(v: torch.Tensor) -> torch.Tensor:  # [n] -> [n, npf] interleaved sin/cos
        p = v[:, None] / dim_t
        return torch.stack((p[:, 0::2].sin(), p[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = enc(y)[:, None, :].expand(h, w, npf)  # [h, w, npf]
    pos_x = enc(x)[None, :, :].expand(h, w, npf)  # [h, w, npf]
    pos = torch.cat((pos_y, pos_x), dim=2)  # [h, w, 2*npf]
    if pos.shape[-1] < dim:  # odd dim: pad the last channel
        pos = F.pad(pos, (0, dim - pos.shape[-1]))
    return pos.permute(2, 0, 1)  # [dim, h, w]


def sine_pos_1d(v: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Sine encoding of values in [0, 1] -> ``[..., dim]`` (used for time and for query locations)."""
    dim_t = temperature ** (2 * (torch.arange(dim, device=v.device) // 2) / dim)  # [dim]
    p = v[..., None].float() * 2 * math.pi / dim_t
    return torch.where(torch.arange(dim, device=v.device) % 2 == 0, p.sin(), p.cos())


def _gn(dim: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, dim), dim)


# ------------------------------------------------------------------------- deformable attention (pure torch)


def ms_deform_attn(value: torch.Tensor, shapes: list[tuple[int, int]], loc: torch.Tensor,
                   weights: torch.Tensor) -> torch.Tensor:
    """Multi-scale deformable attention core, as in Deformable DETR's CUDA op, with ``F.grid_sample``.

    value   [N, S, M, Dh]      S = sum of h_l*w_l over levels, M heads
    shapes  [(h_l, w_l)] * L   python ints (no device sync)
    loc     [N, Lq, M, L, P, 2] sampling locations (x, y) in [0, 1] of each level's extent
    weights [N, Lq, M, L, P]   attention weights (softmax over L*P done by the caller)
    returns [N, Lq, M*Dh]
    """
    n, _, m, dh = value.shape
    lq = loc.shape[1]
    values = value.split([h * w for h, w in shapes], dim=1)
    grids = 2 * loc - 1  # grid_sample's [-1, 1]; align_corners=False puts pixel centres at (i+0.5)/size
    out = None
    for lvl, (h, w) in enumerate(shapes):
        v = values[lvl].flatten(2).transpose(1, 2).reshape(n * m, dh, h, w)  # [N*M, Dh, h, w]
        g = grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)  # [N*M, Lq, P, 2]
        s = F.grid_sample(v, g.to(v.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)  # [N*M, Dh, Lq, P]
        a = weights[:, :, :, lvl].transpose(1, 2).reshape(n * m, 1, lq, -1).to(s.dtype)  # [N*M, 1, Lq, P]
        o = (s * a).sum(-1)  # [N*M, Dh, Lq]
        out = o if out is None else out + o
    assert out is not None
    return out.view(n, m * dh, lq).transpose(1, 2)  # [N, Lq, M*Dh]


class MSDeformAttn(nn.Module):
    """Deformable attention module (Zhu et al. 2021); names match Mask2Former's ``MSDeformAttn``."""

    def __init__(self, dim: int, num_levels: int, num_heads: int, num_points: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"pixel_decoder.dim={dim} must be divisible by pixel_decoder.num_heads={num_heads}")
        self.dim, self.num_levels, self.num_heads, self.num_points = dim, num_levels, num_heads, num_points
        self.sampling_offsets = nn.Linear(dim, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(dim, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        # Deformable DETR init: offsets start on a ring of directions, k-th point k steps out.
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.num_heads, dtype=torch.float32) * (2.0 * math.pi / self.num_heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.num_heads, 1, 1, 2)
        grid = grid.repeat(1, self.num_levels, self.num_points, 1)
        grid = grid * torch.arange(1, self.num_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, ref: torch.Tensor, value_in: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        """query [N, Lq, D], ref [N or 1, Lq, L, 2] (x, y in [0, 1]), value_in [N, S, D] -> [N, Lq, D]."""
        n, lq, _ = query.shape
        m, lv, p = self.num_heads, self.num_levels, self.num_points
        value = self.value_proj(value_in).view(n, value_in.shape[1], m, self.dim // m)  # [N, S, M, Dh]
        offsets = self.sampling_offsets(query).view(n, lq, m, lv, p, 2)  # [N, Lq, M, L, P, 2] in pixels of level l
        weights = self.attention_weights(query).view(n, lq, m, lv * p).softmax(-1).view(n, lq, m, lv, p)
        norm = torch.tensor([[w, h] for h, w in shapes], device=query.device, dtype=offsets.dtype)  # [L, 2] (x, y)
        loc = ref[:, :, None, :, None, :] + offsets / norm[None, None, None, :, None, :]  # [N, Lq, M, L, P, 2]
        out = ms_deform_attn(value, shapes, loc, weights)  # [N, Lq, D]
        return self.output_proj(out)


class MSDeformEncoderLayer(nn.Module):
    """Post-norm encoder layer: deformable self-attention -> FFN (Deformable DETR encoder)."""

    def __init__(self, dim: int, ffn_dim: int, num_levels: int, num_heads: int, num_points: int):
        super().__init__()
        self.self_attn = MSDeformAttn(dim, num_levels, num_heads, num_points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, ref: torch.Tensor, shapes: list[tuple[int, int]]) -> torch.Tensor:
        src = self.norm1(src + self.self_attn(src + pos, ref, src, shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class _Encoder(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)


def _reference_points(shapes: list[tuple[int, int]], device: torch.device) -> torch.Tensor:
    """Pixel centres of every level, normalised to [0, 1] -> ``[1, S, L, 2]`` (x, y); same point on all levels."""
    refs = []
    for h, w in shapes:
        ys, xs = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32) + 0.5,
                                torch.arange(w, device=device, dtype=torch.float32) + 0.5, indexing="ij")
        refs.append(torch.stack((xs.flatten() / w, ys.flatten() / h), -1))  # [h*w, 2]
    ref = torch.cat(refs, 0)  # [S, 2]
    return ref[None, :, None, :].expand(1, -1, len(shapes), 2)


def _flatten_levels(maps: list[torch.Tensor], level_embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
    """maps: L x [N, D, h, w] -> tokens [N, S, D], pos+level [1, S, D], shapes."""
    shapes = [(m.shape[-2], m.shape[-1]) for m in maps]
    tokens = torch.cat([m.flatten(2).transpose(1, 2) for m in maps], 1)  # [N, S, D]
    d = maps[0].shape[1]
    pos = torch.cat([sine_pos_2d(h, w, d, maps[0].device).flatten(1).t() + level_embed[i]
                     for i, (h, w) in enumerate(shapes)], 0)  # [S, D]
    return tokens, pos[None].to(tokens.dtype), shapes


# --------------------------------------------------------------------------------------------- decoders


class MSDeformPixelDecoder(nn.Module):
    """Mask2Former's pixel decoder: deformable encoder over 1/32, 1/16, 1/8 + FPN to 1/4 (paper default)."""

    def __init__(self, cfg: PixelDecoderConfig, in_channels: dict[int, int]):
        super().__init__()
        d = cfg.dim
        self.input_proj = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(in_channels[s], d, 1), _gn(d)) for s in LEVELS])
        self.level_embed = nn.Parameter(torch.randn(len(LEVELS), d) * 0.02)  # Mask2Former: normal_ init
        self.encoder = _Encoder([MSDeformEncoderLayer(d, cfg.ffn_dim, len(LEVELS), cfg.num_heads, cfg.num_points)
                                 for _ in range(cfg.num_layers)])
        self.adapter_1 = nn.Sequential(nn.Conv2d(in_channels[4], d, 1, bias=False), _gn(d))  # lateral at 1/4
        self.layer_1 = nn.Sequential(nn.Conv2d(d, d, 3, padding=1, bias=False), _gn(d), nn.ReLU(inplace=True))
        self.mask_features = nn.Conv2d(d, d, 1)
        for proj in self.input_proj:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.zeros_(proj[0].bias)

    def forward(self, feats: dict[int, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        srcs = [proj(feats[s]) for proj, s in zip(self.input_proj, LEVELS)]  # 3 x [N, D, h_l, w_l]
        x, pos, shapes = _flatten_levels(srcs, self.level_embed)  # [N, S, D], [1, S, D]
        ref = _reference_points(shapes, x.device).to(x.dtype)  # [1, S, L, 2]
        for layer in self.encoder.layers:
            x = layer(x, pos, ref, shapes)  # [N, S, D]
        n, _, d = x.shape
        outs = [t.transpose(1, 2).reshape(n, d, h, w)
                for t, (h, w) in zip(x.split([h * w for h, w in shapes], 1), shapes)]  # [1/32, 1/16, 1/8]
        y = self.adapter_1(feats[4]) + F.interpolate(outs[-1], size=feats[4].shape[-2:], mode="bilinear",
                                                     align_corners=False)  # [N, D, H/4, W/4]
        y = self.layer_1(y)
        return self.mask_features(y), outs


class DenseEncoderLayer(nn.Module):
    """Post-norm transformer encoder layer with the position added to queries and keys (DETR)."""

    def __init__(self, dim: int, ffn_dim: int, num_heads: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        qk = src + pos
        src = self.norm1(src + self.self_attn(qk, qk, src, need_weights=False)[0])
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class _FPNStep(nn.Module):
    """lateral 1x1 (+GN) of the finer backbone map + upsampled coarser output -> 3x3 conv (+GN, ReLU)."""

    def __init__(self, in_ch: int, dim: int):
        super().__init__()
        self.lateral = nn.Sequential(nn.Conv2d(in_ch, dim, 1, bias=False), _gn(dim))
        self.output = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, bias=False), _gn(dim), nn.ReLU(inplace=True))

    def forward(self, fine: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        return self.output(self.lateral(fine) + F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear",
                                                              align_corners=False))


class DenseAttnPixelDecoder(nn.Module):
    """Full attention over 1/32 + 1/16 tokens, FPN for 1/8 and 1/4 (fast option)."""

    def __init__(self, cfg: PixelDecoderConfig, in_channels: dict[int, int]):
        super().__init__()
        d = cfg.dim
        self.input_proj = nn.ModuleList([nn.Sequential(nn.Conv2d(in_channels[s], d, 1), _gn(d)) for s in (32, 16)])
        self.level_embed = nn.Parameter(torch.randn(2, d) * 0.02)
        self.encoder = _Encoder([DenseEncoderLayer(d, cfg.ffn_dim, cfg.num_heads) for _ in range(cfg.num_layers)])
        self.fpn8 = _FPNStep(in_channels[8], d)
        self.fpn4 = _FPNStep(in_channels[4], d)
        self.mask_features = nn.Conv2d(d, d, 1)

    def forward(self, feats: dict[int, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        srcs = [proj(feats[s]) for proj, s in zip(self.input_proj, (32, 16))]
        x, pos, shapes = _flatten_levels(srcs, self.level_embed)  # [N, S, D]
        for layer in self.encoder.layers:
            x = layer(x, pos)
        n, _, d = x.shape
        p32, p16 = [t.transpose(1, 2).reshape(n, d, h, w)
                    for t, (h, w) in zip(x.split([h * w for h, w in shapes], 1), shapes)]
        p8 = self.fpn8(feats[8], p16)  # [N, D, H/8, W/8]
        p4 = self.fpn4(feats[4], p8)  # [N, D, H/4, W/4]
        return self.mask_features(p4), [p32, p16, p8]


class FPNPixelDecoder(nn.Module):
    """Plain FPN (no attention): the tiny CPU option."""

    def __init__(self, cfg: PixelDecoderConfig, in_channels: dict[int, int]):
        super().__init__()
        d = cfg.dim
        self.top = nn.Sequential(nn.Conv2d(in_channels[32], d, 1, bias=False), _gn(d))
        self.fpn16 = _FPNStep(in_channels[16], d)
        self.fpn8 = _FPNStep(in_channels[8], d)
        self.fpn4 = _FPNStep(in_channels[4], d)
        self.mask_features = nn.Conv2d(d, d, 1)

    def forward(self, feats: dict[int, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        p32 = self.top(feats[32])
        p16 = self.fpn16(feats[16], p32)
        p8 = self.fpn8(feats[8], p16)
        p4 = self.fpn4(feats[4], p8)
        return self.mask_features(p4), [p32, p16, p8]


def build_pixel_decoder(cfg: PixelDecoderConfig, in_channels: dict[int, int]) -> nn.Module:
    kinds = {"msdeform": MSDeformPixelDecoder, "dense": DenseAttnPixelDecoder, "fpn": FPNPixelDecoder}
    if cfg.kind not in kinds:
        raise ValueError(f"pixel_decoder.kind={cfg.kind!r}: expected one of {sorted(kinds)}")
    missing = [s for s in (4, 8, 16, 32) if s not in in_channels]
    if missing:
        raise ValueError(f"pixel decoder needs backbone features at strides 4, 8, 16, 32; missing {missing}")
    return kinds[cfg.kind](cfg, in_channels)
