"""Official result files (and overlay videos) from a stream of :class:`~gvseg.structures.FramePrediction`.

Every writer has the same life cycle, driven by ``gvseg.predict`` and ``gvseg.evaluation``::

    w.begin_video(VideoInfo(...)); w.write(pred, frame) per frame, in order; w.end_video(); ...; w.close()

``frame`` is the RGB frame ``[H, W, 3]`` uint8 at the prediction's size (only the overlay writers use it).
Writers **flush per frame**: a PNG is on disk as soon as its frame is written, and JSON results are streamed
into ``<name>.partial`` (flushed after every frame) and renamed to ``<name>`` by ``close()``, so a crash never
loses what was predicted, and a handled error (``close()`` in a ``finally``) still leaves valid files.
Memory is flat in video length except for :class:`YtvisWriter`, whose format needs each track's per-frame
RLEs in one entry: it spools frames to a JSONL file on disk and, at ``end_video``, picks the video's top-k
(track, class) pairs and reads back only their RLEs (a few hundred bytes per mask).

  writer              files (under ``out_dir``)                                 read back / scored by
  VipsegWriter        pan_pred/<video>/<stem>.png (R + 256G + 65536B) + pred.json  metrics.vipseg (VPQ + STQ)
  KittiStepWriter     <seq>/<stem>.png (R = trainId, G*256 + B = instance)        metrics.stq (kitti-step)
  VspwWriter          <video>/<stem>.png uint8 dataset class ids, 255 = none      metrics.semantic
  PaletteWriter       [Annotations/]<video>/<stem>.png mode P, VOC palette,       metrics.jf
                      index = object id (DAVIS, YouTube-VOS)
  YtvisWriter         results.json [{video_id, category_id, segmentations, score}] metrics.ytvis
  BurstWriter         burst_results.json {"split", "sequences": [...]}             metrics.hota
  OverlayVideoWriter  <video>.mp4 overlay, stable per-track colours, names + ids    people
  OverlayPngWriter    overlay/<video>/<stem>.png, the same pictures per frame        people

Category ids are written in the dataset's ids (``LabelSpace.to_dataset``). An empty video (no frames) writes
an empty JSON entry list and no PNGs; a frame with no segments writes an all-void PNG.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from gvseg.config import PostprocessConfig
from gvseg.data.transforms import LabelSpace
from gvseg.structures import FramePrediction
from gvseg.visualize import id_colors


@dataclass
class VideoInfo:
    """What a writer needs to know about one video before its first frame."""

    video_id: str
    height: int
    width: int
    frame_names: Sequence[str] | None = None  # file stems; None -> "%05d" of the frame index
    fps: float = 10.0  # overlay mp4 frame rate
    # format extras: "json_video_id" (YTVIS int id), "id"/"dataset"/"seq_name"/"image_paths" (BURST)
    meta: dict[str, Any] = field(default_factory=dict)

    def name(self, t: int) -> str:
        if self.frame_names is not None and t < len(self.frame_names):
            return self.frame_names[t]
        return f"{t:05d}"


class Writer:
    """Base: tracks the current video; subclasses implement ``_write`` and may override the hooks."""

    def __init__(self, out_dir: str | os.PathLike):
        self.out_dir = Path(out_dir)
        self.video: VideoInfo | None = None
        self.frames_written = 0
        self.closed = False

    def begin_video(self, video: VideoInfo) -> None:
        if self.video is not None:
            self.end_video()
        self.video = video

    def write(self, pred: FramePrediction, frame: np.ndarray | None = None) -> None:
        if self.video is None:
            raise RuntimeError(f"{type(self).__name__}.write before begin_video")
        if (pred.height, pred.width) != (self.video.height, self.video.width):
            raise ValueError(f"video {self.video.video_id!r} frame {pred.frame_index}: prediction is "
                             f"{pred.height}x{pred.width} but the video is {self.video.height}x{self.video.width}")
        self._write(pred, frame)
        self.frames_written += 1

    def _write(self, pred: FramePrediction, frame: np.ndarray | None) -> None:
        raise NotImplementedError

    def end_video(self) -> None:
        self.video = None

    def close(self) -> None:
        """Finish the current video and every file; idempotent."""
        if self.closed:
            return
        if self.video is not None:
            self.end_video()
        self._close()
        self.closed = True

    def _close(self) -> None:
        pass

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _JsonStream:
    """Writes one JSON document piece by piece into ``<path>.partial``, flushing after every piece;
    ``close()`` completes the document and renames it to ``path`` (atomic on POSIX)."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = path.with_name(path.name + ".partial")
        self.f = open(self.partial, "w")
        self.stack: list[tuple[str, bool]] = []  # open containers: (closing bracket, has items)

    def _sep(self) -> None:
        if self.stack:
            close, has = self.stack[-1]
            if has:
                self.f.write(",")
            self.stack[-1] = (close, True)

    def open(self, prefix: str, close: str) -> None:
        """Start an item that is a container: ``prefix`` is e.g. ``{"video_id": "x", "annotations": [``."""
        self._sep()
        self.f.write(prefix)
        self.stack.append((close, False))

    def item(self, obj: Any) -> None:
        self._sep()
        self.f.write(json.dumps(obj))
        self.f.flush()

    def end(self, suffix: str = "") -> None:
        """Close the innermost container; ``suffix`` is written just before its closing bracket."""
        close, _ = self.stack.pop()
        self.f.write(suffix + close)
        self.f.flush()

    def close(self) -> None:
        while self.stack:
            self.end()
        self.f.close()
        os.replace(self.partial, self.path)


