"""Ray Data pipeline: a manifest of videos -> streaming samples -> typed :class:`Clip` batches on Train workers.

Driver side (:func:`build_dataset`):
  * The manifest has **one row per (epoch, video)**: the pickled :class:`VideoRecord` (paths and annotation
    handles only, no pixels) plus its index and the epoch. Within an epoch the videos are in the order of
    ``shard_videos(seed, epoch)`` (a deterministic reshuffle per epoch), so ``epochs=E`` streams E epochs in
    one pass without ``random_shuffle`` (which would make the run non-reproducible).
  * ``map_batches(_video_sample_batches, batch_size=1)`` reads one video in one task: it decodes the frames it
    needs with cv2 (through ``gvseg.data.formats``), augments them and emits ``clips_per_video`` one-row
    batches, one per sample. A video's samples are therefore always made by the task that read it, and each
    row holds a whole sample (key clip, reference clip, the hints of both clips), so however Ray splits the
    rows across workers a sample is never torn apart.
  * Every column is a NumPy array or number: the video id travels as UTF-8 bytes in a uint8 array, frames as
    make_sample's padded planar buffer [T, 3, ph, pw] with the valid (h, w), tubes as the sample's code map
    (label-map formats: its padded T x ph x pw buffer, the bytes in a uint8 array with shape, (h, w) and item
    size) or as flat uint8 0/1 planes with their shape (``np.packbits`` planes with ``PACK_MASKS``), so
    nothing in a row is a string (``iter_torch_batches`` rejects string columns). Shipping the buffers as
    they are costs the producer one copy (into the object store) instead of a strided copy first, and
    :func:`decode_sample` re-registers them (``transforms.adopt_padded``) so that ``collate`` takes them
    without padding or transposing again.
  * Samples are identical to the plain pipeline's (``gvseg.data.pipeline.load_sample`` with
    ``sample_rng(seed, epoch, video, draw)``): a run reproduces whichever loader made it.
  * Memory stays bounded: Ray Data streams (backpressure on the object store), and one task holds one video.

Worker side (:func:`iterate_shard`): ``ray.train.get_dataset_shard("train")`` (or any Dataset / DataIterator)
-> ``iter_torch_batches(collate_fn=ClipCollateFn)``: rows decoded back into NumPy ``Sample``s and ``collate``d
into a CPU :class:`Clip` in Ray's prefetch threads (overlapping the training step).

``TorchTrainer(datasets={"train": ds})`` splits the stream across workers (``streaming_split(equal=True)``);
with ``clips_per_video=1`` every video then lands on exactly one worker per epoch.
"""

from __future__ import annotations

import functools
import math
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import ray
from ray.data.collate_fn import NumpyBatchCollateFn

from gvseg.config import DataConfig
from gvseg.data.pipeline import label_space_for, load_sample, sample_rng, shard_videos
from gvseg.data.transforms import LabelSpace, Sample, SampleExemplars, adopt_padded, collate, padded_parts
from gvseg.structures import Clip, VideoRecord

# Masks travel as raw 0/1 bytes by default: zero-copy out of the object store, while unpacking bits costs the
# consumer (the Train worker, the serial end of the pipeline) ~3x its collate time on 2 cores. Set True to send
# np.packbits planes instead (8x smaller rows) when object-store memory or network is the limit.
PACK_MASKS = False
BLOCK_BYTES = 16 * 2**20  # target output block size of the sample stage (one sample row is tens of MB)

# --------------------------------------------------------------------------------------------- driver


def video_manifest(records: Sequence[VideoRecord], *, seed: int, epochs: int = 1, start_epoch: int = 0) -> list[dict[str, Any]]:
    """Rows ``{"epoch", "video_index", "record"}`` (record = pickled VideoRecord), epoch-major."""
    rows = []
    blobs = [pickle.dumps(r, protocol=pickle.HIGHEST_PROTOCOL) for r in records]
    for epoch in range(start_epoch, start_epoch + epochs):
        for v in shard_videos(len(records), seed=seed, epoch=epoch).tolist():
            rows.append({"epoch": epoch, "video_index": v, "record": blobs[v]})
    return rows


