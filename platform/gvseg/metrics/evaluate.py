"""Metric dispatcher behind ``gvseg eval --metric NAME --gt DIR --pred DIR --out results.json``.

``METRICS`` maps a metric name to the module implementing it; modules are imported only when used, and each
exposes ``evaluate(gt, pred, *, progress=True, **options) -> dict[str, float | dict]``. ``run_metric`` calls
it, writes the result as JSON (numpy scalars/arrays converted, NaN written as ``NaN``) when ``out`` is given,
and returns the dict. ``format_table`` renders the scalar entries (and one level of nested scalars) as a
two-column text table; big or deep nested tables (per span / class / video) are summarised by their size.
``describe`` says which official definition produced each headline number (``DEFINITIONS``; a metric may
return its own option-dependent texts under ``results["definitions"]``, as BURST HOTA does for box/mask IoU);
``gvseg eval`` prints it under the table and ``run_metric`` writes it into the JSON.
"""

from __future__ import annotations

import importlib
import json
import math
import os
from pathlib import Path
from typing import Any

METRICS = {
    "vpq": "gvseg.metrics.vipseg",  # VIPSeg split runner (VPQ, optionally STQ, one pass)
    "stq": "gvseg.metrics.evaluate:evaluate_stq",  # VIPSeg (joint scan in vipseg) or KITTI-STEP, by GT layout
    "miou": "gvseg.metrics.semantic",
    "ytvis": "gvseg.metrics.ytvis",
    "jf": "gvseg.metrics.jf",
    "hota": "gvseg.metrics.hota",
}

# Which definition produced each headline number (result key -> text), printed by ``gvseg eval``.
DEFINITIONS = {
    "vpq_mean_1246": "VPQ mean over k=1,2,4,6 (VIPSeg paper, GvSeg tables)",
    "vpq_mean_12468": "VPQ mean over k=1,2,4,6,8 (eval_vpq_vspw.py's final number)",
    "stq": "STQ = sqrt(AQ*SQ), AQ over all GT tubes of the split (eval_stq_vspw.py / deeplab2 numpy STQuality)",
    "miou": "mIoU over classes present in GT, one confusion matrix over the split (VSPW_baseline utils.py)",
    "mvc8": "mVC_8 = nanmean over all windows pooled across videos (VSPW VC_perclip.py)",
    "class_acc": "class accuracy = nanmean of per-class GT recall (VSPW utils.py Pixel_Accuracy_Class)",
    "fwiou": "fwIoU = GT-frequency-weighted IoU (VSPW utils.py Frequency_Weighted_Intersection_over_Union)",
    "video_miou": "video mIoU = per-video mIoU summed / number of videos (VSPW_baseline test.py)",
    "AP": "AP at IoU .50:.05:.95 on video mask IoU, 101 recall points (youtubevos cocoapi ytvoseval.py)",
    "J&F-Mean": "J&F-Mean = (mean J + mean F) / 2, first and last frames excluded (davis2017-evaluation)",
    "HOTA_all": "HOTA/DetA/AssA on mask bounding boxes, as the official BURST code (burstapi/eval)",
    "AP_all": "BURST AP = TrackMAP AP_all on mask track IoU, as BURST run.py prints it",
}


def get_metric(name: str):
    """The ``evaluate`` function of metric ``name`` (lazy import)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; choose one of {sorted(METRICS)}")
    module, _, fn = METRICS[name].partition(":")
    return getattr(importlib.import_module(module), fn or "evaluate")


def evaluate_stq(gt: str | os.PathLike, pred: str | os.PathLike, *, dataset: str | None = None, **options) -> dict:
    """STQ for either layout: VIPSeg through ``vipseg.evaluate_stq`` (one pass with VPQ's scan), KITTI-STEP through
    ``stq.evaluate``. ``dataset``: 'vipseg' | 'kitti-step' | None (from the GT layout)."""
    from gvseg.metrics import panoptic_io as pio

    fmt = (dataset or pio.detect_format(gt)).lower().replace("_", "-")
    if fmt == "vipseg":
        from gvseg.metrics.vipseg import evaluate_stq as vipseg_stq

        options.pop("split", None)
        return vipseg_stq(gt, pred, **options)
    if fmt == "kitti-step":
        from gvseg.metrics.stq import evaluate as kitti_stq

        return kitti_stq(gt, pred, dataset=fmt, **options)
    raise ValueError(f"STQ: unknown dataset {dataset!r} (use 'vipseg' or 'kitti-step')")


def _plain(x: Any) -> Any:
    """numpy scalars/arrays, tuples and Paths -> JSON-serialisable Python values."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist"):  # numpy scalar or array
        return _plain(x.tolist())
    if isinstance(x, os.PathLike):
        return os.fspath(x)
    return x


def run_metric(
    name: str,
    gt: str | os.PathLike,
    pred: str | os.PathLike,
    out: str | os.PathLike | None = None,
    progress: bool = True,
    **options,
) -> dict:
    """Evaluate ``pred`` against ``gt`` with metric ``name``; write JSON to ``out`` if given."""
    results = get_metric(name)(gt, pred, progress=progress, **options)
    results = _plain(results)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as f:
            json.dump({"metric": name, "gt": os.fspath(gt), "pred": os.fspath(pred), "results": results,
                       "definitions": definitions(results)}, f, indent=2)
    return results


def definitions(results: dict) -> dict[str, str]:
    """{headline key: definition} for the keys present in ``results`` (the metric's own texts first)."""
    own = results.get("definitions") or {}
    return {k: own.get(k, DEFINITIONS.get(k)) for k in results if k in own or k in DEFINITIONS}


def describe(results: dict) -> str:
    """The definitions of the headline numbers in ``results``, one line each ("" when none is known)."""
    defs = definitions(results)
    return "\n".join(["Definitions:", *(f"  {k}: {v}" for k, v in defs.items())]) if defs else ""


def _fmt(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def format_table(results: dict, max_nested: int = 12) -> str:
    """Two-column table of the scalar results; a nested dict of scalars with <= ``max_nested`` entries is
    shown as ``parent.key`` rows, a larger or deeper one as one ``parent | (N entries)`` row."""
    rows: list[tuple[str, str]] = []

    def walk(prefix: str, d: dict, depth: int) -> None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                flat = all(not isinstance(x, (dict, list, tuple)) for x in v.values())
                if depth < 2 and len(v) <= max_nested and flat:
                    walk(key + ".", v, depth + 1)
                else:
                    rows.append((key, f"({len(v)} entries)"))
            elif isinstance(v, (list, tuple)):
                rows.append((key, f"({len(v)} values)"))
            else:
                rows.append((key, _fmt(v)))

    walk("", {k: v for k, v in results.items() if k != "definitions"}, 0)
    if not rows:
        return "(no results)"
    w = max(len(k) for k, _ in rows)
    line = "-" * (w + 3 + max(len(v) for _, v in rows))
    return "\n".join([line, *(f"{k.ljust(w)} | {v}" for k, v in rows), line])
