"""Clip-consistent augmentation, label spaces, target tubes and collation into a typed :class:`Clip`.

Pipeline for one training sample (all NumPy until :func:`collate`):

    frames [T] uint8 [H, W, 3] + annotations [T] FrameAnnotation|None
      -> sample_augment(...)                    one AugmentParams for the whole sample
      -> make_sample(...)                        the same flip, resize and crop on every frame and mask;
                                                 [K, T, H', W'] tubes over the union of ids in the clip
      -> Sample                                  (+ reference Sample, + EVS exemplars)
    collate([Sample]) -> Clip                    pad to a multiple of 32, torch tensors (uint8 frames: the
                                                 model normalises them on its device, ``Clip.float_frames``)

Speed (issue #17; benchmarks/clip_pipeline.py, results in benchmarks/results/clip_pipeline_cpu*.json): label-map
annotations (and RLE frames without overlaps) arrive as one index map per frame
(``formats._common.IndexedAnnotation``), which is mapped to clip codes and resized once; the sample keeps that
code map (``Sample.code``, ``tube_codes``) and the tube planes are derived only where they are read (``Targets``
on the model's device: the matcher and losses look codes up at their points); frames are written channels-first; frames, masks and ignore are built
inside buffers already padded to /32 (recycled: fresh memory costs a page fault per 4 KB) which collate uses
as they are (see :func:`make_sample`). ``build_tubes`` + ``augment_masks`` + ``augment_image`` remain the
reference definition (and the path for callers that hold full-resolution masks);
tests/data/test_pipeline_equivalence.py checks that both give the same arrays.

Conventions:
  * The key clip and its reference clip get the **same** geometric augmentation: TCL compares
    shape-position descriptors of the two (ΔH, Eq. 10), which must reflect the object's motion, not two
    different crops.
  * Resizing: the short side becomes a random choice of ``min_size`` with the long side capped at
    ``max_size`` (detectron2 ``ResizeShortestEdge``, "choice" sampling per clip as Mask2Former-VIS
    ``choice_by_clip``). Images resample bilinearly (cv2), masks by nearest neighbour through index maps,
    so every mask of every frame moves exactly like its pixels.
  * Objects cropped away (no pixel left in any frame of the clip) disappear from the targets; an object
    absent in some frames has all-False masks there. Crowd objects are not targets; their pixels join
    ``ignore``. Frames without annotation are fully ignored.
  * ``ignore`` [T, H, W] = void pixels of the dataset | crowd | unannotated frames | padding.
  * Labels: :class:`LabelSpace` maps dataset category ids to contiguous model labels, **things first**
    (``[0, num_thing_classes)`` are things, the rest stuff; DVIS++ ``dataset_mapper_vps.py`` order).
  * Frames stay uint8 RGB through :func:`collate`; ``Clip.float_frames`` ImageNet-normalises them where the
    model runs, with 0 in the padding (Mask2Former). Normalising 6 frames here was ~15 ms of a sample on one
    CPU thread and 4x the bytes to build, pin and copy to a GPU.
  * EVS training hints (:func:`draw_exemplars`) come from each clip's own first frame, key and reference alike,
    with the dataset's track ids, and the clip's targets keep hinted objects only (:func:`keep_hinted`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import threading
import warnings
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from gvseg.structures import (
    PIXEL_MEAN,
    PIXEL_STD,
    Category,
    Clip,
    ClipExemplars,
    Derived,
    Exemplar,
    FrameAnnotation,
    Targets,
)

SIZE_DIVISIBILITY = 32  # backbone stride: padded H and W are multiples of this
EXEMPLAR_KINDS = {"point": 0, "box": 1, "mask": 2}
KIND_NAMES = {v: k for k, v in EXEMPLAR_KINDS.items()}


# -------------------------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class LabelSpace:
    """Dataset category ids <-> contiguous model labels, things first.

    ``category_ids[label]`` is the dataset id of a contiguous label. Within things and within stuff the order
    of the dataset's category list is kept.
    """

    category_ids: tuple[int, ...]
    names: tuple[str, ...]
    num_thing_classes: int

    @staticmethod
    def from_categories(categories: Sequence[Category]) -> LabelSpace:
        ids = [c.id for c in categories]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"category ids must be unique, duplicated: {dup}")
        ordered = [c for c in categories if c.isthing] + [c for c in categories if not c.isthing]
        return LabelSpace(tuple(c.id for c in ordered), tuple(c.name for c in ordered),
                          sum(c.isthing for c in categories))

    @property
    def num_classes(self) -> int:
        return len(self.category_ids)

    def _lut(self) -> tuple[np.ndarray, int]:
        ids = np.asarray(self.category_ids, np.int64)
        lo = int(ids.min()) if ids.size else 0
        lut = np.full(int(ids.max()) - lo + 1 if ids.size else 0, -1, np.int64)
        lut[ids - lo] = np.arange(len(ids))
        return lut, lo

    def to_contiguous(self, category_ids: np.ndarray, where: str = "") -> np.ndarray:
        """[K] dataset ids -> [K] labels; an id outside the label space raises ValueError."""
        cat = np.asarray(category_ids, np.int64)
        if cat.size == 0:
            return np.zeros(cat.shape, np.int64)
        lut, lo = self._lut()
        pos = cat - lo
        ok = (pos >= 0) & (pos < len(lut))
        out = np.full(cat.shape, -1, np.int64)
        out[ok] = lut[pos[ok]]
        if (out < 0).any():
            bad = sorted(set(cat[out < 0].tolist()))
            raise ValueError(f"{where or 'annotation'}: category ids {bad} are not in the label space "
                             f"(known ids: {sorted(self.category_ids)[:10]}...)")
        return out

    def to_dataset(self, labels: np.ndarray | torch.Tensor) -> np.ndarray:
        """[K] contiguous labels -> [K] dataset category ids (for writing predictions)."""
        lab = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, np.int64)
        if lab.size and (lab.min() < 0 or lab.max() >= self.num_classes):
            raise ValueError(f"labels must be in [0, {self.num_classes}), got min {lab.min()} max {lab.max()}")
        return np.asarray(self.category_ids, np.int64)[lab] if lab.size else np.zeros(lab.shape, np.int64)

    def isthing(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(labels) < self.num_thing_classes


# -------------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class AugmentParams:
    """One geometric transform for a whole sample: resize to ``size``, crop ``crop``, then maybe flip."""

    size: tuple[int, int]  # (h, w) after resizing
    crop: tuple[int, int, int, int]  # (y0, x0, h, w) window in the resized image
    flip: bool  # horizontal flip after cropping

    @property
    def out_size(self) -> tuple[int, int]:
        return self.crop[2], self.crop[3]


def resize_shortest(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """(h, w) with the short side ``short`` and the long side at most ``max_size`` (ResizeShortestEdge)."""
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return max(int(round(height * scale)), 1), max(int(round(width * scale)), 1)


def sample_augment(height: int, width: int, rng: np.random.Generator, *, min_size: Sequence[int],
                   max_size: int, crop: tuple[int, int] = (0, 0), flip: bool = True) -> AugmentParams:
    """Training augmentation: random short side from ``min_size``, random crop of at most ``crop`` (0 =
    none), random horizontal flip with p = 0.5."""
    short = int(min_size[int(rng.integers(len(min_size)))])
    h, w = resize_shortest(height, width, short, max_size)
    ch, cw = (min(crop[0], h) if crop[0] > 0 else h), (min(crop[1], w) if crop[1] > 0 else w)
    y0, x0 = int(rng.integers(h - ch + 1)), int(rng.integers(w - cw + 1))
    return AugmentParams((h, w), (y0, x0, ch, cw), bool(flip and rng.uniform() < 0.5))


def test_params(height: int, width: int, test_size: int, max_size: int) -> AugmentParams:
    """Evaluation: resize only (short side ``test_size``; 0 keeps the original size)."""
    h, w = resize_shortest(height, width, test_size, max_size) if test_size > 0 else (height, width)
    return AugmentParams((h, w), (0, 0, h, w), False)


def _index_maps(height: int, width: int, p: AugmentParams) -> tuple[np.ndarray, np.ndarray]:
    """Source row [h'] and column [w'] of every output pixel (nearest neighbour at pixel centres)."""
    (rh, rw), (y0, x0, ch, cw) = p.size, p.crop
    rows = np.minimum(((np.arange(y0, y0 + ch) + 0.5) * height / rh).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(x0, x0 + cw) + 0.5) * width / rw).astype(np.int64), width - 1)
    return rows, cols[::-1].copy() if p.flip else cols


def augment_image(image: np.ndarray, p: AugmentParams, out: np.ndarray | None = None,
                  scratch: np.ndarray | None = None) -> np.ndarray:
    """[H, W, 3] uint8 -> [h', w', 3] uint8: bilinear resize, crop, flip; written into ``out`` when given.

    The flip is ``cv2.flip`` straight into the destination: ``np.ascontiguousarray`` of a negative-stride
    view cost 3.3 ms a frame at 800x1066 (7% of the clip pipeline, issue #17), cv2.flip ~0.3 ms. Without flip
    and crop the resize writes into ``out`` itself; otherwise into ``scratch`` ([size] uint8, reused across
    the frames of a sample) when given: fresh output-size temporaries cost page faults, not just copies."""
    (rh, rw), (y0, x0, ch, cw) = p.size, p.crop
    if out is None:
        out = np.empty((ch, cw, 3), np.uint8)
    direct = not p.flip and (ch, cw) == (rh, rw)
    if image.shape[:2] != (rh, rw):
        dst = out if direct else scratch if scratch is not None and scratch.shape == (rh, rw, 3) else None
        resized = cv2.resize(image, (rw, rh), dst=dst, interpolation=cv2.INTER_LINEAR)
        if direct and resized.ctypes.data == out.ctypes.data:
            return out
        image = resized
    image = image[y0:y0 + ch, x0:x0 + cw]
    if p.flip:
        cv2.flip(image, 1, dst=out)  # cv2 reads the crop view (a row-strided ROI) as it is
    else:
        out[...] = image
    return out


def augment_masks(masks: np.ndarray, p: AugmentParams) -> np.ndarray:
    """[..., H, W] bool -> [..., h', w'] bool, nearest neighbour; the same geometry as augment_image."""
    rows, cols = _index_maps(masks.shape[-2], masks.shape[-1], p)
    return np.take(np.take(masks, rows, axis=-2), cols, axis=-1)  # two 1-D gathers beat one 2-D fancy index


def augment_points(xy: np.ndarray, height: int, width: int, p: AugmentParams) -> np.ndarray:
    """[N, 2] (x, y) pixel coordinates (continuous, pixel centres at +0.5) -> the augmented frame."""
    (rh, rw), (y0, x0, _, cw) = p.size, p.crop
    out = np.asarray(xy, np.float64).reshape(-1, 2).copy()
    out[:, 0] = out[:, 0] * rw / width - x0
    out[:, 1] = out[:, 1] * rh / height - y0
    if p.flip:
        out[:, 0] = cw - out[:, 0]
    return out


# ------------------------------------------------------------------------------------------- targets


@dataclass
class Tubes:
    """One clip's ground truth in NumPy (see :class:`gvseg.structures.Targets`)."""

    ids: np.ndarray  # [K] int64 track ids, ascending
    category_ids: np.ndarray  # [K] int64 dataset category ids
    masks: np.ndarray  # [K, T, H, W] bool
    ignore: np.ndarray  # [T, H, W] bool


def build_tubes(annotations: Sequence[FrameAnnotation | None], height: int, width: int,
                where: str = "") -> Tubes:
    """Per-frame annotations -> tubes over the union of (non-crowd) ids with at least one pixel in the clip.

    ``height``/``width`` is the size every annotation must have; a mismatch raises ValueError naming
    ``where``. An id whose category changes between frames keeps its first category.
    """
    t_len = len(annotations)
    ignore = np.zeros((t_len, height, width), bool)
    per_id: dict[int, int] = {}  # id -> category
    for t, ann in enumerate(annotations):
        if ann is None:
            ignore[t] = True  # no ground truth: nothing here may be penalised
            continue
        if ann.masks.shape[1:] != (height, width):
            raise ValueError(f"{where}: frame {t} mask is {ann.masks.shape[1]}x{ann.masks.shape[2]} "
                             f"but the frame is {height}x{width}")
        if ann.ignore is not None:
            ignore[t] |= ann.ignore
        crowd = ann.iscrowd if ann.iscrowd is not None else np.zeros(len(ann.ids), bool)
        if crowd.any():
            ignore[t] |= ann.masks[crowd].any(0)
        for i, c in zip(ann.ids[~crowd].tolist(), ann.category_ids[~crowd].tolist()):
            per_id.setdefault(int(i), int(c))
    ids = np.array(sorted(per_id), np.int64)
    masks = np.zeros((len(ids), t_len, height, width), bool)
    if len(ids):
        for t, ann in enumerate(annotations):
            if ann is None or len(ann.ids) == 0:
                continue
            crowd = ann.iscrowd if ann.iscrowd is not None else np.zeros(len(ann.ids), bool)
            keep = ~crowd
            k = np.searchsorted(ids, ann.ids[keep])  # [K_t] rows of this frame's objects
            masks[k, t] |= ann.masks[keep]
    present = masks.any(axis=(1, 2, 3))
    ids = ids[present]
    return Tubes(ids=ids, category_ids=np.array([per_id[i] for i in ids.tolist()], np.int64),
                 masks=masks[present], ignore=ignore)


def make_targets(annotations: Sequence[FrameAnnotation | None], label_space: LabelSpace, height: int,
                 width: int, where: str = "") -> Targets:
    """Annotations of one (already augmented) clip -> torch :class:`Targets` (unpadded)."""
    tubes = build_tubes(annotations, height, width, where)
    labels = label_space.to_contiguous(tubes.category_ids, where)
    return Targets(masks=torch.from_numpy(tubes.masks), labels=torch.from_numpy(labels),
                   ids=torch.from_numpy(tubes.ids), isthing=torch.from_numpy(label_space.isthing(labels)),
                   ignore=torch.from_numpy(tubes.ignore))


# ------------------------------------------------------------------------------------------- samples


@dataclass
class SampleExemplars:
    """EVS hints of one sample in NumPy; E may be 0."""

    kind: np.ndarray  # [E] int8 codes of EXEMPLAR_KINDS
    frame: np.ndarray  # [E] int64 frame within the clip
    points: np.ndarray  # [E, 2] float32 (x, y)
    boxes: np.ndarray  # [E, 4] float32 (x1, y1, x2, y2)
    masks: np.ndarray  # [E, H, W] bool
    ids: np.ndarray  # [E] int64 track ids

    @staticmethod
    def empty(height: int, width: int) -> SampleExemplars:
        return SampleExemplars(np.zeros(0, np.int8), np.zeros(0, np.int64), np.zeros((0, 2), np.float32),
                               np.zeros((0, 4), np.float32), np.zeros((0, height, width), bool),
                               np.zeros(0, np.int64))


@dataclass
class Sample:
    """One augmented clip (+ its reference clip), NumPy, unpadded, picklable: what a loader worker emits."""

    video_id: str
    frames: np.ndarray  # [T, H, W, 3] uint8 RGB (from make_sample: a view of a padded [T, 3, H', W'] buffer)
    frame_index: np.ndarray  # [T] int64 positions in the video
    ids: np.ndarray  # [K] int64
    labels: np.ndarray  # [K] int64 contiguous (things first)
    masks: np.ndarray = Derived()  # [K, T, H, W] bool; None: coded, derived from ``code`` when read
    ignore: np.ndarray = Derived()  # [T, H, W] bool; None: coded (``code == ignore_code``)
    num_thing_classes: int
    exemplars: SampleExemplars | None = None
    reference: Sample | None = None
    has_targets: bool = True
    # [K] bool: which tubes have pixels in frame 0, when make_sample knows it (draw_exemplars reads it instead of
    # scanning the planes); None: unknown
    first_visible: np.ndarray | None = None
    # Coded tubes (label-map formats): code [T, H, W] uint8/16/32 (a view of a buffer padded to /32, padding =
    # ignore_code), tube k = ``code == tube_codes[k]``. collate hands the code map on, so the K planes are only
    # written where they are read (``Targets`` derives them on the model's device).
    code: np.ndarray | None = None
    tube_codes: np.ndarray | None = None  # [K] same dtype as code
    ignore_code: int = -1

    def _derive(self, name: str) -> np.ndarray | None:
        if self.code is None:
            return None
        h, w = self.code.shape[-2:]
        base = _padded_base(self.code)
        src = self.code if base is None else base  # the padded buffer: collate takes the planes as they are
        if name == "masks":
            out = _BUFFERS.empty((len(self.tube_codes), *src.shape), bool)
            np.equal(self.tube_codes[:, None, None, None], src[None], out=out)  # all planes in one pass
        else:
            out = _BUFFERS.empty(src.shape, bool)
            np.equal(src, self.ignore_code, out=out)  # True in the padding
        return _padded_view(out, h, w) if base is not None else out


def make_sample(video_id: str, frames: Sequence[np.ndarray], annotations: Sequence[FrameAnnotation | None] | None,
                frame_index: np.ndarray, params: AugmentParams, label_space: LabelSpace,
                memo: dict | None = None, *, bgr: bool | Sequence[bool] = False,
                first_frame_objects: bool = False) -> Sample:
    """Augment one clip with ``params`` and build its tubes. ``annotations=None``: no targets (test data).

    ``bgr`` (one flag, or one per frame): the frame's channels are stored B, G, R (``formats.load_frame_native``);
    ``Sample.frames`` is RGB either way. ``first_frame_objects``: only objects with pixels in the clip's first
    (augmented) frame get a tube: what :func:`keep_hinted` keeps after :func:`draw_exemplars` (EVS), so the
    other tubes are never built (the same arrays as building all and dropping them after).

    Output equals the reference path ``build_tubes -> augment_masks`` (tests/data/test_pipeline_equivalence.py)
    but is built the cheap way round (issue #17; 480x640 VIPSeg, 3+3 frames: 308 ms before, see
    benchmarks/results/clip_pipeline_cpu*.json):
      * label-map formats and RLE frames without overlaps (:class:`~gvseg.data.formats._common.IndexedAnnotation`)
        map **one index map per frame** to clip codes at the input size, resize it (nearest, the same
        ``_index_maps`` gather) into one code buffer, which the Sample keeps (coded tubes: ``Sample.masks`` is
        derived on first read, in one broadcast comparison of the K codes with the code buffer, and collate
        hands the code map on without deriving it); which objects
        the clip holds comes from the decoders (``IndexedAnnotation.present``) when the resize keeps every
        input pixel, else from histograms;
      * other annotations (RLE frames whose objects overlap) resize each frame's masks, not full tubes;
      * frames are written channels-first ([T, 3, H, W], the layout of ``Clip.frames``) straight from the
        resize by ``cv2.split``, which also puts a BGR decode in RGB order, and flipped in place plane by plane;
      * frames, masks and ignore are written into buffers already padded to a multiple of 32 and recycled
        (:class:`_Buffers`: fresh memory costs a page fault and a zeroed page per 4 KB); ``Sample.frames`` /
        ``Sample.masks`` / ``Sample.ignore`` are views of them ([T, h, w, 3] RGB, [K, T, h, w], [T, h, w]), so
        :func:`collate` hands the buffers to torch without zero-filling and copying.
      * ``memo`` (a dict shared by the key and the reference clip of one sample, which have the same
        ``params``) keeps each video frame's augmented planes, so frames in both clips are resized once, and
        one resize buffer for the whole sample.
    """
    if not frames:
        raise ValueError(f"{video_id}: a clip needs at least one frame")
    h0, w0 = frames[0].shape[:2]
    for t, f in enumerate(frames):
        if f.shape[:2] != (h0, w0) or f.ndim != 3 or f.shape[2] != 3:
            raise ValueError(f"{video_id}: frame {frame_index[t]} has shape {f.shape}, expected ({h0}, {w0}, 3)")
    h, w = params.out_size
    ph, pw = pad_size([(h, w)])
    t_len = len(frames)
    flags = [bool(bgr)] * t_len if isinstance(bgr, bool | np.bool_) else [bool(b) for b in bgr]
    if len(flags) != t_len:
        raise ValueError(f"{video_id}: {len(flags)} bgr flags for {t_len} frames")
    planes = _BUFFERS.empty((t_len, 3, ph, pw))  # [T, 3, ph, pw] uint8, padding zeroed by _augment_planar
    memo = {} if memo is None else memo
    for t, f in enumerate(frames):
        key = ("planes", int(frame_index[t]))
        done = memo.get(key)
        if done is not None and done.shape == planes[t].shape:
            planes[t] = done
        else:
            _augment_planar(f, params, planes[t], flags[t], memo)
            memo[key] = planes[t]
    image = _padded_view(planes, h, w).transpose(0, 2, 3, 1)  # [T, h, w, 3] RGB view of the planar buffer
    if annotations is None:
        return Sample(video_id, image, np.asarray(frame_index, np.int64), np.zeros(0, np.int64),
                      np.zeros(0, np.int64), np.zeros((0, t_len, h, w), bool),
                      np.zeros((t_len, h, w), bool), label_space.num_thing_classes, has_targets=False)
    per_id: dict[int, int] = {}  # id -> category of its first frame (as build_tubes)
    for t, ann in enumerate(annotations):
        if ann is None:
            continue
        shape = ann.index_shape if hasattr(ann, "coded") else ann.masks.shape[1:]
        if tuple(shape) != (h0, w0):
            raise ValueError(f"{video_id}: frame {t} mask is {shape[0]}x{shape[1]} but the frame is {h0}x{w0}")
        crowd = ann.iscrowd if ann.iscrowd is not None else np.zeros(len(ann.ids), bool)
        for i, c in zip(ann.ids[~crowd].tolist(), ann.category_ids[~crowd].tolist()):
            per_id.setdefault(int(i), int(c))
    ids = np.array(sorted(per_id), np.int64)
    rows, cols = _index_maps(h0, w0, params)
    coded: dict = {}
    if all(a is None or hasattr(a, "coded") for a in annotations):
        code, tube_codes, ign, present, first = _tubes_from_index_maps(
            annotations, ids, rows, cols, t_len, (h, w), (ph, pw), (h0, w0), first_frame_objects,
            _cv2_nearest(h0, w0, params))
        masks = ignore = None  # derived from the code map where they are read
        coded = dict(code=code, tube_codes=tube_codes, ignore_code=ign)
    else:
        masks, ignore, present, first = _tubes_from_masks(annotations, ids, rows, cols, t_len, (h, w), (ph, pw),
                                                          first_frame_objects)
    ids = ids[present]  # objects cropped away disappear
    # every object of the clip is checked against the label space, also those first_frame_objects drops
    labels = label_space.to_contiguous(np.array([per_id[i] for i in ids.tolist()], np.int64), video_id)
    if first_frame_objects:  # the tubes are those of first (within present)
        ids, labels = ids[first], labels[first]
        first = np.ones(len(ids), bool)
    return Sample(video_id, image, np.asarray(frame_index, np.int64), ids, labels, masks, ignore,
                  label_space.num_thing_classes, first_visible=first, **coded)


def _augment_planar(image: np.ndarray, p: AugmentParams, out: np.ndarray, bgr: bool, memo: dict) -> None:
    """[H, W, 3] uint8 (RGB, or BGR when ``bgr``) -> ``out`` [3, >= h', >= w'] uint8 RGB planes: the pixels of
    :func:`augment_image`, channels first, top-left h' x w', and 0 in the rest (the padding).

    The input is split into planes first (``cv2.split``, channel order reversed for BGR) and each plane is
    resized bilinearly straight into its place in ``out``: OpenCV's uint8 bilinear resize is bit-exact and
    treats every channel alike, so a plane resizes to the same values as that channel of the interleaved image
    (tests/data/test_pipeline_equivalence.py), and the split runs at the input size, out of cache, instead of
    over the larger output (0.80 against 1.35 ms a 640x853 frame). A crop resizes into a plane scratch first.
    The flip is ``cv2.flip`` of each plane in place (0.05 ms for three planes of 640x853 against 0.14 ms for
    the interleaved image). Scratch planes live in ``memo`` (one sample), on recycled memory."""
    (rh, rw), (y0, x0, ch, cw) = p.size, p.crop
    h0, w0 = image.shape[:2]
    dst = [out[c, :ch, :cw] for c in ((2, 1, 0) if bgr else (0, 1, 2))]  # the RGB plane of each input channel
    same = (h0, w0) == (rh, rw)
    cropped = (y0, x0, ch, cw) != (0, 0, rh, rw)
    if same:  # no resize: the crop view is split straight into the planes
        _split_into(image[y0:y0 + ch, x0:x0 + cw], dst)
    else:
        if "split" not in memo:
            memo["split"] = _BUFFERS.empty((3, h0, w0))
        planes = list(memo["split"])
        _split_into(image, planes)
        if cropped and "resized" not in memo:
            memo["resized"] = _BUFFERS.empty((rh, rw))
        for src, d in zip(planes, dst):
            target = memo["resized"] if cropped else d
            r = cv2.resize(src, (rw, rh), dst=target, interpolation=cv2.INTER_LINEAR)
            if cropped:
                d[...] = r[y0:y0 + ch, x0:x0 + cw]
            elif r.ctypes.data != d.ctypes.data:
                d[...] = r
    if p.flip:
        for d in dst:
            cv2.flip(d, 1, dst=d)
    out[:, :ch, cw:] = 0  # padding, while these rows are in cache (zeroing the strips of a cold buffer
    out[:, ch:] = 0  # afterwards costs a cache miss a row: 0.5 ms a sample)


def _split_into(image: np.ndarray, planes: list[np.ndarray]) -> None:
    """``planes[c][...] = image[..., c]`` by ``cv2.split`` (which reads a row-strided view as it is)."""
    got = cv2.split(image, planes)
    for g, m in zip(got, planes):
        if g.ctypes.data != m.ctypes.data:  # cv2 did not write into the planes (a layout it cannot take)
            m[...] = g


# ------------------------------------------------------------------------------------------ buffers


class _Buffers:
    """Recycled memory for the clip pipeline's big arrays (frames, tubes, ignore, code maps): a fresh buffer per
    clip costs a page fault per 4 KB on first write and a page the kernel zeroes (10-80 ms of system time a clip
    on the 2-core benchmark VM when frames were float32; issue #17), so buffers are kept and handed out again
    once nothing uses them.

    A buffer is in use while anything refers to it: NumPy collapses the ``base`` of every view (and view of a
    view) to the array that owns the memory, and ``torch.from_numpy`` keeps the array it was given (so its
    tensors and their views keep the buffer), so the buffer is free exactly when the pool's own reference is
    the only one (``sys.getrefcount``). Holds at most ``keep`` buffers and ``max_bytes`` in all; a request
    beyond that gets a plain new array. Requests take the smallest free buffer that fits. Thread-safe (Ray
    may build samples on several threads)."""

    def __init__(self, keep: int = 24, max_bytes: int = 768 << 20):
        self.keep, self.max_bytes = keep, max_bytes
        self.slots: list[np.ndarray] = []  # 1-D uint8 buffers
        self.lock = threading.Lock()

    def _free(self, i: int) -> bool:
        return sys.getrefcount(self.slots[i]) <= 2  # the list's reference + getrefcount's argument

    def empty(self, shape: tuple[int, ...], dtype: type = np.uint8) -> np.ndarray:
        """An uninitialised C-contiguous array of ``shape`` on recycled memory when some is free."""
        n = max(math.prod(shape) * np.dtype(dtype).itemsize, 1)
        with self.lock:
            free = [i for i in range(len(self.slots)) if self._free(i)]
            fits = [i for i in free if self.slots[i].size >= n]
            if fits:
                buf = self.slots[min(fits, key=lambda i: self.slots[i].size)]
            else:
                held = sum(b.size for b in self.slots)
                small = sorted(free, key=lambda i: self.slots[i].size)  # free buffers too small give way
                drop = []
                while small and (len(self.slots) - len(drop) >= self.keep or held + n > self.max_bytes):
                    j = small.pop(0)
                    drop.append(j)
                    held -= self.slots[j].size
                buf = np.empty(n, np.uint8)
                if len(self.slots) - len(drop) < self.keep and held + n <= self.max_bytes:
                    self.slots = [b for i, b in enumerate(self.slots) if i not in drop] + [buf]
            _PADDED.pop(id(buf), None)  # whatever layout it was registered with is gone
            return buf[:math.prod(shape) * np.dtype(dtype).itemsize].view(dtype).reshape(shape)


_BUFFERS = _Buffers()


# Buffers padded to /32 whose top-left views are Sample.frames / .masks / .ignore (see collate):
# id(owner of the memory) -> (weak reference to it, padded shape, dtype).
_PADDED: dict[int, tuple[weakref.ref, tuple[int, ...], np.dtype]] = {}
_PADDED_LOCK = threading.Lock()


def _padded_view(buf: np.ndarray, h: int, w: int) -> np.ndarray:
    """``buf[..., :h, :w]`` of a C-contiguous buffer whose padding is filled, remembered as such for collate."""
    owner = buf if buf.base is None else buf.base
    if not buf.flags.c_contiguous or owner.ctypes.data != buf.ctypes.data or not isinstance(owner, np.ndarray):
        return buf[..., :h, :w]  # not a layout collate can take as it is
    with _PADDED_LOCK:
        if len(_PADDED) > 512:  # drop entries of freed buffers
            for k in [k for k, v in _PADDED.items() if v[0]() is None]:
                del _PADDED[k]
        _PADDED[id(owner)] = (weakref.ref(owner), buf.shape, buf.dtype)
    return buf[..., :h, :w]


def padded_parts(a: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """A [..., h, w] view made by :func:`make_sample` -> (the C-contiguous padded buffer behind it, (h, w)), or
    (``a`` made contiguous, (h, w)) when it has none: the form a Ray Data row ships (one copy, into the object
    store, instead of a strided copy first) and :func:`adopt_padded` turns back into the view."""
    base = _padded_base(a)
    return (base if base is not None else np.ascontiguousarray(a)), (int(a.shape[-2]), int(a.shape[-1]))


def adopt_padded(buf: np.ndarray, h: int, w: int) -> np.ndarray:
    """Inverse of :func:`padded_parts`: ``buf[..., :h, :w]`` of a C-contiguous buffer whose padding is filled
    (e.g. a read-only array out of a Ray Data row), registered so that :func:`collate` takes ``buf`` as it is.
    The registry needs an owner array that views of ``buf`` collapse to: a flat array over ``buf``'s memory."""
    if not buf.flags.c_contiguous:
        raise ValueError(f"adopt_padded: the buffer must be C-contiguous, got strides {buf.strides}")
    if buf.size == 0:  # nothing to take as it is (and memoryview cannot cast an empty shape)
        return buf[..., :h, :w]
    flat = np.frombuffer(memoryview(buf).cast("B"), np.uint8)  # base: the memoryview; views of it point at flat
    return _padded_view(flat.view(buf.dtype).reshape(buf.shape), h, w)


def _padded_base(a: np.ndarray, ph: int | None = None, pw: int | None = None) -> np.ndarray | None:
    """The padded buffer behind ``a`` (made by make_sample, padding already False / True / 0) when it pads to
    (ph, pw) (any padded size when None); None otherwise."""
    owner = a.base
    if owner is None:
        return None
    entry = _PADDED.get(id(owner))
    if entry is None or entry[0]() is not owner:
        return None
    shape, dtype = entry[1], entry[2]
    if dtype != a.dtype or shape[:-2] != a.shape[:-2] or (ph is not None and shape[-2:] != (ph, pw)):
        return None
    n = math.prod(shape) * dtype.itemsize
    base = owner.reshape(-1).view(np.uint8)[:n].view(dtype).reshape(shape)
    if a.ctypes.data != base.ctypes.data or a.strides != base.strides:
        return None
    return base


def _tubes_from_index_maps(annotations, ids, rows, cols, t_len, size, padded, source_size, first_frame=False,
                           cv2_axes=None):
    """Index maps -> (code [T, h, w], tube codes [K'], ignore code, present [K] bool, first [K' of present]
    bool): the coded tubes (:class:`Sample`), code a view of a padded buffer whose padding is the ignore code;
    only the K' objects with pixels in the clip get a tube code (``first_frame``: only those with pixels in
    frame 0, which ``first`` marks).

    Per frame, the frame codes become clip codes at the *input* resolution (one cv2.LUT of the small map)
    and are then resized straight into the clip's code buffer, so nothing is looked up or allocated at the
    output size but the buffer itself. Which objects each frame holds is the decoder's ``present`` (or the
    input map's histogram) when the resize keeps every input pixel (no crop, no downscaling: the training
    case), else the resized codes' histogram. The tubes are one broadcast comparison of the kept codes with
    the code buffer, made where they are read (``Sample._derive``, ``Targets``; issue #17)."""
    (h, w), (ph, pw) = size, padded
    k = len(ids)
    dtype = np.uint8 if k + 1 < 256 else np.uint16 if k + 1 < 65536 else np.uint32
    ign = k + 1
    code = _BUFFERS.empty((t_len, ph, pw), dtype)  # clip codes: k + 1 = ids[k], 0 = nothing, K + 1 = ignore
    keeps_all = _keeps_every_pixel(rows, cols, source_size)
    seen = np.zeros((t_len, k + 2), bool)  # clip codes each frame holds (known where filled)
    known = np.zeros(t_len, bool)
    for t, ann in enumerate(annotations):
        if ann is None:  # unannotated: all ignore
            code[t] = ign
            known[t] = True
            continue
        k_t = len(ann.ids)
        lut = np.zeros(k_t + 2, dtype)  # frame code -> clip code
        crowd = ann.iscrowd if ann.iscrowd is not None else np.zeros(k_t, bool)
        lut[1:k_t + 1] = np.where(crowd, ign, np.searchsorted(ids, ann.ids) + 1)  # crowd pixels are ignored
        lut[k_t + 1] = ign
        _resize_nearest(ann.coded(lut), rows, cols, code[t, :h, :w], cv2_axes)
        code[t, :h, w:] = ign  # padding is ignored (filled while the rows are in cache)
        code[t, h:] = ign
        if keeps_all:
            has = getattr(ann, "present", None)
            if has is None:
                has = _histogram(ann.index, k_t + 2)[1:k_t + 1] > 0
            seen[t, lut[1:k_t + 1][has]] = True
            known[t] = True
    for t in np.flatnonzero(~known).tolist():  # pixels per clip code; cv2.calcHist 2.2 ms vs np.bincount 8.4 ms
        seen[t] = _histogram(code[t, :h, :w], k + 2) > 0
    present = seen[:, 1:k + 1].any(0)  # [K]
    first = seen[0, 1:k + 1][present]  # [K' of present]: visible in frame 0
    keep = (np.flatnonzero(present) + 1).astype(dtype)
    if first_frame:
        keep = keep[first]
    return _padded_view(code, h, w), keep, ign, present, first


def _keeps_every_pixel(rows: np.ndarray, cols: np.ndarray, source_size: tuple[int, int]) -> bool:
    """Whether the nearest-neighbour maps ``rows`` [h'] / ``cols`` [w'] sample every input row and column
    (then an object is in the output exactly when it is in the input). The maps are monotonic (reversed when
    flipped) and in range, so they hold every input index exactly when they hold as many distinct values:
    1 + the number of steps (no ``np.unique`` sort)."""
    def distinct(a: np.ndarray) -> int:
        return int(a.size > 0) + int(np.count_nonzero(a[1:] != a[:-1]))

    return distinct(rows) == source_size[0] and distinct(cols) == source_size[1]


def _resize_nearest(index: np.ndarray, rows: np.ndarray, cols: np.ndarray, out: np.ndarray,
                    cv2_axes: tuple[bool, bool, bool] | None = None) -> None:
    """``out[y, x] = index[rows[y], cols[x]]`` (the ``_index_maps`` geometry, flip included): columns first at
    the input height (the element gather), then whole rows copied straight into ``out``.

    ``cv2_axes`` = (rows, cols, flip) from :func:`_cv2_nearest`: where ``cv2.resize(INTER_NEAREST_EXACT)``
    samples exactly ``rows`` / ``cols`` (before the flip), that axis is resized by OpenCV instead (a whole
    640x853 map: 0.17 against 0.27 ms), then the result is flipped in place."""
    ok_r, ok_c, flip = cv2_axes if cv2_axes is not None and index.dtype in (np.uint8, np.uint16) else (0, 0, 0)
    if not (ok_r or ok_c):
        np.take(np.take(index, cols, axis=1), rows, axis=0, out=out, mode="clip")  # indices are in range
        return
    h, w = out.shape
    if ok_r and ok_c:
        src = index
    elif ok_c:  # OpenCV for the columns, a row gather after (into out, no flip: cols are unflipped here)
        np.take(cv2.resize(index, (w, index.shape[0]), interpolation=cv2.INTER_NEAREST_EXACT), rows, axis=0,
                out=out, mode="clip")
        src = None
    else:  # the column gather (flip included), then OpenCV for the rows (same width: an identity in x)
        src = np.take(index, cols, axis=1)
        flip = False
    if src is not None:
        r = cv2.resize(src, (w, h), dst=out, interpolation=cv2.INTER_NEAREST_EXACT)
        if r.ctypes.data != out.ctypes.data:
            out[...] = r
    if flip:
        cv2.flip(out, 1, dst=out)


@functools.lru_cache(maxsize=256)
def _cv2_nearest_matches(height: int, width: int, rh: int, rw: int) -> tuple[bool, bool]:
    """Whether OpenCV's ``INTER_NEAREST_EXACT`` resize of a (height, width) map to (rh, rw) picks exactly the
    source rows / columns of ``_index_maps`` (pixel centres, float64): read off the resize of two index
    ramps (its fixed-point arithmetic agrees for most sizes, not provably for all)."""
    if max(height, width) >= 1 << 16:
        return False, False
    rows, cols = _index_maps(height, width, AugmentParams((rh, rw), (0, 0, rh, rw), False))
    ramp_c = np.arange(width, dtype=np.uint16)[None]  # [1, W]
    ramp_r = np.ascontiguousarray(np.arange(height, dtype=np.uint16)[:, None])  # [H, 1]
    got_c = cv2.resize(ramp_c, (rw, 1), interpolation=cv2.INTER_NEAREST_EXACT).reshape(-1)
    got_r = cv2.resize(ramp_r, (1, rh), interpolation=cv2.INTER_NEAREST_EXACT).reshape(-1)
    return bool(np.array_equal(got_r, rows)), bool(np.array_equal(got_c, cols))


def _cv2_nearest(height: int, width: int, p: AugmentParams) -> tuple[bool, bool, bool] | None:
    """The ``cv2_axes`` argument of :func:`_resize_nearest` for ``p``: (rows, cols, flip) where cv2 gives the
    same map (no crop), else None."""
    if p.crop != (0, 0, *p.size):
        return None
    ok_r, ok_c = _cv2_nearest_matches(height, width, *p.size)
    return (ok_r, ok_c, p.flip) if ok_r or ok_c else None


def _histogram(code: np.ndarray, n: int) -> np.ndarray:
    if code.dtype == np.uint8:
        flat = code.reshape(-1, code.shape[-1]) if code.flags.c_contiguous else np.ascontiguousarray(code)
        if flat.ndim != 2:
            flat = flat.reshape(-1, code.shape[-1])
        return cv2.calcHist([flat], [0], None, [256], [0, 256]).reshape(-1)[:n].astype(np.int64)
    return np.bincount(code.reshape(-1), minlength=n)


def _tubes_from_masks(annotations, ids, rows, cols, t_len, size, padded, first_frame=False):
    """Per-frame (possibly overlapping) masks -> the same padded views, each frame resized on its own."""
    (h, w), (ph, pw) = size, padded
    masks = np.zeros((len(ids), t_len, ph, pw), bool)
    ignore = np.ones((t_len, ph, pw), bool)
    for t, ann in enumerate(annotations):
        if ann is None:
            continue
        crowd = ann.iscrowd if ann.iscrowd is not None else np.zeros(len(ann.ids), bool)
        ign = np.zeros(ann.masks.shape[1:], bool) if ann.ignore is None else ann.ignore
        if crowd.any():
            ign = ign | ann.masks[crowd].any(0)
        ignore[t, :h, :w] = ign[rows][:, cols]
        keep = ~crowd
        if keep.any():
            k = np.searchsorted(ids, ann.ids[keep])
            m = ann.masks[keep][:, rows][:, :, cols]  # [K_t, h, w]
            masks[k, t, :h, :w] |= m
    present = masks.any(axis=(1, 2, 3))
    first = masks[present, 0].any(axis=(1, 2))  # [K' of present]
    sel = np.flatnonzero(present)[first] if first_frame else present
    if first_frame or not present.all():
        masks = masks[sel]
    return _padded_view(masks, h, w), _padded_view(ignore, h, w), present, first


def exemplar_probabilities(kinds: Sequence[str], weights: Sequence[float] = (), where: str = "") -> np.ndarray:
    """[len(kinds)] probabilities of the training hint mix (``DataConfig.exemplar_kinds/exemplar_weights``);
    ``weights=()`` is uniform. A bad mix raises ValueError naming ``where`` and the reason."""
    bad = [k for k in kinds if k not in EXEMPLAR_KINDS]
    if bad or not kinds:
        raise ValueError(f"{where}: exemplar kinds must be a non-empty subset of {list(EXEMPLAR_KINDS)}, got {list(kinds)}")
    if not len(weights):
        return np.full(len(kinds), 1.0 / len(kinds))
    w = np.asarray(weights, np.float64)
    if w.shape != (len(kinds),) or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(f"{where}: exemplar weights {list(weights)} must be {len(kinds)} non-negative numbers "
                         f"with a positive sum, one per kind of {list(kinds)}")
    return w / w.sum()


def draw_exemplars(sample: Sample, rng: np.random.Generator, kinds: Sequence[str] = ("mask", "point"),
                   weights: Sequence[float] = ()) -> SampleExemplars:
    """EVS training hints from this clip's first frame: one per object visible there, its kind drawn from
    ``kinds`` with probabilities ``weights`` (uniform when empty); a point is a random pixel inside the mask,
    a box is the mask's tight box. Objects that only appear later in the clip get no hint; ``ids`` link hints
    to target tubes. Call it on the key and on the reference clip: each gets hints from its own first frame."""
    p = exemplar_probabilities(kinds, weights, sample.video_id)
    h, w = sample.frames.shape[1:3]
    k_all = len(sample.ids)
    if k_all == 0:
        return SampleExemplars.empty(h, w)
    ph, pw = pad_size([(h, w)])
    if sample.code is not None:  # coded tubes: frame-0 planes of the hinted objects only, from the code map
        code = _padded_base(sample.code, ph, pw)
        code0 = sample.code[0] if code is None else code[0]  # [h, w] or padded [ph, pw] (padding: ignore code)
        tube_codes = sample.tube_codes

        def first_plane(k: int, out: np.ndarray | None = None) -> np.ndarray:
            return np.equal(code0, tube_codes[k], out=out)

        padded = code is not None
    else:
        base = _padded_base(sample.masks, ph, pw)
        first = sample.masks[:, 0]  # [K, h, w] view

        def first_plane(k: int, out: np.ndarray | None = None) -> np.ndarray:
            src = base[k, 0] if out is not None else first[k]
            if out is None:
                return src
            out[...] = src
            return out

        padded = base is not None
    known = sample.first_visible
    if known is None or len(known) != k_all:
        if sample.code is not None:  # one histogram of the frame's codes, not a plane per tube
            hist = np.bincount(code0.reshape(-1), minlength=int(tube_codes.max()) + 1)
            known = hist[tube_codes] > 0
        else:
            known = sample.masks[:, 0].any(axis=(1, 2))
    vis = np.flatnonzero(known)  # [E] tubes visible in the first frame
    ids = sample.ids[vis]
    e = len(ids)
    # uniform mixes keep the plain integer draw (the random stream of older runs)
    pick = rng.integers(len(kinds), size=e) if not len(weights) else rng.choice(len(kinds), size=e, p=p)
    kind = np.array([EXEMPLAR_KINDS[kinds[int(i)]] for i in pick], np.int8)
    points = np.zeros((e, 2), np.float32)
    boxes = np.zeros((e, 4), np.float32)
    for j, k in enumerate(vis.tolist()):  # per object (E is small), each step vectorised over pixels
        if kind[j] in (EXEMPLAR_KINDS["point"], EXEMPLAR_KINDS["box"]):
            plane = np.ascontiguousarray(first_plane(k)[:h, :w])
            if kind[j] == EXEMPLAR_KINDS["point"]:
                points[j] = random_pixel(plane, rng)
            else:
                boxes[j] = tight_box(plane)
    is_mask = kind == EXEMPLAR_KINDS["mask"]
    # only mask hints carry their plane; the others are all-False
    if padded:  # padded first-frame planes: collate then takes the hint masks without a copy
        masks = _BUFFERS.empty((e, ph, pw), bool)  # recycled memory: every plane is written
        for j, k in enumerate(vis.tolist()):
            if is_mask[j]:
                first_plane(k, masks[j])
            else:
                masks[j] = False
        masks = _padded_view(masks, h, w)
    else:
        masks = np.zeros((e, h, w), bool)
        for j in np.flatnonzero(is_mask).tolist():
            masks[j] = first_plane(int(vis[j]))
    return SampleExemplars(kind, np.zeros(e, np.int64), points, boxes, masks, ids)


def random_pixel(mask: np.ndarray, rng: np.random.Generator) -> tuple[float, float]:
    """Centre (x, y) of a uniformly drawn pixel of a non-empty [h, w] bool mask: the same draw and the same
    pixel as ``ys, xs = np.nonzero(mask); i = rng.integers(len(ys))`` (row-major order), found from per-row
    counts instead of materialising every coordinate (np.nonzero was 2.7 ms a 640x853 mask, the top entry
    of the EVS profiles, issue #17; cv2.reduce row sums 0.01 ms)."""
    per_row = cv2.reduce(mask.view(np.uint8), 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).reshape(-1)  # [h]
    cum = np.cumsum(per_row)  # [h] pixels up to and including each row
    i = int(rng.integers(int(cum[-1])))
    y = int(np.searchsorted(cum, i, side="right"))  # the row holding the i-th pixel
    x = int(np.flatnonzero(mask[y])[i - (int(cum[y - 1]) if y else 0)])
    return x + 0.5, y + 0.5


def tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """(x1, y1, x2, y2) of a non-empty [h, w] bool mask, exclusive max (from its row and column projections)."""
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1


def keep_hinted(sample: Sample) -> Sample:
    """EVS: ``sample`` with only the target tubes of objects that have a hint in it (``sample.exemplars``).

    EVS queries are made from hints and matched to targets by exemplar id, so an object without a hint in a
    clip can never be matched there: as a target it would only inflate the mask-loss normaliser and the GT
    descriptor set, and it could not pair in TCL. Its pixels stay in the clip as background (no ``ignore``),
    which is what every other object's query must predict there anyway.
    """
    if sample.exemplars is None:
        raise ValueError(f"{sample.video_id}: keep_hinted needs sample.exemplars (draw them first)")
    keep = np.isin(sample.ids, sample.exemplars.ids)
    if keep.all():
        return sample
    first = sample.first_visible
    first = None if first is None or len(first) != len(keep) else first[keep]
    if sample.code is not None:  # coded: drop tube codes; the dropped objects' pixels read as background
        return dataclasses.replace(sample, ids=sample.ids[keep], labels=sample.labels[keep], masks=None,
                                   ignore=sample.__dict__.get("_ignore"), tube_codes=sample.tube_codes[keep],
                                   first_visible=first)
    h, w = sample.masks.shape[-2:]
    base = _padded_base(sample.masks, *pad_size([(h, w)]))
    masks = _padded_view(base[keep], h, w) if base is not None else sample.masks[keep]  # stays padded for collate
    return dataclasses.replace(sample, ids=sample.ids[keep], labels=sample.labels[keep], masks=masks,
                               first_visible=first)


def record_exemplars(exemplars: Sequence[Exemplar], clip_frame_index: np.ndarray, height: int, width: int,
                     params: AugmentParams, where: str = "") -> SampleExemplars:
    """A record's EVS hints that fall in this clip, moved into the augmented frame. Hints given in frames
    outside the clip are dropped (inference feeds them to the clip that holds their frame)."""
    h, w = params.out_size
    rows: list[tuple[int, int, np.ndarray, np.ndarray, np.ndarray, int]] = []
    for ex in exemplars:
        hit = np.flatnonzero(np.asarray(clip_frame_index) == ex.frame)
        if hit.size == 0:
            continue
        f = int(hit[0])
        if ex.kind == "mask":
            if ex.mask is None or ex.mask.shape != (height, width):
                raise ValueError(f"{where}: mask exemplar of track {ex.track_id} has shape "
                                 f"{None if ex.mask is None else ex.mask.shape}, expected ({height}, {width})")
            m = augment_masks(ex.mask.astype(bool), params)
            rows.append((EXEMPLAR_KINDS["mask"], f, np.zeros(2, np.float32), np.zeros(4, np.float32), m, ex.track_id))
        elif ex.kind == "point":
            if ex.point is None:
                raise ValueError(f"{where}: point exemplar of track {ex.track_id} has no point")
            pt = augment_points(np.array([ex.point]), height, width, params)[0].astype(np.float32)
            rows.append((EXEMPLAR_KINDS["point"], f, pt, np.zeros(4, np.float32), np.zeros((h, w), bool), ex.track_id))
        elif ex.kind == "box":
            if ex.box is None:
                raise ValueError(f"{where}: box exemplar of track {ex.track_id} has no box")
            x, y, bw, bh = ex.box
            c = augment_points(np.array([[x, y], [x + bw, y + bh]]), height, width, params)
            box = np.array([c[:, 0].min(), c[:, 1].min(), c[:, 0].max(), c[:, 1].max()], np.float32)
            rows.append((EXEMPLAR_KINDS["box"], f, np.zeros(2, np.float32), box, np.zeros((h, w), bool), ex.track_id))
        else:
            raise ValueError(f"{where}: unknown exemplar kind {ex.kind!r}")
    if not rows:
        return SampleExemplars.empty(h, w)
    k, fr, pt, bx, mk, ids = zip(*rows)
    return SampleExemplars(np.array(k, np.int8), np.array(fr, np.int64), np.stack(pt), np.stack(bx),
                           np.stack(mk), np.array(ids, np.int64))


# ------------------------------------------------------------------------------------------- collate


def pad_size(sizes: Sequence[tuple[int, int]], divisor: int = SIZE_DIVISIBILITY) -> tuple[int, int]:
    """Smallest (H, W) that holds every size and is a multiple of ``divisor``."""
    h = max(s[0] for s in sizes)
    w = max(s[1] for s in sizes)
    return -(-h // divisor) * divisor, -(-w // divisor) * divisor


def normalize(frames: torch.Tensor) -> torch.Tensor:
    """[..., 3, H, W] uint8/float RGB 0-255 -> float32 ImageNet-normalised."""
    mean = torch.tensor(PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
    return (frames.float() - mean) / std


def _frame_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialised uint8 tensor of ``shape`` on recycled memory (:class:`_Buffers`)."""
    return torch.from_numpy(_BUFFERS.empty(shape))


def _planar_into(out: torch.Tensor, frame: np.ndarray, planes: np.ndarray) -> None:
    """[h, w, 3] uint8 RGB -> ``out`` [3, h, w] uint8 (channels first). ``cv2.split`` deinterleaves into
    ``planes`` (uint8 [3, >= h, >= w] scratch; a permuted copy_ of 3x736x981 took 28 ms against 8 ms)."""
    h, w = frame.shape[:2]
    mv = [planes[c, :h, :w] for c in range(3)]
    got = cv2.split(np.ascontiguousarray(frame), mv)
    if any(g.ctypes.data != m.ctypes.data for g, m in zip(got, mv)):  # cv2 did not write into the scratch
        for g, m in zip(got, mv):
            m[...] = g
    out.copy_(torch.from_numpy(planes)[:, :h, :w])


def _planar_frames(frames: np.ndarray) -> np.ndarray | None:
    """The padded [T, 3, ph, pw] buffer behind ``Sample.frames`` when make_sample wrote it (padding zeroed)."""
    return _padded_base(frames.transpose(0, 3, 1, 2)) if frames.ndim == 4 else None


def _tensor(a: np.ndarray) -> torch.Tensor:
    """Zero-copy view of an array we only read from (Ray hands out read-only arrays; torch warns on those)."""
    if a.flags.writeable:
        return torch.from_numpy(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(a)


def _pad_bool(a: np.ndarray, ph: int, pw: int, fill: bool) -> torch.Tensor:
    """[..., h, w] bool -> [..., ph, pw] tensor padded with ``fill``: make_sample's padded buffer itself when
    it has that size (no copy), else one allocation, the padding strips filled and the valid part copied."""
    base = _padded_base(a, ph, pw)
    if base is not None:
        return _tensor(base)
    h, w = a.shape[-2:]
    out = torch.empty(*a.shape[:-2], ph, pw, dtype=torch.bool)
    out[..., h:, :] = fill
    out[..., :h, w:] = fill
    out[..., :h, :w] = _tensor(np.ascontiguousarray(a))
    return out


def _pad_code(code: np.ndarray, ph: int, pw: int, fill: int) -> torch.Tensor:
    """[T, h, w] code map -> [T, ph, pw] tensor padded with the ignore code ``fill``: make_sample's padded
    buffer itself when it has that size. Codes wider than uint8 become int32 (torch compares no uint16)."""
    base = _padded_base(code, ph, pw)
    if base is not None and code.dtype == np.uint8:
        return _tensor(base)
    t, h, w = code.shape
    dtype = np.uint8 if code.dtype == np.uint8 else np.int32
    out = np.empty((t, ph, pw), dtype)
    out[:, h:, :] = fill
    out[:, :h, w:] = fill
    out[:, :h, :w] = code
    return torch.from_numpy(out)


def collate(samples: Sequence[Sample]) -> Clip:
    """B samples -> one :class:`Clip`, padded to a common H×W (multiples of 32) at the bottom/right.

    ``image_sizes`` holds each sample's valid (h, w); ``frames`` are uint8 RGB (``Clip.float_frames``
    normalises them and zeroes the padding); padded pixels are 0 in ``frames``, False in masks and True in
    ``ignore``. Samples with references give ``Clip.reference`` (all or none must have one).
    Only the padding strips are filled (``torch.zeros`` of the whole batch plus the copy were 15% of the
    clip pipeline, issue #17), and masks made by :func:`make_sample` at this padded size are used as they are.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    t_len = samples[0].frames.shape[0]
    for s in samples:
        if s.frames.shape[0] != t_len:
            raise ValueError(f"{s.video_id}: clip has {s.frames.shape[0]} frames, the batch has {t_len}")
    sizes = [s.frames.shape[1:3] for s in samples]
    ph, pw = pad_size(sizes)
    b = len(samples)
    planar = [_planar_frames(s.frames) for s in samples]
    if b == 1 and planar[0] is not None and planar[0].shape[-2:] == (ph, pw):
        frames = _tensor(planar[0])[None]  # make_sample's padded planes as they are
    else:
        frames = _frame_buffer((b, t_len, 3, ph, pw))
    targets: list[Targets] = []
    exemplars: list[ClipExemplars] = []
    planes = None  # split scratch, for frames make_sample did not write planar
    for i, s in enumerate(samples):
        h, w = s.frames.shape[1:3]
        src = planar[i]
        if b > 1 or src is None or src.shape[-2:] != (ph, pw):
            frames[i, :, :, h:, :] = 0  # padding (Clip.float_frames makes it 0 after normalisation too)
            frames[i, :, :, :h, w:] = 0
            if src is not None:  # planar already: row copies
                frames[i, :, :, :h, :w].copy_(_tensor(src[..., :h, :w]))
            else:
                if planes is None:
                    planes = np.empty((3, max(sz[0] for sz in sizes), max(sz[1] for sz in sizes)), np.uint8)
                for t in range(t_len):
                    _planar_into(frames[i, t, :, :h, :w], s.frames[t], planes)
        labels = torch.from_numpy(s.labels)
        if s.code is not None:  # coded tubes stay coded: the model's device derives the planes (Targets)
            targets.append(Targets(None, labels, torch.from_numpy(s.ids), labels < s.num_thing_classes,
                                   code=_pad_code(s.code, ph, pw, s.ignore_code),
                                   tube_codes=torch.from_numpy(s.tube_codes.astype(np.int64)),
                                   ignore_code=int(s.ignore_code)))
        else:
            masks = _pad_bool(s.masks, ph, pw, False)
            ignore = _pad_bool(s.ignore, ph, pw, True)  # padding is ignored
            targets.append(Targets(masks=masks, labels=labels, ids=torch.from_numpy(s.ids),
                                   isthing=labels < s.num_thing_classes, ignore=ignore))
        if s.exemplars is not None:
            e = s.exemplars
            em = _pad_bool(e.masks, ph, pw, False)
            exemplars.append(ClipExemplars(kind=[KIND_NAMES[int(k)] for k in e.kind],
                                           frame=torch.from_numpy(e.frame), points=torch.from_numpy(e.points),
                                           boxes=torch.from_numpy(e.boxes), masks=em, ids=torch.from_numpy(e.ids)))
    if exemplars and len(exemplars) != b:
        raise ValueError("either every sample of a batch has exemplars or none has")
    refs = [s.reference for s in samples]
    if any(r is not None for r in refs) and not all(r is not None for r in refs):
        raise ValueError("either every sample of a batch has a reference clip or none has")
    return Clip(
        frames=frames,  # [B, T, 3, H, W] uint8
        image_sizes=torch.tensor([list(sz) for sz in sizes], dtype=torch.int64),  # [B, 2]
        frame_index=torch.from_numpy(np.stack([s.frame_index for s in samples])),  # [B, T]
        video_ids=[s.video_id for s in samples],
        targets=targets if all(s.has_targets for s in samples) else None,
        exemplars=exemplars or None,
        reference=collate(refs) if refs[0] is not None else None,  # type: ignore[arg-type]
    )