def build_dataset(records: Sequence[VideoRecord], cfg: DataConfig, *, seed: int, epochs: int = 1,
                  start_epoch: int = 0, label_space: LabelSpace | None = None,
                  videos_per_block: int = 1, buffer_mb: float = 0) -> ray.data.Dataset:
    """The training stream: ``epochs * len(records) * cfg.clips_per_video`` sample rows.

    ``buffer_mb`` > 0 caps the object-store memory this dataset's execution may hold (a soft limit Ray Data
    enforces by backpressure); 0 leaves Ray's automatic budget (a share of the object store).
    """
    if not records:
        raise ValueError("build_dataset: no videos")
    manifest = video_manifest(records, seed=seed, epochs=epochs, start_epoch=start_epoch)
    space = label_space or label_space_for(records)
    blocks = max(1, -(-len(manifest) // max(videos_per_block, 1)))
    fn = functools.partial(_video_sample_batches, cfg=cfg, label_space=space, seed=seed)
    # Ray Data: one input block = videos_per_block videos, read, decoded and augmented in one task.
    ds = ray.data.from_items(manifest, override_num_blocks=blocks).map_batches(fn, batch_size=1, batch_format="numpy")
    # A sample row is tens of MB: small output blocks let a task hand each one to the object store at once
    # instead of accumulating 128 MB (Ray's default) in its heap.
    ds.context.target_max_block_size = BLOCK_BYTES
    if buffer_mb > 0:  # per-dataset context: other datasets of the driver keep their limits
        ds.context.execution_options.resource_limits = ray.data.ExecutionResources.for_limits(
            object_store_memory=buffer_mb * 2**20)
    return ds


def _video_sample_batches(batch: dict[str, np.ndarray], *, cfg: DataConfig, label_space: LabelSpace,
                          seed: int) -> Iterator[dict[str, np.ndarray]]:
    """Runs in a Ray Data task: a batch of manifest rows -> one one-row batch per sample. Batches, not rows
    (``flat_map``): Ray sizes every row of a small block by serialising it (``SizeEstimator``: the first 10
    rows of each block, and a block here holds 1-2 samples), which took 18% of the producer's time on a
    sample of tens of MB; a batch's block is sized from its Arrow buffers."""
    for i in range(len(batch["epoch"])):
        row = {k: v[i] for k, v in batch.items()}
        for out in _video_samples(row, cfg=cfg, label_space=label_space, seed=seed):
            yield {k: np.asarray(v)[None] for k, v in out.items()}


def _video_samples(row: dict[str, Any], *, cfg: DataConfig, label_space: LabelSpace, seed: int) -> Iterator[dict[str, Any]]:
    """Runs in a Ray Data task: one video -> its samples for one epoch, as NumPy rows (a generator, so a task
    holds one sample at a time)."""
    record: VideoRecord = pickle.loads(row["record"])
    epoch, v = int(row["epoch"]), int(row["video_index"])
    for k in range(cfg.clips_per_video):
        s = load_sample(record, cfg, label_space, sample_rng(seed, epoch, v, k))
        yield encode_sample(s, epoch=epoch, video_index=v, draw=k)


# ---------------------------------------------------------------------------------- row encode/decode



def _pack(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """bool [..., h, w] -> (bytes, their shape, (h, w)): make_sample's padded buffer as it is (raw 0/1 bytes),
    or np.packbits of the mask itself with ``PACK_MASKS``."""
    if PACK_MASKS:
        flat = np.ascontiguousarray(mask)
        return np.packbits(flat.reshape(-1)), np.asarray(mask.shape, np.int64), np.asarray(mask.shape[-2:], np.int64)
    buf, hw = padded_parts(mask)
    return buf.reshape(-1).view(np.uint8), np.asarray(buf.shape, np.int64), np.asarray(hw, np.int64)


def _unpack(data: np.ndarray, shape: np.ndarray, hw: np.ndarray) -> np.ndarray:
    shape, (h, w) = tuple(int(x) for x in np.asarray(shape)), (int(x) for x in np.asarray(hw))
    data = np.ascontiguousarray(data, np.uint8)
    if len(data) != math.prod(shape):  # bit-packed
        data = np.unpackbits(data, count=math.prod(shape))
    return adopt_padded(data.view(bool).reshape(shape), h, w)  # 0/1 bytes are valid bools


def _encode_clip(s: Sample, p: str) -> dict[str, Any]:
    planar, hw = padded_parts(s.frames.transpose(0, 3, 1, 2))  # [T, 3, ph, pw]: make_sample's planes, no copy
    row = {f"{p}_frames": planar, f"{p}_frames_hw": np.asarray(hw, np.int64), f"{p}_frame_index": s.frame_index,
           f"{p}_ids": s.ids, f"{p}_labels": s.labels}
    if s.code is not None:  # coded tubes travel as the code map: T x H x W bytes instead of K planes
        code, hw = padded_parts(s.code)
        return {**row, **_no_planes(p), f"{p}_code": code.reshape(-1).view(np.uint8),
                f"{p}_code_shape": np.asarray(code.shape, np.int64), f"{p}_code_hw": np.asarray(hw, np.int64),
                f"{p}_code_itemsize": np.int64(code.itemsize), f"{p}_tube_codes": s.tube_codes.astype(np.int64),
                f"{p}_ignore_code": np.int64(s.ignore_code)}
    masks, masks_shape, masks_hw = _pack(s.masks)
    ignore, ignore_shape, ignore_hw = _pack(s.ignore)
    return {**row, **_no_code(p), f"{p}_masks": masks, f"{p}_masks_shape": masks_shape, f"{p}_masks_hw": masks_hw,
            f"{p}_ignore": ignore, f"{p}_ignore_shape": ignore_shape, f"{p}_ignore_hw": ignore_hw}


def _no_planes(p: str) -> dict[str, Any]:
    hw = np.zeros(2, np.int64)
    return {f"{p}_masks": np.zeros(0, np.uint8), f"{p}_masks_shape": np.zeros(4, np.int64), f"{p}_masks_hw": hw,
            f"{p}_ignore": np.zeros(0, np.uint8), f"{p}_ignore_shape": np.zeros(3, np.int64), f"{p}_ignore_hw": hw}


def _no_code(p: str) -> dict[str, Any]:
    return {f"{p}_code": np.zeros(0, np.uint8), f"{p}_code_shape": np.zeros(3, np.int64),
            f"{p}_code_hw": np.zeros(2, np.int64), f"{p}_code_itemsize": np.int64(0),
            f"{p}_tube_codes": np.zeros(0, np.int64), f"{p}_ignore_code": np.int64(-1)}


def _empty_clip(p: str) -> dict[str, Any]:
    z = np.zeros(0, np.int64)
    return {f"{p}_frames": np.zeros((0, 3, 0, 0), np.uint8), f"{p}_frames_hw": np.zeros(2, np.int64),
            f"{p}_frame_index": z, f"{p}_ids": z, f"{p}_labels": z, **_no_planes(p), **_no_code(p)}


def encode_sample(s: Sample, *, epoch: int = 0, video_index: int = 0, draw: int = 0) -> dict[str, Any]:
    """A Sample as one row of NumPy arrays / numbers with a fixed set of columns (no strings)."""
    row: dict[str, Any] = {
        "epoch": np.int64(epoch), "video_index": np.int64(video_index), "draw": np.int64(draw),
        "video_id": np.frombuffer(s.video_id.encode(), np.uint8).copy(),
        "num_thing_classes": np.int64(s.num_thing_classes), "has_targets": np.bool_(s.has_targets),
        "has_reference": np.bool_(s.reference is not None), "has_exemplars": np.bool_(s.exemplars is not None),
    }
    ref = s.reference
    row["has_ref_exemplars"] = np.bool_(ref is not None and ref.exemplars is not None)
    row.update(_encode_clip(s, "key"))
    row.update(_encode_clip(ref, "ref") if ref is not None else _empty_clip("ref"))
    row.update(_encode_exemplars(s.exemplars, s, "ex"))  # EVS: both clips carry hints (TCL on)
    row.update(_encode_exemplars(None if ref is None else ref.exemplars, ref or s, "ref_ex"))
    return row


def _encode_exemplars(e: SampleExemplars | None, s: Sample, p: str) -> dict[str, Any]:
    e = e if e is not None else SampleExemplars.empty(*s.frames.shape[1:3])  # fixed columns either way
    em, em_shape, em_hw = _pack(e.masks)
    return {f"{p}_kind": e.kind, f"{p}_frame": e.frame, f"{p}_points": e.points, f"{p}_boxes": e.boxes,
            f"{p}_masks": em, f"{p}_masks_shape": em_shape, f"{p}_masks_hw": em_hw, f"{p}_ids": e.ids}


def _decode_exemplars(row: dict[str, Any], p: str) -> SampleExemplars:
    return SampleExemplars(
        kind=np.array(row[f"{p}_kind"], np.int8), frame=np.array(row[f"{p}_frame"], np.int64),
        points=np.array(row[f"{p}_points"], np.float32).reshape(-1, 2),
        boxes=np.array(row[f"{p}_boxes"], np.float32).reshape(-1, 4),
        masks=_unpack(row[f"{p}_masks"], row[f"{p}_masks_shape"], row[f"{p}_masks_hw"]),
        ids=np.array(row[f"{p}_ids"], np.int64))


_CODE_DTYPES = {1: np.uint8, 2: np.uint16, 4: np.uint32}  # itemsize -> the code map's dtype (make_sample's)


def _decode_clip(row: dict[str, Any], p: str, video_id: str, ntc: int, has_targets: bool) -> Sample:
    # small arrays are copied: Ray hands out read-only views and torch.from_numpy warns on those
    h, w = (int(x) for x in np.asarray(row[f"{p}_frames_hw"]))
    planar = np.ascontiguousarray(row[f"{p}_frames"], np.uint8)  # [T, 3, ph, pw]
    common = dict(video_id=video_id, frames=adopt_padded(planar, h, w).transpose(0, 2, 3, 1),  # [T, h, w, 3]
                  frame_index=np.array(row[f"{p}_frame_index"], np.int64),
                  ids=np.array(row[f"{p}_ids"], np.int64), labels=np.array(row[f"{p}_labels"], np.int64),
                  num_thing_classes=ntc, has_targets=has_targets)
    itemsize = int(row[f"{p}_code_itemsize"])
    if itemsize:
        dtype = _CODE_DTYPES[itemsize]
        shape = tuple(int(x) for x in np.asarray(row[f"{p}_code_shape"]))
        ch, cw = (int(x) for x in np.asarray(row[f"{p}_code_hw"]))
        code = adopt_padded(np.ascontiguousarray(row[f"{p}_code"], np.uint8).view(dtype).reshape(shape), ch, cw)
        return Sample(**common, masks=None, ignore=None, code=code,
                      tube_codes=np.array(row[f"{p}_tube_codes"], np.int64).astype(dtype),
                      ignore_code=int(row[f"{p}_ignore_code"]))
    return Sample(**common, masks=_unpack(row[f"{p}_masks"], row[f"{p}_masks_shape"], row[f"{p}_masks_hw"]),
                  ignore=_unpack(row[f"{p}_ignore"], row[f"{p}_ignore_shape"], row[f"{p}_ignore_hw"]))


def decode_sample(row: dict[str, Any]) -> Sample:
    """Inverse of :func:`encode_sample`."""
    vid = np.asarray(row["video_id"], np.uint8).tobytes().decode()
    ntc, has_t = int(row["num_thing_classes"]), bool(row["has_targets"])
    s = _decode_clip(row, "key", vid, ntc, has_t)
    if bool(row["has_reference"]):
        s.reference = _decode_clip(row, "ref", vid, ntc, has_t)
        if bool(row["has_ref_exemplars"]):
            s.reference.exemplars = _decode_exemplars(row, "ref_ex")
    if bool(row["has_exemplars"]):
        s.exemplars = _decode_exemplars(row, "ex")
    return s


# --------------------------------------------------------------------------------------------- worker


class ClipCollateFn(NumpyBatchCollateFn):
    """NumPy batch of sample rows -> typed :class:`Clip`. Ray runs it in its prefetch thread pool, so decoding
    and collation overlap with the training step instead of running between steps."""

    def __init__(self, clip_frames: int):
        self.clip_frames = clip_frames

    def __call__(self, batch: dict[str, np.ndarray]) -> Clip:
        n = len(batch["epoch"])
        samples = [decode_sample({k: col[i] for k, col in batch.items()}) for i in range(n)]
        for s in samples:
            if s.frames.shape[0] != self.clip_frames:
                raise ValueError(f"{s.video_id}: row has {s.frames.shape[0]} frames, data.clip_frames is {self.clip_frames}")
        return collate(samples)


def iterate_shard(shard: Any, cfg: DataConfig, batch_size: int, *, prefetch_batches: int = 2) -> Iterator[Clip]:
    """Typed Clips (on CPU) from a Ray Data shard (``DataIterator``) or Dataset; the last batch may be smaller.

    ``iter_torch_batches`` with a collate class: every column is numeric, the collate function decodes rows and
    pads them in Ray's background threads, and the Clip (not a tensor dict) passes Ray's device step untouched;
    the training loop moves it with ``clip.to(device)``. Ray returns a column as one stacked array when every
    row has the same shape, else as an object array of per-row arrays; indexing the first axis works for both.

    Tried and not kept (2026-12-04): fetching one row at a time (a zero-copy slice of its block) and collating
    here, since Ray builds a batch of rows from different blocks by concatenating their Arrow tensor columns
    (39% of the consumer threads' samples in a py-spy profile). Over 7 interleaved pairs on 192-clip epochs
    (idle 2-core AMD EPYC) it changed clips/s by +1.5% (1 CPU) and +1% (2 CPUs), within noise, and the
    driver's CPU per clip by -3% and -10%: the concatenation runs in Ray's prefetch threads, off the
    critical path.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    yield from shard.iter_torch_batches(batch_size=batch_size, prefetch_batches=prefetch_batches, device="cpu",
                                        collate_fn=ClipCollateFn(cfg.clip_frames))
