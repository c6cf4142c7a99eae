"""Evaluate a model on a dataset split with the benchmark's own metric, through its official files.

``evaluate_split(model, cfg, out_dir) -> (metrics, overlays)`` streams every val video through
``video.stream.stream_video`` (the loop ``gvseg predict`` uses too), writes predictions with the format's
official writer (``gvseg.writers.write_video``), then scores them with the format's scorer (``SCORERS``, over
``gvseg.metrics``); which writer, scorer and headline number belong to a format is ``formats.FORMATS``. It
scores them against the dataset's GT files on disk. Going through the files (not in-memory shortcuts) means
a training run reports exactly the number the benchmark's script would.

  task/format        files written (gvseg.writers)                        metrics
  vps/vipseg         pan_pred/<video>/<stem>.png + pred.json             VPQ (spans 1,2,4,6,8) + STQ
  vps/kitti-step     <seq>/<stem>.png (R trainId, G*256+B instance)      STQ (VPQ is not defined for it here)
  vss/vspw           <video>/<stem>.png class ids (255 unset)            mIoU, mVC8, mVC16
  vis/ytvis, ovis    results.json                                        AP, AP50, ..., AR100, ... (ytvoseval)
  evs/davis          <seq>/<stem>.png palette                            J&F (DAVIS 2017 semi-supervised)
  evs/ytvos          Annotations/<vid>/<stem>.png palette                J&F (YouTube-VOS, local)
  evs/burst          burst_results.json                                  HOTA (exemplar-guided)

``cfg.data.max_videos`` evaluates the first N videos; the GT is restricted to them (JSON-based metrics get a
filtered GT dict; folder-based ones a ``sequences`` list). A VIS run with no result at all (an untrained
model) scores 0 instead of failing in ``ytvis.evaluate`` (which rejects an empty results list). Returns flat
scalar metrics and up to ``max_overlays`` side-by-side overlays of the first video (for MLflow).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from gvseg import checkpoint, counters
from gvseg.config import Config, ConfigError
from gvseg.structures import VideoRecord


def headline_metric(cfg: Config) -> str:
    """The number the format's benchmark tables lead with (``formats.FORMATS``); it ranks checkpoints."""
    from gvseg.data.formats import format_of

    return format_of(cfg.data.format).headline


def _gt_ids(record: VideoRecord, t: int) -> np.ndarray | None:
    from gvseg.data.formats import load_annotation

    ann = load_annotation(record, t)
    if ann is None:
        return None
    ids = np.zeros((record.height, record.width), np.int64)
    for k in range(len(ann.ids)):
        ids[ann.masks[k]] = ann.ids[k]
    return ids


def evaluate_split(model: torch.nn.Module, cfg: Config, out_dir: str | Path, *, device: torch.device | str = "cpu",
                   max_overlays: int = 6, progress: bool = True) -> tuple[dict[str, float], list[np.ndarray]]:
    """The model's predictions on the val split, scored (see the module docstring)."""
    from gvseg.data.formats import load_exemplars, load_frame
    from gvseg.data.transforms import test_params
    from gvseg.video.stream import stream_video
    from gvseg.visualize import side_by_side
    from gvseg.writers import display_ids

    task = cfg.model.task
    overlays: list[np.ndarray] = []

    def predict(v: int, record: VideoRecord) -> Iterator:
        size = test_params(record.height, record.width, cfg.data.test_size, cfg.data.max_size).size
        exemplars = load_exemplars(record) if task == "evs" else None
        if task == "evs" and not exemplars:
            warnings.warn(f"{record.video_id}: no exemplars; its objects score as missed", stacklevel=2)
            yield from _empty_frames(record, task)  # every GT frame still gets a prediction
            return
        frames = (load_frame(record, t) for t in range(len(record)))
        pairs = stream_video(model, frames, cfg.model, task, exemplars, size=size,
                             out_size=(record.height, record.width), video_id=record.video_id, device=device)
        for t, (pred, frame) in enumerate(pairs):
            if v == 0 and len(overlays) < max_overlays:  # the decoded frame itself: no second decode
                overlays.append(side_by_side(frame, display_ids(pred), _gt_ids(record, t)))
            yield pred

    metrics = evaluate_predictions(cfg, out_dir, predict, progress=progress)
    return metrics, overlays


