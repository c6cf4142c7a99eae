"""The fast clip pipeline (issue #17) gives exactly the old pipeline's samples and batches.

The old path is kept here as the reference: the ``np.unique`` decoders, per-object RLE decodes, full-resolution
tubes (``build_tubes``), per-tube gathers (``augment_masks``), ``np.ascontiguousarray`` flips, ``np.nonzero``
hint drawing and a zero-filled, unblocked ``collate``. Both run on the same synthetic clips of every format with the same seeds; every array must be
equal (no tolerance needed: the masks use the same nearest-neighbour index maps, the frames the same cv2 calls).
Besides, ``test_clips_equal_the_base_commits`` pins sha256 digests of whole Clips made by commit 7fd2143 (before
the planar frames / broadcast tubes / recycled buffers of issue #17 target 3), per format.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from gvseg.config import DataConfig
from gvseg.data import formats
from gvseg.data.clips import sample_clip
from gvseg.data.formats import _common as C
from gvseg.data.pipeline import _annotated, label_space_for, load_sample, sample_rng
from gvseg.data.synthetic import synth_dataset
from gvseg.data.transforms import (
    EXEMPLAR_KINDS,
    PIXEL_MEAN,
    PIXEL_STD,
    AugmentParams,
    Sample,
    SampleExemplars,
    _index_maps,
    augment_image,
    build_tubes,
    collate,
    keep_hinted,
    pad_size,
    sample_augment,
)
from gvseg.structures import FrameAnnotation

FORMATS = ["vipseg", "kitti-step", "vspw", "ytvis", "ovis", "ytvos", "davis", "burst"]
EVS = ("ytvos", "davis", "burst")


# ------------------------------------------------------------------------------- old decoders (reference)


def pil_rgb(path) -> np.ndarray:
    """The pre-#17 frame reader (PIL)."""
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def pil_label(path) -> np.ndarray:
    """The pre-#17 label reader (PIL: palette indices, L, 16-bit grey, RGB as stored)."""
    with Image.open(path) as im:
        return np.array(im)