def _save_png(path: Path, arr: np.ndarray, mode: str | None = None, palette: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr) if mode is None else Image.fromarray(arr, mode=mode)
    if palette is not None:
        im.putpalette(palette)
    im.save(path)


# ---------------------------------------------------------------------------------------------- VPS


class VipsegWriter(Writer):
    """VIPSeg VPS: ``pan_pred/<video>/<stem>.png`` + ``pred.json`` (``eval_vpq_vspw.py`` / ``eval_stq_vspw.py``)."""

    def __init__(self, out_dir: str | os.PathLike, space: LabelSpace, *, split: str = "val"):
        super().__init__(out_dir)
        self.space = space
        self.json = _JsonStream(self.out_dir / "pred.json")
        self.json.open('{"annotations": [', "]}")

    def begin_video(self, video: VideoInfo) -> None:
        super().begin_video(video)
        self.json.open(json.dumps({"video_id": video.video_id})[:-1] + ', "annotations": [', "]}")

    def _write(self, pred: FramePrediction, frame: np.ndarray | None) -> None:
        from gvseg.metrics.panoptic_io import write_id_png

        if pred.id_map is None:
            raise ValueError(f"VipsegWriter: video {pred.video_id!r} frame {pred.frame_index} has no id map "
                             f"(task {pred.task!r}; VIPSeg needs 'vps')")
        stem = self.video.name(pred.frame_index)
        ids = pred.id_map.astype(np.int64)
        write_id_png(self.out_dir / "pan_pred" / self.video.video_id / f"{stem}.png", ids)
        present = set(np.unique(ids).tolist())
        segs = [s for s in pred.segments if s.id in present and s.id != 0]
        cats = self.space.to_dataset(np.array([s.label for s in segs], np.int64))
        self.json.item({"image_id": stem, "file_name": f"{stem}.png", "segments_info": [
            {"id": int(s.id), "category_id": int(c), "iscrowd": 0, "area": int(s.area)} for s, c in zip(segs, cats)]})

    def end_video(self) -> None:
        self.json.end()
        super().end_video()

    def _close(self) -> None:
        self.json.close()


