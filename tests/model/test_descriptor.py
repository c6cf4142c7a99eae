"""Shape-position descriptor H (Eq. 3-4): shape/position properties, ΔH (Eq. 10) properties, edge cases,
the fast path against a slow reference of the same definition, and against a frozen copy of the previous
implementation (``descriptor_frozen.py``, git 67a969e) on a fixed synthetic set, on both CPU paths."""

import math

import descriptor_frozen
import pytest
import torch
import torch.nn.functional as F

import gvseg.model.descriptor as descriptor
from gvseg.config import DescriptorConfig
from gvseg.losses.contrastive import delta_h
from gvseg.model.descriptor import compute_descriptor, descriptor_to_embedding, target_descriptors
from gvseg.structures import Targets

D = 256
INV = 1.0 / math.sqrt(D)
H, W = 96, 128
TAU = 0.2  # Table 4b
# M discrete points in hard bins, hard canvas edge: integer point counts (the first implementation at stride 4)
POINTS = dict(sampling="raster", binning="hard", angle_smooth=0, outside_edge="hard")


def canvas(n, h=H, w=W):
    return torch.tensor([[h, w]] * n).reshape(n, 2)


def rect(y0, x0, hh, ww, h=H, w=W):
    m = torch.zeros(h, w, dtype=torch.bool)
    m[y0:y0 + hh, x0:x0 + ww] = True
    return m


def disc(cy, cx, r, h=H, w=W):
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_shape_and_bins_respected():
    for u, v in [(12, 6), (36, 12), (48, 12)]:
        cfg = DescriptorConfig(angle_bins=u, radius_bins=v)
        out = compute_descriptor(rect(10, 10, 30, 40)[None], canvas(1), cfg, D)
        assert out.shape == (1, u * v)
        assert out.dtype == torch.float32


@pytest.mark.parametrize("sampling", ["raster", "along"])
def test_point_sampling_with_hard_bins_gives_multiples_of_inv_sqrt_d(sampling):
    cfg = DescriptorConfig(**{**POINTS, "sampling": sampling})
    masks = torch.stack([rect(10, 10, 30, 40), disc(50, 70, 20), rect(0, 0, 96, 128)])
    out = compute_descriptor(masks, canvas(3), cfg, D)
    k = out / INV
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert (k.round() >= -1).all()
    # every object spends exactly M points
    assert torch.allclose(out.clamp_min(0).sum(1), torch.full((3,), cfg.num_points * INV))


def test_default_spends_m_points_and_negatives_are_at_most_one_bin():
    cfg = DescriptorConfig()
    masks = torch.stack([rect(10, 10, 30, 40), disc(50, 70, 20), rect(0, 0, 96, 128)])
    out = compute_descriptor(masks, canvas(3), cfg, D)
    assert torch.allclose(out.clamp_min(0).sum(1), torch.full((3,), cfg.num_points * INV))
    assert (out >= -INV - 1e-7).all()
    assert (out < 0).any()  # the soft canvas edge still marks bins outside


def test_translation_keeps_positive_bins_and_changes_negative_bins():
    cfg = DescriptorConfig()
    a = rect(8, 8, 24, 32)  # near the top-left corner
    b = rect(56, 88, 24, 32)  # same shape near the bottom-right; shift is a multiple of contour_stride
    out = compute_descriptor(torch.stack([a, b]), canvas(2), cfg, D)
    pos_a, pos_b = out[0].clamp_min(0), out[1].clamp_min(0)
    assert torch.allclose(pos_a, pos_b, atol=1e-6)
    neg_a, neg_b = out[0] < 0, out[1] < 0
    assert neg_a.any() and neg_b.any()
    assert not torch.equal(neg_a, neg_b)


def test_different_shape_changes_positive_bins():
    cfg = DescriptorConfig()
    out = compute_descriptor(torch.stack([rect(30, 40, 32, 32), disc(46, 56, 16)]), canvas(2), cfg, D)
    assert not torch.equal(out[0].clamp_min(0), out[1].clamp_min(0))
    wide = compute_descriptor(torch.stack([rect(40, 20, 8, 80)]), canvas(1), cfg, D)
    assert not torch.equal(out[0].clamp_min(0), wide[0].clamp_min(0))


def test_empty_mask_is_all_zeros_not_nan():
    cfg = DescriptorConfig()
    masks = torch.stack([torch.zeros(H, W, dtype=torch.bool), rect(10, 10, 20, 20)])
    out = compute_descriptor(masks, canvas(2), cfg, D)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros_like(out[0]))
    assert out[1].abs().sum() > 0
    assert compute_descriptor(masks[:0], canvas(0), cfg, D).shape == (0, 432)


