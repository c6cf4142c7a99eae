"""The training engine: build the parts, one train step, and the loop. Pure PyTorch, no Ray, no MLflow.

``runtime.ray_train`` (one Ray Train worker per rank) and ``--local`` (:func:`train_local`, one process)
both call :func:`fit`; they differ only in the ``batches`` they feed it and in the ``on_metrics`` /
``on_checkpoint`` hooks. DDP-safe: every rank takes the same decisions (a non-finite loss on any rank
skips the step on all ranks, so the gradient all-reduce never deadlocks).

What both share around the loop lives here too: saving and restoring a run's state (:func:`save_state`,
:func:`restore_newest_valid`), the periodic evaluation (:class:`PeriodicEval`), what a checkpoint reports
(:func:`checkpoint_metrics`) and the crash injection of the fault tests (:func:`maybe_crash`). The run's
tracker is injected (:class:`RunLog`; MLflow's ``RunLogger`` in production), so nothing here imports MLflow.
"""

from __future__ import annotations

import math
import os
import random
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from gvseg import checkpoint, counters, host_memory
from gvseg.config import Config, ConfigError, LossConfig, TrainConfig, to_dict
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

    check_losses(cfg.loss)
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


def check_losses(cfg: LossConfig) -> None:
    """Refuse loss settings that contradict each other, naming the keys."""
    if not cfg.reference_backward and (cfg.reference_segmentation or cfg.contrastive.symmetric):
        on = [k for k, v in (("loss.reference_segmentation", cfg.reference_segmentation),
                             ("loss.contrastive.symmetric", cfg.contrastive.symmetric)) if v]
        raise ConfigError(f"loss.reference_backward=false forwards the reference clip without gradients, but "
                          f"{' and '.join(on)} need them: set {on[0]}=false")


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
        with torch.set_grad_enabled(torch.is_grad_enabled() and cfg.loss.reference_backward):
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
    if t.keep_freed_memory:  # reuse the step's activations instead of faulting them in again every step
        host_memory.keep_freed_memory()
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


# ------------------------------------------------------------------------------ around the loop (local and Ray)


class RunLog(Protocol):
    """What the loop needs of the run's tracker (``runtime.mlflow_log.RunLogger``, injected so the engine never
    imports MLflow): training metrics are held until the checkpoint covering their step is committed."""

    def hold(self, metrics: dict[str, float], step: int) -> None: ...

    def commit(self, step: int) -> None: ...

    def set_tag(self, key: str, value: str) -> None: ...


def save_state(parts: Parts, state: LoopState, cfg: Config, directory: str | Path) -> Path:
    """Everything a resumed run needs (weights, loss queues, optimizer, schedule, step, RNG, config) to
    ``directory/checkpoint.pt``, atomically."""
    return checkpoint.save(
        checkpoint.build_state(model=parts.model, criterion=parts.loss_state(), optimizer=parts.optimizer,
                               scheduler=parts.scheduler, step=state.step, epoch=state.epoch,
                               config=to_dict(cfg),
                               extra={"nonfinite_total": state.nonfinite_total}),
        directory,
    )


def restore_state(parts: Parts, directory: str | Path, device: torch.device,
                  saved: dict[str, Any] | None = None) -> LoopState:
    """Load the checkpoint in ``directory`` (or ``saved``, already read from it) into ``parts``; the loop
    state to continue from."""
    saved = saved if saved is not None else checkpoint.load(directory, map_location=device)
    step, epoch = checkpoint.restore(saved, model=parts.model, criterion=parts.loss_state(),
                                     optimizer=parts.optimizer, scheduler=parts.scheduler)
    return LoopState(step=step, epoch=epoch, nonfinite_total=int(saved["extra"].get("nonfinite_total", 0)))


def restore_newest_valid(parts: Parts, candidates: list[Path], device: torch.device,
                         logger: RunLog | None, *, verbose: bool = True) -> LoopState:
    """Resume from the newest of ``candidates`` (oldest first) that loads; a torn newer one is skipped with
    one line (when ``verbose``) and a ``checkpoint_fallback`` tag on the run. None loading is one clear error."""
    found = checkpoint.newest_valid(candidates, map_location=device, quiet=True)
    if found is None:
        raise ValueError(f"no readable checkpoint to resume from among {[str(c) for c in candidates]}")
    path, saved, skipped = found
    if skipped:
        note = f"resumed from {path.name}: newer checkpoint unreadable ({'; '.join(skipped)})"
        if verbose:
            print(f"gvseg: {note}")
        if logger is not None:
            logger.set_tag("checkpoint_fallback", note)
    elif verbose:
        print(f"gvseg: resuming from {path}")
    return restore_state(parts, path, device, saved)