class KittiStepWriter(Writer):
    """KITTI-STEP VPS: ``<seq>/<stem>.png`` RGB, R = semantic trainId (255 void), G*256 + B = instance.

    Track ids are renumbered 1, 2, ... per sequence in order of appearance (the format holds < 65536);
    stuff pixels get instance 0."""

    def __init__(self, out_dir: str | os.PathLike, space: LabelSpace, *, split: str = "val"):
        super().__init__(out_dir)
        self.space = space
        self.instance: dict[int, int] = {}

    def begin_video(self, video: VideoInfo) -> None:
        super().begin_video(video)
        self.instance = {}

    def _write(self, pred: FramePrediction, frame: np.ndarray | None) -> None:
        from gvseg.metrics.panoptic_io import write_kitti_step_png

        if pred.id_map is None or pred.semantic is None:
            raise ValueError(f"KittiStepWriter: video {pred.video_id!r} frame {pred.frame_index} needs a VPS "
                             "prediction (id map + semantic map)")
        sem = pred.semantic.astype(np.int64)  # [H, W] contiguous labels, -1 void
        labels = np.where(sem >= 0, self.space.to_dataset(np.clip(sem, 0, None).ravel()).reshape(sem.shape), 255)
        things = [s.id for s in pred.segments if s.isthing]
        for tid in things:
            self.instance.setdefault(int(tid), len(self.instance) + 1)
        if len(self.instance) > 65535:
            raise ValueError(f"video {pred.video_id!r}: more than 65535 instances do not fit KITTI-STEP PNGs")
        ids = pred.id_map.astype(np.int64)
        lut_ids = np.array(list(self.instance), np.int64)
        inst = np.zeros(ids.shape, np.int64)
        if lut_ids.size:
            # vectorised id -> instance lookup (sorted search over this video's thing tracks)
            order = np.argsort(lut_ids)
            srt, vals = lut_ids[order], np.array(list(self.instance.values()), np.int64)[order]
            pos = np.clip(np.searchsorted(srt, ids), 0, len(srt) - 1)
            hit = (srt[pos] == ids) & np.isin(ids, np.array(things, np.int64))
            inst = np.where(hit, vals[pos], 0)
        write_kitti_step_png(self.out_dir / self.video.video_id / f"{self.video.name(pred.frame_index)}.png",
                             labels, inst)


# ---------------------------------------------------------------------------------------------- VSS


class VspwWriter(Writer):
    """VSPW VSS: ``<video>/<stem>.png`` uint8 = dataset class id (VSPW label − 1 = 0..123), 255 where nothing
    was predicted (what ``VSPW_baseline`` / DVIS++ ``vss_eval.py`` write)."""

    def __init__(self, out_dir: str | os.PathLike, space: LabelSpace, *, split: str = "val"):
        super().__init__(out_dir)
        self.space = space

    def _write(self, pred: FramePrediction, frame: np.ndarray | None) -> None:
        if pred.semantic is None:
            raise ValueError(f"VspwWriter: video {pred.video_id!r} frame {pred.frame_index} has no semantic map "
                             f"(task {pred.task!r})")
        sem = pred.semantic.astype(np.int64)
        labels = np.where(sem >= 0, self.space.to_dataset(np.clip(sem, 0, None).ravel()).reshape(sem.shape), 255)
        if labels.max(initial=0) > 255:
            raise ValueError("VspwWriter: class ids above 255 do not fit an 8-bit label PNG")
        _save_png(self.out_dir / self.video.video_id / f"{self.video.name(pred.frame_index)}.png",
                  labels.astype(np.uint8), "L")


# ---------------------------------------------------------------------------------------------- EVS


