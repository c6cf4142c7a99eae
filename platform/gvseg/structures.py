"""Typed records and batches shared by data, model, losses, inference and writers.

Data side (NumPy, CPU, picklable so Ray Data can ship them):
  * ``Category``        one dataset class, with its isthing flag.
  * ``FrameAnnotation`` one frame's segments as a stack of binary masks (overlaps allowed, as in YTVIS).
  * ``Exemplar``        an EVS hint: point, box or mask of one track in one frame.
  * ``VideoRecord``     one video: sorted frame paths plus how to load each frame's annotation. Nothing
                        heavy is decoded until asked (``gvseg.data.formats.load_frame/load_annotation``).

Model side (torch):
  * ``Targets``    one clip's ground truth as tubes.
  * ``Clip``       a batch of B clips of T frames, the input to ``GvSeg.forward``.
  * ``QueryMeta``  what each query may stand for (thing / stuff class / exemplar id): the gate that every
                   matching (training) and the class choice of post-processing (inference) obey.

Prediction side (NumPy, CPU; what inference emits and writers, baselines and metrics read):
  * ``Segment``          one predicted segment of one frame (track id, class, score, area; VIS: RLE).
  * ``FramePrediction``  one frame's result: segments plus the id / class maps of the task.

Shapes use B = clips in the batch, T = frames in a clip, K = objects, H×W = padded frame size.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

if TYPE_CHECKING:
    from gvseg.config import PostprocessConfig


@dataclass(frozen=True)
class Category:
    id: int  # the dataset's own id (VIPSeg 0..123, YTVIS 1..40, KITTI trainId, ...)
    name: str
    isthing: bool
    color: tuple[int, int, int] | None = None


@dataclass
class FrameAnnotation:
    """Ground truth of one frame. K may be 0 (no objects)."""

    ids: np.ndarray  # [K] int64, track ids unique within the video
    category_ids: np.ndarray  # [K] int64, dataset category ids (see VideoRecord.categories)
    masks: np.ndarray  # [K, H, W] bool
    iscrowd: np.ndarray | None = None  # [K] bool
    ignore: np.ndarray | None = None  # [H, W] bool: void pixels, excluded from losses and metrics

    @staticmethod
    def empty(height: int, width: int) -> FrameAnnotation:
        return FrameAnnotation(
            ids=np.zeros(0, np.int64),
            category_ids=np.zeros(0, np.int64),
            masks=np.zeros((0, height, width), bool),
        )


@dataclass
class Exemplar:
    """An EVS hint for one track, given in frame ``frame`` (an index into VideoRecord.frame_paths)."""

    track_id: int
    frame: int
    kind: Literal["point", "box", "mask"]
    point: tuple[float, float] | None = None  # (x, y) pixels
    box: tuple[float, float, float, float] | None = None  # (x, y, w, h) pixels
    mask: np.ndarray | None = None  # [H, W] bool
    # Readers leave ``mask`` None and keep a picklable handle here (("png", path, object_id) or ("rle", rle));
    # ``gvseg.data.formats.load_exemplars(record)`` decodes it, so records of big datasets stay small.
    source: Any = None


@dataclass
class VideoRecord:
    """One video of a dataset, in the dataset's own terms.

    ``annotations[t]`` is a format-specific, picklable handle (a PNG path, RLE dicts, ...) that
    ``gvseg.data.formats.load_annotation(record, t)`` decodes, or None where frame t is not annotated.
    """

    video_id: str
    format: str  # the reader that made it, e.g. "vipseg"
    frame_paths: list[str]  # sorted, never computed
    height: int
    width: int
    categories: list[Category]
    annotations: list[Any] = field(default_factory=list)  # [T] handles or None
    exemplars: list[Exemplar] = field(default_factory=list)
    video_path: str = ""  # set when frames come from a video file (mp4/avi) rather than images
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frame_paths)

    @property
    def frame_names(self) -> list[str]:
        return [p.rsplit("/", 1)[-1].rsplit(".", 1)[0] for p in self.frame_paths]


@dataclass
class Targets:
    """Ground truth of one clip as K tubes over its T frames (absent frames are all-False)."""

    masks: torch.Tensor  # [K, T, H, W] bool
    labels: torch.Tensor  # [K] int64, contiguous class index (things first; see ModelConfig)
    ids: torch.Tensor  # [K] int64, track ids unique within the video
    isthing: torch.Tensor  # [K] bool
    ignore: torch.Tensor | None = None  # [T, H, W] bool void pixels

    def to(self, device: torch.device | str) -> Targets:
        return Targets(
            masks=self.masks.to(device, non_blocking=True),
            labels=self.labels.to(device, non_blocking=True),
            ids=self.ids.to(device, non_blocking=True),
            isthing=self.isthing.to(device, non_blocking=True),
            ignore=None if self.ignore is None else self.ignore.to(device, non_blocking=True),
        )


@dataclass
class ClipExemplars:
    """EVS hints for one clip: K objects, each given by a point, a box or a mask in some frame of the clip."""

    kind: list[str]  # [K] "point" | "box" | "mask"
    frame: torch.Tensor  # [K] int64, frame index within the clip
    points: torch.Tensor  # [K, 2] float (x, y) pixels; unused rows are 0
    boxes: torch.Tensor  # [K, 4] float (x1, y1, x2, y2) pixels; unused rows are 0
    masks: torch.Tensor  # [K, H, W] bool; unused rows are all-False
    ids: torch.Tensor  # [K] int64 track ids they stand for


# Query kinds (method.md "Matching is gated by query type"; paper §3.1 VPS = VIS grid queries for things plus
# VSS class-bank queries for stuff). A query of kind ANY may take any target (plain learned queries, the
# Table 4a baseline); THING only thing targets; STUFF only stuff targets of its ``query_class`` (or any stuff
# target when it has none); EXEMPLAR (EVS) only the track its hint was given for (``query_ids``; padding
# queries have id -1 and take nothing).
QUERY_ANY, QUERY_THING, QUERY_STUFF, QUERY_EXEMPLAR = 0, 1, 2, 3


@dataclass
class QueryMeta:
    """The kind of each of a batch's Q queries. ``query_ids`` (EVS) ties a query to one track id."""

    kind: torch.Tensor  # [Q] int64, QUERY_ANY / QUERY_THING / QUERY_STUFF / QUERY_EXEMPLAR
    query_class: torch.Tensor  # [Q] int64, the class of a class-bank query, -1 otherwise
    query_ids: torch.Tensor  # [B, Q] int64, EVS track id of each exemplar query, -1 otherwise / padding

    @property
    def is_stuff(self) -> torch.Tensor:
        """[Q] bool: stuff / class queries (no SPA injection, class-identity association; Table 4d)."""
        return self.kind == QUERY_STUFF

    def allowed(self, b: int, targets: Targets) -> torch.Tensor:
        """[Q, K] bool: which (query, target) pairs of clip ``b`` may be matched."""
        dev = self.kind.device
        thing = targets.isthing.to(dev).bool()[None]  # [1, K]
        labels = targets.labels.to(dev)[None]  # [1, K]
        kind, cls = self.kind[:, None], self.query_class[:, None]  # [Q, 1]
        stuff_ok = ~thing & ((cls < 0) | (cls == labels))
        same_id = self.query_ids[b].to(dev)[:, None] == targets.ids.to(dev)[None]  # [Q, K]
        ok = torch.where(kind == QUERY_THING, thing, torch.ones_like(same_id))
        ok = torch.where(kind == QUERY_STUFF, stuff_ok, ok)
        return torch.where(kind == QUERY_EXEMPLAR, same_id, ok)  # [Q, K]; EVS: a query is its hint's track (Eq. 7)


