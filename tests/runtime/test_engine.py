"""The engine's loop without Ray: non-finite losses, the LR schedule, the backbone LR multiplier."""

import pytest
import torch

from gvseg.config import apply_overrides
from gvseg.data.pipeline import build_records, iterate_batches
from gvseg.engine import NonFiniteLossError, build_parts, build_scheduler, fit, seed_everything


def _fit(cfg):
    seed_everything(0)
    parts = build_parts(cfg)
    records = build_records(cfg.data, "train")
    batches = lambda epoch: iterate_batches(records, cfg.data, batch_size=2, seed=0, epoch=epoch)  # noqa: E731
    return fit(cfg, parts, batches, device=torch.device("cpu"), progress=False)


def test_nan_loss_is_skipped_and_counted(tiny_cfg):
    state = _fit(apply_overrides(tiny_cfg, ["train.fault.nan_at_steps=(2,)"]))
    assert state.step == 4 and state.nonfinite_total == 1 and state.nonfinite_streak == 0


def test_consecutive_nan_losses_stop_the_run(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, ["train.fault.nan_at_steps=(1, 2, 3)", "train.max_nonfinite=2"])
    with pytest.raises(NonFiniteLossError, match="2 consecutive non-finite losses at step 2"):
        _fit(cfg)


def test_nan_step_leaves_parameters_unchanged(tiny_cfg):
    cfg = apply_overrides(tiny_cfg, ["train.fault.nan_at_steps=(1,)", "train.max_iters=1"])
    seed_everything(0)
    before = {k: v.detach().clone() for k, v in build_parts(cfg).model.named_parameters()}
    seed_everything(0)
    parts = build_parts(cfg)
    records = build_records(cfg.data, "train")
    fit(cfg, parts, lambda e: iterate_batches(records, cfg.data, batch_size=2, seed=0, epoch=e),
        device=torch.device("cpu"), progress=False)
    after = dict(parts.model.named_parameters())
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_step_schedule_and_warmup():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    from gvseg.config import TrainConfig

    sched = build_scheduler(opt, TrainConfig(lr_steps=(3, 5), lr_gamma=0.1, warmup_iters=2))
    lrs = []
    for _ in range(6):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("multiplier", [0.1, 1.0])  # a pretrained backbone (peers) / the debug recipes' random one
def test_backbone_trains_at_its_lr_multiplier(tiny_cfg, multiplier):
    cfg = apply_overrides(tiny_cfg, [f"model.backbone.lr_multiplier={multiplier}"])
    parts = build_parts(cfg)
    groups = {len(g["params"]): g["lr"] for g in parts.optimizer.param_groups}
    backbone = sum(1 for n, _ in parts.model.named_parameters() if n.startswith("backbone."))
    assert len(groups) == 2 and groups[backbone] == pytest.approx(cfg.train.lr * multiplier)


def test_train_step_updates_the_bank_once(tiny_cfg):
    """Eq. (9): the bank follows the key clip only; the TCL reference forward must not update it again."""
    from gvseg.engine import train_step, unwrap

    seed_everything(0)
    parts = build_parts(tiny_cfg)
    records = build_records(tiny_cfg.data, "train")
    clip = next(iter(iterate_batches(records, tiny_cfg.data, batch_size=2, seed=0, epoch=0)))
    assert clip.reference is not None
    train_step(parts, clip, tiny_cfg)
    assert int(unwrap(parts.model).query_init.bank_steps) == 1


def test_logged_metrics_carry_the_mechanism_counters(tiny_cfg):
    logged = {}
    seed_everything(0)
    parts = build_parts(tiny_cfg)
    records = build_records(tiny_cfg.data, "train")
    fit(tiny_cfg, parts, lambda e: iterate_batches(records, tiny_cfg.data, batch_size=2, seed=0, epoch=e),
        device=torch.device("cpu"), progress=False, on_metrics=lambda m, s: logged.update({s: m}))
    m = logged[max(logged)]
    assert m["mech/match/thing_gt_on_thing_q"] > 0 and m["mech/match/thing_gt_on_stuff_q"] == 0
    assert m["mech/match/stuff_gt_on_thing_q"] == 0 and m["mech/spa/inject_gt_slots"] >= 0
    assert m["mech/bank/updates"] == 1 and "mech/tcl/thing_anchors" in m and "mech/tcl/queue_fill" in m


def test_fit_keeps_freed_memory_unless_switched_off(tiny_cfg, monkeypatch):
    from gvseg import host_memory

    calls = []
    monkeypatch.setattr(host_memory, "keep_freed_memory", lambda: calls.append(1) or True)
    for flag in ("true", "false"):
        _fit(apply_overrides(tiny_cfg, [f"train.keep_freed_memory={flag}", "train.max_iters=1"]))
    assert calls == [1]
