"""Whole-video streaming inference for any video length (paper §3.2 "semi-online"; method.md "Inference").

``predict_video(model, frames_iter, cfg, task, exemplars) -> Iterator[FramePrediction]``
``stream_video(model, frames, cfg, task, exemplars, size=, out_size=) -> Iterator[(FramePrediction, frame)]``

``stream_video`` is the one loop ``gvseg predict`` and val evaluation share: original RGB frames in (any
size check and the resize to the model's input size happen here, lazily), each prediction out beside its
original frame (for overlays), holding at most a clip and a stride of originals. A ``DataError`` raised by
the frame source (a truncated video) ends the stream without losing frames: the clip in flight is finished,
every decoded frame is yielded, and then the error is raised again, saying how many frames came before it.

* Frames are pulled lazily from ``frames_iter`` into a ring of ``association.clip_frames`` (T) frames. A clip
  runs whenever T new-enough frames are there; consecutive clips share ``clip_overlap`` frames (stride
  T - overlap). The tail that does not fill a clip runs as the *last T frames* of the video (a shorter clip
  only when the video itself is shorter than T), so the model always sees the clip length it was trained on.
  Each frame is emitted exactly once, by the first clip that contains it, in order.
* Association across clips (things: SPA Eq. 6; stuff: class identity) is :class:`gvseg.video.associate.Tracker`;
  its state is a few vectors per live track, and tracks unseen for ``max_missing_clips`` are retired.
* EVS needs no tracker: each exemplar query *is* its object. An object enters at its hint's frame
  (``Exemplar.frame``); in later clips its query is re-initialised from its last non-empty predicted mask
  (method.md). Frames before its hint never show it.
* Per clip, outputs are post-processed on the device frame by frame (``gvseg.video.postprocess``) and moved to
  the CPU as compact per-frame results, so memory does not grow with video length: nothing per-frame is
  kept once yielded, and the model never holds more than one clip.

Inputs: ``frames_iter`` yields ``[H, W, 3]`` uint8 RGB arrays (sent to the device as uint8 and normalised there,
``Clip.float_frames``) or ``[3, H, W]`` tensors (uint8 RGB, or float already normalised), one kind per video,
all at the model input size.
``out_size`` (default: the input size) is the resolution of the results, e.g. the original video size;
exemplar coordinates and masks are given at ``out_size``.

:class:`FramePrediction` per frame (post-processing rules and defaults: ``cfg.postprocess``, ``gvseg.video.postprocess``):
  * VIS: ``segments`` with a COCO RLE each (instances may overlap), ``id_map`` None: every tracked query
    with a non-empty mask, carrying its clip's class probabilities and the frame's mask score. Which
    (track, class) pairs a video reports is decided once the video is over (``video.postprocess.vis_topk``, run by
    ``writers.YtvisWriter``); ``postprocess`` carries the config that selection needs.
  * VPS: ``id_map [H, W]`` int32 track ids (0 = void), ``semantic [H, W]`` int32 class (-1 = void), segments.
  * VSS: ``semantic [H, W]`` int32 class map (-1 = void, only with ``vss_mode="panoptic"``); one segment per
    class present (id = class + 1).
  * EVS: ``id_map [H, W]`` int32 exemplar track ids (0 = background), segments.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from gvseg import counters
from gvseg.config import ModelConfig
from gvseg.data.errors import DataError
from gvseg.structures import QUERY_THING, Clip, ClipExemplars, Exemplar, FramePrediction, Segment
from gvseg.video.postprocess import (
    allowed_classes,
    class_probs,
    class_scores,
    exemplar_maps,
    instance_results,
    panoptic_maps,
    upsample,
    vss_maps,
)
from gvseg.video.tta import semantic_tta


def _default_preprocess(frame: Any) -> torch.Tensor:
    """A frame -> [3, H, W]: uint8 RGB arrays stay uint8 (the model normalises them on its device: a quarter of
    the bytes to copy there; ``Clip.float_frames``), tensors are taken as they are."""
    if isinstance(frame, torch.Tensor):
        return frame if frame.dtype == torch.uint8 else frame.float()
    arr = np.asarray(frame)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"predict_video: frames must be [H, W, 3] RGB arrays or [3, H, W] tensors, got {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"predict_video: RGB arrays must be uint8 0-255, got {arr.dtype}")
    if not arr.flags.writeable:  # decoded frames may be read-only views; torch wants writable memory
        arr = arr.copy()
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _rle(mask: np.ndarray) -> dict:
    from pycocotools import mask as mask_util

    r = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    r["counts"] = r["counts"].decode("ascii")
    return r


class _ExemplarState:
    """EVS bookkeeping: hints at model input resolution, and each object's last non-empty predicted mask."""

    def __init__(self, exemplars: list[Exemplar], in_size: tuple[int, int], out_size: tuple[int, int]):
        self.hints = sorted(exemplars, key=lambda e: (e.frame, e.track_id))
        self.in_size, self.out_size = in_size, out_size
        self.last_mask: dict[int, tuple[int, torch.Tensor]] = {}  # id -> (video frame, [h, w] bool at input size)

    def for_clip(self, start: int, n: int, device: torch.device) -> tuple[ClipExemplars, torch.Tensor]:
        """ClipExemplars for frames [start, start+n) and each object's first frame within the clip."""
        h, w = self.in_size
        sy, sx = h / self.out_size[0], w / self.out_size[1]
        kinds, frames, pts, boxes, masks, ids, starts = [], [], [], [], [], [], []
        seen = set()
        for e in self.hints:
            if e.frame >= start + n or e.track_id in seen:
                continue
            seen.add(e.track_id)
            if e.track_id in self.last_mask:  # tracked: re-initialise from the last predicted mask
                f, m = self.last_mask[e.track_id]
                kinds.append("mask")
                frames.append(min(max(f - start, 0), n - 1))
                pts.append((0.0, 0.0)), boxes.append((0.0, 0.0, 0.0, 0.0)), masks.append(m)
                starts.append(0 if e.frame < start else e.frame - start)
            else:  # the given hint
                if e.frame < start:  # hint in a frame already emitted without it: use it at clip frame 0
                    rel = 0
                else:
                    rel = e.frame - start
                kinds.append(e.kind)
                frames.append(rel)
                starts.append(rel)
                pts.append((0.0, 0.0) if e.point is None else (e.point[0] * sx, e.point[1] * sy))
                if e.box is None:
                    boxes.append((0.0, 0.0, 0.0, 0.0))
                else:
                    x, y, bw, bh = e.box  # Exemplar boxes are (x, y, w, h)
                    boxes.append((x * sx, y * sy, (x + bw) * sx, (y + bh) * sy))
                if e.mask is not None:
                    mt = torch.from_numpy(np.asarray(e.mask, dtype=bool))
                    if tuple(mt.shape) != tuple(self.out_size):
                        raise ValueError(f"exemplar of track {e.track_id} at frame {e.frame}: mask is "
                                         f"{tuple(mt.shape)} but frames are {tuple(self.out_size)}")
                    mt = F.interpolate(mt[None, None].float(), size=(h, w), mode="nearest")[0, 0] > 0.5
                    masks.append(mt)
                elif e.kind == "mask":
                    raise ValueError(f"exemplar of track {e.track_id} at frame {e.frame}: kind 'mask' without a mask")
                else:
                    masks.append(torch.zeros(h, w, dtype=torch.bool))
            ids.append(e.track_id)
        k = len(ids)
        ex = ClipExemplars(
            kind=kinds,
            frame=torch.tensor(frames, dtype=torch.long, device=device),
            points=torch.tensor(pts, dtype=torch.float32, device=device).view(k, 2),
            boxes=torch.tensor(boxes, dtype=torch.float32, device=device).view(k, 4),
            masks=(torch.stack(masks) if k else torch.zeros(0, h, w, dtype=torch.bool)).to(device),
            ids=torch.tensor(ids, dtype=torch.long, device=device),
        )
        return ex, torch.tensor(starts, dtype=torch.long, device=device)