class PaletteWriter(Writer):
    """DAVIS / YouTube-VOS: mode ``P`` PNGs with the VOC palette, index = object id, 0 = background.

    ``subdir="Annotations"`` gives the YouTube-VOS submission layout ``Annotations/<video>/<stem>.png``."""

    def __init__(self, out_dir: str | os.PathLike, space: LabelSpace | None = None, *, split: str = "val",
                 subdir: str = ""):
        super().__init__(out_dir)
        self.root = self.out_dir / subdir if subdir else self.out_dir

    def _write(self, pred: FramePrediction, frame: np.ndarray | None) -> None:
        from gvseg.data.formats._common import voc_palette

        if pred.id_map is None:
            raise ValueError(f"PaletteWriter: video {pred.video_id!r} frame {pred.frame_index} has no id map")
        ids = pred.id_map
        if ids.size and (ids.min() < 0 or ids.max() > 255):
            raise ValueError(f"video {pred.video_id!r} frame {pred.frame_index}: object ids must lie in 0..255 "
                             f"for a palette PNG, got {ids.min()}..{ids.max()}")
        _save_png(self.root / self.video.video_id / f"{self.video.name(pred.frame_index)}.png",
                  ids.astype(np.uint8), "P", voc_palette())


class BurstWriter(Writer):
    """BURST: ``burst_results.json`` in the GT schema; per frame ``{"<tid>": {"rle", "score"}}``, empty masks
    omitted (``hota.encode_track_masks``). Sequence fields come from ``VideoInfo.meta`` (``id``, ``dataset``,
    ``seq_name``, ``image_paths``), defaulting to (running index, "video", video_id, "<stem>.jpg")."""

    def __init__(self, out_dir: str | os.PathLike, space: LabelSpace | None = None, *, split: str = "val",
                 filename: str = "burst_results.json"):
        super().__init__(out_dir)
        self.json = _JsonStream(self.out_dir / filename)
        self.json.open(json.dumps({"split": split})[:-1] + ', "sequences": [', "]}")
        self.count = 0
        self.paths: list[str] = []
        self.track_cat: dict[str, int] = {}

    def begin_video(self, video: VideoInfo) -> None:
        super().begin_video(video)
        m = video.meta
        head = {"id": m.get("id", self.count), "dataset": m.get("dataset", "video"),
                "seq_name": m.get("seq_name", video.video_id), "width": video.width, "height": video.height}
        self.count += 1
        self.paths, self.track_cat = [], {}
        self.json.open(json.dumps(head)[:-1] + ', "segmentations": [', "}")

    def _write(self, pred: FramePrediction, frame: np.ndarray | None) -> None:
        from gvseg.metrics.hota import encode_track_masks

        if pred.id_map is None:
            raise ValueError(f"BurstWriter: video {pred.video_id!r} frame {pred.frame_index} has no id map")
        ids = pred.id_map
        score = {s.id: s.score for s in pred.segments}
        present = [int(i) for i in np.unique(ids) if i != 0]
        segs = encode_track_masks({i: ids == i for i in present})
        for k, v in segs.items():
            v["score"] = float(score.get(int(k), 1.0))
        for s in pred.segments:
            self.track_cat.setdefault(str(s.id), 1)  # exemplar-guided: the GT decides the class
        paths = self.video.meta.get("image_paths")
        t = pred.frame_index
        self.paths.append(paths[t] if paths is not None else f"{self.video.name(t)}.jpg")
        self.json.item(segs)

    def end_video(self) -> None:
        # close the segmentations list, then the sequence object with the per-video fields
        self.json.end("]" + ', "annotated_image_paths": ' + json.dumps(self.paths)
                      + ', "track_category_ids": ' + json.dumps(self.track_cat))
        super().end_video()

    def _close(self) -> None:
        self.json.close()


# ---------------------------------------------------------------------------------------------- VIS


