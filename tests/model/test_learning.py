"""The debug model can learn: ``engine.train_step`` overfits two synthetic clips (loss falls by >= 80%)."""

import dataclasses

import torch
from model_helpers import make_clip

from gvseg.config import Config, ContrastiveConfig, LossConfig, TrainConfig
from gvseg.engine import build_parts, seed_everything, train_step
from gvseg.recipes import unit_model_config

torch.set_num_threads(1)  # 2 shared CPU cores: avoid oversubscription

STEPS = 70  # ~6 s on one core; the loss is ~10% of its start by step 60


def test_debug_model_overfits_two_clips():
    # The real step (weighted total, finite check, clipping, AdamW, schedule), at a constant lr of 1e-3 with the
    # backbone at the same lr, no clipping and no TCL (make_clip has no reference clip): the set losses alone.
    model = unit_model_config("vps")
    model = dataclasses.replace(model, backbone=dataclasses.replace(model.backbone, lr_multiplier=1.0))
    cfg = Config(model=model, loss=LossConfig(num_points=256, contrastive=ContrastiveConfig(enabled=False)),
                 train=TrainConfig(lr=1e-3, weight_decay=0.01, grad_clip=0.0, lr_steps=(), amp="off"))
    seed_everything(0)
    parts = build_parts(cfg)
    clip = make_clip("vps", b=2, t=2, h=64, w=64)
    history = []
    for _ in range(STEPS):
        result = train_step(parts, clip, cfg)
        assert result.finite
        history.append(result.loss)
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last <= 0.2 * first, (first, last)