@torch.no_grad()
def predict_video(
    model: torch.nn.Module,
    frames_iter: Iterable[Any],
    cfg: ModelConfig,
    task: str | None = None,
    exemplars: list[Exemplar] | None = None,
    *,
    video_id: str = "",
    out_size: tuple[int, int] | None = None,
    device: torch.device | str | None = None,
    preprocess: Callable[[Any], torch.Tensor] | None = None,
    amp: bool = True,
    progress: bool = True,
) -> Iterator[FramePrediction]:
    """Stream per-frame predictions for one video (see module docstring)."""
    task = task or cfg.task
    if task not in ("vis", "vss", "vps", "evs"):
        raise ValueError(f"predict_video: task={task!r}: expected one of vis, vss, vps, evs")
    a = cfg.association
    t_clip, overlap = a.clip_frames, a.clip_overlap
    if t_clip < 1 or not 0 <= overlap < t_clip:
        raise ValueError(f"association: need clip_frames >= 1 and 0 <= clip_overlap < clip_frames, "
                         f"got {t_clip} and {overlap}")
    if task == "evs" and not exemplars:
        raise ValueError(f"predict_video({video_id!r}): task 'evs' needs exemplars")
    tta = bool(cfg.postprocess.tta_scales)
    if tta and task != "vss":
        raise ValueError(f"predict_video({video_id!r}): postprocess.tta_scales is test-time augmentation for VSS "
                         f"(paper 003), not for task {task!r}")
    stride = t_clip - overlap
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    prep = preprocess or _default_preprocess
    model.eval()
    tracker = None
    if task in ("vis", "vps"):
        from gvseg.video.associate import Tracker

        tracker = Tracker(a)
    state = {"next_emit": 0, "in_size": None, "evs": None}
    ring: deque[tuple[int, torch.Tensor]] = deque(maxlen=t_clip)
    total = len(frames_iter) if hasattr(frames_iter, "__len__") else None  # type: ignore[arg-type]
    bar = tqdm(total=total, desc=f"predict {video_id}".strip(), unit="frame", disable=not progress, leave=False)

    def run(window: list[tuple[int, torch.Tensor]]) -> Iterator[FramePrediction]:
        start = window[0][0]
        if len({f.dtype for _, f in window}) > 1:
            raise ValueError(f"video {video_id!r}: frames {window[0][0]}..{window[-1][0]} mix uint8 RGB and "
                             "normalised float frames; give one kind per video")
        frames = torch.stack([f for _, f in window])[None].to(dev, non_blocking=True)  # [1, T', 3, h, w]
        h, w = frames.shape[-2:]
        size = out_size or (h, w)
        ex, starts = None, None
        if task == "evs":
            if state["evs"] is None:
                state["evs"] = _ExemplarState(exemplars or [], (h, w), size)
            ex, starts = state["evs"].for_clip(start, len(window), dev)
        sizes = torch.stack((torch.full((1,), h), torch.full((1,), w)), 1).to(dev)  # [1, 2]
        index = torch.arange(start, start + len(window))[None].to(dev)  # [1, T'] (windows are contiguous)
        clip = Clip(frames, sizes, index, [video_id], None, None if ex is None else [ex])
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda"):
            if tta:  # VSS test-time augmentation (paper 003, Eq. 8): the voted class map of every scale/flip
                sem = semantic_tta(model, clip.float_frames()[0], scales=cfg.postprocess.tta_scales,
                                   flip=cfg.postprocess.tta_flip,
                                   video_id=video_id, start=start, size=size, cfg=cfg)  # [T', H, W]
                results = {"t": len(window), "semantic": sem.to(torch.int32).cpu().numpy()}
            else:
                out = model(clip)
                results = _postprocess(out, task, cfg, size, tracker, starts, state.get("evs"), start, (h, w))
        for rel, (idx, _) in enumerate(window):
            if idx < state["next_emit"]:
                continue  # already emitted by the previous (overlapping) clip
            state["next_emit"] = idx + 1
            bar.update(1)
            yield _frame(results, rel, idx, video_id, size, task)

    try:
        last = -1
        for idx, frame in enumerate(frames_iter):
            x = prep(frame)
            if state["in_size"] is None:
                state["in_size"] = tuple(x.shape[-2:])
            elif tuple(x.shape[-2:]) != state["in_size"]:
                raise ValueError(f"video {video_id!r} frame {idx}: size {tuple(x.shape[-2:])} differs from the "
                                 f"first frame's {state['in_size']}")
            ring.append((idx, x))
            last = idx
            if idx >= t_clip - 1 and (idx - (t_clip - 1)) % stride == 0:  # a full clip ends here
                yield from run(list(ring))
        if last >= state["next_emit"]:  # tail: the last T frames (fewer only if the video is shorter)
            yield from run(list(ring))
    finally:
        bar.close()