class YtvisWriter(Writer):
    """YouTube-VIS / OVIS ``results.json``: per video, the ``topk`` best (track, class) pairs
    (``video.postprocess.vis_topk``; MinVIS / Mask2Former-VIS), one entry each: ``category_id`` = the class,
    ``segmentations`` = the track's compressed RLE per frame or null, ``score`` = its mean class probability
    (over the frames it appears in) x its mask score (mean sigmoid inside its masks, pixel-weighted over the
    video; Mask2Former ``instance_inference``), or the class probability alone (``score="class"``). One track
    may appear with several classes.

    The selection happens at ``end_video`` because only then is every track complete. Memory per video: a
    few numbers per track (summed class probabilities, mask-score sums) while frames stream; the RLEs are
    spooled to a JSONL file on disk and only the selected tracks' RLEs are read back (the format needs them
    in one entry). ``topk`` / ``score`` default to the predictions' ``postprocess`` config, then to
    :class:`~gvseg.config.PostprocessConfig`'s defaults. A segment without ``class_probs`` (e.g. built from
    ground truth) counts as probability ``score`` for its ``label``; one without ``mask_score`` as 1.

    ``video_id`` is ``VideoInfo.meta["json_video_id"]`` (the GT JSON's integer id) or the video name."""

    def __init__(self, out_dir: str | os.PathLike, space: LabelSpace, *, split: str = "val",
                 filename: str = "results.json", topk: int | None = None, score: str | None = None):
        super().__init__(out_dir)
        self.space = space
        self.topk, self.score = topk, score
        self.json = _JsonStream(self.out_dir / filename)
        self.json.open("[", "]")
        self.spool_dir = self.out_dir / ".spool"
        self.spool = None
        self.n = 0
        self.videos = 0  # videos begun (names the spool files)
        self.count = 0  # entries written
        self.tracks: dict[int, _VisTrack] = {}
        self.pp: PostprocessConfig | None = None  # the current video's predictions' config

    def begin_video(self, video: VideoInfo) -> None:
        super().begin_video(video)
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.spool_path = self.spool_dir / f"{self.videos:06d}.jsonl"
        self.videos += 1
        self.spool = open(self.spool_path, "w")
        self.n = 0
        self.tracks, self.pp = {}, None

    def _write(self, pred: FramePrediction, frame: np.ndarray | None) -> None:
        segs = [s for s in pred.segments if s.rle is not None and s.area > 0]
        for s in segs:
            self.tracks.setdefault(s.id, _VisTrack()).add(s)
        self.spool.write(json.dumps({"t": pred.frame_index, "segs": [[s.id, s.rle] for s in segs]}) + "\n")
        self.spool.flush()
        self.n = max(self.n, pred.frame_index + 1)
        self.pp = self.pp or pred.postprocess

    def end_video(self) -> None:
        from gvseg.video.postprocess import vis_topk

        self.spool.close()
        pp = self.pp or PostprocessConfig()
        k = pp.vis_topk if self.topk is None else self.topk
        mode = pp.vis_score if self.score is None else self.score
        ids = sorted(self.tracks)
        width = max((t.prob_sum.size for t in self.tracks.values()), default=0)
        probs = np.zeros((len(ids), width))  # [N, C] mean class probabilities
        for row, tid in enumerate(ids):
            tr = self.tracks[tid]
            probs[row, : tr.prob_sum.size] = tr.prob_sum / tr.frames
        mask_scores = np.array([self.tracks[tid].mask_score() for tid in ids])  # [N]
        picks = vis_topk(ids, probs, mask_scores, k, mode)  # [(track, class, score)], best first
        # second pass over the spool: the RLEs of the selected tracks only
        rles: dict[int, list] = {tid: [None] * self.n for tid, _, _ in picks}
        with open(self.spool_path) as f:
            for line in f:
                fr = json.loads(line)
                for tid, rle in fr["segs"]:
                    if tid in rles:
                        rles[tid][fr["t"]] = rle
        vid = self.video.meta.get("json_video_id", self.video.video_id)
        cats = self.space.to_dataset(np.array([c for _, c, _ in picks], np.int64))
        for (tid, _, score), cat in zip(picks, cats):
            self.json.item({"video_id": vid, "category_id": int(cat), "segmentations": rles[tid],
                            "score": float(score)})
            self.count += 1
        self.spool_path.unlink()
        self.spool = None
        self.tracks = {}
        super().end_video()

    def _close(self) -> None:
        self.json.close()
        if self.spool_dir.is_dir() and not any(self.spool_dir.iterdir()):
            self.spool_dir.rmdir()


