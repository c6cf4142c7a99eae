"""Shape-position descriptor H (GvSeg Eq. 3-4), batched over objects, no parameters.

Contract
--------
``compute_descriptor(masks [N, H, W], canvas [N, 2], cfg, d_model) -> [N, u*v]`` float32, on the masks'
device, flattened **angle-major** (index = angle_bin * v + radius_bin).

* ``masks``: bool, or probabilities in [0, 1] (thresholded at 0.5), at any resolution.
* ``canvas``: (h, w) of each object's valid, unpadded canvas in the masks' pixel units.
* Each of the M contour points adds 1/sqrt(d_model) to its bin (Eq. 4), so positive values are k/sqrt(d).
* A bin whose centre falls "outside" and that holds no point is set to -1/sqrt(d_model). "Outside" is
  ``cfg.outside_ref``: ``canvas`` [default] (outside the valid image: encodes position, method.md),
  ``fg_union`` (outside the union of all objects, or the ``union`` argument), ``own_mask`` (outside the
  object's own mask: a pattern that depends on shape alone).
* An **empty mask gives all zeros** (it has no contour and no centre). Never NaN. A one-pixel mask puts all
  M points in the innermost radius bin. Masks touching the image border get a contour along the border
  (pixels beyond the image count as background).

Recipe (method.md defaults)
---------------------------
1. Work at 1/``contour_stride`` of the masks' resolution (area pooling, >= 0.5; an object that would vanish
   keeps every touched cell). Pass ``downsample=1`` for masks already at 1/4 (the model's ``pred_masks``).
2. Contour = mask - erode(mask), erosion as a 3x3 (separable) max-pool of the background.
3. M points evenly spaced in the contour's raster order, with replacement when the contour has fewer than
   M pixels. (Tracing the boundary is not vectorisable; an evenly spaced subsample of the boundary pixels
   has the same expected histogram. Ranks come from a cumsum + searchsorted, no sort, no Python loop.)
4. Centre p_o = mask centroid. Polar coordinates about it; u angle bins over [-pi, pi); v radius bins:
   ``log_abs`` [default] log-spaced from diag/256 to the canvas diagonal (a fixed grid in image units,
   so a bin's centre reaches past the canvas edge depending on where the object is), ``lin_abs`` linear
   from 0 to the diagonal, ``log_objscale`` log-spaced from r_mean/8 to 2 r_mean (classic shape context).
   Radii below the first edge fall in bin 0, beyond the last in bin v-1.

All steps are tensor ops (pool, cumsum, searchsorted, atan2, scatter_add): no host syncs, CUDA-ready.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gvseg.config import DescriptorConfig


def compute_descriptor(
    masks: torch.Tensor,
    canvas: torch.Tensor,
    cfg: DescriptorConfig,
    d_model: int,
    *,
    union: torch.Tensor | None = None,
    downsample: int | None = None,
) -> torch.Tensor:
    """Shape-position descriptors of N masks.

    Args:
        masks: [N, H, W] bool or probabilities.
        canvas: [N, 2] (h, w) of the valid canvas of each mask, in the masks' pixel units.
        cfg: bins, points, outside reading and radius spacing.
        d_model: embedding size; each point adds 1/sqrt(d_model).
        union: for ``outside_ref="fg_union"``: [H, W] or [N, H, W] bool at the masks' resolution. Default:
            the union of the N given masks (pass it explicitly when the N masks come from several frames).
        downsample: working-resolution factor; default ``cfg.contour_stride``.
    Returns:
        [N, u*v] float32, angle-major.
    """
    if masks.dim() != 3:
        raise ValueError(f"compute_descriptor: masks must be [N, H, W], got shape {tuple(masks.shape)}")
    if canvas.shape != (masks.shape[0], 2):
        raise ValueError(f"compute_descriptor: canvas must be [N, 2] = {(masks.shape[0], 2)}, got {tuple(canvas.shape)}")
    n_obj, height, width = masks.shape
    u, v, m_pts = cfg.angle_bins, cfg.radius_bins, cfg.num_points
    device = masks.device
    if n_obj == 0:
        return torch.zeros(0, u * v, device=device)
    s = cfg.contour_stride if downsample is None else int(downsample)
    if s < 1:
        raise ValueError(f"compute_descriptor: downsample/contour_stride must be >= 1, got {s}")
    inv = 1.0 / math.sqrt(d_model)

    # --- 1. binary masks at the working resolution (input units per working pixel = s)
    fg = masks if masks.dtype == torch.bool else masks > 0.5  # [N, H, W] bool
    fg = _pool(fg, s)  # [N, h, w] bool
    h, w = fg.shape[-2:]
    col = fg.sum(1, dtype=torch.float32)  # [N, w] pixels per column
    row = fg.sum(2, dtype=torch.float32)  # [N, h] pixels per row
    area = col.sum(1)  # [N]
    nonempty = area > 0  # [N]

    # --- 2. contour = mask - erode(mask): a pixel with a background pixel in its 3x3 window (separable
    # max-pool of the background, done with bool ORs). Beyond the array is background, so border objects close.
    bg = F.pad(~fg, (1, 1, 1, 1), value=True)  # [N, h+2, w+2]
    bg = bg[:, :, :-2] | bg[:, :, 1:-1] | bg[:, :, 2:]  # [N, h+2, w]
    contour = fg & (bg[:, :-2] | bg[:, 1:-1] | bg[:, 2:])  # [N, h, w]

    # --- 3. M points evenly spaced in raster order (with replacement when fewer than M)
    flat = contour.view(n_obj, h * w)
    csum = flat.cumsum(1, dtype=torch.int32)  # [N, h*w]: rank+1 of each contour pixel
    n_c = csum[:, -1]  # [N] contour pixels
    ranks = (torch.arange(m_pts, device=device, dtype=torch.float32) + 0.5)[None] * n_c[:, None] / m_pts
    ranks = ranks.floor().to(torch.int32)  # [N, M] in [0, n_c)
    idx = torch.searchsorted(csum, ranks, right=True).clamp_max(h * w - 1)  # [N, M] first pixel with cumsum > rank
    px = ((idx % w).to(torch.float32) + 0.5) * s  # [N, M] pixel centres in input units
    py = (torch.div(idx, w, rounding_mode="floor").to(torch.float32) + 0.5) * s

    # --- 4. centroid and polar coordinates
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s  # [w]
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s  # [h]
    safe_area = area.clamp_min(1.0)
    cx = (col * xs).sum(1) / safe_area  # [N]
    cy = (row * ys).sum(1) / safe_area  # [N]
    dx, dy = px - cx[:, None], py - cy[:, None]  # [N, M]
    theta = torch.atan2(dy, dx)  # [N, M] in [-pi, pi]
    a_bin = torch.floor((theta + math.pi) * (u / (2 * math.pi))).long() % u  # theta = pi wraps to bin 0
    r = torch.hypot(dx, dy)  # [N, M]

    canvas = canvas.to(device=device, dtype=torch.float32)
    ch, cw = canvas[:, 0], canvas[:, 1]  # [N]
    diag = torch.hypot(ch, cw).clamp_min(1.0)  # [N]
    r_bin, r_centre = _radius_bins(r, diag, cfg.radius, v, s)  # [N, M] long, [N, v]

    # --- Eq. 4: each point adds 1/sqrt(d_model)
    weight = (n_c > 0).to(torch.float32)[:, None].expand(n_obj, m_pts)  # empty contour adds nothing
    count = torch.zeros(n_obj, u * v, device=device)
    count.scatter_add_(1, a_bin * v + r_bin, weight)  # [N, u*v] integer-valued
    desc = count * inv

    # --- negative bins: centre "outside" and empty
    a_centre = -math.pi + (torch.arange(u, device=device, dtype=torch.float32) + 0.5) * (2 * math.pi / u)  # [u]
    bx = cx[:, None, None] + r_centre[:, None, :] * torch.cos(a_centre)[None, :, None]  # [N, u, v]
    by = cy[:, None, None] + r_centre[:, None, :] * torch.sin(a_centre)[None, :, None]
    if cfg.outside_ref == "canvas":
        outside = (bx < 0) | (by < 0) | (bx >= cw[:, None, None]) | (by >= ch[:, None, None])
    elif cfg.outside_ref == "own_mask":
        outside = ~_lookup(fg, bx, by, float(s))
    elif cfg.outside_ref == "fg_union":
        if union is None:
            ref, ref_scale = fg.any(0), float(s)  # [h, w]
        else:
            ref, ref_scale = union.to(device=device, dtype=torch.bool), 1.0
            if ref.shape[-2:] != (height, width):
                raise ValueError(f"compute_descriptor: union is {tuple(ref.shape)}, masks are {height}x{width}")
        if ref.dim() == 2:
            ref = ref.expand(n_obj, *ref.shape)  # [N, ., .] view, no copy
        outside = ~_lookup(ref, bx, by, ref_scale)
    else:
        raise ValueError(f"compute_descriptor: unknown outside_ref {cfg.outside_ref!r}")
    outside = outside.reshape(n_obj, u * v)
    desc = torch.where(outside & (count == 0), torch.full_like(desc, -inv), desc)
    return desc * nonempty[:, None].to(desc.dtype)  # empty mask -> all zeros


def descriptor_to_embedding(desc: torch.Tensor, dim: int) -> torch.Tensor:
    """[N, u*v] angle-major descriptor -> [N, dim] by 1-D linear interpolation (Eq. 5 text: "flattened and
    interpolated to size d_model"). N = 0 gives [0, dim]."""
    if desc.dim() != 2:
        raise ValueError(f"descriptor_to_embedding: expected [N, u*v], got {tuple(desc.shape)}")
    if desc.shape[0] == 0:
        return desc.new_zeros(0, dim)
    if desc.shape[1] == dim:
        return desc
    return F.interpolate(desc[:, None, :], size=dim, mode="linear", align_corners=False)[:, 0]


# ------------------------------------------------------------------------------------------- helpers


def _pool(fg: torch.Tensor, s: int) -> torch.Tensor:
    """[N, H, W] bool -> [N, ceil(H/s), ceil(W/s)] bool by area >= 0.5; objects that would vanish keep every
    touched cell, so a non-empty mask stays non-empty (one-pixel masks are defined)."""
    if s == 1:
        return fg
    n, hh, ww = fg.shape
    h, w = -(-hh // s), -(-ww // s)
    if s * s <= 255:  # count in uint8 on a reshaped view: 4x less memory traffic than a float avg-pool
        ragged = (h * s, w * s) != (hh, ww)
        padded = F.pad(fg, (0, w * s - ww, 0, h * s - hh), value=False) if ragged else fg.contiguous()  # [N, h*s, w*s]
        count = padded.view(torch.uint8).view(n, h, s, w, s).sum(4, dtype=torch.uint8).sum(2, dtype=torch.uint8)
        ch = (hh - torch.arange(h, device=fg.device) * s).clamp_max(s)  # in-image rows per cell row
        cw = (ww - torch.arange(w, device=fg.device) * s).clamp_max(s)
        big = 2 * count.to(torch.int16) >= (ch[:, None] * cw[None]).to(torch.int16)  # [N, h, w]
        touched = count > 0
    else:
        frac = F.avg_pool2d(fg.to(torch.float32)[:, None], s, stride=s, ceil_mode=True)[:, 0]  # [N, h, w]
        big, touched = frac >= 0.5, frac > 0
    vanished = ~big.flatten(1).any(1)  # [N]
    return big | (vanished[:, None, None] & touched)


def _radius_bins(
    r: torch.Tensor, diag: torch.Tensor, kind: str, v: int, s: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Radius bin of each point [N, M] and the radius of each bin centre [N, v]."""
    j = torch.arange(v, device=r.device, dtype=torch.float32)  # [v]
    if kind == "lin_abs":
        idx = torch.floor(r / diag[:, None] * v)
        centre = (j[None] + 0.5) / v * diag[:, None]
    elif kind in ("log_abs", "log_objscale"):
        if kind == "log_abs":
            r0, r1 = diag / 256.0, diag  # [N]
        else:  # shape context (Belongie et al.): normalise by the mean point radius, edges r/8 .. 2r
            scale = r.mean(1).clamp_min(0.5 * s)  # [N]; a one-pixel mask has scale 0
            r0, r1 = scale / 8.0, scale * 2.0
        span = torch.log(r1 / r0)  # [N]
        idx = torch.floor(torch.log(r.clamp_min(1e-6) / r0[:, None]) / span[:, None] * v)
        centre = r0[:, None] * torch.exp((j[None] + 0.5) / v * span[:, None])  # geometric bin centres
    else:
        raise ValueError(f"compute_descriptor: unknown radius spacing {kind!r}")
    return idx.clamp(0, v - 1).long(), centre


def _lookup(ref: torch.Tensor, x: torch.Tensor, y: torch.Tensor, scale: float) -> torch.Tensor:
    """ref [N, h, w] bool sampled (nearest) at input-unit points x, y [N, ...]; False beyond the array."""
    n, h, w = ref.shape
    ix = torch.floor(x / scale).long()
    iy = torch.floor(y / scale).long()
    inside = (ix >= 0) & (iy >= 0) & (ix < w) & (iy < h)
    obj = torch.arange(n, device=ref.device).view(n, *([1] * (x.dim() - 1))).expand_as(ix)
    hit = ref[obj, iy.clamp(0, h - 1), ix.clamp(0, w - 1)]
    return hit & inside


def target_descriptors(
    targets: list,
    image_sizes: torch.Tensor,
    cfg: DescriptorConfig,
    d_model: int,
    frame: int | None = None,
) -> list[torch.Tensor]:
    """Ground-truth descriptors of every target tube of each clip, in one frame of the clip.

    Args:
        targets: B ``Targets`` (masks [K_b, T, H, W] bool at the padded input size).
        image_sizes: [B, 2] valid (h, w) of each clip (``Clip.image_sizes``).
        frame: frame of the clip to describe; default the middle one, T // 2 (method.md).
    Returns:
        B tensors [K_b, u*v]; a tube absent from that frame gets all zeros. One batched call for the batch.
    """
    if len(targets) == 0:
        return []
    t = targets[0].masks.shape[1]
    f = t // 2 if frame is None else frame
    masks = torch.cat([tg.masks[:, f] for tg in targets])  # [N, H, W]
    counts = [tg.masks.shape[0] for tg in targets]
    clip = torch.repeat_interleave(torch.arange(len(targets), device=masks.device),
                                   torch.tensor(counts, device=masks.device))  # [N]
    canvas = image_sizes.to(masks.device)[clip]  # [N, 2]
    union = None
    if cfg.outside_ref == "fg_union":  # union of the object's own clip, not of the whole batch
        unions = torch.stack([tg.masks[:, f].any(0) for tg in targets])  # [B, H, W]
        union = unions[clip]
    desc = compute_descriptor(masks, canvas, cfg, d_model, union=union)
    return list(desc.split(counts))