def evaluate_predictions(cfg: Config, out_dir: str | Path, predict: Callable[[int, VideoRecord], Iterable],
                         *, progress: bool = True) -> dict[str, float]:
    """Score any predictor on the val split: ``predict(v, record)`` yields the video's ``FramePrediction``s in
    frame order (a model through ``predict_video``, or a ground-truth baseline from ``gvseg.baselines``); they
    go through the format's official writer and metric. The mechanism counters of the predicting are returned
    too, as ``mech_inference/<name>`` (apart from the training counters)."""
    from gvseg.data.formats import format_of
    from gvseg.data.pipeline import build_records, check_label_space, label_space_for
    from gvseg.writers import official_writer, video_info, write_video

    task, fmt = cfg.model.task, cfg.data.format
    spec = format_of(fmt)
    if task != spec.task:
        raise ConfigError(f"evaluation of task {task!r} on format {fmt!r} is not supported: {fmt} is a "
                          f"{spec.task} benchmark (data.format or model.task is wrong)")
    out_dir = Path(out_dir)
    records = build_records(cfg.data, cfg.data.val_split)
    space = label_space_for(records)
    check_label_space(space, cfg.model.num_classes, cfg.model.num_thing_classes, f"{cfg.data.root} [{cfg.data.val_split}]")
    writer = official_writer(fmt, out_dir, space, split=cfg.data.val_split)
    with counters.scope() as fired:  # which mechanisms ran at inference (SPA injection, association, ...)
        try:
            for v, record in enumerate(records):
                write_video([writer], video_info(record), ((pred, None) for pred in predict(v, record)))
        finally:
            writer.close()
    result = SCORERS[spec.scorer](cfg, out_dir, records, progress)
    metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    metrics.update({f"mech_inference/{k}": v for k, v in fired.items()})
    return metrics


def evaluate_baseline(cfg: Config, name: str, out_dir: str | Path, *, progress: bool = False) -> dict[str, float]:
    """A ground-truth baseline of ``gvseg.baselines`` ("redrawn_ids", "copy_first") on the val split, scored
    like a model (clips of ``model.association.clip_frames`` frames)."""
    from gvseg.baselines import BASELINES, TASK_BASELINES
    from gvseg.data.pipeline import build_records, label_space_for

    if name not in TASK_BASELINES[cfg.model.task]:
        raise ConfigError(f"baseline {name!r} does not apply to task {cfg.model.task!r}; "
                          f"known: {list(TASK_BASELINES[cfg.model.task])}")
    space = label_space_for(build_records(cfg.data, cfg.data.val_split))
    fn, t = BASELINES[name], cfg.model.association.clip_frames
    return evaluate_predictions(cfg, out_dir, lambda v, rec: fn(rec, space, cfg.model.task, t), progress=progress)


class EvalLog(Protocol):
    """Where :func:`evaluate_checkpoint` sends its overlays and metrics (``runtime.mlflow_log.RunLogger``,
    injected so this module never imports MLflow)."""

    def log_image(self, image: Any, key: str, step: int) -> None: ...

    def log_dict(self, data: dict[str, Any], name: str) -> None: ...


def evaluate_checkpoint(cfg: Config, path: str | Path, *, logger: EvalLog | None = None) -> dict[str, float]:
    """Predict the val split with the checkpoint, write official-format predictions (under the run's
    ``eval/``), score them; with a ``logger``, the overlays and metrics go to the run too."""
    device = torch.device("cuda" if cfg.runtime.use_gpu and torch.cuda.is_available() else "cpu")
    model = checkpoint.load_model(path, cfg.model, device)
    metrics, overlays = evaluate_split(model, cfg, checkpoint.run_dir(cfg) / "eval", device=device)
    if logger is not None:
        for i, image in enumerate(overlays):
            logger.log_image(image, key="val_overlay", step=i)
        logger.log_dict(metrics, "eval/metrics.json")
    return metrics


def _empty_frames(record: VideoRecord, task: str) -> Iterator:
    from gvseg.structures import FramePrediction

    for t in range(len(record)):
        yield FramePrediction(record.video_id, t, record.height, record.width, task,
                              id_map=np.zeros((record.height, record.width), np.int32))


# ------------------------------------------------------------------------------------ scorers
# One per ``formats.Format.scorer``: the official metric on the files the format's writer wrote, restricted to
# the videos that were predicted (``data.max_videos``). ``(cfg, out_dir, records, progress) -> metrics``.


def _score_vipseg(cfg: Config, out_dir: Path, records: list[VideoRecord], progress: bool) -> dict:
    from gvseg.metrics import vipseg

    root, split = Path(cfg.data.root), cfg.data.val_split
    gt_root, gt_json = root, root / f"panoptic_gt_VIPSeg_{split}.json"
    if records[0].meta.get("form") == "raw":  # raw release: convert its GT as the official tooling does
        from gvseg.data.formats.vipseg import convert_raw

        gt_root = out_dir / "_gt_raw"
        gt_json = convert_raw(records, gt_root, split)
    elif len(records) < _count_vipseg(gt_json):  # max_videos: score the evaluated videos only
        gt_json = _filtered_vipseg_gt(gt_json, {r.video_id for r in records}, out_dir)
    return vipseg.evaluate(gt_root, out_dir, gt_json=str(gt_json), gt_png_dir=str(gt_root / "panomasksRGB"),
                        with_stq=True, progress=progress, workers=0)