@pytest.mark.parametrize("cfg", [DescriptorConfig(), DescriptorConfig(**POINTS, contour_stride=4),
                                 DescriptorConfig(sampling="along")], ids=["default", "first", "along"])
def test_one_pixel_mask_puts_all_points_in_innermost_ring(cfg):
    m = torch.zeros(1, H, W, dtype=torch.bool)
    m[0, 40, 60] = True
    out = compute_descriptor(m, canvas(1), cfg, D).view(36, 12)
    assert torch.isfinite(out).all()
    assert out[:, 0].sum() == pytest.approx(cfg.num_points * INV)  # radius bin 0 holds every point
    assert (out[:, 1:] <= 0).all()


@pytest.mark.parametrize("sampling", ["weighted", "along", "raster"])
def test_border_touching_mask_is_defined(sampling):
    cfg = DescriptorConfig(sampling=sampling)
    masks = torch.stack([rect(0, 0, 40, W), rect(0, 0, H, W), rect(H - 3, W - 5, 3, 5)])  # top band, all, corner
    out = compute_descriptor(masks, canvas(3), cfg, D)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.clamp_min(0).sum(1), torch.full((3,), cfg.num_points * INV), atol=1e-5)


def test_batched_equals_one_by_one():
    cfg = DescriptorConfig()
    masks = torch.stack([rect(10, 10, 30, 40), disc(50, 70, 20), rect(70, 5, 20, 100), torch.zeros(H, W, dtype=torch.bool)])
    sizes = torch.tensor([[96, 128], [96, 100], [90, 128], [96, 128]])
    batched = compute_descriptor(masks, sizes, cfg, D)
    single = torch.cat([compute_descriptor(masks[i:i + 1], sizes[i:i + 1], cfg, D) for i in range(4)])
    assert torch.allclose(batched, single, atol=1e-6)  # float sums: accumulation order may differ by an ulp


def test_probability_masks_threshold_at_half():
    cfg = DescriptorConfig()
    m = rect(10, 10, 30, 40)[None]
    prob = m.float() * 0.9 + 0.05
    assert torch.equal(compute_descriptor(m, canvas(1), cfg, D), compute_descriptor(prob, canvas(1), cfg, D))


def test_canvas_reading_depends_on_position_own_mask_does_not():
    a, b = rect(8, 8, 24, 32), rect(56, 88, 24, 32)
    own = compute_descriptor(torch.stack([a, b]), canvas(2), DescriptorConfig(outside_ref="own_mask"), D)
    assert torch.allclose(own[0], own[1], atol=1e-6)  # own-mask "outside" is a function of shape alone
    union = a | b
    fg = compute_descriptor(torch.stack([a, b]), canvas(2), DescriptorConfig(outside_ref="fg_union"), D, union=union)
    assert (fg < 0).any()


@pytest.mark.parametrize("radius", ["log_abs", "lin_abs", "log_objscale"])
def test_radius_spacings_spend_all_points(radius):
    cfg = DescriptorConfig(radius=radius)
    out = compute_descriptor(torch.stack([disc(48, 64, 30), rect(5, 5, 8, 8)]), canvas(2), cfg, D)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.clamp_min(0).sum(1), torch.full((2,), cfg.num_points * INV))


def test_log_objscale_is_scale_invariant_log_abs_is_not():
    small, big = rect(20, 20, 16, 16), rect(20, 20, 64, 64)  # one square at two scales

    def radial(radius):
        cfg = DescriptorConfig(radius=radius, contour_stride=1)
        out = compute_descriptor(torch.stack([small, big]), canvas(2), cfg, D)
        return out.clamp_min(0).view(2, 36, 12).sum(1) / INV  # points per radius ring

    obj = radial("log_objscale")
    assert (obj[0] - obj[1]).abs().sum() <= 0.2 * 200  # same rings up to pixelation
    absolute = radial("log_abs")
    assert absolute[0].argmax() < absolute[1].argmax()  # the bigger square sits in outer rings


def test_descriptor_to_embedding_shapes():
    h = torch.randn(5, 432)
    e = descriptor_to_embedding(h, 256)
    assert e.shape == (5, 256)
    assert torch.equal(descriptor_to_embedding(h, 432), h)
    const = descriptor_to_embedding(torch.full((1, 432), 0.5), 256)
    assert torch.allclose(const, torch.full((1, 256), 0.5))


