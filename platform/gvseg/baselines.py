"""Ground-truth baselines: the scores that frame a model's number.

Each baseline turns a val video's ground truth into the per-frame predictions a model would make
(:class:`gvseg.structures.FramePrediction`), so they go through the format's official writer and metric
exactly as a model's do (``gvseg.evaluation.evaluate_predictions``):

  * ``redrawn_ids``  perfect per-frame masks and classes, but every thing's track id is drawn anew for each
                     clip of ``clip_frames`` frames (stuff keeps one id per class): what perfect segmentation
                     without association across clips scores. A model below it on VPQ^k for k > T (or on
                     AP) is losing identities that a perfect segmenter would also lose.
  * ``copy_first``   each object's first annotated mask (its exemplar for EVS) repeated in every later frame:
                     what no motion model scores.

VSS has no identities, so ``redrawn_ids`` equals the ground truth there (mIoU 100); ``copy_first`` is the
motion-free number. EVS ids are its exemplars', so only ``copy_first`` applies (``TASK_BASELINES``). Frames
without annotation get an empty prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from gvseg.data.transforms import LabelSpace
from gvseg.structures import FrameAnnotation, FramePrediction, Segment, VideoRecord


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


def frame_prediction(record: VideoRecord, t: int, ann: FrameAnnotation | None, space: LabelSpace, task: str,
                     ids: np.ndarray | None = None) -> FramePrediction:
    """One frame's ground truth as a prediction of ``task``; ``ids`` replaces the track ids ([K])."""
    h, w = record.height, record.width
    pred = FramePrediction(record.video_id, t, h, w, task)
    if ann is None or len(ann.ids) == 0:
        if task in ("vps", "evs"):
            pred.id_map = np.zeros((h, w), np.int32)
        if task in ("vps", "vss"):
            pred.semantic = np.full((h, w), -1, np.int32)
        return pred
    keep = ~ann.iscrowd if ann.iscrowd is not None else np.ones(len(ann.ids), bool)
    masks = ann.masks[keep]  # [K, H, W]
    labels = space.to_contiguous(ann.category_ids[keep], record.video_id)  # [K]
    tids = (ann.ids if ids is None else ids)[keep].astype(np.int64)  # [K]
    isthing = space.isthing(labels)
    areas = masks.reshape(len(masks), -1).sum(1)
    if task == "vis":
        pred.segments = [Segment(int(i), int(c), 1.0, True, int(a), _rle(m))
                         for i, c, a, m in zip(tids, labels, areas, masks) if a > 0]
        return pred
    order = np.argsort(areas)[::-1]  # small segments on top where GT masks overlap (YTVIS-style inputs)
    id_map = np.zeros((h, w), np.int32)
    semantic = np.full((h, w), -1, np.int32)
    for k in order:
        id_map[masks[k]] = tids[k]
        semantic[masks[k]] = labels[k]
    pred.id_map = id_map
    if task in ("vps", "vss"):
        pred.semantic = semantic
    pred.segments = [Segment(int(i), int(c), 1.0, bool(th), int(a)) for i, c, th, a in zip(tids, labels, isthing, areas)]
    return pred


def redrawn_ids(record: VideoRecord, space: LabelSpace, task: str, clip_frames: int) -> Iterator[FramePrediction]:
    """Perfect masks, thing ids re-drawn every ``clip_frames`` frames (see the module docstring)."""
    from gvseg.data.formats import load_annotation

    fresh: dict[tuple[int, int], int] = {}  # (clip or -1 for stuff, GT id) -> new id 1, 2, ...
    for t in range(len(record)):
        ann = load_annotation(record, t)
        ids = None
        if ann is not None and len(ann.ids):
            thing = space.isthing(space.to_contiguous(ann.category_ids, record.video_id))
            keys = [(t // clip_frames if th else -1, int(i)) for th, i in zip(thing, ann.ids)]
            ids = np.array([fresh.setdefault(k, len(fresh) + 1) for k in keys], np.int64)
        yield frame_prediction(record, t, ann, space, task, ids)


def copy_first(record: VideoRecord, space: LabelSpace, task: str, clip_frames: int = 0) -> Iterator[FramePrediction]:
    """Each object's first annotated mask, repeated from its first frame on (see the module docstring)."""
    from gvseg.data.formats import load_annotation

    first: dict[int, tuple[np.ndarray, int]] = {}  # id -> (mask [H, W], category id)
    for t in range(len(record)):
        ann = load_annotation(record, t)
        if ann is not None:
            crowd = ann.iscrowd if ann.iscrowd is not None else np.zeros(len(ann.ids), bool)
            for i, c, m, cr in zip(ann.ids.tolist(), ann.category_ids.tolist(), ann.masks, crowd):
                if not cr and m.any() and i not in first:
                    first[i] = (m, c)
        if not first:
            yield frame_prediction(record, t, None, space, task)
            continue
        ids = np.array(list(first), np.int64)
        held = FrameAnnotation(ids=ids, category_ids=np.array([c for _, c in first.values()], np.int64),
                               masks=np.stack([m for m, _ in first.values()]))
        yield frame_prediction(record, t, held, space, task)


BASELINES: dict[str, Callable[..., Iterator[FramePrediction]]] = {
    "redrawn_ids": redrawn_ids,
    "copy_first": copy_first,
}
# EVS's ids are its exemplars' (a prediction of another id is not a thing the benchmark can score)
TASK_BASELINES = {"vps": ("redrawn_ids", "copy_first"), "vis": ("redrawn_ids", "copy_first"),
                  "vss": ("redrawn_ids", "copy_first"), "evs": ("copy_first",)}