def old_decode(record, t) -> FrameAnnotation:
    """The pre-#17 decoders: label maps through np.unique + masks_from_ids, RLEs one object at a time."""
    fmt, handle = record.format, record.annotations[t]
    if fmt == "vipseg" and handle[0] == "rgb":
        rgb = pil_label(handle[1]).astype(np.int64)
        idmap = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        ids = np.unique(idmap[idmap != 0])
        info = {sid: (cat, crowd) for sid, cat, crowd in handle[2]}
        return FrameAnnotation(ids.astype(np.int64), np.array([info[int(i)][0] for i in ids], np.int64),
                               C.masks_from_ids(idmap, ids), np.array([info[int(i)][1] for i in ids], bool),
                               idmap == 0)
    if fmt == "vipseg":
        v = pil_label(handle[1]).astype(np.int64)
        void = (v == 0) | (v == 200)
        ids = np.unique(v[~void])
        cats = np.where(ids <= 124, ids, ids // 100) - 1
        return FrameAnnotation(ids, cats, C.masks_from_ids(v, ids), np.zeros(len(ids), bool), void)
    if fmt == "kitti-step":
        rgb = pil_label(handle).astype(np.int64)
        sem, inst = rgb[..., 0], rgb[..., 1] * 256 + rgb[..., 2]
        void = sem == 255
        key = np.where(void, -1, sem * 65536 + inst)
        ids = np.unique(key[~void])
        cats, insts = ids // 65536, ids % 65536
        return FrameAnnotation(ids, cats, C.masks_from_ids(key, ids), np.isin(cats, (11, 13)) & (insts == 0), void)
    if fmt == "vspw":
        raw = pil_label(handle).astype(np.int64)
        ignore = np.isin(raw, (0, 255))
        values = np.unique(raw[~ignore])
        return FrameAnnotation(values - 1, values - 1, C.masks_from_ids(raw, values), np.zeros(len(values), bool),
                               ignore)
    if fmt in ("ytvos", "davis"):
        lab = pil_label(handle)
        ids = np.unique(lab)
        ids = ids[(ids != 0) & (ids != 255)].astype(np.int64)
        return FrameAnnotation(ids, np.ones(len(ids), np.int64), C.masks_from_ids(lab, ids), np.zeros(len(ids), bool),
                               lab == 255)
    if fmt in ("ytvis", "ovis", "burst"):
        return old_rle_decode(record, t)
    return formats.load_annotation(record, t)


def old_rle_decode(record, t) -> FrameAnnotation:
    """The pre-#17 RLE decoders: one pycocotools call per object, [K, H, W] bool masks stacked."""
    from pycocotools import mask as mask_util

    objs, h, w = record.annotations[t], record.height, record.width
    segs = [o[-1] for o in objs]
    if record.format == "burst":
        segs = [{"size": [h, w], "counts": r} for r in segs]
    masks = []
    for sg in segs:
        rle = (mask_util.frPyObjects(sg, h, w) if isinstance(sg["counts"], list)
               else {"size": sg["size"], "counts": sg["counts"].encode()})
        masks.append(mask_util.decode(rle).astype(bool))
    crowd = [bool(o[2]) if record.format != "burst" else False for o in objs]
    return FrameAnnotation(np.array([o[0] for o in objs], np.int64), np.array([o[1] for o in objs], np.int64),
                           np.stack(masks) if masks else np.zeros((0, h, w), bool), np.array(crowd, bool))


# ------------------------------------------------------------------------------ old transforms (reference)


def old_augment_masks(masks, p):
    rows, cols = _index_maps(masks.shape[-2], masks.shape[-1], p)
    return np.take(np.take(masks, rows, axis=-2), cols, axis=-1)


def old_make_sample(video_id, frames, annotations, frame_index, params, space) -> Sample:
    image = np.stack([np.ascontiguousarray(augment_image(f, params)) for f in frames])
    h0, w0 = frames[0].shape[:2]
    tubes = build_tubes(annotations, h0, w0, where=video_id)
    masks = old_augment_masks(tubes.masks, params)
    ignore = old_augment_masks(tubes.ignore, params)
    present = masks.any(axis=(1, 2, 3))
    masks = masks[present]
    labels = space.to_contiguous(tubes.category_ids[present], video_id)
    return Sample(video_id, image, np.asarray(frame_index, np.int64), tubes.ids[present], labels, masks, ignore,
                  space.num_thing_classes)


def old_draw_exemplars(sample, rng, kinds) -> SampleExemplars:
    """The pre-#17 hint drawing: np.nonzero of every visible object, np.where for the mask planes."""
    first = sample.masks[:, 0]
    vis = first.any(axis=(1, 2))
    m, ids = first[vis], sample.ids[vis]
    e = len(ids)
    pick = rng.integers(len(kinds), size=e)
    kind = np.array([EXEMPLAR_KINDS[kinds[int(i)]] for i in pick], np.int8)
    points, boxes = np.zeros((e, 2), np.float32), np.zeros((e, 4), np.float32)
    for j in range(e):
        ys, xs = np.nonzero(m[j])
        if kind[j] == EXEMPLAR_KINDS["point"]:
            i = int(rng.integers(len(ys)))
            points[j] = (xs[i] + 0.5, ys[i] + 0.5)
        elif kind[j] == EXEMPLAR_KINDS["box"]:
            boxes[j] = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    masks = np.where((kind == EXEMPLAR_KINDS["mask"])[:, None, None], m, False)
    return SampleExemplars(kind, np.zeros(e, np.int64), points, boxes, masks, ids)


def old_load_sample(record, cfg, space, rng) -> Sample:
    idx = sample_clip(len(record), cfg.clip_frames, rng, annotated=_annotated(record),
                      reference_frames=cfg.reference_frames, reference_range=cfg.reference_range,
                      video_id=record.video_id)
    params = sample_augment(record.height, record.width, rng, min_size=cfg.min_size, max_size=cfg.max_size,
                            crop=cfg.crop, flip=cfg.flip)

    def clip(ix):
        ts = ix.tolist()
        return old_make_sample(record.video_id, [pil_rgb(record.frame_paths[t]) for t in ts],
                               [old_decode(record, t) for t in ts], ix, params, space)

    key, ref = clip(idx.key), clip(idx.reference)
    if cfg.exemplar_kinds:
        key = keep_hinted(_with(key, old_draw_exemplars(key, rng, cfg.exemplar_kinds)))
        ref = keep_hinted(_with(ref, old_draw_exemplars(ref, rng, cfg.exemplar_kinds)))
    key.reference = ref
    return key


def _with(s, ex):
    s.exemplars = ex
    return s


def old_collate_frames(samples) -> torch.Tensor:
    ph, pw = pad_size([s.frames.shape[1:3] for s in samples])
    out = torch.zeros(len(samples), samples[0].frames.shape[0], 3, ph, pw)
    scale = 1.0 / torch.tensor(PIXEL_STD).view(3, 1, 1)
    shift = -torch.tensor(PIXEL_MEAN).view(3, 1, 1) * scale
    for i, s in enumerate(samples):
        h, w = s.frames.shape[1:3]
        v = out[i, :, :, :h, :w]
        v.copy_(torch.from_numpy(s.frames).permute(0, 3, 1, 2))
        v.mul_(scale).add_(shift)
    return out


def old_pad(a: np.ndarray, ph: int, pw: int, fill: bool) -> torch.Tensor:
    out = torch.full((*a.shape[:-2], ph, pw), fill, dtype=torch.bool)
    out[..., :a.shape[-2], :a.shape[-1]] = torch.from_numpy(np.ascontiguousarray(a))
    return out


# ------------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    out = {}
    for fmt in FORMATS:
        root = tmp_path_factory.mktemp(fmt.replace("-", "_"))
        synth_dataset(fmt, root, videos=2, frames=5, height=48, width=64, seed=3, val_fraction=0.0,
                      thing_classes=4, stuff_classes=3, progress=False)
        out[fmt] = formats.read_dataset(fmt, root, "train", progress=False)[0]
    return out


def assert_same_sample(new: Sample, old: Sample) -> None:
    assert np.array_equal(new.frames, old.frames)
    assert new.ids.tolist() == old.ids.tolist() and new.labels.tolist() == old.labels.tolist()
    assert np.array_equal(new.masks, old.masks) and np.array_equal(new.ignore, old.ignore)
    assert (new.exemplars is None) == (old.exemplars is None)
    if new.exemplars is not None:
        for f in ("kind", "frame", "points", "boxes", "masks", "ids"):
            assert np.array_equal(getattr(new.exemplars, f), getattr(old.exemplars, f)), f


@pytest.mark.parametrize("fmt", FORMATS)
def test_decoders_match_the_unique_based_ones(datasets, fmt):
    for rec in datasets[fmt]:
        for t in range(len(rec)):
            new, old = formats.load_annotation(rec, t), old_decode(rec, t)
            assert new.ids.tolist() == old.ids.tolist()
            assert new.category_ids.tolist() == old.category_ids.tolist()
            assert np.array_equal(new.masks, old.masks)
            assert np.array_equal(np.asarray(new.iscrowd, bool), np.asarray(old.iscrowd, bool))
            assert (new.ignore is None) == (old.ignore is None)
            if old.ignore is not None:
                assert np.array_equal(new.ignore, old.ignore)


@pytest.mark.parametrize("fmt", FORMATS)
def test_samples_and_batches_match_the_old_pipeline(datasets, fmt):
    recs = datasets[fmt]
    space = label_space_for(recs)
    for crop in ((0, 0), (40, 50)):  # crops: objects cropped away must disappear the same way
        cfg = DataConfig(format=fmt, clip_frames=3, reference_frames=2, min_size=(40, 56, 72), max_size=120,
                         crop=crop, exemplar_kinds=("mask", "point", "box") if fmt in EVS else ())
        for v, rec in enumerate(recs):
            for k in range(3):  # draws cover flip / no flip and several sizes
                new = load_sample(rec, cfg, space, sample_rng(0, 0, v, k))
                old = old_load_sample(rec, cfg, space, sample_rng(0, 0, v, k))
                assert_same_sample(new, old)
                assert_same_sample(new.reference, old.reference)
                batch = collate([new, load_sample(recs[1 - v], cfg, space, sample_rng(0, 0, 1 - v, k))])
                olds = [old, old_load_sample(recs[1 - v], cfg, space, sample_rng(0, 0, 1 - v, k))]
                assert batch.frames.dtype == torch.uint8 and torch.equal(batch.float_frames(), old_collate_frames(olds))
                ph, pw = batch.frames.shape[-2:]
                for tg, o in zip(batch.targets, olds):
                    assert torch.equal(tg.masks, old_pad(o.masks, ph, pw, False))
                    assert torch.equal(tg.ignore, old_pad(o.ignore, ph, pw, True))
                single = collate([new])  # B = 1: make_sample's padded buffers are used as they are
                ph, pw = single.frames.shape[-2:]
                assert torch.equal(single.float_frames(), old_collate_frames([old]))
                assert torch.equal(single.targets[0].masks, old_pad(old.masks, ph, pw, False))
                assert torch.equal(single.targets[0].ignore, old_pad(old.ignore, ph, pw, True))


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_resize_path_matches_the_old_pipeline(datasets, fmt):
    """One short side at a time, so each path is taken: 48 keeps the size (frames split as they are), 40
    downscales (presence from the resized codes), the others upscale with OpenCV's nearest resize on both,
    one or no axis (``_cv2_nearest``), with and without flip."""
    from gvseg.data.transforms import _cv2_nearest_matches, resize_shortest

    recs = datasets[fmt]
    space = label_space_for(recs)
    axes = set()
    for short in (40, 48, 50, 56, 64, 72, 88, 104):
        axes.add(_cv2_nearest_matches(48, 64, *resize_shortest(48, 64, short, 1333)))
        cfg = DataConfig(format=fmt, clip_frames=3, reference_frames=2, min_size=(short,), max_size=1333,
                         exemplar_kinds=("mask", "point", "box") if fmt in EVS else ())
        for v, rec in enumerate(recs):
            for k in range(2):
                new = load_sample(rec, cfg, space, sample_rng(0, 0, v, k))
                old = old_load_sample(rec, cfg, space, sample_rng(0, 0, v, k))
                assert_same_sample(new, old)
                assert_same_sample(new.reference, old.reference)
    assert axes == {(True, True), (True, False), (False, True), (False, False)}  # every combination ran


def test_cv2_nearest_resize_equals_the_gather():
    """Where ``_cv2_nearest`` lets OpenCV resize a code map (whole or one axis), the map equals the
    ``_index_maps`` gather, flipped or not, into a row-strided destination."""
    from gvseg.data.transforms import _cv2_nearest, _resize_nearest, resize_shortest

    rng = np.random.default_rng(0)
    used = 0
    for hh, ww in ((48, 64), (37, 53), (120, 397)):
        for dtype in (np.uint8, np.uint16):
            index = rng.integers(0, 250, (hh, ww)).astype(dtype)
            for short in range(20, 260, 9):
                for flip in (False, True):
                    rh, rw = resize_shortest(hh, ww, short, 1333)
                    p = AugmentParams((rh, rw), (0, 0, rh, rw), flip)
                    rows, cols = _index_maps(hh, ww, p)
                    want = index[rows][:, cols]
                    got = np.zeros((rh + 3, rw + 5), dtype)[:rh, :rw]
                    axes = _cv2_nearest(hh, ww, p)
                    used += axes is not None
                    _resize_nearest(index, rows, cols, got, axes)
                    assert np.array_equal(got, want), (hh, ww, rh, rw, flip, axes)
    assert used > 50


@pytest.mark.parametrize("fmt", FORMATS)
def test_indexed_annotations_code_and_presence(datasets, fmt):
    """``IndexedAnnotation.coded(lut)`` is ``lut[index]`` however the decoder kept the map, and ``present`` (when
    given) is which objects have pixels."""
    rng = np.random.default_rng(1)
    seen = 0
    for rec in datasets[fmt]:
        for t in range(len(rec)):
            ann = formats.load_annotation(rec, t)
            if not isinstance(ann, C.IndexedAnnotation):
                continue
            seen += 1
            lut = rng.integers(0, 200, len(ann.ids) + 2).astype(np.uint8)
            coded = ann.coded(lut)
            assert coded.shape == ann.index_shape and np.array_equal(coded, lut[ann.index])
            if ann.present is not None:
                assert ann.present.tolist() == ann.masks.any(axis=(1, 2)).tolist()
    assert seen > 0


# --------------------------------------------- golden digests: the base commit's exact Clips (issue #17, target 3)

GOLDEN_ENV = {"cv2": "5.0.0", "PIL": "13.0.0"}  # the decoders / JPEG encoder the digests were made with
# sha256 of every array of the Clips of clip_digest(fmt), made by commit 7fd2143 (before the tubes / planar
# frames / recycled buffers rewrite) on this environment
GOLDEN = {
    "vipseg": "9bbf39221159491be897828333be1acc854c5a8ff4765f0da2aa3c4b98c1854a",
    "kitti-step": "8fe571510d012f2c1770edb3414060712ac183aa84f2c25c304f9ab65fc95142",
    "vspw": "79f0a1dd446ed4cf599f16cd502f17bd0d9250b021b9c02205130d85cf63478b",
    "ytvis": "5f64de0ddf4162efaad5b6d7df91f536e0ffff56b864f3dad6a19b0c68236ec5",
    "ovis": "c380d84a854102ad1ee9c0b89ce68b7575106121510199ee4c3c825e3af3e7ba",
    "ytvos": "2692515a51c71a90c836a0470cfc17acacd44a0278104a8e2d9c595c83cc88b8",
    "davis": "2692515a51c71a90c836a0470cfc17acacd44a0278104a8e2d9c595c83cc88b8",
    "burst": "3f7323d128580e2966056945f0da8d98edac4fab7e3a9d2b5f40ad16403f98b5",
}


def clip_digest(fmt: str, root) -> str:
    """sha256 over every field of collate([load_sample(...)]) (reference clip and EVS hints included) for fixed
    draws of a fixed synthetic set: no crop and a crop, sizes that upscale (every input pixel kept: presence
    from the decoders; OpenCV's nearest resize on both axes or one, or the gather), keep the size (no
    resize) and downscale, with and without flip. Only public API, so the
    same function runs on the base commit."""
    import hashlib

    synth_dataset(fmt, root, videos=2, frames=6, height=96, width=128, seed=5, val_fraction=0.0,
                  thing_classes=4, stuff_classes=3, progress=False)
    recs = formats.read_dataset(fmt, root, "train", progress=False)[0]
    space = label_space_for(recs)
    h = hashlib.sha256()

    def add(x):
        a = x.contiguous().numpy() if isinstance(x, torch.Tensor) else np.ascontiguousarray(x)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())

    def clip(c):
        for x in (c.frames, c.image_sizes, c.frame_index):
            add(x)
        h.update(repr(c.video_ids).encode())
        for tg in c.targets or []:
            for x in (tg.masks, tg.labels, tg.ids, tg.isthing, tg.ignore):
                add(x)
        for e in c.exemplars or []:
            h.update(repr(e.kind).encode())
            for x in (e.frame, e.points, e.boxes, e.masks, e.ids):
                add(x)
        if c.reference is not None:
            clip(c.reference)

    for crop in ((0, 0), (80, 100)):
        cfg = DataConfig(format=fmt, clip_frames=3, reference_frames=3, min_size=(72, 96, 128, 140, 160),
                         max_size=400, crop=crop, exemplar_kinds=("mask", "point", "box") if fmt in EVS else ())
        for v in range(len(recs)):
            for k in range(6):
                clip(collate([load_sample(recs[v], cfg, space, sample_rng(1, 0, v, k))]))
    return h.hexdigest()


@pytest.mark.parametrize("fmt", FORMATS)
def test_clips_equal_the_base_commits(tmp_path, fmt):
    import cv2
    import PIL

    if {"cv2": cv2.__version__, "PIL": PIL.__version__} != GOLDEN_ENV:
        pytest.skip(f"digests made with {GOLDEN_ENV}; the JPEG encoder / decoders here may differ")
    assert clip_digest(fmt, tmp_path / fmt) == GOLDEN[fmt]
