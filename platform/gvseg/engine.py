"""The training engine: build the parts, one train step, and the loop. Pure PyTorch, no Ray, no MLflow.

``runtime.ray_train`` (one Ray Train worker per rank) and ``--local`` (one process) both call
:func:`fit`; they differ only in the ``batches`` they feed it and in the ``on_metrics`` /
``on_checkpoint`` hooks. DDP-safe: every rank takes the same decisions (a non-finite loss on any rank
skips the step on all ranks, so the gradient all-reduce never deadlocks).
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gvseg import counters
from gvseg.config import Config, TrainConfig
from gvseg.structures import Clip


class NonFiniteLossError(RuntimeError):
    """Raised after ``train.max_nonfinite`` consecutive non-finite losses."""


@dataclass
class Parts:
    model: nn.Module
    criterion: nn.Module  # SetCriterion: CE + BCE + dice, deep supervision
    contrastive: nn.Module | None  # TemporalContrastive (Eq. 10) with its FIFO queues
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def loss_state(self) -> nn.Module:
        """One module holding every loss buffer (the TCL queues), for checkpoints."""
        holder = nn.Module()
        if self.contrastive is not None:
            holder.contrastive = self.contrastive
        return holder


@dataclass
class StepResult:
    loss: float
    losses: dict[str, float]
    finite: bool
    lr: float


@dataclass
class LoopState:
    step: int = 0
    epoch: int = 0
    nonfinite_streak: int = 0
    nonfinite_total: int = 0
    history: list[float] = field(default_factory=list)  # total loss per logged step


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_parts(cfg: Config, device: torch.device | str = "cpu") -> Parts:
    """The model, losses and optimiser of a run. One matcher serves the model (SPA injection, final matching)
    and the criterion, so every matching is computed once and gated the same way."""
    from gvseg.losses.contrastive import TemporalContrastive
    from gvseg.losses.criterion import SetCriterion
    from gvseg.losses.matcher import HungarianMatcher
    from gvseg.model.gvseg import build_gvseg

    matcher = HungarianMatcher(cfg.loss)
    model = build_gvseg(cfg.model, matcher).to(device)
    criterion = SetCriterion(cfg.loss, cfg.model.num_classes, matcher).to(device)
    if cfg.loss.deep_supervision:
        criterion.add_aux_weights(cfg.model.decoder.num_layers)
    contrastive = None
    if cfg.loss.contrastive.enabled:
        contrastive = TemporalContrastive(cfg.loss.contrastive, cfg.model.num_classes, cfg.model.decoder.dim).to(device)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg.train)
    return Parts(model, criterion, contrastive, optimizer, scheduler)


def build_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW; the backbone trains at ``lr × backbone.lr_multiplier`` (0.1, as every peer does)."""
    backbone, rest = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (backbone if name.startswith("backbone.") else rest).append(p)
    groups = [{"params": rest, "lr": cfg.train.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.train.lr * cfg.model.backbone.lr_multiplier})
    return torch.optim.AdamW(groups, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up, then ×gamma at each of ``lr_steps`` (§3.2: ×0.1 at 7k of 10k / 11k of 15k)."""

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / cfg.warmup_iters) if cfg.warmup_iters > 0 else 1.0
        return warm * cfg.lr_gamma ** sum(step >= s for s in cfg.lr_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def unwrap(model: nn.Module) -> nn.Module:
    """The GvSeg inside a DDP wrapper (or the model itself)."""
    return getattr(model, "module", model)


def compute_losses(parts: Parts, clip: Clip, cfg: Config) -> dict[str, torch.Tensor]:
    """Forward the key clip (and the reference clip for TCL); unweighted loss dict."""
    outputs = parts.model(clip)  # pred_logits [B,Q,C+1], pred_masks [B,Q,T,h,w], pred_embeds [B,Q,D], ...
    indices = _final_indices(parts, outputs, clip)
    # Eq. (9): the class bank follows the key clip's matched queries, once per step (never the reference clip)
    if unwrap(parts.model).query_init.update_bank(outputs["queries"], indices, clip.targets):
        counters.add("bank/updates")
    losses = parts.criterion(outputs, clip.targets, indices)
    if parts.contrastive is not None and clip.reference is not None:
        # Eq. (10): the reference clip comes from anywhere in the same video; its matched embeddings are the
        # positives/negatives, chosen by ΔH of the ground-truth descriptors.
        ref = clip.reference
        ref_outputs = parts.model(ref)
        ref_indices = _final_indices(parts, ref_outputs, ref)
        if cfg.loss.reference_segmentation:  # the same set losses on the reference clip, averaged with the key's
            ref_losses = parts.criterion(ref_outputs, ref.targets, ref_indices)
            losses = {k: (v + ref_losses[k]) / 2 for k, v in losses.items()}
        losses.update(parts.contrastive(_samples(outputs, indices, clip), _samples(ref_outputs, ref_indices, ref)))
    if cfg.loss.mvc.weight > 0:  # paper 003 Eq. (4): + λ·L^M on a patch-masked copy; skipped (no-op) at λ = 0
        from gvseg.losses.mvc import mvc_loss

        losses["loss_mvc"] = mvc_loss(parts.model, parts.criterion, clip, cfg.loss.mvc)
        parts.criterion.weight_dict["loss_mvc"] = cfg.loss.mvc.weight  # λ
    return losses


def _final_indices(parts: Parts, outputs: dict, clip: Clip) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The last layer's matching: the model's (it matched in its training forward) or, without one, computed."""
    indices = outputs.get("indices")
    if indices is None:
        indices = parts.criterion.matcher(outputs["pred_logits"], outputs["pred_masks"], clip.targets,
                                          outputs.get("query_meta"))
    return indices


def _samples(outputs: dict, indices: list, clip: Clip):
    """TCL samples of one forward: matched embeddings + the GT descriptors the model computed for injection."""
    from gvseg.losses.contrastive import gather_samples

    t = clip.frames.shape[1]
    return gather_samples(outputs["pred_embeds"], indices, clip.targets, outputs["gt_descriptors"],
                          frame=clip.frame_index[:, t // 2])


def _all_ranks_finite(finite: bool, device: torch.device) -> bool:
    if not (dist.is_available() and dist.is_initialized()):
        return finite
    flag = torch.tensor([1.0 if finite else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def train_step(parts: Parts, clip: Clip, cfg: Config, *, inject_nan: bool = False) -> StepResult:
    """forward → loss dict → weighted sum → finite check → backward → clip → step."""
    parts.model.train()
    device = clip.frames.device
    use_amp = cfg.train.amp == "bf16" and device.type == "cuda"
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
        losses = compute_losses(parts, clip, cfg)
    total = parts.criterion.total(losses)
    if inject_nan:  # fault injection for tests (train.fault.nan_at_steps)
        total = total * float("nan")
    finite = _all_ranks_finite(bool(torch.isfinite(total).item()), device)
    lr = parts.optimizer.param_groups[0]["lr"]
    parts.optimizer.zero_grad(set_to_none=True)
    if not finite:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": intended here
            warnings.simplefilter("ignore", UserWarning)
            parts.scheduler.step()  # the iteration is spent either way; the schedule stays on the step count
        return StepResult(float("nan"), {}, False, lr)
    total.backward()
    if cfg.train.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(parts.model.parameters(), cfg.train.grad_clip)
    parts.optimizer.step()
    parts.scheduler.step()
    return StepResult(float(total.detach()), {k: float(v.detach()) for k, v in losses.items()}, True, lr)


def fit(
    cfg: Config,
    parts: Parts,
    batches: Callable[[int], Iterator[Clip]],
    *,
    device: torch.device,
    state: LoopState | None = None,
    on_metrics: Callable[[dict[str, float], int], None] = lambda m, s: None,
    on_checkpoint: Callable[[LoopState], None] = lambda s: None,
    on_eval: Callable[[LoopState], None] = lambda s: None,
    progress: bool = True,
) -> LoopState:
    """Train until ``train.max_iters``. ``batches(epoch)`` yields this rank's clips for that epoch."""
    from tqdm import tqdm

    state = state or LoopState()
    t = cfg.train
    bar = tqdm(total=t.max_iters, initial=state.step, desc="train", unit="step", disable=not progress)
    while state.step < t.max_iters:
        seen = 0
        for clip in batches(state.epoch):
            seen += 1
            result = train_step(parts, clip.to(device), cfg, inject_nan=state.step + 1 in t.fault.nan_at_steps)
            state.step += 1
            bar.update(1)
            if result.finite:
                state.nonfinite_streak = 0
            else:
                state.nonfinite_streak += 1
                state.nonfinite_total += 1
                if state.nonfinite_streak >= t.max_nonfinite:
                    raise NonFiniteLossError(
                        f"{state.nonfinite_streak} consecutive non-finite losses at step {state.step} "
                        f"(train.max_nonfinite={t.max_nonfinite}); lower train.lr or check the data")
            if state.step % t.log_every == 0 or state.step == t.max_iters or not result.finite:
                metrics = {"loss": result.loss if result.finite else math.nan, "lr": result.lr,
                           "nonfinite_skipped": float(state.nonfinite_total),
                           **{f"loss/{k}": v for k, v in result.losses.items()},
                           # how often each mechanism fired since the last log (gvseg.counters)
                           **{f"mech/{k}": v for k, v in counters.take().items()}}
                if result.finite:
                    state.history.append(result.loss)
                    bar.set_postfix(loss=f"{result.loss:.3f}")
                on_metrics({k: v for k, v in metrics.items() if math.isfinite(v)}, state.step)
            if t.eval_every and state.step % t.eval_every == 0 and state.step < t.max_iters:
                on_eval(state)  # the final evaluation is the driver's, on the last checkpoint
            if state.step % t.checkpoint_every == 0 or state.step == t.max_iters:
                on_checkpoint(state)
            if state.step >= t.max_iters:
                break
        if seen == 0:
            raise ValueError(f"{cfg.data.root}: no training clips for this rank (check data.root and the split)")
        state.epoch += 1
    bar.close()
    return state
