"""Typed records and batches shared by data, model, losses, inference and writers.

Data side (NumPy, CPU, picklable so Ray Data can ship them):
  * ``Category``        one dataset class, with its isthing flag.
  * ``FrameAnnotation`` one frame's segments as a stack of binary masks (overlaps allowed, as in YTVIS).
  * ``Exemplar``        an EVS hint: point, box or mask of one track in one frame.
  * ``VideoRecord``     one video: sorted frame paths plus how to load each frame's annotation. Nothing
                        heavy is decoded until asked (``gvseg.data.formats.load_frame/load_annotation``).

Model side (torch):
  * ``Targets``    one clip's ground truth as tubes (given, or coded: one code map the tubes are derived from).
  * ``Clip``       a batch of B clips of T frames, the input to ``GvSeg.forward``.
  * ``QueryMeta``  what each query may stand for (thing / stuff class / exemplar id): the gate that every
                   matching (training) and the class choice of post-processing (inference) obey.

Prediction side (NumPy, CPU; what inference emits and writers, baselines and metrics read):
  * ``Segment``          one predicted segment of one frame (track id, class, score, area; VIS: RLE).
  * ``FramePrediction``  one frame's result: segments plus the id / class maps of the task.

Shapes use B = clips in the batch, T = frames in a clip, K = objects, H×W = padded frame size.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field
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


class Derived:
    """A dataclass field that is stored as given or, when given None, derived from the record's other fields
    on first read (``owner._derive(name)``) and kept. The clip pipeline hands tubes over as one code map
    (issue #17): the K x T x H x W planes are written only where they are read, on the consumer's device.

    The dataclass sees a descriptor-typed field (Python's documented protocol): ``Derived()`` has no default,
    ``Derived(None)`` defaults to None."""

    def __init__(self, default: Any = MISSING):
        self.default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self.name, self.slot = name, "_" + name

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        if obj is None:  # class access: the dataclass asks for the default
            if self.default is MISSING:
                raise AttributeError(self.name)
            return self.default
        value = obj.__dict__.get(self.slot)
        if value is None:
            value = obj._derive(self.name)
            if value is not None:
                obj.__dict__[self.slot] = value
        return value

    def __set__(self, obj: Any, value: Any) -> None:
        obj.__dict__[self.slot] = value


@dataclass
class Targets:
    """Ground truth of one clip as K tubes over its T frames (absent frames are all-False).

    Either ``masks`` is given, or it is None and the tubes are coded: ``code`` [T, H, W] holds one code per
    pixel, tube k is ``code == tube_codes[k]`` and void pixels are ``code == ignore_code``. ``masks`` and
    ``ignore`` are then derived on first read, on the device ``code`` is on (what :func:`collate` makes for
    label-map formats; :meth:`to` moves the code map, not the planes)."""

    masks: torch.Tensor = Derived()  # [K, T, H, W] bool
    labels: torch.Tensor  # [K] int64, contiguous class index (things first; see ModelConfig)
    ids: torch.Tensor  # [K] int64, track ids unique within the video
    isthing: torch.Tensor  # [K] bool
    ignore: torch.Tensor | None = Derived(None)  # [T, H, W] bool void pixels
    code: torch.Tensor | None = None  # [T, H, W] uint8 / int32 pixel codes (coded tubes)
    tube_codes: torch.Tensor | None = None  # [K] the code of each tube
    ignore_code: int = -1  # the code of void pixels (padding included)

    def __post_init__(self) -> None:
        if self.__dict__.get("_masks") is None and (self.code is None or self.tube_codes is None):
            raise TypeError("Targets needs masks, or code and tube_codes")
        # Two tubes with one code would share their pixels (the coded descriptor would give one of them all of
        # them). Checked where targets are made, on the CPU (collate); to() copies checked targets, no sync.
        if self.tube_codes is not None and self.tube_codes.device.type == "cpu" and \
                self.tube_codes.unique().numel() != self.tube_codes.numel():
            raise ValueError(f"Targets: tube codes must be unique, got {self.tube_codes.tolist()}")

    @property
    def coded(self) -> bool:
        """Whether the tubes are still only a code map (``masks`` not derived yet)."""
        return self.code is not None and self.__dict__.get("_masks") is None

    @property
    def shape(self) -> tuple[int, ...]:
        """(K, T, H, W) of the tubes, without deriving them."""
        if self.coded:
            return (int(self.tube_codes.numel()), *self.code.shape)
        return tuple(self.masks.shape)

    def frame_masks(self, f: int) -> torch.Tensor:
        """[K, H, W] bool: every tube in frame ``f`` (coded: that frame's planes only)."""
        if self.coded:
            return self.code[f][None] == self.tube_codes.to(self.code.device, self.code.dtype)[:, None, None]
        return self.masks[:, f]

    def masks_at(self, index: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Tube values at linear pixel indices (y * W + x; nearest lookup). ``index`` [T, P] is shared by every
        tube (-> [K, T, P] bool); [n, T, P] gives each of the tubes ``rows`` [n] its own points (-> [n, T, P]).
        Coded targets look the codes up and compare: the planes are never written."""
        if self.coded:
            flat = self.code.flatten(-2)  # [T, H*W]
            idx = index.to(flat.device)
            codes = self.tube_codes.to(flat.device, flat.dtype)
            codes = codes if rows is None else codes[rows.to(flat.device)]  # [n]
            if idx.dim() == 2:
                return (flat.gather(-1, idx)[None] == codes[:, None, None]).to(index.device)
            got = flat[None].expand(idx.shape[0], -1, -1).gather(-1, idx)  # [n, T, P]
            return (got == codes[:, None, None]).to(index.device)
        masks = self.masks if rows is None else self.masks[rows.to(self.masks.device)]
        flat = masks.flatten(-2)  # [n, T, H*W]
        idx = index.to(flat.device)
        idx = idx[None].expand(flat.shape[0], -1, -1) if idx.dim() == 2 else idx
        return flat.gather(-1, idx).to(index.device)

    def ignore_at(self, index: torch.Tensor) -> torch.Tensor | None:
        """``ignore`` at linear pixel indices [..., T, P] -> [..., T, P] bool; None without void pixels."""
        if self.coded:
            flat = self.code.flatten(-2)  # [T, H*W]
        elif self.ignore is None:
            return None
        else:
            flat = self.ignore.flatten(-2)
        idx = index.to(flat.device)
        lead = idx.shape[:-2]
        got = flat.expand(*lead, *flat.shape).gather(-1, idx)
        return (got == self.ignore_code if self.coded else got).to(index.device)

    def _derive(self, name: str) -> torch.Tensor | None:
        if self.code is None:
            return None
        if name == "masks":  # [K, T, H, W]: one broadcast comparison
            return self.code[None] == self.tube_codes.to(self.code.device, self.code.dtype)[:, None, None, None]
        return self.code == self.ignore_code  # ignore [T, H, W]

    def to(self, device: torch.device | str) -> Targets:
        if self.coded:
            return Targets(None, self.labels.to(device, non_blocking=True), self.ids.to(device, non_blocking=True),
                           self.isthing.to(device, non_blocking=True), None,
                           code=self.code.to(device, non_blocking=True),
                           tube_codes=self.tube_codes.to(device, non_blocking=True), ignore_code=self.ignore_code)
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