def test_target_descriptors_use_middle_frame_per_clip():
    cfg = DescriptorConfig()
    m = torch.zeros(2, 3, H, W, dtype=torch.bool)
    m[0, 1] = rect(10, 10, 30, 40)
    m[1, 0] = rect(50, 50, 20, 20)  # absent in the middle frame
    tg = Targets(masks=m, labels=torch.tensor([0, 1]), ids=torch.tensor([1, 2]), isthing=torch.tensor([True, True]))
    empty = Targets(masks=torch.zeros(0, 3, H, W, dtype=torch.bool), labels=torch.zeros(0, dtype=torch.int64),
                    ids=torch.zeros(0, dtype=torch.int64), isthing=torch.zeros(0, dtype=torch.bool))
    out = target_descriptors([tg, empty], torch.tensor([[H, W], [H, W]]), cfg, D)
    assert [o.shape for o in out] == [(2, 432), (0, 432)]
    assert torch.equal(out[0][0], compute_descriptor(m[0, 1][None], canvas(1), cfg, D)[0])
    assert torch.equal(out[0][1], torch.zeros(432))


def test_pooling_matches_area_rule_on_ragged_sizes():
    """The uint8 pooling (stride 4) equals an explicit area >= 0.5 rule, partial border cells included."""
    from gvseg.model.descriptor import _pool

    g = torch.Generator().manual_seed(0)
    fg = torch.rand(3, 37, 50, generator=g) > 0.5
    fg[2] = False
    fg[2, 36, 49] = True  # lone pixel in a partial corner cell: must survive
    out = _pool(fg, 4)
    frac = torch.nn.functional.avg_pool2d(fg.float()[:, None], 4, stride=4, ceil_mode=True)[:, 0]
    assert out.shape == (3, 10, 13)
    assert torch.equal(out[:2], frac[:2] >= 0.5)
    assert out[2].sum() == 1 and out[2, 9, 12]
    assert torch.equal(_pool(fg, 16), _pool(fg, 16))  # float fallback path runs


# ------------------------------------------------------------------------- ΔH (Eq. 10): what TCL needs

H2, W2 = 120, 180


def ellipse(cx, cy, rx, ry, angle=0.0, h=H2, w=W2):
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    u, v = (c * (xx - cx) + s * (yy - cy)) / rx, (-s * (xx - cx) + c * (yy - cy)) / ry
    return u * u + v * v <= 1


def star(cx, cy, r, h=H2, w=W2):
    """Five-pointed star (the synthetic generator's family), area ~ 0.41 pi r^2."""
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    theta = torch.atan2(yy - cy, xx - cx)
    return torch.hypot(xx - cx, yy - cy) <= r * (0.55 + 0.45 * torch.cos(5 * theta))


def dh(a, b, cfg=None):
    out = compute_descriptor(torch.stack([a, b]), canvas(2, H2, W2), cfg or DescriptorConfig(), D)
    return float(delta_h(out[0], out[1]))


def test_slowly_moving_ellipse_stays_under_tau():
    a = ellipse(50, 60, 18, 12, 0.3)
    b = ellipse(51.7, 60.9, 18.2, 12.1, 0.33)  # one frame later: 2 px, 2 degrees, 1% bigger
    assert dh(a, b) < TAU


def test_first_implementation_could_not_tell_motion_from_noise():
    """Issue #12: at stride 4 with raster points and hard bins, the same one-frame motion was far above τ."""
    a, b = ellipse(50, 60, 18, 12, 0.3), ellipse(51.7, 60.9, 18.2, 12.1, 0.33)
    assert dh(a, b, DescriptorConfig(**POINTS, contour_stride=4)) > 3 * TAU


