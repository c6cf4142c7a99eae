"""Backbone: any timm model through ``features_only`` -> features at strides 4, 8, 16, 32.

Contract
  input   ``x [N, 3, H, W]`` float, normalised, H and W multiples of 32 (``GvSeg`` pads to that).
  output  ``{4: [N, C_0, H/4, W/4], 8: [N, C_1, H/8, W/8], 16: [N, C_2, H/16, W/16], 32: [N, C_3, H/32, W/32]}``
          always NCHW (timm transformers such as Swin return NHWC; we permute).

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
from torch import nn

from gvseg.config import BackboneConfig

log = logging.getLogger(__name__)

STRIDES = (4, 8, 16, 32)


@dataclass
class LoadReport:
    """What a checkpoint load did: keys that stayed at their init, and keys the file had but we don't."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the model, not in the file (or wrong shape)
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the model
    shape_mismatch: list[str] = field(default_factory=list)  # "key: file (a, b) vs model (c, d)"

    def summary(self) -> str:
        return (f"{self.path}: loaded {len(self.loaded)}, missing {len(self.missing)}, "
                f"unexpected {len(self.unexpected)}, shape mismatch {len(self.shape_mismatch)}")


class Backbone(nn.Module):
    """timm ``features_only`` wrapper; ``channels[s]`` is the channel count at stride ``s``."""

    def __init__(self, cfg: BackboneConfig):
        super().__init__()
        try:
            self.body = timm.create_model(cfg.name, pretrained=False, features_only=True,
                                          out_indices=tuple(cfg.out_indices))
        except Exception as e:  # timm raises a bare RuntimeError/KeyError for unknown names
            raise ValueError(f"backbone {cfg.name!r} with out_indices={tuple(cfg.out_indices)}: cannot build "
                             f"a timm features_only model ({e})") from e
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
              unmatched: list[str] | None = None) -> LoadReport:
    """Copy every name/shape match into ``model`` (non-strict) and report the rest, loudly."""
    own = model.state_dict()
    report = LoadReport(path=path, unexpected=list(unmatched or []))
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
    log.info(report.summary())
    for name, keys in (("missing", report.missing), ("unexpected", report.unexpected),
                       ("shape mismatch", report.shape_mismatch)):
        if keys:
            log.warning("%s: %d %s keys, e.g. %s", path, len(keys), name, keys[:5])
    return report


def build_backbone(cfg: BackboneConfig) -> Backbone:
    return Backbone(cfg)
