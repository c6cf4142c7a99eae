"""uint8 frames normalised where the model runs (Clip.float_frames): the same bits as normalising on the host."""

import torch

from gvseg.config import MVCConfig
from gvseg.losses.mvc import mask_clip
from gvseg.structures import PIXEL_MEAN, PIXEL_STD, Clip


def _uint8_clip(b=2, t=2, h=40, w=64, sizes=((40, 64), (24, 37))) -> Clip:
    g = torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (b, t, 3, h, w), generator=g, dtype=torch.uint8)
    return Clip(frames, torch.tensor(sizes), torch.arange(t).repeat(b, 1), [f"v{i}" for i in range(b)])


def _host_normalised(clip: Clip) -> torch.Tensor:
    """The CPU normalisation collate did before (x * (1/std) + (-mean/std), float32; 0 in the padding)."""
    scale = 1.0 / torch.tensor(PIXEL_STD).view(3, 1, 1)
    shift = -torch.tensor(PIXEL_MEAN).view(3, 1, 1) * scale
    out = torch.zeros(clip.frames.shape)
    for i, (h, w) in enumerate(clip.image_sizes.tolist()):
        out[i, :, :, :h, :w] = clip.frames[i, :, :, :h, :w].float() * scale + shift
    return out


def test_float_frames_equal_the_host_normalisation_with_zero_padding():
    clip = _uint8_clip()
    x = clip.float_frames()
    assert x.dtype == torch.float32 and torch.equal(x, _host_normalised(clip))
    pad = x[1, :, :, 24:, :]
    assert torch.all(pad == 0) and not torch.signbit(pad).any()  # +0.0, as zero padding after normalising


def test_float_frames_pass_through_unchanged():
    f = torch.randn(1, 2, 3, 8, 8)
    clip = Clip(f, torch.tensor([[8, 8]]), torch.arange(2)[None], ["v"])
    assert clip.float_frames() is f


def test_model_outputs_are_identical_for_uint8_and_host_normalised_frames():
    from gvseg.model.gvseg import build_gvseg
    from gvseg.recipes import unit_model_config

    torch.manual_seed(0)
    model = build_gvseg(unit_model_config("vps")).eval()
    clip = _uint8_clip(h=64, w=64, sizes=((64, 64), (48, 40)))
    host = Clip(_host_normalised(clip), clip.image_sizes, clip.frame_index, clip.video_ids)
    with torch.no_grad():
        a, b = model(clip), model(host)
    assert torch.equal(a["pred_logits"], b["pred_logits"]) and torch.equal(a["pred_masks"], b["pred_masks"])


def test_mvc_withholds_patches_as_the_mean_colour():
    clip = _uint8_clip()
    masked = mask_clip(clip, MVCConfig(weight=1.0, patch=8, ratio=0.5), torch.Generator().manual_seed(0))
    x, ref = masked.frames, clip.float_frames()
    kept = x != 0
    assert x.dtype == torch.float32 and 0 < kept.float().mean() < 1
    assert torch.equal(x[kept], ref[kept])  # kept pixels are the normalised frame; the rest 0 = mean colour