def test_shifted_ellipse_grows_with_the_shift_and_exceeds_tau_at_half_the_width():
    a = ellipse(30, 60, 16, 11, 0.3)
    steps = [dh(a, torch.roll(a, k, 1)) for k in (2, W2 // 8, W2 // 4, W2 // 2)]
    assert steps == sorted(steps)
    assert steps[0] < 0.05 < steps[1]
    assert steps[-1] > TAU  # position alone: the negative (outside-canvas) bins, Eq. 4 text


def test_ellipse_and_star_of_similar_area_differ_by_more_than_tau():
    a = ellipse(60, 60, 18, 12)
    b = star(60, 60, 18 * 12 ** 0.5 / (0.55 ** 2 + 0.45 ** 2 / 2) ** 0.5 / 18 ** 0.5)  # equal area
    assert abs(int(a.sum()) - int(b.sum())) < 0.1 * int(a.sum())
    assert dh(a, b) > TAU


@pytest.mark.parametrize("sampling", ["weighted", "along", "raster"])
def test_empty_mask_is_all_zeros_for_every_sampling(sampling):
    cfg = DescriptorConfig(sampling=sampling)
    masks = torch.stack([torch.zeros(H, W, dtype=torch.bool), rect(10, 10, 20, 20), torch.zeros(H, W, dtype=torch.bool)])
    out = compute_descriptor(masks, canvas(3), cfg, D)
    assert torch.isfinite(out).all()
    assert torch.equal(out[0], torch.zeros(432)) and torch.equal(out[2], torch.zeros(432))


def test_soft_edge_fades_bins_in_hard_edge_flips_them():
    cfg_soft, cfg_hard = DescriptorConfig(), DescriptorConfig(outside_edge="hard")
    a, b = rect(30, 40, 20, 20), rect(30, 41, 20, 20)  # moved by one pixel
    soft = compute_descriptor(torch.stack([a, b]), canvas(2), cfg_soft, D)
    hard = compute_descriptor(torch.stack([a, b]), canvas(2), cfg_hard, D)
    assert torch.isin(hard.clamp_max(0).unique(), torch.tensor([-INV, 0.0])).all()
    assert ((soft < 0) & (soft > -INV + 1e-6)).any()  # partial bins near the canvas edge
    neg = lambda h: (h[1].clamp_max(0) - h[0].clamp_max(0)).norm()  # noqa: E731
    assert neg(soft) < neg(hard)


# ------------------------------------------------------- the fast path against a slow reference


def reference(masks, canvas_hw, cfg, d_model, downsample=None):
    """The definition of the module docstring, one object at a time, with explicit loops over points and bins."""
    u, v, m_pts = cfg.angle_bins, cfg.radius_bins, cfg.num_points
    s = cfg.contour_stride if downsample is None else downsample
    inv = 1.0 / math.sqrt(d_model)
    out = torch.zeros(masks.shape[0], u, v, dtype=torch.float64)
    fgs = descriptor._pool(masks if masks.dtype == torch.bool else masks > 0.5, s)  # pooling is tested apart
    for i, fg in enumerate(fgs):
        if not fg.any():
            continue
        bg = F.max_pool2d(F.pad((~fg).float()[None, None], (1, 1, 1, 1), value=1.0), 3, stride=1)[0, 0] > 0
        ys, xs = (fg & bg).nonzero().unbind(1)  # raster order
        cy, cx = (fg.nonzero().double().mean(0) + 0.5).float() * s
        px, py = (xs.float() + 0.5) * s, (ys.float() + 0.5) * s
        n = len(xs)
        if cfg.sampling == "weighted":
            weight = torch.full((n,), m_pts / n)
        else:
            if cfg.sampling == "along":
                order = torch.sort(torch.atan2(py - cy, px - cx).double(), stable=True).indices
                px, py = px[order], py[order]
            pick = [int(math.floor((k + 0.5) * n / m_pts)) for k in range(m_pts)]
            px, py, weight = px[pick], py[pick], torch.ones(m_pts)
        ch, cw = float(canvas_hw[i][0]), float(canvas_hw[i][1])
        diag = max(math.hypot(ch, cw), 1.0)
        r = torch.hypot(px - cx, py - cy)
        if cfg.radius == "lin_abs":
            edges = [k / v * diag for k in range(v + 1)]
            rho = r / diag * v
        else:
            if cfg.radius == "log_abs":
                r0, r1 = diag / 256, diag
            else:
                scale = max(float((weight * r).sum()) / m_pts, 0.5 * s)
                r0, r1 = scale / 8, 2 * scale
            edges = [r0 * (r1 / r0) ** (k / v) for k in range(v + 1)]
            rho = torch.log(r.clamp_min(1e-6) / r0) / math.log(r1 / r0) * v
        alpha = (torch.atan2(py - cy, px - cx) + math.pi) * (u / (2 * math.pi))
        for a, rr, wt in zip(alpha.tolist(), rho.tolist(), weight.tolist()):
            if cfg.binning == "hard":
                out[i, int(math.floor(a)) % u, min(max(int(math.floor(rr)), 0), v - 1)] += wt
                continue
            ta, tr = a - 0.5, min(max(rr - 0.5, 0.0), v - 1.0)
            for da, sa in ((0, 1 - (ta - math.floor(ta))), (1, ta - math.floor(ta))):
                for dr, sr in ((0, 1 - (tr - math.floor(tr))), (1, tr - math.floor(tr))):
                    out[i, (int(math.floor(ta)) + da) % u, min(int(math.floor(tr)) + dr, v - 1)] += wt * sa * sr
        for _ in range(cfg.angle_smooth):
            out[i] = torch.tensor([[0.25 * out[i, (k - 1) % u, j] + 0.5 * out[i, k, j] + 0.25 * out[i, (k + 1) % u, j]
                                    for j in range(v)] for k in range(u)], dtype=torch.float64)
        for k in range(u):
            ang = -math.pi + (k + 0.5) * 2 * math.pi / u
            for j in range(v):
                if out[i, k, j] != 0:
                    continue
                rc = (edges[j] + edges[j + 1]) / 2 if cfg.radius == "lin_abs" else math.sqrt(edges[j] * edges[j + 1])
                bx, by = float(cx) + rc * math.cos(ang), float(cy) + rc * math.sin(ang)
                if cfg.outside_edge == "hard":
                    frac = float(bx < 0 or by < 0 or bx >= cw or by >= ch)
                else:  # the part of a square of the bin's area beyond the nearest canvas edge
                    side = math.sqrt((edges[j + 1] - edges[j]) * rc * 2 * math.pi / u)
                    frac = min(max(0.5 + max(-bx, bx - cw, -by, by - ch) / side, 0.0), 1.0)
                out[i, k, j] = -frac
    return (out * inv).float().reshape(len(masks), u * v)


def random_masks(n, h, w, seed):
    """Blobby random masks (smoothed noise), plus an empty one, a one-pixel one and a full one."""
    g = torch.Generator().manual_seed(seed)
    noise = F.avg_pool2d(torch.rand(n, 1, h, w, generator=g), 5, stride=1, padding=2)[:, 0]
    m = noise > 0.5 + 0.02 * torch.randn(n, 1, 1, generator=g)
    m[0] = False
    m[1] = False
    m[1, h // 2, w // 3] = True
    m[2] = True
    return m


@pytest.mark.parametrize("cfg", [
    DescriptorConfig(),
    DescriptorConfig(contour_stride=4),
    DescriptorConfig(**POINTS, contour_stride=4),  # the first implementation's recipe
    DescriptorConfig(**{**POINTS, "sampling": "along"}),
    DescriptorConfig(sampling="raster", angle_smooth=2, radius="lin_abs"),
    DescriptorConfig(radius="log_objscale", outside_edge="hard", angle_bins=12, radius_bins=6),
], ids=["default", "stride4", "first", "along_hard", "raster_smooth2_lin", "objscale_12x6"])
def test_fast_path_equals_slow_reference(cfg):
    masks = random_masks(7, 37, 53, seed=1)  # ragged sizes: 37 rows, 53 columns (not whole 64-bit words)
    sizes = torch.tensor([[37, 53], [37, 53], [37, 53], [30, 53], [37, 40], [37, 53], [20, 20]])
    fast = compute_descriptor(masks, sizes, cfg, D)
    assert torch.allclose(fast, reference(masks, sizes, cfg, D), atol=1e-5)


# ------------------------------------- the optimised module against a frozen copy of the one it replaced

PATHS = {"rows": 1.0, "whole": -1.0}  # descriptor._ROWS_MAX_SHARE: CPU row gather always / never (the CUDA path)


def synthetic_masks(h, w, seed):
    """A fixed set [N, h, w] of the cases that matter: empty, one pixel (inside, corner), lines, border-touching,
    full, a ring, two components, ellipses (some over the border) and blobby noise."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(20, h, w, dtype=torch.bool)  # m[0] stays empty
    m[1, h // 2, w // 3] = True  # one pixel inside
    m[2, 0, w - 1] = True  # one pixel in the corner
    m[3, h // 3, 2:-2] = True  # horizontal line, 1 px
    m[4, 1:-1, w // 2] = True  # vertical line, 1 px
    m[5, : h // 2] = True  # band on the top border
    m[6] = True  # the whole canvas
    m[7, 2:-2, 2:-2], m[7, 5:-5, 5:-5] = True, False  # ring
    m[8, 1:4, 1:4], m[8, -6:-1, -8:-2] = True, True  # two components
    m[9] = torch.eye(h, w, dtype=torch.bool)  # diagonal, 8-connected only
    yy, xx = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for i in range(10, 16):  # ellipses, centres anywhere (some cut by the border)
        cy, cx = float(torch.rand(1, generator=g)) * h, float(torch.rand(1, generator=g)) * w
        ry, rx = 2 + float(torch.rand(1, generator=g)) * h / 3, 2 + float(torch.rand(1, generator=g)) * w / 3
        m[i] = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
    m[16:] = random_masks(4, h, w, seed)
    m[16] = m[17] & (xx > w / 2)  # blobs on one side only (rows without foreground on the other)
    return m


def sizes_for(n, h, w):
    """Canvas (h, w) per mask: the full canvas, some smaller ones (padding) and one tiny one."""
    sizes = torch.tensor([[h, w]] * n)
    sizes[3], sizes[7], sizes[11] = torch.tensor([h - 5, w]), torch.tensor([h, w - 9]), torch.tensor([4, 4])
    return sizes


FROZEN_CFGS = {
    "default": DescriptorConfig(),
    "along": DescriptorConfig(sampling="along"),
    "raster": DescriptorConfig(sampling="raster"),
    "first": DescriptorConfig(**POINTS, contour_stride=4),
    "stride3_ragged": DescriptorConfig(contour_stride=3),
    "hard_bins_smooth2": DescriptorConfig(binning="hard", angle_smooth=2),
    "lin_abs_hard_edge": DescriptorConfig(radius="lin_abs", outside_edge="hard", angle_smooth=0),
    "objscale_12x6": DescriptorConfig(radius="log_objscale", angle_bins=12, radius_bins=6),
    "two_angle_bins": DescriptorConfig(angle_bins=2, radius_bins=3),  # the [1, 2, 1] pass's roll fallback (u < 3)
    "own_mask": DescriptorConfig(outside_ref="own_mask"),
    "fg_union": DescriptorConfig(outside_ref="fg_union"),
}


def assert_same(new, old):
    assert new.shape == old.shape and new.dtype == old.dtype
    assert torch.isfinite(new).all()
    assert (new - old).abs().max() <= 1e-6  # in practice bit-for-bit: the same float operations in the same order


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(45, 80), (37, 53)], ids=["w8", "ragged"])  # 64-bit word rows, and not
@pytest.mark.parametrize("name", FROZEN_CFGS)
def test_fast_path_equals_frozen_previous_implementation(name, shape, path, monkeypatch):
    monkeypatch.setattr(descriptor, "_ROWS_MAX_SHARE", PATHS[path])
    cfg, (h, w) = FROZEN_CFGS[name], shape
    masks = synthetic_masks(h, w, seed=h)
    sizes = sizes_for(len(masks), h, w)
    assert_same(compute_descriptor(masks, sizes, cfg, D), descriptor_frozen.compute_descriptor(masks, sizes, cfg, D))
    prob = masks.float() * 0.8 + 0.1  # probabilities, thresholded inside, at the model's 1/4 (no pooling)
    assert_same(compute_descriptor(prob, sizes, cfg, D, downsample=1),
                descriptor_frozen.compute_descriptor(prob, sizes, cfg, D, downsample=1))
    union = masks[16] | masks[1]  # an explicit union (fg_union reads it; the others ignore it)
    assert_same(compute_descriptor(masks, sizes, cfg, D, union=union),
                descriptor_frozen.compute_descriptor(masks, sizes, cfg, D, union=union))


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 16), (7, 1), (2, 2), (3, 3), (4, 24), (0, 8)])
def test_fast_path_equals_frozen_on_tiny_canvases(shape, path, monkeypatch):
    monkeypatch.setattr(descriptor, "_ROWS_MAX_SHARE", PATHS[path])
    h, w = shape
    g = torch.Generator().manual_seed(h * 31 + w)
    masks = torch.rand(6, h, w, generator=g) < torch.tensor([0.0, 0.2, 0.5, 0.8, 1.0, 0.5]).view(6, 1, 1)
    sizes = torch.tensor([[max(h, 1), max(w, 1)]] * 6)
    for cfg in (DescriptorConfig(), DescriptorConfig(sampling="along"), DescriptorConfig(**POINTS, contour_stride=4)):
        assert_same(compute_descriptor(masks, sizes, cfg, D), descriptor_frozen.compute_descriptor(masks, sizes, cfg, D))


@pytest.mark.parametrize("frames", [1, 3], ids=["T1", "T3"])
@pytest.mark.parametrize("name", ["default", "first", "fg_union"])
def test_target_descriptors_equal_frozen(frames, name):
    cfg, (h, w) = FROZEN_CFGS[name], (45, 80)
    pool = synthetic_masks(h, w, seed=5)
    m_a = torch.stack([pool[(i + 3 * t) % 20] for i in range(12) for t in range(frames)]).view(12, frames, h, w)
    m_b = torch.stack([pool[(7 * i + t) % 20] for i in range(5) for t in range(frames)]).view(5, frames, h, w)
    tgs = [Targets(masks=m, labels=torch.zeros(len(m), dtype=torch.int64), ids=torch.arange(len(m)),
                   isthing=torch.ones(len(m), dtype=torch.bool)) for m in (m_a, m_b)]
    sizes = torch.tensor([[h, w], [h - 6, w - 16]])
    new = target_descriptors(tgs, sizes, cfg, D)
    with pytest.MonkeyPatch.context() as mp:  # the same wrapper around the frozen compute_descriptor
        mp.setattr(descriptor, "compute_descriptor", descriptor_frozen.compute_descriptor)
        old = descriptor.target_descriptors(tgs, sizes, cfg, D)
    assert len(new) == len(old) == 2
    for a, b in zip(new, old):
        assert_same(a, b)


def test_fast_path_equals_frozen_with_int64_moments_and_offset_views():
    """A 64 x 4104 canvas needs int64 centroid sums (2 h w^2 >= 2^31); masks sliced out of a bigger stack start
    at a storage offset that is not a whole 64-bit word (the occupancy falls back to bytes)."""
    cfg = DescriptorConfig()
    wide = torch.zeros(2, 64, 4104, dtype=torch.bool)
    wide[0, 10:50, 100:4000] = True
    wide[1, 0, :] = True
    sizes = torch.tensor([[64, 4104]] * 2)
    assert_same(compute_descriptor(wide, sizes, cfg, D), descriptor_frozen.compute_descriptor(wide, sizes, cfg, D))
    stack = synthetic_masks(9, 16, seed=2)  # 144 pixels a mask: stack[1:] starts at byte 144, stack[3:] at 432
    for part in (stack[1:], stack[3:], stack[5:12]):
        sizes = torch.tensor([[9, 16]] * len(part))
        assert_same(compute_descriptor(part, sizes, cfg, D), descriptor_frozen.compute_descriptor(part, sizes, cfg, D))


def test_floor_div_in_float32_is_exact_up_to_its_bound():
    for d in (1, 3, 7, 320, 4097, 65521):
        bound = 2 ** 24 - d
        top = torch.arange(max(bound - 300_000, 0), bound, dtype=torch.int32)
        ends = (torch.arange(1, bound // d + 1, dtype=torch.int64) * d - 1).to(torch.int32)  # q = a*d + d - 1
        for q in (top, ends, torch.arange(0, min(bound, 100_000), dtype=torch.int32)):
            assert torch.equal(descriptor._floor_div(q, d, bound), torch.div(q, d, rounding_mode="floor"))
    for d in (1, 3, 7):  # beyond float32's exact range the integer division must take over
        q = torch.arange(2 ** 25 - 20_000, 2 ** 25, dtype=torch.int32)
        assert torch.equal(descriptor._floor_div(q, d, 2 ** 25), torch.div(q, d, rounding_mode="floor"))
    q = torch.tensor([2 ** 24, 2 ** 30 + 5])
    assert torch.equal(descriptor._floor_div(q, 3, 2 ** 31), q // 3)


@pytest.mark.parametrize("path", PATHS)
def test_contour_list_chunked_equals_one_pass_and_the_definition(path, monkeypatch):
    monkeypatch.setattr(descriptor, "_ROWS_MAX_SHARE", PATHS[path])
    masks = torch.cat([random_masks(5, 29, 32, seed=2), synthetic_masks(29, 32, seed=4)]).contiguous()
    n, h, w = masks.shape
    whole = descriptor._contour_list(masks)
    monkeypatch.setattr(descriptor, "_CPU_CHUNK", 40)  # many chunks, cut mid-row
    chunked = descriptor._contour_list(masks)
    bg = F.max_pool2d(F.pad((~masks).float()[:, None], (1, 1, 1, 1), value=1.0), 3, stride=1)[:, 0] > 0
    obj, y, x = (masks & bg).nonzero().unbind(1)  # raster order
    padded = F.pad(masks, (1, 1))
    left, right = padded[obj, y, x], padded[obj, y, x + 2]
    for got in (whole, chunked):
        for a, b in zip(got, (obj, y, x)):
            assert torch.equal(a.long(), b)
        assert torch.equal(got[3] | (x == 0), left | (x == 0))  # left / right are read only inside the row
        assert torch.equal(got[4] | (x == w - 1), right | (x == w - 1))


def test_centroid_from_run_ends_is_exact():
    masks = random_masks(6, 23, 41, seed=3).contiguous()
    n, h, w = masks.shape
    obj, y, x, left, right = descriptor._contour_list(masks)
    area, cx, cy = descriptor._centroids(obj, y, x, left, right, n, h, w)
    assert torch.equal(area, masks.flatten(1).sum(1).double())
    for i in range(n):
        if area[i] > 0:
            yy, xx = masks[i].nonzero().double().mean(0)
            assert abs(float(cx[i]) - float(xx)) < 1e-4 and abs(float(cy[i]) - float(yy)) < 1e-4


def _code_map(h, w, seed, dtype=torch.uint8, void=255):
    """A panoptic-style code map: blocks and discs of codes 0..7, void pixels, a code touching the border."""
    g = torch.Generator().manual_seed(seed)
    code = torch.randint(0, 8, (h // 6 + 1, w // 6 + 1), generator=g).repeat_interleave(6, 0).repeat_interleave(6, 1)
    code = code[:h, :w].clone()
    code[disc(h // 2, w // 3, min(h, w) // 4, h, w)] = 9
    code[: max(h // 5, 1), : max(w // 5, 1)] = void
    return code.to(dtype)


@pytest.mark.parametrize("sampling", ["weighted", "along", "raster"])
@pytest.mark.parametrize("dtype", [torch.uint8, torch.int32], ids=["uint8", "int32"])
@pytest.mark.parametrize("shape", [(45, 80), (2, 7), (1, 1)], ids=["45x80", "2x7", "1x1"])
def test_coded_descriptor_equals_planes_bit_for_bit(dtype, shape, sampling):
    """The descriptor of a code map equals that of its planes exactly (issue #17: no planes written)."""
    cfg, (h, w) = DescriptorConfig(sampling=sampling), shape
    codes = [_code_map(h, w, 0, dtype), _code_map(h, w, 1, dtype)]
    tube_codes = [torch.tensor([9, 3, 0, 7, 42], dtype=dtype), torch.tensor([5, 1], dtype=dtype)]  # 42: absent
    planes = torch.cat([c[None] == t[:, None, None] for c, t in zip(codes, tube_codes)])  # [7, h, w]
    sizes = torch.tensor([[h, w]] * 5 + [[max(h - 2, 1), max(w - 3, 1)]] * 2)
    out = descriptor.compute_descriptor_coded(codes, tube_codes, sizes, cfg, D)
    assert torch.equal(out, compute_descriptor(planes, sizes, cfg, D))
    assert torch.equal(out[4], torch.zeros(cfg.angle_bins * cfg.radius_bins))  # an absent tube: all zeros


def test_coded_descriptor_of_no_tubes_is_empty():
    out = descriptor.compute_descriptor_coded([_code_map(20, 20, 0)], [torch.zeros(0, dtype=torch.uint8)],
                                              torch.zeros(0, 2), DescriptorConfig(), D)
    assert out.shape == (0, 432)


def test_coded_descriptor_rejects_readings_that_need_planes():
    with pytest.raises(ValueError, match="outside_ref 'canvas'"):
        descriptor.compute_descriptor_coded([_code_map(20, 20, 0)], [torch.tensor([1], dtype=torch.uint8)],
                                            canvas(1, 20, 20), DescriptorConfig(outside_ref="own_mask"), D)


@pytest.mark.parametrize("name", ["default", "fg_union"])
def test_target_descriptors_of_coded_targets_write_no_planes(name, monkeypatch):
    """Coded targets give what their derived planes give; the default reading never derives them."""
    cfg, (h, w) = FROZEN_CFGS[name], (45, 80)
    tgs = [Targets(None, torch.zeros(len(t), dtype=torch.int64), torch.arange(len(t)), torch.ones(len(t), dtype=torch.bool),
                   code=torch.stack([_code_map(h, w, s + f) for f in range(3)]), tube_codes=t, ignore_code=255)
           for s, t in ((0, torch.tensor([9, 3, 0], dtype=torch.uint8)), (5, torch.tensor([5, 1], dtype=torch.uint8)))]
    explicit = [Targets(tg.masks.clone(), tg.labels, tg.ids, tg.isthing) for tg in tgs]
    for tg in tgs:
        tg.__dict__.pop("_masks")  # coded again
    sizes = torch.tensor([[h, w], [h - 6, w - 16]])
    want = target_descriptors(explicit, sizes, cfg, D)
    if name == "default":
        monkeypatch.setattr(Targets, "frame_masks", lambda *a: pytest.fail("planes written"))
    got = target_descriptors(tgs, sizes, cfg, D)
    assert len(got) == 2 and all(torch.equal(a, b) for a, b in zip(got, want))
