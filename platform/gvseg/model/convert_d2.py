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
  sem_seg_head.predictor.{query_feat,query_embed}.weight            -> the task's initial query embedding:
        queries.task_oriented=False    query_init.{query_feat,query_embed}.weight (learned queries, same names)
        VSS / VPS class bank           query_init.{bank_feat,bank_pos}.weight (bank_feat until the bank is warm)
        VIS grid / EVS exemplar only   dropped: those queries come from backbone features through an FFN
                                       (Eq. 7-8), so there is no learned per-query embedding to initialise
        A row count that differs copies the first min(N_file, N_ours) rows; the report says which rows.
  sem_seg_head.predictor.*                                          -> decoder.* (same sub-names)
Every key is accounted for in a :class:`~gvseg.model.backbone.LoadReport`: ``missing`` (ours, not filled),
``unexpected`` (theirs, no home), ``shape_mismatch`` (e.g. ``class_embed`` for a different class count),
which are skipped, never forced, and ``partial`` (query tables); ``LoadReport.describe()`` (logged as a
warning) names every dropped or re-initialised group with its reason.

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


def rename_key(key: str) -> str | None:
    """Our name for one Mask2Former key, or None when no rule covers it."""
    for pat, repl in _RULES:
        m = pat.match(key)
        if m:
            return repl(m) if callable(repl) else m.expand(repl)
    return None


def rename_d2(src: dict[str, np.ndarray]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename Mask2Former keys to ours -> (renamed tensors, source keys no rule covers)."""
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, arr in src.items():
        new = rename_key(key)
        if new is None:
            unmatched.append(key)  # e.g. criterion.empty_weight
        else:
            out[new] = torch.from_numpy(np.ascontiguousarray(arr))
    return out, unmatched


# Mask2Former's learned queries -> the initial query embedding the task's query init keeps (gvseg.model.queries),
# tried in this order; query_feat is the content, query_embed the positional query.
QUERY_HOMES = {
    "learned": {"query_feat": "query_init.query_feat.weight", "query_embed": "query_init.query_embed.weight"},
    "bank": {"query_feat": "query_init.bank_feat.weight", "query_embed": "query_init.bank_pos.weight"},
}
_NO_HOME = ("grid (VIS / VPS things, Eq. 8) and exemplar (EVS, Eq. 7) queries are made from backbone features by "
            "an FFN; there is no learned per-query embedding to initialise")


def place_queries(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor], report: LoadReport,
                  task: str = "") -> None:
    """Move the renamed ``query_init.{query_feat,query_embed}.weight`` of ``state`` (in place) to the model's
    initial query embedding (``QUERY_HOMES``), copying the first min(N_file, N_ours) rows; with no home, drop them
    with a note. Records sources, partial rows and reasons in ``report``."""
    home = next((h for h, keys in QUERY_HOMES.items() if keys["query_feat"] in own), None)
    for name in ("query_feat", "query_embed"):
        renamed, theirs = f"query_init.{name}.weight", f"sem_seg_head.predictor.{name}.weight"
        if renamed not in state:
            continue
        src = state.pop(renamed)
        if home is None:
            report.unexpected.append(theirs)
            report.notes[theirs] = f"task {task or '?'!r}: {_NO_HOME}"
            continue
        dst = QUERY_HOMES[home][name]
        report.source[dst] = theirs
        tgt = own[dst]
        n_file, n_ours = src.shape[0], tgt.shape[0]
        if src.shape[1:] != tgt.shape[1:] or n_file == n_ours:
            state[dst] = src  # same table, or a width mismatch that load_into reports and skips
            continue
        n = min(n_file, n_ours)
        rows = tgt.clone()
        rows[:n] = src[:n].to(tgt.dtype)
        state[dst] = rows
        report.partial.append(dst)
        rest = (f"rows {n}..{n_ours - 1} keep their init" if n_ours > n_file
                else f"the file's rows {n}..{n_file - 1} are dropped")
        report.notes[dst] = f"rows 0..{n - 1} from {theirs} ({n_file} Mask2Former queries); {rest}"


def load_d2_checkpoint(model: nn.Module, path: str | Path) -> LoadReport:
    """Load a Mask2Former detectron2 ``.pkl`` into a :class:`~gvseg.model.gvseg.GvSeg`, with a full report."""
    src = load_d2_pkl(path)
    state, unmatched = rename_d2(src)
    report = LoadReport(path=str(path), source={new: k for k in src if (new := rename_key(k)) is not None})
    cfg = getattr(model, "cfg", None)
    place_queries(state, model.state_dict(), report, task=getattr(cfg, "task", ""))
    return load_into(model, state, str(path), unmatched, report)


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
