"""The debug model can learn: it overfits two synthetic clips (loss falls by >= 80%)."""

import torch
from model_helpers import make_clip

from gvseg.config import LossConfig
from gvseg.losses.matcher import HungarianMatcher
from gvseg.model.gvseg import build_gvseg, debug_model_config

torch.set_num_threads(1)  # 2 shared CPU cores: avoid oversubscription

STEPS = 70  # ~6 s on one core; the loss is ~10% of its start by step 60


def test_debug_model_overfits_two_clips():
    from gvseg.losses.criterion import SetCriterion

    torch.manual_seed(0)
    cfg = debug_model_config("vps")
    loss_cfg = LossConfig(num_points=256)
    model = build_gvseg(cfg, HungarianMatcher(loss_cfg)).train()
    criterion = SetCriterion(loss_cfg, cfg.num_classes)
    criterion.add_aux_weights(cfg.decoder.num_layers)
    clip = make_clip("vps", b=2, t=2, h=64, w=64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    history = []
    for _ in range(STEPS):
        out = model(clip)
        losses = criterion(out, clip.targets, out["indices"])
        total = sum(criterion.weight_dict[k] * v for k, v in losses.items() if k in criterion.weight_dict)
        assert torch.isfinite(total)
        opt.zero_grad()
        total.backward()
        opt.step()
        history.append(float(total.detach()))
    first, last = sum(history[:5]) / 5, sum(history[-5:]) / 5
    assert last <= 0.2 * first, (first, last)