class _VisTrack:
    """One VIS track's running sums over the frames it appears in (a few numbers, not its masks)."""

    def __init__(self) -> None:
        self.prob_sum = np.zeros(0)  # [C] summed class probabilities
        self.frames = 0
        self.mask_sum = 0.0  # sum over frames of mask_score * area = sum of sigmoid inside the masks
        self.area = 0

    def add(self, s) -> None:
        p = s.class_probs
        if p is None:  # no probabilities (e.g. GT-built): `score` for `label`
            p = np.zeros(s.label + 1)
            p[s.label] = s.score
        p = np.asarray(p, np.float64)
        if p.size > self.prob_sum.size:
            self.prob_sum = np.pad(self.prob_sum, (0, p.size - self.prob_sum.size))
        self.prob_sum[: p.size] += p
        self.frames += 1
        self.mask_sum += (1.0 if s.mask_score is None else s.mask_score) * s.area
        self.area += s.area

    def mask_score(self) -> float:
        return self.mask_sum / self.area if self.area else 0.0


# ---------------------------------------------------------------------------------------------- overlays


def display_ids(pred: FramePrediction) -> np.ndarray:
    """One frame -> id map [H, W] int64 to colour. VIS instances are painted in ascending
    score order (the best on top); VSS colours by class (id = class + 1)."""
    h, w = pred.height, pred.width
    if pred.task == "vss" and pred.semantic is not None:
        return np.where(pred.semantic >= 0, pred.semantic.astype(np.int64) + 1, 0)
    if pred.id_map is not None:
        return pred.id_map.astype(np.int64)
    from pycocotools import mask as mask_util

    ids = np.zeros((h, w), np.int64)
    for s in sorted(pred.segments, key=lambda s: s.score):
        if s.rle is not None:
            ids[mask_util.decode({"size": s.rle["size"], "counts": s.rle["counts"].encode()}).astype(bool)] = s.id
    return ids


def render_overlay(frame: np.ndarray, pred: FramePrediction, names: Sequence[str] = ()) -> np.ndarray:
    """RGB overlay [H, W, 3]: masks in stable per-track colours (``visualize.id_colors``), white borders,
    a caption "<class> #<track>" at each segment's centroid (VSS: the class name only)."""
    from gvseg.visualize import overlay

    ids = display_ids(pred)
    img = np.ascontiguousarray(overlay(frame, ids))
    present = np.unique(ids)
    present = present[present != 0]
    if present.size == 0:
        return img
    # centroids of every segment at once: bincount over a compact relabelling of the id map
    flat = np.searchsorted(present, ids.ravel())
    inside = ids.ravel() != 0
    yy, xx = np.divmod(np.arange(ids.size), ids.shape[1])
    cnt = np.bincount(flat[inside], minlength=present.size).astype(np.float64)
    cy = np.bincount(flat[inside], yy[inside], minlength=present.size) / np.maximum(cnt, 1)
    cx = np.bincount(flat[inside], xx[inside], minlength=present.size) / np.maximum(cnt, 1)
    seg = {s.id: s for s in pred.segments}
    scale = max(0.3, ids.shape[0] / 720)
    for i, tid in enumerate(present.tolist()):
        if pred.task == "vss":
            label = tid - 1
            text = names[label] if label < len(names) else f"class {label}"
        else:
            s = seg.get(tid)
            cls = "" if s is None else (names[s.label] if s.label < len(names) else f"class {s.label}")
            text = f"{cls} #{tid}".strip() if pred.task != "evs" else f"#{tid}"
        org = (int(cx[i]), int(cy[i]))
        color = tuple(int(c) for c in id_colors(np.array([tid]))[0])
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.5 * scale, color, 1, cv2.LINE_AA)
    return img


