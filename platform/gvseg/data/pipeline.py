"""The plain (no Ray) data pipeline: records -> samples -> typed :class:`Clip` batches.

Used by ``--local`` runs, tests, and the ``torch.utils.data.DataLoader`` baseline; the Ray Data pipeline
(``gvseg.runtime.ray_data``) calls the same :func:`load_sample`, so both produce identical samples.

Contract:
  * :func:`build_records` reads one split with ``gvseg.data.formats.read_dataset`` (generating the
    synthetic set first when ``cfg.synthetic`` and the root is missing). An empty split raises ValueError.
  * :func:`shard_videos` gives each rank a **disjoint** set of videos per epoch: a permutation seeded by
    (seed, epoch), cut into ``world_size`` equal blocks; the ``n % world_size`` left-over videos sit that
    epoch out (a different few each epoch), so every rank runs the same number of steps (DDP needs it).
  * EVS (``cfg.exemplar_kinds``): the key clip and the reference clip each get hints drawn from their own first
    frame (same track ids in both), and each clip's targets keep only the objects hinted in it.
  * Randomness of one sample is keyed by (seed, epoch, video index, draw k) only: the same sample comes out
    whatever the rank, the world size, the loader (plain / DataLoader / Ray) or the worker that made it.
  * :func:`iterate_batches` yields ``ceil(n_rank * clips_per_video / batch_size)`` training batches (the
    last one may be smaller). With ``train=False`` it walks every rank's video in order, in consecutive
    clips of T frames (``eval_clips``; the last clip repeats the last frame), resized for testing, without
    reference clips.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from gvseg.config import DataConfig
from gvseg.data.clips import eval_clips, sample_clip
from gvseg.data.transforms import (
    LabelSpace,
    Sample,
    collate,
    draw_exemplars,
    keep_hinted,
    make_sample,
    record_exemplars,
    sample_augment,
    test_params,
)
from gvseg.structures import Clip, FrameAnnotation, VideoRecord


def build_records(cfg: DataConfig, split: str, *, progress: bool = False) -> list[VideoRecord]:
    """All videos of ``split`` (``cfg.max_videos`` > 0 keeps the first N)."""
    from gvseg.data import formats  # late: the readers are heavy and optional for pure-array users

    if not cfg.root:
        raise ValueError(f"data.root is empty; set it to the {cfg.format} dataset directory")
    root = Path(cfg.root)
    if cfg.synthetic:
        _ensure_synthetic(cfg, root, progress)
    records, errors = formats.read_dataset(cfg.format, str(root), split, on_error=cfg.on_error, progress=progress)
    if errors:
        warnings.warn(f"{root} [{split}]: skipped {len(errors)} bad videos, first: {errors[0]}", stacklevel=2)
    if cfg.max_videos > 0:
        records = records[: cfg.max_videos]
    if not records:
        raise ValueError(f"{root}: split {split!r} of format {cfg.format!r} has no videos")
    return list(records)


SYNTH_STAMP = ".gvseg_synth.json"  # what a generated set was generated with


def _ensure_synthetic(cfg: DataConfig, root: Path, progress: bool) -> None:
    """Generate ``cfg.synth`` into ``root`` if it is missing or empty, or regenerate it when it is a set this
    generator made with other settings (its stamp differs: e.g. a recipe's label space changed). A non-empty
    folder without a stamp is somebody's data (or a mistyped root): it is refused, never written to or read as
    the synthetic set. The path written to is printed, so a typo shows."""
    import json
    import shutil
    import sys

    from gvseg.config import to_dict
    from gvseg.data.errors import DataError
    from gvseg.data.formats._common import missing_reason
    from gvseg.data.synthetic import synth_dataset

    want = {"format": cfg.format, **to_dict(cfg.synth)}
    stamp = root / SYNTH_STAMP
    if root.is_symlink() and not root.exists():
        raise DataError(root, f"data.root {missing_reason(root)}")
    if root.exists() and not root.is_dir():
        raise DataError(root, "data.root is a file, not a folder")
    if root.exists() and any(root.iterdir()):
        if not stamp.is_file():
            raise DataError(root, f"data.synthetic=true but this folder is not empty and has no {SYNTH_STAMP} "
                                  "stamp (not a set gvseg generated): refusing to write into it; point data.root "
                                  "at a new folder, or set data.synthetic=false to read it as a dataset")
        try:
            if json.loads(stamp.read_text()) == want:
                return
        except (OSError, ValueError):
            pass
        warnings.warn(f"{root}: a synthetic set made with other settings; regenerating it", stacklevel=3)
        shutil.rmtree(root)
    print(f"gvseg: writing a synthetic {cfg.format} set to {root.resolve()}", file=sys.stderr)
    root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({**want, "complete": False}))  # a crash mid-write leaves a set a rerun redoes
    s = cfg.synth
    synth_dataset(cfg.format, root, videos=s.videos, frames=s.frames, height=s.height, width=s.width,
                  seed=s.seed, lookalike=s.lookalike, val_fraction=s.val_fraction,
                  thing_classes=s.thing_classes, stuff_classes=s.stuff_classes, progress=progress)
    stamp.write_text(json.dumps(want))


def label_space_for(records: Sequence[VideoRecord]) -> LabelSpace:
    """Things-first label space from the records' categories (all records of a dataset share them)."""
    if not records:
        raise ValueError("no records to take categories from")
    return LabelSpace.from_categories(records[0].categories)


def check_label_space(space: LabelSpace, num_classes: int, num_thing_classes: int, where: str) -> None:
    """The model's class head must be the data's label space; a mismatch silently trains wrong labels."""
    if (space.num_classes, space.num_thing_classes) != (num_classes, num_thing_classes):
        raise ValueError(f"{where}: the dataset has {space.num_classes} classes ({space.num_thing_classes} things) "
                         f"but the model has model.num_classes={num_classes}, model.num_thing_classes="
                         f"{num_thing_classes}; --set them to the dataset's")


def shard_videos(num_videos: int, *, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> np.ndarray:
    """[n // world_size] int64 video indices of ``rank`` this epoch (disjoint across ranks)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} not in [0, {world_size})")
    per = num_videos // world_size
    if per == 0:
        raise ValueError(f"{num_videos} videos cannot be sharded over {world_size} ranks (need at least one each)")
    perm = np.random.default_rng([seed, epoch]).permutation(num_videos)
    return perm[rank * per:(rank + 1) * per].astype(np.int64)


def sample_rng(seed: int, epoch: int, video_index: int, draw: int) -> np.random.Generator:
    """The one generator behind a training sample (see the module docstring)."""
    return np.random.default_rng([seed, epoch, video_index, draw])


def _annotated(record: VideoRecord) -> np.ndarray | None:
    """[N] bool: which frames have ground truth; None when the record carries no annotations at all."""
    if not record.annotations:
        return None
    if len(record.annotations) != len(record):
        raise ValueError(f"{record.video_id}: {len(record.annotations)} annotations for {len(record)} frames")
    return np.array([a is not None for a in record.annotations])


class _FrameCache:
    """Loads each frame / annotation of one video once per sample (short videos repeat indices)."""

    def __init__(self, record: VideoRecord):
        from gvseg.data import formats

        self.record, self.formats = record, formats
        self.frames: dict[int, tuple[np.ndarray, bool]] = {}
        self.anns: dict[int, FrameAnnotation | None] = {}

    def frame_native(self, t: int) -> tuple[np.ndarray, bool]:
        """(frame, bgr): in the decoder's channel order (``formats.load_frame_native``; make_sample takes both)."""
        if t not in self.frames:
            img, bgr = self.formats.load_frame_native(self.record, t)
            if img.shape[:2] != (self.record.height, self.record.width):
                raise ValueError(f"{self.record.frame_paths[t]}: frame is {img.shape[0]}x{img.shape[1]} but "
                                 f"the video is {self.record.height}x{self.record.width}")
            self.frames[t] = img, bgr
        return self.frames[t]

    def frame(self, t: int) -> np.ndarray:
        """uint8 [H, W, 3] RGB."""
        img, bgr = self.frame_native(t)
        return np.ascontiguousarray(img[..., ::-1]) if bgr else img

    def ann(self, t: int) -> FrameAnnotation | None:
        if t not in self.anns:
            self.anns[t] = self.formats.load_annotation(self.record, t)
        return self.anns[t]


def load_sample(record: VideoRecord, cfg: DataConfig, label_space: LabelSpace, rng: np.random.Generator) -> Sample:
    """One augmented training sample: key clip (+ reference clip, + EVS hints) from ``record``."""
    annotated = _annotated(record)
    if annotated is None:
        raise ValueError(f"{record.video_id}: has no annotations; it cannot be used for training")
    idx = sample_clip(len(record), cfg.clip_frames, rng, annotated=annotated,
                      reference_frames=cfg.reference_frames, reference_range=cfg.reference_range,
                      video_id=record.video_id)
    params = sample_augment(record.height, record.width, rng, min_size=cfg.min_size, max_size=cfg.max_size,
                            crop=cfg.crop, flip=cfg.flip)
    cache = _FrameCache(record)
    memo: dict = {}  # frames in both clips are augmented once (same params; transforms.make_sample)

    def clip(indices: np.ndarray) -> Sample:
        ts = indices.tolist()
        frames = [cache.frame_native(t) for t in ts]
        # EVS: only objects of the clip's first frame get hints, and keep_hinted keeps only those: build no others
        return make_sample(record.video_id, [f for f, _ in frames], [cache.ann(t) for t in ts], indices, params,
                           label_space, memo, bgr=[b for _, b in frames],
                           first_frame_objects=bool(cfg.exemplar_kinds))

    key = clip(idx.key)
    ref = clip(idx.reference) if len(idx.reference) else None
    if cfg.exemplar_kinds:  # EVS: both clips need hints (their queries come from them; TCL pairs them by id)
        key = _hinted(key, cfg, rng)
        ref = None if ref is None else _hinted(ref, cfg, rng)
    key.reference = ref
    return key


def _hinted(s: Sample, cfg: DataConfig, rng: np.random.Generator) -> Sample:
    """EVS: hints from the clip's own first frame; objects without one leave its targets (keep_hinted)."""
    s.exemplars = draw_exemplars(s, rng, cfg.exemplar_kinds, cfg.exemplar_weights)
    return keep_hinted(s)


def load_eval_clip(record: VideoRecord, cfg: DataConfig, label_space: LabelSpace, indices: np.ndarray,
                   cache: _FrameCache | None = None) -> Sample:
    """One test-time clip: resized only; targets where the record has annotations; EVS hints from the record."""
    cache = cache or _FrameCache(record)
    params = test_params(record.height, record.width, cfg.test_size, cfg.max_size)
    ts = np.asarray(indices, np.int64).tolist()
    anns = [cache.ann(t) for t in ts] if record.annotations else None
    frames = [cache.frame_native(t) for t in ts]
    s = make_sample(record.video_id, [f for f, _ in frames], anns, np.asarray(indices, np.int64),
                    params, label_space, bgr=[b for _, b in frames])
    if record.exemplars or cfg.exemplar_kinds:
        exemplars = cache.formats.load_exemplars(record)  # decodes mask hints from their handles
        s.exemplars = record_exemplars(exemplars, s.frame_index, record.height, record.width, params,
                                       where=record.video_id)
    return s


def iterate_samples(records: Sequence[VideoRecord], cfg: DataConfig, *, seed: int, epoch: int, rank: int = 0,
                    world_size: int = 1, train: bool = True, label_space: LabelSpace | None = None,
                    progress: bool = False) -> Iterator[Sample]:
    """The samples behind :func:`iterate_batches`, one at a time."""
    space = label_space or label_space_for(records)
    if train:
        shard = shard_videos(len(records), seed=seed, epoch=epoch, rank=rank, world_size=world_size)
        order = [(int(v), k) for k in range(cfg.clips_per_video) for v in shard]
        for v, k in tqdm(order, desc=f"epoch {epoch}", disable=not progress):
            yield load_sample(records[v], cfg, space, sample_rng(seed, epoch, v, k))
    else:
        for v in tqdm(range(rank, len(records), world_size), desc="eval", disable=not progress):
            rec = records[v]
            for indices in eval_clips(len(rec), cfg.clip_frames):
                yield load_eval_clip(rec, cfg, space, indices)  # fresh cache per clip: long videos stay out of RAM


def iterate_batches(records: Sequence[VideoRecord], cfg: DataConfig, *, batch_size: int, seed: int, epoch: int,
                    rank: int = 0, world_size: int = 1, train: bool = True, label_space: LabelSpace | None = None,
                    progress: bool = False) -> Iterator[Clip]:
    """Batches of ``batch_size`` clips for one rank and one epoch (see the module docstring)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    batch: list[Sample] = []
    for s in iterate_samples(records, cfg, seed=seed, epoch=epoch, rank=rank, world_size=world_size,
                             train=train, label_space=label_space, progress=progress):
        batch.append(s)
        if len(batch) == batch_size:
            yield collate(batch)
            batch = []
    if batch:
        yield collate(batch)


class ClipDataset(torch.utils.data.Dataset):
    """Map-style training dataset for ``torch.utils.data.DataLoader`` (the baseline of the Ray pipeline).

    Item i of an epoch is draw ``i // n_rank`` of the rank's ``i % n_rank``-th video (the order of
    :func:`iterate_samples`). Call :meth:`set_epoch` before each epoch (like ``DistributedSampler``) and
    use ``collate_fn=gvseg.data.transforms.collate``; items are NumPy :class:`Sample`s.
    """

    def __init__(self, records: Sequence[VideoRecord], cfg: DataConfig, *, seed: int, rank: int = 0,
                 world_size: int = 1, label_space: LabelSpace | None = None):
        self.records, self.cfg, self.seed = list(records), cfg, seed
        self.rank, self.world_size = rank, world_size
        self.label_space = label_space or label_space_for(records)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.shard = shard_videos(len(self.records), seed=self.seed, epoch=epoch, rank=self.rank,
                                  world_size=self.world_size)

    def __len__(self) -> int:
        return len(self.shard) * self.cfg.clips_per_video

    def __getitem__(self, i: int) -> Sample:
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range [0, {len(self)})")
        v, k = int(self.shard[i % len(self.shard)]), i // len(self.shard)
        return load_sample(self.records[v], self.cfg, self.label_space, sample_rng(self.seed, self.epoch, v, k))
