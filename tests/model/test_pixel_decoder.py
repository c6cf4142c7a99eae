import pytest
import torch

from gvseg.config import PixelDecoderConfig
from gvseg.model.pixel_decoder import MSDeformAttn, build_pixel_decoder, ms_deform_attn

torch.set_num_threads(1)  # 2 shared CPU cores: avoid oversubscription

IN_CH = {4: 8, 8: 12, 16: 16, 32: 20}


def _feats(n=2, h=64, w=96):
    g = torch.Generator().manual_seed(0)
    return {s: torch.randn(n, c, h // s, w // s, generator=g) for s, c in IN_CH.items()}


def _slow_reference(value, shapes, loc, weights):
    """Deformable DETR's sampling written out point by point: bilinear at (x*w - 0.5, y*h - 0.5), zeros outside."""
    n, _, m, dh = value.shape
    _, lq, _, nl, p, _ = loc.shape
    out = torch.zeros(n, lq, m, dh, dtype=torch.float64)
    starts = [0]
    for h, w in shapes:
        starts.append(starts[-1] + h * w)
    for b in range(n):
        for q in range(lq):
            for head in range(m):
                for lvl, (h, w) in enumerate(shapes):
                    v = value[b, starts[lvl]:starts[lvl + 1], head].view(h, w, dh).double()
                    for k in range(p):
                        x = loc[b, q, head, lvl, k, 0].item() * w - 0.5
                        y = loc[b, q, head, lvl, k, 1].item() * h - 0.5
                        x0, y0 = int(torch.floor(torch.tensor(x))), int(torch.floor(torch.tensor(y)))
                        acc = torch.zeros(dh, dtype=torch.float64)
                        for yy, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                            for xx, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
                                if 0 <= yy < h and 0 <= xx < w:
                                    acc += wy * wx * v[yy, xx]
                        out[b, q, head] += weights[b, q, head, lvl, k].item() * acc
    return out.view(n, lq, m * dh)


def test_grid_sample_deform_attn_equals_slow_reference():
    g = torch.Generator().manual_seed(1)
    shapes = [(3, 5), (2, 2)]
    n, lq, m, dh, p = 2, 4, 2, 3, 3
    value = torch.randn(n, sum(h * w for h, w in shapes), m, dh, generator=g)
    loc = torch.rand(n, lq, m, len(shapes), p, 2, generator=g) * 1.4 - 0.2  # some points fall outside
    weights = torch.rand(n, lq, m, len(shapes), p, generator=g)
    fast = ms_deform_attn(value, shapes, loc, weights)
    torch.testing.assert_close(fast.double(), _slow_reference(value, shapes, loc, weights), atol=1e-5, rtol=1e-5)


def test_deform_attn_gradients_reach_offsets():
    attn = MSDeformAttn(dim=16, num_levels=2, num_heads=2, num_points=2)
    shapes = [(4, 4), (2, 2)]
    x = torch.randn(1, 20, 16)
    ref = torch.rand(1, 20, 2, 2)
    attn(x, ref, x, shapes).square().sum().backward()
    assert attn.sampling_offsets.weight.grad.abs().sum() > 0
    assert attn.attention_weights.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["msdeform", "dense", "fpn"])
def test_shapes(kind):
    cfg = PixelDecoderConfig(kind=kind, dim=32, num_layers=2, num_heads=4, num_points=2, ffn_dim=64)
    dec = build_pixel_decoder(cfg, IN_CH)
    mask_features, ms = dec(_feats())
    assert mask_features.shape == (2, 32, 16, 24)
    assert [tuple(m.shape) for m in ms] == [(2, 32, 2, 3), (2, 32, 4, 6), (2, 32, 8, 12)]  # 1/32, 1/16, 1/8
    assert torch.isfinite(mask_features).all()


def test_unknown_kind_raises():
    with pytest.raises(ValueError, match="pixel_decoder.kind"):
        build_pixel_decoder(PixelDecoderConfig(kind="nope"), IN_CH)  # type: ignore[arg-type]


def test_missing_level_raises():
    with pytest.raises(ValueError, match="missing"):
        build_pixel_decoder(PixelDecoderConfig(kind="fpn"), {8: 1, 16: 1, 32: 1})
