"""Set criterion: finite, ~0 for a perfect prediction, deep-supervision keys and weights."""

import torch

from gvseg.config import LossConfig
from gvseg.losses.criterion import SetCriterion
from gvseg.structures import Targets

C = 4


def clip_targets(k, t=3, h=32, w=32, ignore=False):
    # Full-width stripes: with no corners, bilinear sampling of the logits and nearest lookup of the
    # ground truth agree on every point, so a perfect prediction really has ~0 loss.
    m = torch.zeros(k, t, h, w, dtype=torch.bool)
    for i in range(k):
        m[i, :, 6 * i + 2:6 * i + 7] = True
    return Targets(masks=m, labels=torch.arange(k) % C, ids=torch.arange(k) + 1,
                   isthing=torch.ones(k, dtype=torch.bool),
                   ignore=torch.zeros(t, h, w, dtype=torch.bool) if ignore else None)


def perfect_outputs(tgs, q=6, big=1e4):
    b, t = len(tgs), tgs[0].masks.shape[1]
    logits = torch.full((b, q, C + 1), -big)
    logits[..., C] = big
    masks = torch.full((b, q, t, 32, 32), -big)
    for i, tg in enumerate(tgs):
        k = tg.labels.numel()
        logits[i, :k, C] = -big
        logits[i, torch.arange(k), tg.labels] = big
        masks[i, :k] = torch.where(tg.masks, big, -big)
    return {"pred_logits": logits, "pred_masks": masks}


def cfg():
    return LossConfig(num_points=400)


def test_perfect_prediction_gives_near_zero_loss():
    tgs = [clip_targets(3), clip_targets(2, ignore=True)]
    losses = SetCriterion(cfg(), C)(perfect_outputs(tgs), tgs)
    for k in ("loss_ce", "loss_mask", "loss_dice"):
        assert torch.isfinite(losses[k])
        assert losses[k].item() < 1e-3, (k, losses[k].item())


def test_random_prediction_is_finite_positive_and_differentiable():
    tgs = [clip_targets(3), clip_targets(1)]
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, C + 1, generator=g).requires_grad_()
    masks = torch.randn(2, 5, 3, 8, 8, generator=g).requires_grad_()
    losses = SetCriterion(cfg(), C)({"pred_logits": logits, "pred_masks": masks}, tgs)
    total = sum(losses.values())
    assert torch.isfinite(total) and all(v.item() > 0 for v in losses.values())
    total.backward()
    assert torch.isfinite(masks.grad).all() and masks.grad.abs().sum() > 0


def test_deep_supervision_keys_and_weights():
    tgs = [clip_targets(2)]
    out = perfect_outputs(tgs)
    g = torch.Generator().manual_seed(1)
    out["aux_outputs"] = [{"pred_logits": torch.randn(1, 6, C + 1, generator=g),
                           "pred_masks": torch.randn(1, 6, 3, 8, 8, generator=g)} for _ in range(2)]
    crit = SetCriterion(cfg(), C)
    losses = crit(out, tgs)
    expected = {f"{k}{s}" for k in ("loss_ce", "loss_mask", "loss_dice") for s in ("", "_0", "_1")}
    assert set(losses) == expected
    assert all(k in crit.weight_dict for k in losses)
    assert crit.weight_dict["loss_ce_1"] == 2.0 and crit.weight_dict["loss_mask_0"] == 5.0
    assert losses["loss_mask_0"] > losses["loss_mask"]  # aux layers are random, the last is perfect
    no_ds = SetCriterion(LossConfig(num_points=400, deep_supervision=False), C)(out, tgs)
    assert set(no_ds) == {"loss_ce", "loss_mask", "loss_dice"}


def test_no_object_weight_and_empty_targets():
    empty = Targets(masks=torch.zeros(0, 3, 32, 32, dtype=torch.bool), labels=torch.zeros(0, dtype=torch.int64),
                    ids=torch.zeros(0, dtype=torch.int64), isthing=torch.zeros(0, dtype=torch.bool))
    masks = torch.randn(1, 4, 3, 8, 8, requires_grad=True)
    logits = torch.zeros(1, 4, C + 1, requires_grad=True)
    losses = SetCriterion(cfg(), C)({"pred_logits": logits, "pred_masks": masks}, [empty])
    assert losses["loss_mask"].item() == 0.0 and losses["loss_dice"].item() == 0.0
    assert abs(losses["loss_ce"].item() - torch.log(torch.tensor(C + 1.0)).item()) < 1e-5
    sum(losses.values()).backward()  # still attached to the graph
    assert masks.grad is not None


def test_given_indices_are_used():
    tgs = [clip_targets(2)]
    out = perfect_outputs(tgs)
    crit = SetCriterion(cfg(), C)
    swapped = [(torch.tensor([0, 1]), torch.tensor([1, 0]))]  # deliberately wrong assignment
    assert crit(out, tgs, swapped)["loss_dice"] > 0.5
    assert crit(out, tgs)["loss_dice"] < 1e-3


def test_errors_on_ignored_pixels_cost_nothing():
    tgs = [clip_targets(2, ignore=True)]
    tgs[0].ignore[:, :2] = True  # rows 0-1 are void (background there)
    out = perfect_outputs(tgs)
    out["pred_masks"][:, :2, :, 0] = 1e4  # matched queries wrongly claim row 0
    losses = SetCriterion(cfg(), C)(out, tgs)
    assert losses["loss_mask"].item() < 1e-3 and losses["loss_dice"].item() < 1e-3
    tgs[0].ignore[:] = False
    assert SetCriterion(cfg(), C)(out, tgs)["loss_mask"].item() > 1.0



def test_no_queries_gives_finite_zero_losses():
    """EVS: a batch whose key clips hold no hint has Q = 0; the loss is 0, not NaN."""
    crit = SetCriterion(LossConfig(num_points=16), C)
    out = {"pred_logits": torch.zeros(2, 0, C + 1, requires_grad=True), "pred_masks": torch.zeros(2, 0, 3, 8, 8)}
    tg = clip_targets(2, h=32, w=32)
    losses = crit(out, [tg, tg], [(torch.zeros(0, dtype=torch.long),) * 2] * 2)
    assert all(torch.isfinite(v) and float(v.detach()) == 0 for v in losses.values())
