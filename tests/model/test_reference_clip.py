"""The TCL reference clip in ``engine.compute_losses``: with ``loss.reference_backward=false`` it is forwarded
without autograd (Eq. 10 uses its embeddings only as fixed positives/negatives); contradicting settings are
refused by name."""

import dataclasses

import pytest
import torch
from model_helpers import make_clip

from gvseg.config import Config, ConfigError, ContrastiveConfig, LossConfig, TrainConfig
from gvseg.engine import build_parts, compute_losses, seed_everything
from gvseg.recipes import unit_model_config

torch.set_num_threads(1)


def _cfg(**loss) -> Config:
    return Config(model=unit_model_config("vps"), loss=LossConfig(num_points=64, **loss), train=TrainConfig(amp="off"))


def _clip_with_reference():
    clip = make_clip("vps", b=1, t=2, h=32, w=32)
    clip.reference = make_clip("vps", b=1, t=2, h=32, w=32, seed=1)
    return clip


def _grad_modes(cfg: Config) -> tuple[list[bool], dict]:
    """Whether autograd was on in each model forward, and the loss dict."""
    seed_everything(0)
    parts = build_parts(cfg)
    parts.model.train()
    modes = []
    parts.model.register_forward_pre_hook(lambda m, a: modes.append(torch.is_grad_enabled()))
    return modes, compute_losses(parts, _clip_with_reference(), cfg)


def test_reference_without_backward_is_forwarded_without_autograd():
    modes, losses = _grad_modes(_cfg(reference_segmentation=False, reference_backward=False))
    assert modes == [True, False]  # key clip with autograd, reference clip without
    assert losses["loss_tcl"].requires_grad  # the key anchors still carry the gradient


def test_reference_with_backward_keeps_autograd():
    modes, _ = _grad_modes(_cfg(reference_segmentation=False))
    assert modes == [True, True]


@pytest.mark.parametrize("loss", [dict(reference_backward=False),
                                  dict(reference_backward=False, reference_segmentation=False,
                                       contrastive=ContrastiveConfig(symmetric=True))])
def test_reference_without_backward_refuses_losses_that_need_it(loss):
    with pytest.raises(ConfigError, match="reference_backward=false"):
        build_parts(dataclasses.replace(_cfg(), loss=LossConfig(**loss)))
