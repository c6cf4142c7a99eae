"""Backbone: any timm model through ``features_only`` -> features at strides 4, 8, 16, 32.

Contract
  input   ``x [N, 3, H, W]`` float, normalised, H and W multiples of 32 (``GvSeg`` pads to that).
  output  ``{4: [N, C_0, H/4, W/4], 8: [N, C_1, H/8, W/8], 16: [N, C_2, H/16, W/16], 32: [N, C_3, H/32, W/32]}``
          always NCHW (timm transformers such as Swin return NHWC; we permute).

Options (``BackboneConfig``):
  norm         "frozen_bn" converts every BatchNorm to timm/torchvision ``FrozenBatchNorm2d`` (fixed buffers, no
               parameters: the optimizer never sees them and ``train()`` does not update them); "bn" trains BN.
  timm_kwargs  extra ``timm.create_model`` arguments. Models that take ``dynamic_img_size`` (Swin, ViT-like) get
               it set, so they run at any input size (multiples of 32), not only the 224 they were defined at.

Weights are never fetched from a hub (``pretrained=False`` always). ``BackboneConfig.checkpoint`` may name a
local state dict (a ``.pt``/``.pth`` of tensors, optionally under ``"state_dict"``/``"model"``, keys with or
without a ``backbone.`` / ``body.`` prefix). Loading reports every missing and unexpected key instead of
failing silently; see :func:`load_backbone_checkpoint`. Mask2Former's detectron2 ``.pkl`` goes through
:mod:`gvseg.model.convert_d2` first.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import timm
import torch
from timm.layers import freeze_batch_norm_2d
from torch import nn

from gvseg.config import BackboneConfig

log = logging.getLogger(__name__)

STRIDES = (4, 8, 16, 32)


@dataclass
class LoadReport:
    """What a checkpoint load did: keys that stayed at their init, and keys the file had but we don't.

    :meth:`groups` / :meth:`describe` name every dropped or re-initialised parameter group (a module path, e.g.
    ``decoder.class_embed``) with the reason, so a load never loses weights silently.
    """

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file (or wrong shape)
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    shape_mismatch: list[str] = field(default_factory=list)  # "key: file (a, b) vs model (c, d)"
    partial: list[str] = field(default_factory=list)  # loaded, but only some rows came from the file
    notes: dict[str, str] = field(default_factory=dict)  # key -> why it was dropped / re-initialised / partial
    source: dict[str, str] = field(default_factory=dict)  # our key -> the file's name for it (renamed loads)

    def summary(self) -> str:
        return (f"{self.path}: loaded {len(self.loaded)}, missing {len(self.missing)}, "
                f"unexpected {len(self.unexpected)}, shape mismatch {len(self.shape_mismatch)}, "
                f"partial {len(self.partial)}")

    def groups(self) -> list[tuple[str, str, list[str], str]]:
        """(status, group, leaf names, reason) for every group not loaded whole; status is "dropped" (the
        file's, no home here), "re-initialised" (ours, left at init) or "partial". Sorted by status, group."""
        mismatch = {m.split(":", 1)[0]: m.split(": ", 1)[1] for m in self.shape_mismatch}
        rows: dict[tuple[str, str, str], list[str]] = {}

        def add(status: str, key: str, default: str) -> None:
            group, _, leaf = key.rpartition(".")
            reason = self.notes.get(key, default)
            if key in self.source and key not in self.notes:
                reason = f"{reason} (file: {self.source[key].rpartition('.')[0] or self.source[key]})"
            rows.setdefault((status, group or key, reason), []).append(leaf if group else key)

        for k in self.unexpected:
            add("dropped", k, "no parameter of the model has this name")
        for k in self.missing:
            add("re-initialised", k, f"shape {mismatch[k]}" if k in mismatch else "not in the file")
        for k in self.partial:
            add("partial", k, "some rows from the file")
        return [(st, g, sorted(leaves), why) for (st, g, why), leaves in sorted(rows.items())]

    def describe(self) -> str:
        """The summary line, then one line per dropped / re-initialised / partial group."""
        lines = [self.summary()]
        lines += [f"  {st:<14} {g} [{', '.join(leaves)}]: {why}" for st, g, leaves, why in self.groups()]
        return "\n".join(lines)


# BackboneConfig.norm -> what is done to the timm model's BatchNorm layers.
NORMS = {
    "frozen_bn": freeze_batch_norm_2d,  # BatchNorm2d / SyncBatchNorm -> FrozenBatchNorm2d (buffers only)
    "bn": lambda body: body,
}
# Given to every model whose constructor takes it: Swin (timm >= 1.0) otherwise asserts its 224 input size, and
# GvSeg feeds whatever size the clip has (padded to a multiple of 32).
SIZE_FREE = {"dynamic_img_size": True}


def create_body(cfg: BackboneConfig) -> nn.Module:
    """The timm ``features_only`` model of ``cfg`` (random init), size-free where the model allows it."""
    user = dict(cfg.timm_kwargs)
    fixed = {"pretrained": False, "features_only": True, "out_indices": tuple(cfg.out_indices)}
    clash = sorted(set(user) & (set(fixed) | {"pretrained_cfg_overlay", "checkpoint_path"}))
    if clash:  # weights come from backbone.checkpoint only: nothing may reach for a hub or another file
        raise ValueError(f"backbone {cfg.name!r}: timm_kwargs may not set {clash}; use backbone.out_indices / "
                         f"backbone.checkpoint")
    kwargs = {**fixed, **SIZE_FREE, **user}
    try:
        try:
            return timm.create_model(cfg.name, **kwargs)
        except TypeError as e:  # e.g. "ResNet.__init__() got an unexpected keyword argument 'dynamic_img_size'"
            dropped = [k for k in SIZE_FREE if k in str(e) and k not in user]
            if not dropped:
                raise
            return timm.create_model(cfg.name, **{k: v for k, v in kwargs.items() if k not in dropped})
    except Exception as e:  # timm raises a bare RuntimeError/KeyError/TypeError for unknown names and kwargs
        raise ValueError(f"backbone {cfg.name!r} with out_indices={tuple(cfg.out_indices)}, timm_kwargs={user}: "
                         f"cannot build a timm features_only model ({e})") from e


class Backbone(nn.Module):
    """timm ``features_only`` wrapper; ``channels[s]`` is the channel count at stride ``s``."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        if cfg.norm not in NORMS:
            raise ValueError(f"backbone.norm={cfg.norm!r}: expected one of {sorted(NORMS)}")
        self.body = NORMS[cfg.norm](create_body(cfg))
        if cfg.norm == "frozen_bn" and not cfg.checkpoint:
            log.warning("backbone %s: norm='frozen_bn' without backbone.checkpoint; BatchNorm stays at its random "
                        "init unless model.pretrained fills it (use backbone.norm='bn' to train from scratch)", cfg.name)
        strides = tuple(self.body.feature_info.reduction())
        if strides != STRIDES:
            raise ValueError(f"backbone {cfg.name!r}: out_indices={tuple(cfg.out_indices)} give strides {strides}, "
                             f"need {STRIDES}; pick out_indices that hit strides 4, 8, 16, 32")
        self.channels: dict[int, int] = dict(zip(STRIDES, self.body.feature_info.channels()))
        # Swin & co. emit NHWC from features_only; everything downstream is NCHW.
        self.nhwc = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")
        self.load_report: LoadReport | None = None
        if cfg.checkpoint:
            self.load_report = load_backbone_checkpoint(self, cfg.checkpoint)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        feats = self.body(x)  # list of 4 maps
        if self.nhwc:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return {s: f.contiguous() for s, f in zip(STRIDES, feats)}


def _read_state_dict(path: str) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: backbone checkpoint not found")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: not a torch state dict readable with weights_only=True ({e}); "
                         f"detectron2 .pkl files go through gvseg.model.convert_d2 first") from e
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: expected a mapping of parameter name -> tensor")
    return obj


def load_backbone_checkpoint(backbone: Backbone, path: str) -> LoadReport:
    """Load a local state dict into ``backbone.body`` non-strictly and report every key that did not fit.

    Keys may carry a ``backbone.body.``, ``backbone.`` or ``body.`` prefix. Tensors whose shape differs are
    skipped and listed in ``shape_mismatch`` (and in ``missing``). ``num_batches_tracked`` buffers are
    never reported: no checkpoint format agrees on them and they do not affect the forward.
    """
    src = _read_state_dict(path)
    stripped: dict[str, torch.Tensor] = {}
    for k, v in src.items():
        for prefix in ("backbone.body.", "backbone.", "body."):
            if k.startswith(prefix):
                k = k[len(prefix):]
                break
        stripped[k] = v
    return load_into(backbone.body, stripped, path)


def load_into(model: nn.Module, state: dict[str, torch.Tensor], path: str,
              unmatched: list[str] | None = None, report: LoadReport | None = None) -> LoadReport:
    """Copy every name/shape match into ``model`` (non-strict) and report the rest, loudly. ``report`` may
    come pre-filled (notes, partial keys, source names) by a converter."""
    own = model.state_dict()
    report = report if report is not None else LoadReport(path=path)
    report.unexpected.extend(unmatched or [])
    ok: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k not in own:
            if not k.endswith("num_batches_tracked"):
                report.unexpected.append(k)
        elif tuple(v.shape) != tuple(own[k].shape):
            report.shape_mismatch.append(f"{k}: file {tuple(v.shape)} vs model {tuple(own[k].shape)}")
        else:
            ok[k] = v.to(own[k].dtype)
    model.load_state_dict(ok, strict=False)
    report.loaded = sorted(ok)
    report.missing = sorted(k for k in own if k not in ok and not k.endswith("num_batches_tracked"))
    if report.missing or report.unexpected or report.partial:
        log.warning(report.describe())  # every group by name, not only counts
    else:
        log.info(report.summary())
    return report


def build_backbone(cfg: BackboneConfig) -> Backbone:
    return Backbone(cfg)