def stream_video(
    model: torch.nn.Module,
    frames: Iterable[np.ndarray],
    cfg: ModelConfig,
    task: str | None = None,
    exemplars: list[Exemplar] | None = None,
    *,
    size: tuple[int, int],
    out_size: tuple[int, int],
    video_id: str = "",
    source: str = "",
    device: torch.device | str | None = None,
) -> Iterator[tuple[FramePrediction, np.ndarray]]:
    """(prediction, original frame) per frame, in order: ``frames`` are ``[H, W, 3]`` uint8 RGB at ``out_size``
    (checked; ``source`` names the file in errors), resized to the model input ``size`` here (module docstring)."""
    import cv2

    h, w = out_size
    pending: deque[np.ndarray] = deque()  # original frames not yet yielded (at most a clip and a stride)
    failure: list[DataError] = []

    def resized() -> Iterator[np.ndarray]:
        try:
            for t, f in enumerate(frames):
                if f.shape[:2] != (h, w):
                    raise DataError(source or video_id, f"frame {t} is {f.shape[0]}x{f.shape[1]} but the video is "
                                                        f"{h}x{w}")
                pending.append(f)
                yield f if f.shape[:2] == size else cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        except DataError as e:  # stop here; predict_video still runs the tail clip over what was decoded
            failure.append(e)

    n = 0
    for pred in predict_video(model, resized(), cfg, task, exemplars, video_id=video_id, out_size=out_size,
                              device=device, progress=False):
        yield pred, pending.popleft()  # predictions come in frame order, one per frame
        n += 1
    if failure:
        e = failure[0]
        raise DataError(e.path, f"{e.reason}; the {n} frames decoded before it were predicted and written")