PIXEL_MEAN = (123.675, 116.28, 103.53)  # ImageNet, RGB, 0-255 scale (detectron2 / Mask2Former)
PIXEL_STD = (58.395, 57.12, 57.375)
_SCALE = 1.0 / torch.tensor(PIXEL_STD).view(3, 1, 1)  # [3, 1, 1] float32
_SHIFT = -torch.tensor(PIXEL_MEAN).view(3, 1, 1) * _SCALE


@dataclass
class Clip:
    """A batch of B clips, each T frames, padded to a common H×W.

    ``frames`` are either raw uint8 RGB (what ``collate`` gives: a quarter of the bytes to build, ship and move
    to the device) or float32 already ImageNet-normalised with 0 in the padding (what callers that build clips
    by hand may give). The model reads :meth:`float_frames`, which normalises uint8 frames on their own device,
    as Mask2Former's ``preprocess_image`` does (issue #17)."""

    frames: torch.Tensor  # [B, T, 3, H, W] uint8 RGB 0-255, or float normalised
    image_sizes: torch.Tensor  # [B, 2] int64 (h, w) of the valid, unpadded canvas
    frame_index: torch.Tensor  # [B, T] int64, position of each frame in its video
    video_ids: list[str]  # [B]
    targets: list[Targets] | None = None  # [B] during training / eval
    exemplars: list[ClipExemplars] | None = None  # [B] for EVS
    reference: Clip | None = None  # a second clip from the same videos, for TCL (Eq. 10)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        b, t, _, h, w = self.frames.shape
        return b, t, h, w

    def float_frames(self) -> torch.Tensor:
        """[B, T, 3, H, W] float32 ImageNet-normalised, 0 outside each clip's ``image_sizes`` (Mask2Former's zero
        padding after normalisation). uint8 frames: x * (1/std) - mean/std in float32, the same ops (so the
        same bits) as the CPU normalisation this replaced; float frames are returned as they are."""
        if self.frames.dtype != torch.uint8:
            return self.frames
        dev = self.frames.device
        x = self.frames.float().mul_(_SCALE.to(dev)).add_(_SHIFT.to(dev))  # [B, T, 3, H, W]
        h, w = x.shape[-2:]
        sizes = self.image_sizes.to(dev)
        valid = (torch.arange(h, device=dev)[None, :, None] < sizes[:, 0, None, None]) \
            & (torch.arange(w, device=dev)[None, None, :] < sizes[:, 1, None, None])  # [B, H, W]
        return x.masked_fill_(~valid[:, None, None], 0.0)

    def to(self, device: torch.device | str) -> Clip:
        return Clip(
            frames=self.frames.to(device, non_blocking=True),
            image_sizes=self.image_sizes.to(device),
            frame_index=self.frame_index.to(device),
            video_ids=self.video_ids,
            targets=None if self.targets is None else [t.to(device) for t in self.targets],
            exemplars=None
            if self.exemplars is None
            else [
                ClipExemplars(e.kind, e.frame.to(device), e.points.to(device), e.boxes.to(device),
                              e.masks.to(device), e.ids.to(device))
                for e in self.exemplars
            ],
            reference=None if self.reference is None else self.reference.to(device),
        )