class OverlayVideoWriter(Writer):
    """``<video>.mp4`` (OpenCV ``mp4v``) of the frames with their predictions drawn in."""

    def __init__(self, out_dir: str | os.PathLike, names: Sequence[str] = (), fourcc: str = "mp4v"):
        super().__init__(out_dir)
        self.names, self.fourcc = list(names), fourcc
        self.vw: cv2.VideoWriter | None = None

    def begin_video(self, video: VideoInfo) -> None:
        super().begin_video(video)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{video.video_id.replace('/', '_')}.mp4"
        self.vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*self.fourcc), float(video.fps or 10.0),
                                  (video.width, video.height))
        if not self.vw.isOpened():
            raise OSError(f"{path}: OpenCV cannot open a {self.fourcc} video writer")

    def _write(self, pred: FramePrediction, frame: np.ndarray | None) -> None:
        if frame is None:
            raise ValueError("OverlayVideoWriter needs the frame")
        self.vw.write(cv2.cvtColor(render_overlay(frame, pred, self.names), cv2.COLOR_RGB2BGR))

    def end_video(self) -> None:
        if self.vw is not None:
            self.vw.release()  # finalises the container: the file plays up to the last frame written
            self.vw = None
        super().end_video()


class OverlayPngWriter(Writer):
    """``overlay/<video>/<stem>.png``: the overlay pictures, one PNG per frame."""

    def __init__(self, out_dir: str | os.PathLike, names: Sequence[str] = ()):
        super().__init__(out_dir)
        self.names = list(names)

    def _write(self, pred: FramePrediction, frame: np.ndarray | None) -> None:
        if frame is None:
            raise ValueError("OverlayPngWriter needs the frame")
        _save_png(self.out_dir / "overlay" / self.video.video_id / f"{self.video.name(pred.frame_index)}.png",
                  render_overlay(frame, pred, self.names))


# ---------------------------------------------------------------------------------------------- factory


def write_video(writers: Sequence[Writer], video: VideoInfo,
                preds: Iterable[tuple[FramePrediction, np.ndarray | None]],
                on_frame: Callable[[], None] | None = None) -> int:
    """Feed one video's (prediction, original frame or None) pairs to every writer; returns the frame count.
    Every writer ends the video even when the stream raises (a truncated video keeps what was decoded)."""
    n = 0
    for wr in writers:
        wr.begin_video(video)
    try:
        for pred, frame in preds:
            for wr in writers:
                wr.write(pred, frame)
            n += 1
            if on_frame is not None:
                on_frame()
    finally:
        for wr in writers:
            wr.end_video()
    return n


def video_info(record, fps: float = 10.0) -> VideoInfo:
    """:class:`VideoInfo` of a dataset ``VideoRecord`` (frame stems and the format's ids for the JSONs)."""
    meta: dict[str, Any] = {}
    if "json_video_id" in record.meta:  # YTVIS / OVIS
        meta["json_video_id"] = record.meta["json_video_id"]
    if record.format == "burst":
        ds, name = record.meta["dataset"], record.meta["seq_name"]
        meta.update(id=record.meta.get("id"), dataset=ds, seq_name=name,
                    image_paths=[p.rsplit(f"/{ds}/{name}/", 1)[-1] for p in record.frame_paths])
    return VideoInfo(record.video_id, record.height, record.width, record.frame_names, fps, meta)


def official_writer(fmt: str, out_dir: str | os.PathLike, space: LabelSpace, *, split: str = "val") -> Writer:
    """The writer of dataset format ``fmt``'s official result files (``formats.FORMATS[fmt].writer``)."""
    from gvseg.data.formats import format_of

    spec = format_of(fmt)
    return globals()[spec.writer](out_dir, space, split=split, **spec.writer_options)