def _postprocess(out: dict, task: str, cfg: ModelConfig, size: tuple[int, int], tracker,
                 starts: torch.Tensor | None, evs_state: _ExemplarState | None, start: int,
                 in_size: tuple[int, int]) -> dict:
    """One clip (batch element 0) -> CPU numpy per-frame pieces."""
    pp = cfg.postprocess
    logits, masks = out["pred_logits"][0].float(), out["pred_masks"][0].float()  # [Q, C+1], [Q, T, h4, w4]
    t = masks.shape[1]
    n_th = cfg.num_thing_classes
    res: dict[str, Any] = {"t": t}
    # query-type gate: thing (grid) queries only things, class-bank queries only their class
    allowed = allowed_classes(out, cfg.num_classes, n_th) if pp.class_gate else None  # [Q, C] | None
    if task == "vss":
        res["semantic"] = vss_maps(logits, masks, size, pp, allowed).to(torch.int32).cpu().numpy()  # [T, H, W]
        return res

    if task == "evs":
        ids = out["query_ids"][0]  # [Q]
        valid = ids >= 0
        qmap = exemplar_maps(masks, size, valid, starts)  # [T, H, W]
        scores, labels = class_scores(logits)
        lut = torch.cat([ids, ids.new_zeros(1)])  # -1 (background) -> 0
        res["id_map"] = lut[qmap].to(torch.int32).cpu().numpy()
        res["info"] = {int(i): (int(lab), float(s), True)
                       for i, lab, s in zip(ids.tolist(), labels.tolist(), scores.tolist()) if i >= 0}
        # the next clip's hints: each object's last-frame mask at model input size (kept if non-empty)
        last = upsample(masks[:, -1], in_size) > 0  # [Q, h, w]
        nonempty = last.flatten(1).any(1) & valid
        if starts is not None:
            nonempty &= starts <= t - 1
        for q in nonempty.nonzero().flatten().tolist():
            evs_state.last_mask[int(ids[q])] = (start + t - 1, last[q].cpu())
        return res

    desc = out["pred_descriptors"][0]  # [Q, T, u*v]
    embeds = out["pred_embeds"][0]
    scores, labels = class_scores(logits, allowed)  # [Q] best real class
    if task == "vis":
        # no per-clip score cut: every non-trivial query is tracked; the video-level top-k decides (MinVIS)
        keep = scores > pp.track_min_score
        track = tracker.update(embeds, desc[:, 0], desc[:, -1], scores, labels,
                               torch.zeros_like(keep), keep)  # [Q] ids, -1 not kept
        inst = instance_results(logits, masks, size, track >= 0, allowed, pp.mask_threshold)
        res["instances"] = (track[inst.query_idx].cpu().numpy(), inst.probs.cpu().numpy(),
                            inst.mask_scores.cpu().numpy(), [m.cpu().numpy() for m in inst.masks])
        res["postprocess"] = pp
        return res

    # vps: Mask2Former panoptic inference; the tracker sees one query per segment (merged stuff: the best one)
    pan = panoptic_maps(logits, masks, size, n_th, allowed, pp.object_mask_threshold, pp.overlap_threshold,
                        pp.mask_threshold)
    keep = torch.zeros_like(scores, dtype=torch.bool)
    keep[pan.query_idx] = True
    is_stuff = out["query_is_stuff"] | (labels >= n_th)
    vote = cfg.association.thing_class_vote
    probs = class_probs(logits, allowed)[:, :-1] if vote else None  # [Q, C]
    track = tracker.update(embeds, desc[:, 0], desc[:, -1], scores, labels, is_stuff, keep, probs)  # [Q]
    seg_track = track[pan.query_idx]  # [S]
    if vote:  # a thing segment takes its track's class vote over the clips so far (AssociationConfig)
        voted = tracker.voted_labels(seg_track, n_th)  # [S], -1 = no vote
        change = pan.isthing & (voted >= 0) & (voted != pan.labels)
        counters.add("assoc/class_vote_changed", int(change.sum()))
        pan.labels = torch.where(change, voted, pan.labels)
    _count_segments(pan.isthing, out["query_kind"][pan.query_idx])
    id_lut = torch.cat([seg_track, seg_track.new_zeros(1)])  # segment -1 (void) -> 0
    res["id_map"] = id_lut[pan.segment_map].to(torch.int32).cpu().numpy()
    res["semantic"] = pan.label_map().to(torch.int32).cpu().numpy()
    res["info"] = {int(i): (int(lab), float(s), bool(th))
                   for i, lab, s, th in zip(seg_track.tolist(), pan.labels.tolist(), pan.scores.tolist(),
                                            pan.isthing.tolist())}
    return res