@dataclass
class SyntheticVideo:
    """An in-memory video from ``gvseg.data.synthetic``: what the format writers serialise byte-exact.

    Segments never overlap, so one id map per frame holds them all (0 = unlabelled). Stuff classes get
    one segment id each; every thing instance gets its own id, stable over the video.
    """

    video_id: str
    frames: list[np.ndarray]  # [T] uint8 [H, W, 3] RGB
    id_maps: list[np.ndarray]  # [T] int64 [H, W] segment ids, 0 = unlabelled
    segment_category: dict[int, int]  # segment id -> Category.id
    categories: list[Category]


# ---------------------------------------------------------------------------------- predictions
# What inference emits per frame (``gvseg.video.stream.predict_video``) and every writer, baseline and metric
# adapter reads.


@dataclass
class Segment:
    id: int  # track id (VIS/VPS/EVS) or class + 1 (VSS)
    label: int  # contiguous class index (EVS: the query's best class)
    score: float  # VIS: the clip's best class probability; VPS: the segment's class score
    isthing: bool
    area: int
    rle: dict | None = None  # VIS only: COCO RLE {"size": [H, W], "counts": str}
    # VIS only, for the video-level (track, class) selection (postprocess.vis_topk):
    class_probs: np.ndarray | None = None  # [C] float32 the clip's gated class probabilities (no-object excluded)
    mask_score: float | None = None  # mean sigmoid inside this frame's mask (Mask2Former instance_inference)


@dataclass
class FramePrediction:
    video_id: str
    frame_index: int  # position in the video
    height: int
    width: int
    task: str
    segments: list[Segment] = field(default_factory=list)
    id_map: np.ndarray | None = None  # [H, W] int32, 0 = void / background
    semantic: np.ndarray | None = None  # [H, W] int32, -1 = void
    postprocess: PostprocessConfig | None = None  # VIS: the rules for the video-level selection
