"""Mask2Former detectron2 ``.pkl`` -> GvSeg parameter names (the paper starts from COCO-pretrained Mask2Former).

A detectron2 model-zoo ``.pkl`` is a pickle of ``{"model": {name: numpy array}, "__author__": ..., ...}``.
It is read with a restricted :class:`pickle.Unpickler` that can only rebuild numpy arrays and dtypes (plus
plain containers), so a hostile file cannot run code.

Renames (Mask2Former -> ours):
  backbone.stem.conv1.{weight,norm.*}                -> backbone.body.conv1.weight / bn1.*        (timm ResNet)
  backbone.res{k}.{i}.conv{j}.{weight,norm.*}        -> backbone.body.layer{k-1}.{i}.conv{j}.weight / bn{j}.*
  backbone.res{k}.{i}.shortcut.{weight,norm.*}       -> backbone.body.layer{k-1}.{i}.downsample.{0,1}.*
  backbone.<other>                                   -> backbone.body.<other> (non-ResNet: reported if unmatched)
  sem_seg_head.pixel_decoder.transformer.level_embed -> pixel_decoder.level_embed
  sem_seg_head.pixel_decoder.transformer.encoder.*   -> pixel_decoder.encoder.*
  sem_seg_head.pixel_decoder.{adapter_1,layer_1}.weight / .norm.* -> pixel_decoder.{adapter_1,layer_1}.0.weight / .1.*
  sem_seg_head.pixel_decoder.{input_proj,mask_features}.*          -> pixel_decoder.* (same)
  sem_seg_head.predictor.{query_feat,query_embed}.weight            -> query_init.*  (learned-query baseline)
  sem_seg_head.predictor.*                                          -> decoder.* (same sub-names)
Every key is accounted for in a :class:`~gvseg.model.backbone.LoadReport`: ``missing`` (ours, not filled),
``unexpected`` (theirs, no home), ``shape_mismatch`` (e.g. ``class_embed`` for a different class count),
which are skipped, never forced.

CLI: ``python -m gvseg.model.convert_d2 model_final.pkl out.pt`` writes a renamed torch state dict.
"""

from __future__ import annotations

import io
import logging
import pickle
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gvseg.model.backbone import LoadReport, load_into

log = logging.getLogger(__name__)

_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("collections", "OrderedDict"),
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def load_d2_pkl(path: str | Path) -> dict[str, np.ndarray]:
    """Read a detectron2 ``.pkl`` safely -> {name: array}. Raises ValueError naming the file on bad input."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{path}: detectron2 checkpoint not found")
    try:
        obj = _NumpyOnlyUnpickler(io.BytesIO(p.read_bytes()), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as e:
        raise ValueError(f"{path}: not a detectron2 .pkl of numpy arrays ({e})") from e
    model = obj.get("model", obj) if isinstance(obj, dict) else None
    if not isinstance(model, dict):
        raise ValueError(f"{path}: expected a dict with a 'model' mapping of name -> array")
    bad = [k for k, v in model.items() if not isinstance(v, np.ndarray | np.generic)]
    if bad:
        raise ValueError(f"{path}: non-array entries under 'model': {bad[:5]}")
    return model


_RULES: list[tuple[re.Pattern, Any]] = [
    (re.compile(r"^backbone\.stem\.conv1\.weight$"), "backbone.body.conv1.weight"),
    (re.compile(r"^backbone\.stem\.conv1\.norm\.(\w+)$"), r"backbone.body.bn1.\1"),
    (re.compile(r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.weight$"),
     lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.conv{m[3]}.weight"),
    (re.compile(r"^backbone\.res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)$"),
     lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.bn{m[3]}.{m[4]}"),
    (re.compile(r"^backbone\.res(\d)\.(\d+)\.shortcut\.weight$"),
     lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.downsample.0.weight"),
    (re.compile(r"^backbone\.res(\d)\.(\d+)\.shortcut\.norm\.(\w+)$"),
     lambda m: f"backbone.body.layer{int(m[1]) - 1}.{m[2]}.downsample.1.{m[3]}"),
    (re.compile(r"^backbone\.(.+)$"), r"backbone.body.\1"),
    (re.compile(r"^sem_seg_head\.pixel_decoder\.transformer\.level_embed$"), "pixel_decoder.level_embed"),
    (re.compile(r"^sem_seg_head\.pixel_decoder\.transformer\.encoder\.(.+)$"), r"pixel_decoder.encoder.\1"),
    (re.compile(r"^sem_seg_head\.pixel_decoder\.(adapter_1|layer_1)\.weight$"), r"pixel_decoder.\1.0.weight"),
    (re.compile(r"^sem_seg_head\.pixel_decoder\.(adapter_1|layer_1)\.norm\.(\w+)$"), r"pixel_decoder.\1.1.\2"),
    (re.compile(r"^sem_seg_head\.pixel_decoder\.((?:input_proj|mask_features)\..+)$"), r"pixel_decoder.\1"),
    (re.compile(r"^sem_seg_head\.predictor\.(query_feat|query_embed)\.weight$"), r"query_init.\1.weight"),
    (re.compile(r"^sem_seg_head\.predictor\.(.+)$"), r"decoder.\1"),
]


def rename_d2(src: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename Mask2Former keys to ours -> (renamed tensors, source keys no rule covers)."""
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, arr in src.items():
        for pat, repl in _RULES:
            m = pat.match(key)
            if m:
                new = repl(m) if callable(repl) else m.expand(repl)
                out[new] = torch.from_numpy(np.ascontiguousarray(arr))
                break
        else:
            unmatched.append(key)  # e.g. criterion.empty_weight
    return out, unmatched


def load_d2_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Load a Mask2Former detectron2 ``.pkl`` into a :class:`~gvseg.model.gvseg.GvSeg`, with a full report."""
    state, unmatched = rename_d2(load_d2_pkl(path))
    return load_into(model, state, str(path), unmatched)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m gvseg.model.convert_d2 MODEL.pkl OUT.pt", file=sys.stderr)
        return 2
    state, unmatched = rename_d2(load_d2_pkl(args[0]))
    torch.save(state, args[1])
    print(f"{args[0]}: wrote {len(state)} tensors to {args[1]}; {len(unmatched)} keys without a rule: {unmatched[:10]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