def _score_kitti_step(cfg: Config, out_dir: Path, records: list[VideoRecord], progress: bool) -> dict:
    from gvseg.metrics import stq

    root, split = Path(cfg.data.root), cfg.data.val_split
    names = [r.video_id for r in records]
    return stq.evaluate(_subset_dir(root / "panoptic_maps" / split, names, out_dir / "_gt"), out_dir,
                        dataset="kitti-step", split=split, progress=progress, workers=0)


def _score_vspw(cfg: Config, out_dir: Path, records: list[VideoRecord], progress: bool) -> dict:
    from gvseg.metrics import semantic

    return semantic.evaluate(Path(cfg.data.root), out_dir, split=cfg.data.val_split,
                             videos=[r.video_id for r in records], progress=progress, workers=0)


def _score_ytvis(cfg: Config, out_dir: Path, records: list[VideoRecord], progress: bool) -> dict:
    from gvseg.metrics import ytvis

    results = json.loads((out_dir / "results.json").read_text())
    if not results:  # an untrained model may keep nothing; ytvis.evaluate rejects an empty list
        warnings.warn("VIS evaluation: the model predicted no instance; AP/AR are 0", stacklevel=3)
        return {k: 0.0 for k in ytvis.STAT_NAMES}
    gt = json.loads(Path(records[0].meta["json"]).read_text())
    keep = {r.meta["json_video_id"] for r in records}
    gt["videos"] = [v for v in gt["videos"] if v["id"] in keep]
    gt["annotations"] = [a for a in gt.get("annotations") or [] if a["video_id"] in keep]
    return ytvis.evaluate(gt, results, progress=progress)


def _score_davis(cfg: Config, out_dir: Path, records: list[VideoRecord], progress: bool) -> dict:
    from gvseg.metrics import jf

    return jf.evaluate_davis(Path(cfg.data.root), out_dir, split=cfg.data.val_split,
                             sequences=[r.video_id for r in records], progress=progress)


def _score_ytvos(cfg: Config, out_dir: Path, records: list[VideoRecord], progress: bool) -> dict:
    from gvseg.metrics import jf

    return jf.evaluate_youtube_vos(Path(cfg.data.root) / cfg.data.val_split, out_dir / "Annotations",
                                   sequences=[r.video_id for r in records], progress=progress)


def _score_burst(cfg: Config, out_dir: Path, records: list[VideoRecord], progress: bool) -> dict:
    from gvseg.metrics import hota

    gt = json.loads(Path(records[0].meta["json"]).read_text())
    keep = {(r.meta["dataset"], r.meta["seq_name"]) for r in records}
    gt["sequences"] = [s for s in gt["sequences"] if (s["dataset"], s["seq_name"]) in keep]
    cats = Path(cfg.data.root) / "info" / "categories.json"
    with warnings.catch_warnings():  # synthetic sets carry their categories in the GT JSON
        warnings.simplefilter("ignore", UserWarning)
        return hota.evaluate(gt, out_dir / "burst_results.json", progress=progress,
                             categories=str(cats) if cats.is_file() else None)


SCORERS: dict[str, Callable[[Config, Path, list[VideoRecord], bool], dict]] = {
    "vipseg": _score_vipseg,
    "kitti-step": _score_kitti_step,
    "vspw": _score_vspw,
    "ytvis": _score_ytvis,
    "davis": _score_davis,
    "ytvos": _score_ytvos,
    "burst": _score_burst,
}


def _count_vipseg(gt_json: Path) -> int:
    return len(json.loads(gt_json.read_text())["videos"])


def _filtered_vipseg_gt(gt_json: Path, keep: set[str], out_dir: Path) -> Path:
    data = json.loads(gt_json.read_text())
    data["videos"] = [v for v in data["videos"] if v["video_id"] in keep]
    data["annotations"] = [a for a in data["annotations"] if a["video_id"] in keep]
    path = out_dir / "_gt" / gt_json.name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _subset_dir(seq_root: Path, names: list[str], scratch: Path) -> Path:
    """``seq_root`` itself, or (when only some sequences were predicted) a folder of links to those."""
    all_seqs = sorted(p.name for p in seq_root.iterdir() if p.is_dir())
    if sorted(names) == all_seqs:
        return seq_root
    scratch.mkdir(parents=True, exist_ok=True)
    for n in names:
        link = scratch / n
        if not link.exists():
            link.symlink_to((seq_root / n).resolve(), target_is_directory=True)
    return scratch
