"""Paper 003 options: MVC loss (patch masking, λ·L^M), TTA voting with ties to the higher resolution, and
two-model aggregation by Farneback warping + SSIM."""

import dataclasses

import numpy as np
import pytest
import torch

from gvseg.config import Config, ContrastiveConfig, LossConfig, MVCConfig
from gvseg.losses.mvc import mask_clip, patch_mask
from gvseg.structures import Clip, Targets
from gvseg.video.aggregate import choose, consistency, flow, ssim, warp
from gvseg.video.tta import semantic_tta, vote

# ------------------------------------------------------------------------------------------------ MVC


def _clip(t=2, h=32, w=32) -> Clip:
    g = torch.Generator().manual_seed(0)
    masks = torch.zeros(2, t, h, w, dtype=torch.bool)
    masks[0, :, 4:16, 4:20] = True
    masks[1] = ~masks[0]
    frames = torch.randn(1, t, 3, h, w, generator=g) + 2.0 * masks[0].float()[None, :, None]
    tg = Targets(masks, torch.tensor([0, 3]), torch.tensor([1, 2]), torch.tensor([True, False]))
    return Clip(frames, torch.tensor([[h, w]]), torch.arange(t)[None], ["v"], [tg])


def test_patch_mask_is_blockwise_with_the_ratio():
    g = torch.Generator().manual_seed(0)
    m = patch_mask(2, 3, 70, 90, patch=10, ratio=0.3, generator=g)  # partial patches at the border
    assert m.shape == (2, 3, 1, 70, 90) and set(m.unique().tolist()) <= {0.0, 1.0}
    blocks = m[..., ::10, ::10]  # one value per patch, constant inside it
    assert torch.equal(m, blocks.repeat_interleave(10, -2).repeat_interleave(10, -1)[..., :70, :90])
    assert 0.6 < m.mean().item() < 0.8  # kept with probability 1 - r
    assert not torch.equal(m[0, 0], m[0, 1])  # each frame draws its own mask
    assert patch_mask(1, 1, 8, 8, 4, 0.0).all() and not patch_mask(1, 1, 8, 8, 4, 1.0).any()


def test_masked_clip_zeroes_withheld_patches_only():
    clip = _clip()
    masked = mask_clip(clip, MVCConfig(weight=1.0, patch=8, ratio=0.5), torch.Generator().manual_seed(1))
    zero = masked.frames == 0
    assert zero.any() and (masked.frames[~zero] == clip.frames[~zero]).all()
    assert masked.targets is clip.targets and masked.reference is None


def _losses(weight):
    from gvseg.engine import build_parts, compute_losses
    from gvseg.recipes import unit_model_config

    torch.manual_seed(0)
    cfg = Config(model=unit_model_config("vps"),
                 loss=LossConfig(num_points=64, contrastive=ContrastiveConfig(enabled=False),
                                 mvc=MVCConfig(weight=weight, patch=8, ratio=0.5)))
    parts = build_parts(cfg)
    torch.manual_seed(1)
    return compute_losses(parts, _clip(), cfg), parts.criterion.weight_dict


def test_mvc_term_absent_at_weight_zero_and_finite_otherwise():
    base, w0 = _losses(0.0)
    assert "loss_mvc" not in base and "loss_mvc" not in w0  # λ = 0: no extra forward, the total is unchanged
    with_mvc, w1 = _losses(0.5)
    assert torch.isfinite(with_mvc["loss_mvc"]) and with_mvc["loss_mvc"] > 0 and w1["loss_mvc"] == 0.5
    assert with_mvc["loss_mvc"].requires_grad
    assert with_mvc["loss_ce"].item() == pytest.approx(base["loss_ce"].item())  # L itself is untouched


# ------------------------------------------------------------------------------------------------ TTA


def test_vote_takes_the_mode():
    labels = torch.tensor([[1, 2, 3], [1, 2, 4], [5, 2, 4]])  # 3 inputs, 3 pixels
    assert vote(labels, [1.0, 1.1, 0.9]).tolist() == [1, 2, 4]