def _count_segments(isthing: torch.Tensor, kind: torch.Tensor) -> None:
    """How many VPS segments are things, and how many of those came from thing (grid) queries (§3.1 VPS)."""
    th, from_thing_q = isthing.bool().cpu(), (kind == QUERY_THING).cpu()
    counters.add("post/thing_segments", int(th.sum()))
    counters.add("post/thing_segments_from_thing_queries", int((th & from_thing_q).sum()))
    counters.add("post/stuff_segments", int((~th).sum()))


def _frame(res: dict, rel: int, idx: int, video_id: str, size: tuple[int, int], task: str) -> FramePrediction:
    h, w = size
    fp = FramePrediction(video_id, idx, h, w, task)
    if task == "vss":
        sem = res["semantic"][rel]
        fp.semantic = sem
        counts = np.bincount(sem[sem >= 0].ravel(), minlength=1)  # -1 (void) has no segment
        fp.segments = [Segment(int(c) + 1, int(c), 1.0, False, int(n)) for c, n in enumerate(counts) if n > 0]
        return fp
    if task == "vis":
        tids, probs, mask_scores, masks = res["instances"]
        m = masks[rel]  # [N, H, W] bool
        areas = m.sum(axis=(1, 2))  # [N]; N may be 0 (reshape(0, -1) would raise)
        labels = probs.argmax(1)  # [N] the clip's best class: for display; the video picks its own
        fp.segments = [Segment(int(tids[i]), int(labels[i]), float(probs[i, labels[i]]), True, int(areas[i]),
                               _rle(m[i]), probs[i], float(mask_scores[rel, i]))
                       for i in range(m.shape[0]) if areas[i] > 0]
        fp.postprocess = res["postprocess"]
        return fp
    id_map = res["id_map"][rel]
    fp.id_map = id_map
    if task == "vps":
        fp.semantic = res["semantic"][rel]
    ids, counts = np.unique(id_map, return_counts=True)
    fp.segments = [Segment(i, *res["info"][i][:2], res["info"][i][2], n)
                   for i, n in zip(ids.tolist(), counts.tolist()) if i != 0 and i in res["info"]]
    return fp
