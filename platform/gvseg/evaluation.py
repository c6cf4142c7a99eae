"""Evaluate a model on a dataset split with the benchmark's own metric, through its official files.

``evaluate_split`` streams every val video through ``inference.predict_video``, writes predictions in the
format the official evaluation scripts read, then scores them with ``gvseg.metrics`` against the dataset's
GT files on disk. Going through the files (not in-memory shortcuts) means a training run reports exactly
the number the benchmark's script would.

  VPS / VIPSeg  pan_pred/<video>/<stem>.png + pred.json   ->  VPQ (spans 1,2,4,6,8) + STQ
  VSS / VSPW    <video>/<stem>.png class ids (255 unset)    ->  mIoU, mVC8, mVC16

Other task/format pairs raise a ConfigError naming what is supported (their writers land with the
prediction issue). Returns (flat metrics, overlay images of the first video for MLflow).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

from gvseg.config import Config, ConfigError
from gvseg.structures import VideoRecord

SUPPORTED = {("vps", "vipseg"), ("vss", "vspw")}


def _frames(record: VideoRecord, size: tuple[int, int]) -> Iterator[np.ndarray]:
    from gvseg.data.formats import load_frame

    for t in range(len(record)):
        frame = load_frame(record, t)
        if frame.shape[:2] != size:
            frame = cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        yield frame


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
    from gvseg.data.pipeline import build_records, label_space_for
    from gvseg.data.transforms import test_params
    from gvseg.inference import predict_video
    from gvseg.metrics.panoptic_io import id2rgb
    from gvseg.visualize import side_by_side

    task, fmt = cfg.model.task, cfg.data.format
    if (task, fmt) not in SUPPORTED:
        raise ConfigError(f"evaluation of task {task!r} on format {fmt!r} is not supported yet; "
                          f"supported: {sorted(SUPPORTED)}")
    out_dir = Path(out_dir)
    records = build_records(cfg.data, cfg.data.val_split)
    space = label_space_for(records)
    overlays: list[np.ndarray] = []
    pan_json: list[dict] = []
    for v, record in enumerate(records):
        size = test_params(record.height, record.width, cfg.data.test_size, cfg.data.max_size).size
        stems = record.frame_names
        frame_ann = []
        preds = predict_video(model, _frames(record, size), cfg.model, task, video_id=record.video_id,
                              out_size=(record.height, record.width), device=device, progress=False)
        for t, pred in enumerate(preds):
            if task == "vps":
                ids = pred.id_map.astype(np.int64)
                _write_png(out_dir / "pan_pred" / record.video_id / f"{stems[t]}.png", id2rgb(ids))
                present = set(np.unique(ids).tolist())
                cats = space.to_dataset(np.array([s.label for s in pred.segments], np.int64))
                frame_ann.append({"image_id": stems[t], "file_name": f"{stems[t]}.png", "segments_info": [
                    {"id": int(s.id), "category_id": int(c), "iscrowd": 0, "area": int(s.area)}
                    for s, c in zip(pred.segments, cats) if s.id in present]})
                shown = ids
            else:  # vss: dataset class ids, 255 where nothing was predicted
                sem = pred.semantic
                labels = np.where(sem >= 0, space.to_dataset(np.clip(sem, 0, None).ravel()).reshape(sem.shape), 255)
                _write_png(out_dir / record.video_id / f"{stems[t]}.png", labels.astype(np.uint8))
                shown = np.where(sem >= 0, sem + 1, 0)
            if v == 0 and len(overlays) < max_overlays:
                from gvseg.data.formats import load_frame

                overlays.append(side_by_side(load_frame(record, t), shown, _gt_ids(record, t)))
        if task == "vps":
            pan_json.append({"video_id": record.video_id, "annotations": frame_ann})
    if task == "vps":
        from gvseg.metrics import vpq

        (out_dir / "pred.json").write_text(json.dumps({"annotations": pan_json}))
        gt_json = Path(cfg.data.root) / f"panoptic_gt_VIPSeg_{cfg.data.val_split}.json"
        result = vpq.evaluate(cfg.data.root, out_dir, gt_json=str(gt_json), with_stq=True, progress=progress,
                              workers=0)
    else:
        from gvseg.metrics import semantic

        result = semantic.evaluate(cfg.data.root, out_dir, split=cfg.data.val_split, progress=progress, workers=0)
    metrics = {k: float(v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return metrics, overlays


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if not cv2.imwrite(str(path), img):
        raise OSError(f"{path}: could not write PNG")
