"""Shape-position descriptor H (GvSeg Eq. 3-4), batched over objects, no parameters.

Contract
--------
``compute_descriptor(masks [N, H, W], canvas [N, 2], cfg, d_model) -> [N, u*v]`` float32, on the masks'
device, flattened **angle-major** (index = angle_bin * v + radius_bin).
``compute_descriptor_coded(codes, tube_codes, canvas, cfg, d_model)``: the same for masks given as code maps
(mask k = ``code == tube_codes[k]``), bit-identical, without writing the planes (stride 1, canvas reading).

* ``masks``: bool, or probabilities in [0, 1] (thresholded at 0.5), at any resolution.
* ``canvas``: (h, w) of each object's valid, unpadded canvas in the masks' pixel units.
* The contour carries M points' worth of weight, each point 1/sqrt(d_model) (Eq. 4), so the positive part
  of H sums to M/sqrt(d).
* A bin whose centre falls "outside" and that holds no weight is set to -1/sqrt(d_model). "Outside" is
  ``cfg.outside_ref``: ``canvas`` [default] (outside the valid image: encodes position, method.md),
  ``fg_union`` (outside the union of all objects, or the ``union`` argument), ``own_mask`` (outside the
  object's own mask: a pattern that depends on shape alone).
* An **empty mask gives all zeros** (it has no contour and no centre). Never NaN. A one-pixel mask puts all
  its weight in the innermost radius bin. Masks touching the image border get a contour along the border
  (pixels beyond the image count as background).

Recipe
------
1. Work at 1/``contour_stride`` of the masks' resolution (area pooling, >= 0.5; an object that would vanish
   keeps every touched cell). Pass ``downsample=1`` for masks already at 1/4 (the model's ``pred_masks``).
2. Contour = mask - erode(mask), erosion over the 3x3 window (method.md's max-pool erosion); only the contour
   pixels are listed (one ``nonzero``), everything after works on them.
3. Centre p_o = mask centroid, exact, from the run ends of each row (they are contour pixels).
4. Points (Eq. 3), ``cfg.sampling``: ``weighted`` [default] every contour pixel adds M/n_c points' worth (what
   even sampling gives in expectation, with no sampling noise); ``along`` M points evenly spaced in angle
   order about p_o (evenly along the contour for star-shaped objects); ``raster`` M points evenly spaced in
   raster order (the first implementation). Both with replacement when the contour has fewer than M pixels.
5. Polar coordinates about p_o; u angle bins over [-pi, pi); v radius bins: ``log_abs`` [default] log-spaced
   from diag/256 to the canvas diagonal (a fixed grid in image units, so a bin's centre reaches past the
   canvas edge depending on where the object is), ``lin_abs`` linear from 0 to the diagonal,
   ``log_objscale`` log-spaced from r_mean/8 to 2 r_mean (classic shape context). Radii below the first edge
   fall in bin 0, beyond the last in bin v-1.
6. Eq. 4 with ``cfg.binning``: ``hard`` (the paper's indicator) or ``linear`` [default] (each point's weight
   shared between the two nearest angle and the two nearest radius bin centres), then ``cfg.angle_smooth``
   passes of a circular [1, 2, 1]/4 filter over angle (one pass = a triangular kernel two bins wide).
7. Negative bins, ``cfg.outside_edge``: ``hard`` (the paper: centre outside -> -1/sqrt(d)) or ``soft``
   [default, canvas reading only]: -f/sqrt(d), f = fraction of a bin-sized square around the centre that lies
   beyond the nearest canvas edge, so a bin fades in over its own size instead of flipping.

Why these defaults (``benchmarks/results/descriptor_stats.json``: synthetic GT at 240x360 from
``gvseg.data.synthetic``, M=200, 36x12, d=256; ΔH = Eq. 10; "a/b" = median ΔH / share of pairs under τ=0.2):

==========================================  ===============  ============  =============  =============
design                                      same obj. Δt=1   mask moved    shift W/8,W/2  other shape
                                                             by (1,2) px                  (share > τ)
==========================================  ===============  ============  =============  =============
first: stride 4, raster, hard, hard edge    0.60 / 0%        0.63          0.55, 0.18     1.04 (100%)
stride 4, weighted, hard                    0.59 / 0%        0.62          0.54, 0.18     1.03 (100%)
stride 4, weighted, linear, smooth, soft    0.18 / 64%       0.17          0.17, 0.21     0.77 (100%)
stride 1, along (paper-literal), hard       0.30 / 17%       0.00          0.10, 0.18     1.03 (100%)
stride 1, weighted, hard                    0.24 / 34%       0.00          0.10, 0.18     1.02 (100%)
stride 1, weighted, linear                  0.13 / 75%       0.00          0.11, 0.22     0.87 (100%)
stride 1, weighted, linear, soft edge       0.11 / 76%       0.007         0.10, 0.20     0.87 (100%)
**default**: + angle_smooth=1               0.080 / 97%      0.007         0.10, 0.21     0.77 (100%)
==========================================  ===============  ============  =============  =============

Root cause: the positive (point-count) part. The first version's Δt=1 ΔH is 0.60, of which the positive part
is 0.60 and the negative bins 0.05, and the same mask merely moved by (1, 2) px already gives 0.63: the 1/4
contour changes with every pixel of motion and hard bins turn that into whole-point jumps. Sampling order is
not the cause (weighted instead of raster at stride 4: 0.59). At stride 1 an integer move changes nothing but
the soft edge (0.007); what remains at Δt=1 is the object's real change and its rasterisation. The generator's
objects also spin up to 4.6 degrees per frame against 10-degree angle bins, which ``angle_smooth`` absorbs
(Δt=3: 0.22, Δt=10: 0.61, so far frames still come out as negatives); at 4x the frame rate the default gives
0.034. Position stays a weak cue at the paper's settings (a half-width shift gives ΔH 0.21): the negative
part has at most u*v entries of 1/sqrt(d) against M points' worth of positive weight. Different shapes of
equal area at the same place (another family, its own aspect and angle) stay at 0.77, all above τ (with the
same aspect and angle: 99% above τ). Predicted masks come at 1/4 (``downsample=1``): there the default gives
0.18 at Δt=1; ΔH for TCL is computed on GT masks at the input resolution.

Device: every step is a tensor op on the masks' device. On CUDA the one host sync is the ``nonzero`` that lists
the contour pixels (its size is data-dependent), and the whole stack is eroded in place. On CPU one max over
64-bit words finds the rows that hold foreground; only they and their neighbours are gathered and eroded
(24% of the rows for the benchmark's 100 masks), each ``nonzero`` runs on 64-bit words first, and everything
per contour pixel is int32 / float32 with in-place arithmetic. On CPU both paths give the output of the
implementation before (git 67a969e, frozen in ``tests/model/descriptor_frozen.py``): the same float operations
in the same order (``test_fast_path_equals_frozen_*``); on CUDA the histogram's ``index_add_`` order is the
GPU's (``tests/test_gpu.py`` compares it with the CPU at 1e-4).

Speed (issue #17 item 2: 100 bool masks at 180x320, ``downsample=1``, target <= 10 ms on 1 CPU thread):
median 6.0 ms of CPU time against 9.3 ms for git 67a969e in the same interleaved run (``benchmarks/
descriptor_speed.py``, ``pred_quarter_bool``, 100 rounds; AMD EPYC dev box, 2 cores shared with a training job,
load ~5, ``torch.set_num_threads(1)``; wall 10.0 vs 14.8 ms, the process running at nice 19; at a lighter
moment 4.3 vs 6.5 ms). The GT path at 480x832, stride 1, went from 60 to 21 ms. Before, the contour
stage dominated: in a stage profile (thread CPU time, medians, both versions interleaved at load ~7) eroding
the whole stack (2.6 ms, five bool passes over 5.8 MB) and listing its contour pixels (1.9 ms, a nonzero over
all of it) took 4.5 of 9.4 ms, the int64 centroid 1.2 and the linear binning 1.2; the row gather cuts the
4.5 ms to 2.6, int32 the centroid to 0.5 and the binning to 0.8 (6.3 ms in all at that load).

Coded GT (``compute_descriptor_coded``, the clip pipeline's label-map targets): 100 masks painted into one
480x832 uint8 map take 3.7 ms against 39.0 ms for writing their planes and describing them (``gt_coded``, same
benchmark, idle 2-core AMD EPYC, 1 thread; that run: ``pred_quarter_bool`` 4.3 ms, previous 6.2). A 480x672
map of 20 regions: 1.6 ms for the contour list (the eight comparisons 0.2, listing the boundary pixels 0.4,
mapping codes to tubes 0.2, the stable sort by tube 0.5), 1.7 ms for steps 3-7.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from gvseg.config import DescriptorConfig

_CPU_CHUNK = 1 << 20  # pixels eroded per step on CPU: 1 MB, cache-sized (measured ~1.5x faster than one pass)
_ROWS_MAX_SHARE = 0.8  # CPU: erode only the rows near foreground unless they are more than this share of all rows


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
        cfg: bins, points, sampling, binning, outside reading and radius spacing.
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
    if n_obj == 0:
        return torch.zeros(0, cfg.angle_bins * cfg.radius_bins, device=masks.device)
    s = cfg.contour_stride if downsample is None else int(downsample)
    if s < 1:
        raise ValueError(f"compute_descriptor: downsample/contour_stride must be >= 1, got {s}")

    # --- 1. binary masks at the working resolution (input units per working pixel = s)
    fg = masks if masks.dtype == torch.bool else masks > 0.5  # [N, H, W] bool
    fg = _pool(fg, s).contiguous()  # [N, h, w] bool
    h, w = fg.shape[-2:]

    # --- 2. contour pixels, in raster order (object, row, column): K of them over the whole batch
    contour = _contour_list(fg)  # (obj, y, x, left, right), [K] each; left/right: the row neighbours are foreground
    return _describe(contour, n_obj, (h, w), s, canvas, cfg, d_model, fg=fg, union=union, size=(height, width))


def compute_descriptor_coded(
    codes: list[torch.Tensor], tube_codes: list[torch.Tensor], canvas: torch.Tensor, cfg: DescriptorConfig,
    d_model: int,
) -> torch.Tensor:
    """The descriptors of coded masks (``Targets`` straight from the clip pipeline), no mask planes written.

    Mask k of code map b is ``codes[b] == tube_codes[b][k]``; the result equals ``compute_descriptor`` of the
    stacked planes ``cat_b(codes[b][None] == tube_codes[b][:, None, None])`` bit for bit (the same contour list
    in the same order, then the same steps). One [H, W] pass per map finds the pixels whose 3x3 window holds
    another code (or leaves the image): every mask's contour pixels are among them, so K masks cost one map's
    pass instead of K planes (issue #17: the consumer's planes). Stride 1 and the ``canvas`` reading only
    (:func:`supports_coded`); tube codes unique within a map.

    Args:
        codes: B maps [H, W] (integer; all the same size and device).
        tube_codes: B tensors [K_b], the code of each mask, unique within its map.
        canvas: [N, 2] (h, w) of each mask's valid canvas, N = sum K_b.
    Returns:
        [N, u*v] float32, angle-major, masks in order (map 0's first).
    """
    if not supports_coded(cfg):
        raise ValueError(f"compute_descriptor_coded: needs contour_stride 1 and outside_ref 'canvas', got "
                         f"{cfg.contour_stride} and {cfg.outside_ref!r}")
    if len(codes) != len(tube_codes) or not codes:
        raise ValueError(f"compute_descriptor_coded: {len(codes)} code maps for {len(tube_codes)} tube-code lists")
    height, width = codes[0].shape
    counts = [int(t.numel()) for t in tube_codes]
    n_obj = sum(counts)
    if canvas.shape != (n_obj, 2):
        raise ValueError(f"compute_descriptor_coded: canvas must be [N, 2] = {(n_obj, 2)}, got {tuple(canvas.shape)}")
    if n_obj == 0:
        return torch.zeros(0, cfg.angle_bins * cfg.radius_bins, device=codes[0].device)
    itype = torch.int32 if n_obj * height * width + width < 2 ** 31 else torch.int64  # as _contour_list
    parts, first = [], 0
    for code, tc in zip(codes, tube_codes):
        if tuple(code.shape) != (height, width):
            raise ValueError(f"compute_descriptor_coded: code maps of {(height, width)} and {tuple(code.shape)}")
        parts.append(_code_contour_list(code, tc.to(code.device), first, itype))
        first += int(tc.numel())
    contour = tuple(torch.cat(c) for c in zip(*parts))  # maps in turn: object offsets increase
    return _describe(contour, n_obj, (height, width), 1, canvas, cfg, d_model)


def supports_coded(cfg: DescriptorConfig) -> bool:
    """Whether :func:`compute_descriptor_coded` serves ``cfg`` (the defaults do; other readings need planes)."""
    return cfg.contour_stride == 1 and cfg.outside_ref == "canvas"


def _describe(
    contour: tuple[torch.Tensor, ...], n_obj: int, hw: tuple[int, int], s: int, canvas: torch.Tensor,
    cfg: DescriptorConfig, d_model: int, *, fg: torch.Tensor | None = None, union: torch.Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Steps 3-7 on the contour list (obj, y, x, left, right) [K] of N masks at working size ``hw`` -> [N, u*v].
    ``fg`` [N, h, w] (the working masks) and ``size`` (the input H, W) only for the ``own_mask`` / ``fg_union``
    readings."""
    obj, y, x, left, right = contour
    h, w = hw
    u, v, m_pts = cfg.angle_bins, cfg.radius_bins, cfg.num_points
    device = obj.device
    inv = 1.0 / math.sqrt(d_model)
    n_c = torch.bincount(obj, minlength=n_obj)  # [N] contour pixels per object

    # --- 3. centre p_o = mask centroid (input units)
    area, cx, cy = _centroids(obj, y, x, left, right, n_obj, h, w)  # [N] each, working pixels
    cx, cy = (cx + 0.5) * s, (cy + 0.5) * s

    # --- 4. points and their weights (Eq. 3): M points' worth per object
    px, py = x.to(torch.float32).add_(0.5), y.to(torch.float32).add_(0.5)  # [K] pixel centres, input units
    if s != 1:
        px, py = px.mul_(s), py.mul_(s)
    if cfg.sampling == "weighted":  # each contour pixel adds M / n_c points
        weight = _at(m_pts / n_c.to(torch.float32), obj)  # [K]
    elif cfg.sampling in ("raster", "along"):
        if cfg.sampling == "along":  # order each object's pixels by angle about its centre (stable: ties keep raster order)
            key = torch.atan2(py - _at(cy, obj), px - _at(cx, obj)).to(torch.float64) + 8.0 * obj.to(torch.float64)
            order = torch.sort(key, stable=True).indices
            obj, px, py = _at(obj, order), _at(px, order), _at(py, order)
        offset = torch.cumsum(n_c, 0) - n_c  # [N] first pixel of each object
        ranks = (torch.arange(m_pts, device=device, dtype=torch.float32) + 0.5)[None] * n_c[:, None] / m_pts
        pick = (offset[:, None] + ranks.floor().long()).clamp(0, max(obj.numel() - 1, 0))  # [N, M]
        has = (n_c > 0)[:, None].expand(n_obj, m_pts)  # an object without contour picks nothing
        pick = pick[has]  # [N' * M]
        obj, px, py = _at(obj, pick), _at(px, pick), _at(py, pick)
        weight = torch.ones_like(px)
    else:
        raise ValueError(f"compute_descriptor: unknown sampling {cfg.sampling!r}")

    # --- 5. polar coordinates about p_o, in continuous bin units (bin k spans [k, k+1))
    dx, dy = px.sub_(_at(cx, obj)), py.sub_(_at(cy, obj))  # [P] points from p_o (px, py are not used again)
    a_pos = torch.atan2(dy, dx).add_(math.pi).mul_(u / (2 * math.pi))  # [P] in [0, u]
    r = torch.hypot(dx, dy)  # [P]
    canvas = canvas.to(device=device, dtype=torch.float32)
    ch, cw = canvas[:, 0], canvas[:, 1]  # [N]
    diag = torch.hypot(ch, cw).clamp_min(1.0)  # [N]
    r_pos, r_edges = _radius_coords(r, obj, weight, diag, cfg.radius, v, s, n_obj, m_pts)  # [P], [N, v+1]

    # --- 6. Eq. 4: accumulate 1/sqrt(d) per point into [N, u, v]
    count = _histogram(obj, a_pos, r_pos, weight, n_obj, u, v, cfg.binning)  # [N, u, v] points per bin
    for _ in range(cfg.angle_smooth):  # circular [1, 2, 1]/4 over angle: rotation by a few degrees moves little weight
        count = _smooth_angles(count)
    count = count.reshape(n_obj, u * v)
    desc = count * inv  # [N, u*v]

    # --- 7. negative bins: centre "outside" and empty
    if cfg.radius == "lin_abs":
        r_centre = 0.5 * (r_edges[:, :-1] + r_edges[:, 1:])  # [N, v]
    else:
        r_centre = torch.sqrt(r_edges[:, :-1] * r_edges[:, 1:])  # [N, v] geometric bin centres
    a_centre = -math.pi + (torch.arange(u, device=device, dtype=torch.float32) + 0.5) * (2 * math.pi / u)  # [u]
    bx = (r_centre[:, None, :] * torch.cos(a_centre)[None, :, None]).add_(cx[:, None, None])  # [N, u, v]
    by = (r_centre[:, None, :] * torch.sin(a_centre)[None, :, None]).add_(cy[:, None, None])
    if cfg.outside_ref == "canvas":
        cw3, ch3 = cw[:, None, None], ch[:, None, None]
        if cfg.outside_edge == "hard":  # Eq. (4) text: the centre itself falls outside
            outside = ((bx < 0) | (by < 0) | (bx >= cw3) | (by >= ch3)).to(torch.float32)  # [N, u, v]
        elif cfg.outside_edge == "soft":  # the part of a square of the bin's area beyond the nearest canvas edge
            # max(-bx, bx - w, -by, by - h) [N, u, v], > 0 outside; in place (bx, by are not used again)
            beyond = torch.maximum(bx.neg(), bx.sub_(cw3))
            beyond = torch.maximum(beyond, torch.maximum(by.neg(), by.sub_(ch3)), out=beyond)
            side = torch.sqrt((r_edges[:, 1:] - r_edges[:, :-1]) * r_centre * (2 * math.pi / u))  # [N, v]
            outside = beyond.div_(side[:, None, :].clamp_min(1e-6)).add_(0.5).clamp_(0.0, 1.0)
        else:
            raise ValueError(f"compute_descriptor: unknown outside_edge {cfg.outside_edge!r}")
    elif fg is None:
        raise ValueError(f"compute_descriptor: outside_ref {cfg.outside_ref!r} needs the mask planes")
    elif cfg.outside_ref == "own_mask":
        outside = (~_lookup(fg, bx, by, float(s))).to(torch.float32)
    elif cfg.outside_ref == "fg_union":
        if union is None:
            ref, ref_scale = fg.any(0), float(s)  # [h, w]
        else:
            ref, ref_scale = union.to(device=device, dtype=torch.bool), 1.0
            if tuple(ref.shape[-2:]) != tuple(size):
                raise ValueError(f"compute_descriptor: union is {tuple(ref.shape)}, masks are {size[0]}x{size[1]}")
        if ref.dim() == 2:
            ref = ref.expand(n_obj, *ref.shape)  # [N, ., .] view, no copy
        outside = (~_lookup(ref, bx, by, ref_scale)).to(torch.float32)
    else:
        raise ValueError(f"compute_descriptor: unknown outside_ref {cfg.outside_ref!r}")
    outside = outside.reshape(n_obj, u * v)
    desc = desc.sub_(outside.mul_(inv).mul_(count == 0))  # [N, u*v]; an empty inside bin stays +0.0, not -0.0
    return desc.mul_((area > 0)[:, None].to(desc.dtype))  # empty mask -> all zeros


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


def _contour_list(
    fg: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """fg [N, h, w] bool, contiguous -> (obj, y, x, left, right), each [K], of its contour pixels in raster order.

    A contour pixel is a foreground pixel with a background pixel in its 3x3 window; beyond the array is
    background. ``left`` / ``right``: the pixel's row neighbours x-1 / x+1 are foreground (meaningless at
    x = 0 / x = w-1, where the caller counts them as background).

    On CPU only the rows that hold foreground, and the rows next to them, are eroded: they are gathered into
    one [R, w] array (rows of different objects side by side; a row's neighbours in it are its neighbours in
    the image wherever it holds foreground; a row with no foreground has no contour whatever its neighbours),
    24% of the stack for the benchmark's 100 masks. Rows on an object's top or bottom edge are copied as they
    are (their window left the image). On other devices (or when nearly every row is needed) the whole stack
    is eroded in place: one pass, no second host sync. Indices are int32 where they fit.
    """
    n, h, w = fg.shape
    itype = torch.int32 if n * h * w + w < 2 ** 31 else torch.int64  # pixel indices: int32 halves every K-sized op
    rows = fg.view(n * h, w)
    sel = _rows_near_foreground(rows) if fg.device.type == "cpu" and fg.numel() else None  # [R] rows, None: all
    if sel is None:
        grid, padded = rows, None
    else:  # gathered behind one background pixel, and one after: the row neighbours need no clamp
        padded = torch.empty(sel.numel() * w + 2, dtype=torch.bool, device=fg.device)
        padded[0], padded[-1] = False, False
        grid = padded[1:-1].view(-1, w)
        torch.index_select(rows, 0, sel, out=grid)
    contour = _erode_rows(grid)  # [R*w rounded up to whole 64-bit words], image borders not yet handled
    found = contour[: grid.numel()].view(-1, w)
    if sel is None and fg.numel():  # the top and bottom row of every object: their window left the image
        found = found.view(n, h, w)
        found[:, 0], found[:, -1] = fg[:, 0], fg[:, -1]
    elif sel is not None:
        y_sel = sel % h  # [R]
        edge = ((y_sel == 0) | (y_sel == h - 1)).nonzero().squeeze(1)
        found.index_copy_(0, edge, _at(grid, edge))
    q = _nonzero_flat(contour, itype)  # [K] flat index into grid, raster order
    row = _floor_div(q, w, grid.numel())  # [K] row of grid
    x = q - row * w
    if sel is None:
        obj = _floor_div(row, h, grid.shape[0])
        y = row - obj * h
        flat = grid.view(-1)
        beside = _at(flat, torch.stack([q - 1, q + 1]).clamp_(0, flat.numel() - 1).view(-1)).view(2, -1)  # [2, K]
        return obj, y, x, beside[0], beside[1]
    obj, y = _at(torch.div(sel, h, rounding_mode="floor").to(itype), row), _at(y_sel.to(itype), row)
    return obj, y, x, _at(padded, q), _at(padded, q + 2)  # padded[q + 1] is pixel q



def _code_contour_list(
    code: torch.Tensor, tube_codes: torch.Tensor, first: int, itype: torch.dtype,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """code [h, w], tube_codes [K] -> (obj, y, x, left, right) [K'] as :func:`_contour_list` gives for the planes
    ``code == tube_codes[k]`` (obj numbered from ``first``): the same pixels in the same (object, row, column)
    order, in ``itype``. (Raster order alone, each object's pixels still in their order, would save the sort,
    0.5 of 1.6 ms at 480x672, but changes the histogram's float sums by up to 4e-8: CPU ``index_add_`` does not
    add a bin's terms strictly in index order.)

    Pixel p of mask k is a contour pixel iff its 3x3 window leaves the image or holds a code other than
    tube_codes[k] = code[p]: so every contour pixel is a pixel whose window is not uniform, and those are found
    with eight shifted comparisons over the map (no per-mask pass). They are listed in raster order, kept where
    their code is a tube's, and stably sorted by tube, which keeps raster order within each tube."""
    h, w = code.shape
    uniform = torch.zeros(h, w, dtype=torch.bool, device=code.device)  # window inside the image and one code
    if h >= 3 and w >= 3:
        c = code[1:-1, 1:-1]
        inner = uniform[1:-1, 1:-1]
        torch.eq(c, code[1:-1, :-2], out=inner)
        for dy, dx in ((1, 2), (0, 0), (0, 1), (0, 2), (2, 0), (2, 1), (2, 2)):
            inner &= c == code[dy: dy + h - 2, dx: dx + w - 2]
    flat = code.reshape(-1)
    q = _nonzero_flat(uniform.logical_not_().view(-1))  # [E] every region's boundary pixels, raster order
    got = _at(flat, q)
    ordered, order = torch.sort(tube_codes.to(flat.dtype))
    if tube_codes.numel() == 0:
        q = k = q[:0]
    else:
        pos = torch.searchsorted(ordered, got).clamp_max_(ordered.numel() - 1)  # [E]
        hit = _at(ordered, pos) == got  # a tube's pixel (not void, not another region)
        q, k = q[hit], _at(order, pos[hit])
        k, perm = torch.sort(k, stable=True)  # object-major; raster order kept within each object
        q = _at(q, perm)
    obj = (k + first).to(itype)
    y = _floor_div(q, w, flat.numel())
    x = q - y * w
    mine = _at(flat, q)
    left = _at(flat, (q - 1).clamp_min(0)) == mine  # meaningless at x = 0 (the caller counts it as background)
    right = _at(flat, (q + 1).clamp_max(flat.numel() - 1)) == mine
    return obj, y.to(itype), x.to(itype), left, right


def _floor_div(q: torch.Tensor, d: int, bound: int) -> torch.Tensor:
    """q // d for integers 0 <= q < bound. In float32 when bound + d <= 2**24: q and d are exact there, and the
    rounded quotient of q = a*d + b (b < d) stays below a + 1 because (a + 1) * d <= bound + d; 2x faster
    than integer division on CPU (elsewhere integer division is cheap)."""
    if q.device.type == "cpu" and bound + d <= 2 ** 24:
        return (q.to(torch.float32) / d).floor_().to(q.dtype)
    return torch.div(q, d, rounding_mode="floor")


def _rows_near_foreground(rows: torch.Tensor) -> torch.Tensor | None:
    """rows [L, w] bool, contiguous -> sorted indices [R] of the rows that hold foreground or touch a row that
    does (in the flat order, so across objects too: a harmless extra row); None when that is more than
    ``_ROWS_MAX_SHARE`` of the rows (then gathering them would cost more than it saves)."""
    length, w = rows.shape
    if w % 8 == 0 and rows.storage_offset() % 8 == 0:  # max over 64-bit words (bytes 0 or 1, so a word >= 0)
        held = rows.view(torch.int64).amax(1) > 0  # [L]
    else:
        held = rows.view(torch.uint8).amax(1) > 0
    near = held.clone()
    near[1:] |= held[:-1]
    near[:-1] |= held[1:]
    sel = _nonzero_flat(near)
    return None if sel.numel() > _ROWS_MAX_SHARE * length else sel


def _erode_rows(grid: torch.Tensor) -> torch.Tensor:
    """grid [R, w] bool, contiguous -> mask minus its 3x3 erosion, flat [R*w rounded up to whole 64-bit words].

    The erosion runs on the flat [R*w] array (contiguous slices, the cheapest bool ops), where a window wraps
    to the next row only at pixels in column 0 or w-1, which are copied from ``grid`` afterwards (beyond the
    row is background). The first and last rows are copied too; the caller sets every other row whose
    window leaves the image. On CPU it runs 1 MB of pixels at a time, so that its buffers stay in cache.
    """
    r, w = grid.shape
    flat = grid.view(-1)  # [L]
    length = flat.numel()
    contour = torch.empty(-(-length // 8) * 8, dtype=torch.bool, device=grid.device)  # whole 64-bit words
    contour[length:] = False
    if r < 3 or w < 3:  # every pixel is in a border row or column
        contour[:length] = flat
        return contour
    lo, hi = w + 1, length - w - 1  # pixels whose 3x3 window lies inside the flat array
    contour[:lo], contour[hi:length] = flat[:lo], flat[hi:]
    step = hi - lo if grid.is_cuda else max(_CPU_CHUNK, 4 * w)
    rows = torch.empty(min(step, hi - lo) + 2 * w, dtype=torch.bool, device=grid.device)
    for a in range(lo, hi, step):
        m = min(step, hi - a)
        win = flat[a - w - 1: a + m + w + 1]  # pixels a-w-1 .. a+m+w: the chunk and its 3x3 halo
        eh = rows[: m + 2 * w]  # row erosion, centred on pixels a-w .. a+m+w-1
        torch.bitwise_and(win[:-2], win[1:-1], out=eh)
        eh &= win[2:]
        er = contour[a: a + m]  # 3x3 erosion of pixels a .. a+m-1, written in place
        torch.bitwise_and(eh[:m], eh[w: w + m], out=er)
        er &= eh[2 * w:]
        er ^= flat[a: a + m]  # the erosion lies inside the mask, so xor = mask minus erosion
    found = contour[:length].view(r, w)
    found[:, 0], found[:, -1] = grid[:, 0], grid[:, -1]  # border columns: their window left the image
    return contour


def _nonzero_flat(mask: torch.Tensor, dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """Indices [K] (``dtype``) of the True entries of a 1-D bool tensor. On CPU (length a multiple of 8):
    nonzero over 64-bit words, then over the bytes of the non-zero words (~5x faster than on bools)."""
    if mask.device.type != "cpu" or mask.numel() % 8:
        return mask.nonzero().squeeze(1).to(dtype)  # the host sync on CUDA (data-dependent size)
    words = mask.view(torch.int64)
    wi = words.nonzero().squeeze(1)  # [K_w]
    byte = _at(words, wi).view(torch.uint8).nonzero().squeeze(1).to(dtype)  # [K] over the K_w * 8 bytes
    return _at(wi.to(dtype) * 8, byte >> 3) + (byte & 7)  # [K], still in order


def _centroids(
    obj: torch.Tensor, y: torch.Tensor, x: torch.Tensor, left: torch.Tensor, right: torch.Tensor, n: int, h: int,
    w: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact area and centroid (working pixel indices) [N] of each mask from its contour pixels [K] alone.

    Each row of a mask is a set of runs [a, b]; both ends have a background neighbour in the row, so they are
    contour pixels. Area = sum(b + 1) - sum(a), sum of x = sum b(b+1)/2 - sum a(a-1)/2, sum of y = y * run length.
    Integer sums (exact); no pass over the whole mask stack. They run in int32 where no partial sum can
    overflow it (|2 sum x| < 2 h w^2 + w^2, |sum y| < (h + 1) h w), else in int64.
    """
    acc = torch.int32 if max(2 * h * w * w + w * w, (h + 1) * h * w) < 2 ** 31 else torch.int64
    x, y = x.to(acc), y.to(acc)
    start = (left <= (x == 0)).to(acc)  # [K] 1 at run starts: the left neighbour is background (bools: ~l | b)
    end = (right <= (x == w - 1)).to(acc)  # [K] 1 at run ends (a one-pixel run is both)
    xe = x * (end - start)
    run = end + xe  # [K] = end * (x + 1) - start * x: signed parts of the run lengths
    twice_x = x * (xe + end + start)  # [K] = end * x(x+1) - start * x(x-1)
    sums = torch.zeros(3, n, dtype=acc, device=x.device)  # [3, N] area, 2 * sum x, sum y
    for row, term in zip(sums, (run, twice_x, y * run)):
        row.index_add_(0, obj, term)
    area = sums[0].to(torch.float64)
    safe = area.clamp_min(1.0)
    return area, (0.5 * sums[1] / safe).to(torch.float32), (sums[2] / safe).to(torch.float32)


def _at(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """values[index] along dim 0; ``index_select`` is 3-4x faster than advanced indexing on CPU."""
    return values.index_select(0, index)


def _radius_coords(
    r: torch.Tensor, obj: torch.Tensor, weight: torch.Tensor, diag: torch.Tensor, kind: str, v: int, s: int,
    n_obj: int, m_pts: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous radius-bin coordinate of each point [P] (bin j spans [j, j+1)) and the bin edges [N, v+1]."""
    j = torch.arange(v + 1, device=r.device, dtype=torch.float32)  # [v+1]
    if kind == "lin_abs":
        return r / _at(diag, obj) * v, j[None] / v * diag[:, None]
    if kind not in ("log_abs", "log_objscale"):
        raise ValueError(f"compute_descriptor: unknown radius spacing {kind!r}")
    if kind == "log_abs":
        r0, r1 = diag / 256.0, diag  # [N]
    else:  # shape context (Belongie et al.): normalise by the mean point radius, edges r/8 .. 2r
        mean = torch.zeros(n_obj, device=r.device).index_add_(0, obj, weight * r) / m_pts  # [N] weights sum to M
        scale = mean.clamp_min(0.5 * s)  # a one-pixel mask has scale 0
        r0, r1 = scale / 8.0, scale * 2.0
    span = torch.log(r1 / r0)  # [N]
    pos = r.clamp_min(1e-6).div_(_at(r0, obj)).log_().mul_(_at(v / span, obj))
    return pos, r0[:, None] * torch.exp(j[None] / v * span[:, None])  # log-spaced edges


def _histogram(
    obj: torch.Tensor, a_pos: torch.Tensor, r_pos: torch.Tensor, weight: torch.Tensor, n_obj: int, u: int, v: int,
    binning: str,
) -> torch.Tensor:
    """Weighted points -> [N, u, v]. Angles wrap; radii beyond the first / last bin centre stay in that bin."""
    if binning == "hard":  # Eq. (4): the bin that contains the point
        a_bin = a_pos.floor().long() % u  # theta = pi wraps to bin 0
        r_bin = r_pos.floor().clamp(0, v - 1).long()
        index, value = (obj * u + a_bin) * v + r_bin, weight
    elif binning == "linear":  # split between the two nearest bin centres in angle and in radius
        ta = a_pos - 0.5  # [P] in units of bin centres
        tr = (r_pos - 0.5).clamp_(0.0, v - 1.0)
        a_lo, r_lo = ta.floor(), tr.floor()
        fa, fr = ta.sub_(a_lo), tr.sub_(r_lo)  # [P] share of the upper neighbour
        itype = torch.int32 if n_obj * u * v < 2 ** 31 else torch.int64  # index_add_ takes either; half the bytes
        lo = a_lo.to(itype)  # in [-1, u-1]: the neighbours of a point below the first centre are u-1 and 0
        base = obj.to(itype) * u  # [P]
        a0 = (base + torch.where(lo < 0, u - 1, lo)) * v  # [P] first flat bin of the lower angle neighbour
        a1 = (base + torch.where(lo == u - 1, 0, lo + 1)) * v
        r0 = r_lo.to(itype)
        r1 = (r0 + 1).clamp_max_(v - 1)
        s0, s1 = (1 - fa) * weight, fa * weight  # [P] angle shares
        g0 = 1 - fr
        count = torch.zeros(n_obj * u * v, device=weight.device, dtype=torch.float32)
        for ai, si in ((a0, s0), (a1, s1)):  # the four (angle, radius) neighbours, one index_add_ each, in turn
            for rj, gj in ((r0, g0), (r1, fr)):
                count.index_add_(0, ai + rj, si * gj)
        return count.view(n_obj, u, v)
    else:
        raise ValueError(f"compute_descriptor: unknown binning {binning!r}")
    count = torch.zeros(n_obj * u * v, device=weight.device, dtype=torch.float32)
    return count.index_add_(0, index, value).view(n_obj, u, v)


def _smooth_angles(count: torch.Tensor) -> torch.Tensor:
    """One circular [1, 2, 1]/4 pass over dim 1 of [N, u, v]: 0.25 * (c[k-1] + c[k+1]) + 0.5 * c[k], the same
    float operations as with two rolls, without materialising them."""
    u = count.shape[1]
    if u < 3:
        return 0.25 * (count.roll(1, 1) + count.roll(-1, 1)) + 0.5 * count
    side = torch.empty_like(count)  # c[k-1] + c[k+1]
    torch.add(count[:, :-2], count[:, 2:], out=side[:, 1:-1])
    torch.add(count[:, -1], count[:, 1], out=side[:, 0])
    torch.add(count[:, -2], count[:, 0], out=side[:, -1])
    return side.mul_(0.25).add_(count, alpha=0.5)  # 0.25 and 0.5 scale exactly: one rounding, as before


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

    Coded targets (the clip pipeline's, for label-map formats) are described from that frame's code maps
    (:func:`compute_descriptor_coded`, bit-identical; no planes written) where ``cfg`` allows it (the default
    reading); otherwise from that frame's planes.

    Args:
        targets: B ``Targets`` (masks [K_b, T, H, W] bool at the padded input size, or coded).
        image_sizes: [B, 2] valid (h, w) of each clip (``Clip.image_sizes``).
        frame: frame of the clip to describe; default the middle one, T // 2 (method.md).
    Returns:
        B tensors [K_b, u*v]; a tube absent from that frame gets all zeros. One batched call for the batch.
    """
    if len(targets) == 0:
        return []
    t = targets[0].shape[1]
    f = t // 2 if frame is None else frame
    counts = [tg.shape[0] for tg in targets]
    if supports_coded(cfg) and all(tg.coded for tg in targets):  # tube codes are unique (Targets checks)
        # The clip pipeline's coded targets: the descriptor frame's code maps, no planes (issue #17)
        codes = [tg.code[f] for tg in targets]  # B x [H, W]
        clip = torch.repeat_interleave(torch.arange(len(targets)), torch.tensor(counts))  # [N]
        canvas = image_sizes.to(codes[0].device)[clip.to(codes[0].device)]  # [N, 2]
        desc = compute_descriptor_coded(codes, [tg.tube_codes for tg in targets], canvas, cfg, d_model)
        return list(desc.split(counts))
    planes = [tg.frame_masks(f) for tg in targets]  # B x [K_b, H, W] (coded targets: this frame's planes only)
    masks = torch.cat(planes)  # [N, H, W]
    clip = torch.repeat_interleave(torch.arange(len(targets), device=masks.device),
                                   torch.tensor(counts, device=masks.device))  # [N]
    canvas = image_sizes.to(masks.device)[clip]  # [N, 2]
    union = None
    if cfg.outside_ref == "fg_union":  # union of the object's own clip, not of the whole batch
        unions = torch.stack([p.any(0) for p in planes])  # [B, H, W]
        union = unions[clip]
    desc = compute_descriptor(masks, canvas, cfg, d_model, union=union)
    return list(desc.split(counts))