def test_vote_tie_goes_to_the_higher_resolution():
    labels = torch.tensor([[7, 7], [8, 8], [7, 9], [8, 9]])  # pixel 0: 7 vs 8 tied; pixel 1: 9 wins
    assert vote(labels, [0.9, 1.2, 1.0, 1.1]).tolist() == [8, 9]  # 8 has the 1.2 input
    assert vote(labels, [1.2, 0.9, 1.0, 1.1]).tolist() == [7, 9]
    # equal priority (a scale and its flip): the earlier input wins
    assert vote(torch.tensor([[1], [2]]), [1.0, 1.0]).tolist() == [1]


def test_vote_edge_cases():
    one = torch.tensor([[[3, -1]]])
    assert torch.equal(vote(one), one[0])
    with pytest.raises(ValueError, match="at least one"):
        vote(torch.zeros(0, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="priorities"):
        vote(torch.zeros(2, 2, dtype=torch.long), [1.0])


def test_semantic_tta_runs_every_view_at_the_original_size():
    from gvseg.model.gvseg import build_gvseg
    from gvseg.recipes import unit_model_config

    torch.manual_seed(0)
    model = build_gvseg(unit_model_config("vss")).eval()
    out = semantic_tta(model, torch.randn(2, 3, 32, 40), scales=(0.75, 1.0), flip=True)
    assert out.shape == (2, 32, 40) and out.dtype == torch.int64 and out.min() >= 0 and out.max() < 4


# ------------------------------------------------------------------------------------------------ aggregation


def _shifted_pair(dx=3, dy=2, h=64, w=80):
    rng = np.random.default_rng(0)
    tex = (rng.random((h + 20, w + 20)) * 255).astype(np.uint8)
    tex = np.ascontiguousarray(np.repeat(tex[..., None], 3, -1))
    import cv2

    tex = cv2.GaussianBlur(tex, (5, 5), 1.5)
    a = tex[10:10 + h, 10:10 + w]
    b = tex[10 - dy:10 - dy + h, 10 - dx:10 - dx + w]  # content moves by (+dx, +dy)
    lab = np.zeros((h + 20, w + 20), np.int32)
    lab[25:55, 30:70] = 5
    return [a, b], [lab[10:10 + h, 10:10 + w], lab[10 - dy:10 - dy + h, 10 - dx:10 - dx + w]]


def test_farneback_warp_follows_the_motion():
    frames, labels = _shifted_pair()
    f = flow(frames[0], frames[1])
    inner = f[15:-15, 15:-15]
    assert np.allclose(np.median(inner.reshape(-1, 2), 0), [-3, -2], atol=0.5)  # backward flow
    warped = warp(labels[0], f)
    inter = ((warped == 5) & (labels[1] == 5)).sum()
    union = ((warped == 5) | (labels[1] == 5)).sum()
    assert inter / union > 0.9 and warped.dtype == labels[0].dtype
    assert ((labels[0] == 5) & (labels[1] == 5)).sum() / union < inter / union  # better than no warp


def test_ssim_is_one_for_equal_maps_and_lower_otherwise():
    a = np.zeros((2, 8, 8), np.int32)
    a[:, 2:6, 2:6] = 3
    b = a.copy()
    b[1, :, :4] = 9
    s = ssim(a, b)
    assert s[0] == pytest.approx(1.0) and s[1] < 0.9


def test_choose_prefers_the_temporally_consistent_model():
    frames, labels = _shifted_pair()
    good = labels
    bad = [labels[0], np.roll(labels[1], 9, axis=0)]  # the second frame's mask jumps away from the motion
    pick, sa, sb = choose(frames, bad, good)
    assert pick == 1 and sb > sa
    assert choose(frames, good, good)[0] == 0  # ties keep model a
    assert consistency(frames[:1], labels[:1]).size == 0


def test_mvc_config_round_trips_in_recipes():
    from gvseg.config import apply_overrides

    cfg = apply_overrides(Config(), ["loss.mvc.weight=0.5", "loss.mvc.patch=16", "loss.mvc.ratio=0.3"])
    assert dataclasses.astuple(cfg.loss.mvc) == (0.5, 16, 0.3)
