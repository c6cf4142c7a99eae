"""Shape-position descriptor H (Eq. 3-4): shape/position properties and edge cases."""

import math

import pytest
import torch

from gvseg.config import DescriptorConfig
from gvseg.model.descriptor import compute_descriptor, descriptor_to_embedding, target_descriptors
from gvseg.structures import Targets

D = 256
INV = 1.0 / math.sqrt(D)
H, W = 96, 128


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


def test_values_are_multiples_of_inv_sqrt_d():
    cfg = DescriptorConfig()
    masks = torch.stack([rect(10, 10, 30, 40), disc(50, 70, 20), rect(0, 0, 96, 128)])
    out = compute_descriptor(masks, canvas(3), cfg, D)
    k = out / INV
    assert torch.allclose(k, k.round(), atol=1e-4)
    assert (k.round() >= -1).all()
    # every object spends exactly M points
    assert torch.allclose(out.clamp_min(0).sum(1), torch.full((3,), cfg.num_points * INV))


def test_translation_keeps_positive_bins_and_changes_negative_bins():
    cfg = DescriptorConfig()
    a = rect(8, 8, 24, 32)  # near the top-left corner
    b = rect(56, 88, 24, 32)  # same shape near the bottom-right; shift is a multiple of contour_stride
    out = compute_descriptor(torch.stack([a, b]), canvas(2), cfg, D)
    pos_a, pos_b = out[0].clamp_min(0), out[1].clamp_min(0)
    assert torch.equal(pos_a, pos_b)
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


def test_one_pixel_mask_puts_all_points_in_innermost_ring():
    cfg = DescriptorConfig()
    m = torch.zeros(1, H, W, dtype=torch.bool)
    m[0, 40, 60] = True
    out = compute_descriptor(m, canvas(1), cfg, D).view(36, 12)
    assert torch.isfinite(out).all()
    assert out.max() == pytest.approx(cfg.num_points * INV)
    assert (out[:, 1:] <= 0).all()  # radius bin 0 is the only populated ring


def test_border_touching_mask_is_defined():
    cfg = DescriptorConfig()
    out = compute_descriptor(rect(0, 0, 40, W)[None], canvas(1), cfg, D)
    assert torch.isfinite(out).all()
    assert out.clamp_min(0).sum() == pytest.approx(cfg.num_points * INV)


def test_batched_equals_one_by_one():
    cfg = DescriptorConfig()
    masks = torch.stack([rect(10, 10, 30, 40), disc(50, 70, 20), rect(70, 5, 20, 100), torch.zeros(H, W, dtype=torch.bool)])
    sizes = torch.tensor([[96, 128], [96, 100], [90, 128], [96, 128]])
    batched = compute_descriptor(masks, sizes, cfg, D)
    single = torch.cat([compute_descriptor(masks[i:i + 1], sizes[i:i + 1], cfg, D) for i in range(4)])
    assert torch.equal(batched, single)


def test_probability_masks_threshold_at_half():
    cfg = DescriptorConfig()
    m = rect(10, 10, 30, 40)[None]
    prob = m.float() * 0.9 + 0.05
    assert torch.equal(compute_descriptor(m, canvas(1), cfg, D), compute_descriptor(prob, canvas(1), cfg, D))


def test_canvas_reading_depends_on_position_own_mask_does_not():
    a, b = rect(8, 8, 24, 32), rect(56, 88, 24, 32)
    own = compute_descriptor(torch.stack([a, b]), canvas(2), DescriptorConfig(outside_ref="own_mask"), D)
    assert torch.equal(own[0], own[1])  # own-mask "outside" is a function of shape alone
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