class PeriodicEval:
    """Rank 0's evaluation every ``train.eval_every`` steps: metrics to the run (prefixed ``val/``), and the
    best checkpoint so far by the headline metric kept as ``<run>/best_checkpoint``."""

    def __init__(self, cfg: Config, parts: Parts, logger: RunLog | None, device: torch.device):
        from gvseg.evaluation import headline_metric

        self.cfg, self.parts, self.logger, self.device = cfg, parts, logger, device
        self.key = headline_metric(cfg)
        self.best = float("-inf")

    def __call__(self, state: LoopState) -> None:
        from gvseg.evaluation import evaluate_split

        model = unwrap(self.parts.model)
        was_training = model.training
        metrics, _ = evaluate_split(model.eval(), self.cfg,
                                    checkpoint.run_dir(self.cfg) / f"eval_step_{state.step}",
                                    device=self.device, progress=False)
        model.train(was_training)
        if self.logger is not None:  # held, like the losses, until the checkpoint covering this step commits
            self.logger.hold({f"val/{k}": v for k, v in metrics.items() if v == v}, state.step)
        score = metrics.get(self.key, float("nan"))
        if score != score and self.best == float("-inf"):
            print(f"gvseg: {self.key} is undefined on this val split (e.g. videos shorter than its spans); "
                  f"no best checkpoint is kept until it is defined")
        if score == score and score > self.best:
            self.best = score
            save_state(self.parts, state, self.cfg, checkpoint.run_dir(self.cfg) / "best_checkpoint")


def maybe_crash(cfg: Config, step: int, rank: int, world: int) -> None:
    """Fault injection: the last rank dies abruptly once at each of ``crash_at_steps`` (a marker file
    remembers which it did)."""
    fault = cfg.train.fault
    if step in fault.crash_at_steps and rank == world - 1:
        marker = Path(fault.crash_marker or Path(cfg.runtime.storage_path) / ".crashed")
        done = marker.read_text().splitlines() if marker.exists() else []
        if f"crashed at step {step}" not in done:
            with marker.open("a") as f:
                f.write(f"crashed at step {step}\n")
            os._exit(17)


def checkpoint_metrics(cfg: Config, st: LoopState, directory: str | Path | None, evaluate: bool) -> dict[str, float]:
    """What every checkpoint reports: step, epoch, last finite loss, and, when ``evaluate`` (Ray Tune's ASHA
    needs the sweep metric mid-run), the val metrics of the checkpoint in ``directory``. The final step is
    not evaluated here: the driver evaluates it anyway."""
    metrics = {"step": st.step, "epoch": st.epoch, "loss": st.history[-1] if st.history else float("nan")}
    if evaluate and directory is not None and st.step < cfg.train.max_iters:
        from gvseg.evaluation import evaluate_checkpoint

        metrics.update(evaluate_checkpoint(cfg, directory))
    return metrics


def train_local(cfg: Config, logger: RunLog, *, on_checkpoint: Callable[[dict[str, float]], None] | None = None,
                eval_at_checkpoints: bool = False, progress: bool = True) -> Path:
    """The same engine in one process, no Ray. Checkpoints under <storage>/<run>/checkpoints/step_*.
    ``on_checkpoint(metrics)`` gets :func:`checkpoint_metrics` after each save (a Tune trial reports them).
    Returns the newest valid checkpoint directory."""
    from gvseg.data.pipeline import build_records, check_label_space, iterate_batches, label_space_for

    device = torch.device("cuda" if cfg.runtime.use_gpu and torch.cuda.is_available() else "cpu")
    seed_everything(cfg.train.seed)
    parts = build_parts(cfg, device)
    ckpt_root = checkpoint.run_dir(cfg) / "checkpoints"
    state = LoopState()
    if checkpoint.step_dirs(ckpt_root):
        state = restore_newest_valid(parts, checkpoint.step_dirs(ckpt_root), device, logger)
    records = build_records(cfg.data, cfg.data.train_split, progress=progress)
    check_label_space(label_space_for(records), cfg.model.num_classes, cfg.model.num_thing_classes, cfg.data.root)

    def save(st: LoopState) -> None:
        path = save_state(parts, st, cfg, ckpt_root / f"step_{st.step:07d}")
        checkpoint.verify(path)  # before anything older is pruned
        checkpoint.prune(ckpt_root, cfg.train.num_to_keep)
        logger.commit(st.step)
        if on_checkpoint is not None:
            on_checkpoint(checkpoint_metrics(cfg, st, path, eval_at_checkpoints))

    fit(cfg, parts,
        lambda epoch: iterate_batches(records, cfg.data, batch_size=cfg.train.batch_size, seed=cfg.train.seed,
                                      epoch=epoch, train=True),
        device=device, state=state, on_metrics=logger.hold, on_checkpoint=save,
        on_eval=PeriodicEval(cfg, parts, logger, device), progress=progress)
    found = checkpoint.newest_valid(checkpoint.step_dirs(ckpt_root), quiet=True)
    assert found is not None
    return found[0]
