"""Clip-consistent augmentation, LabelSpace, tubes/targets, exemplars and collation."""

import numpy as np
import pytest
import torch

from gvseg.data.transforms import (
    AugmentParams,
    LabelSpace,
    augment_image,
    augment_masks,
    augment_points,
    build_tubes,
    collate,
    draw_exemplars,
    keep_hinted,
    make_sample,
    make_targets,
    random_pixel,
    record_exemplars,
    resize_shortest,
    sample_augment,
    tight_box,
)
from gvseg.structures import Category, Exemplar, FrameAnnotation

CATS = [Category(0, "wall", False), Category(5, "person", True), Category(7, "sky", False), Category(9, "car", True)]
SPACE = LabelSpace.from_categories(CATS)


def ann(ids, cats, masks, **kw):
    return FrameAnnotation(np.array(ids, np.int64), np.array(cats, np.int64), np.array(masks, bool).reshape(len(ids), *np.shape(masks)[1:]), **kw)


def box_mask(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def clip_with_objects(t=3, h=40, w=60):
    """Frames whose red channel paints object 1 and green object 2, so pixels and masks can be compared."""
    frames, anns = [], []
    for i in range(t):
        m1 = box_mask(h, w, 5, 20, 2 + i, 20 + i)
        m2 = box_mask(h, w, 25, 38, 40, 58)
        f = np.zeros((h, w, 3), np.uint8)
        f[m1, 0] = 255
        f[m2, 1] = 255
        anns.append(ann([1, 2], [5, 9], np.stack([m1, m2])))
        frames.append(f)
    return frames, anns


# --------------------------------------------------------------------------------------- label space


def test_label_space_things_first_and_inverse():
    assert SPACE.category_ids == (5, 9, 0, 7) and SPACE.num_thing_classes == 2 and SPACE.num_classes == 4
    lab = SPACE.to_contiguous(np.array([0, 5, 7, 9]))
    assert lab.tolist() == [2, 0, 3, 1]
    assert SPACE.to_dataset(lab).tolist() == [0, 5, 7, 9]
    assert SPACE.isthing(lab).tolist() == [False, True, False, True]
    assert SPACE.to_contiguous(np.zeros(0, np.int64)).shape == (0,)


def test_label_space_rejects_unknown_and_duplicate_ids():
    with pytest.raises(ValueError, match=r"vidA.*\[3\]"):
        SPACE.to_contiguous(np.array([5, 3]), where="vidA")
    with pytest.raises(ValueError, match="duplicated"):
        LabelSpace.from_categories([Category(1, "a", True), Category(1, "b", False)])
    with pytest.raises(ValueError):
        SPACE.to_dataset(np.array([4]))


# -------------------------------------------------------------------------------------- augmentation


def test_resize_shortest_caps_long_side():
    assert resize_shortest(480, 640, 800, 1333) == (800, 1067)
    assert resize_shortest(100, 1000, 800, 1333) == (133, 1333)


def test_flip_crop_consistent_between_frames_and_masks():
    frames, anns = clip_with_objects()
    p = AugmentParams(size=(40, 60), crop=(3, 7, 30, 45), flip=True)  # no scaling: pixels must match exactly
    s = make_sample("v", frames, anns, np.arange(3), p, SPACE)
    assert s.frames.shape == (3, 30, 45, 3) and s.masks.shape[2:] == (30, 45)
    for k, ch in ((0, 0), (1, 1)):
        assert np.array_equal(s.masks[k], s.frames[..., ch] == 255)
    ref = frames[0][3:33, 7:52, 0][:, ::-1] == 255  # manual crop + flip of frame 0
    assert np.array_equal(s.masks[0, 0], ref)


def test_scale_consistent_between_frames_and_masks():
    frames, anns = clip_with_objects()
    p = AugmentParams(size=(97, 145), crop=(0, 0, 97, 145), flip=False)
    s = make_sample("v", frames, anns, np.arange(3), p, SPACE)
    for t in range(3):
        pix = s.frames[t, ..., 0] > 127
        inter = (pix & s.masks[0, t]).sum()
        assert inter / (pix | s.masks[0, t]).sum() > 0.95  # bilinear vs nearest differ on the border only


def test_same_params_for_every_frame():
    f, a = clip_with_objects(t=1)
    frames, anns = f * 3, a * 3  # three identical frames
    p = sample_augment(40, 60, np.random.default_rng(3), min_size=(50, 70), max_size=200, crop=(30, 40))
    s = make_sample("v", frames, anns, np.zeros(3, np.int64), p, SPACE)
    assert all(np.array_equal(s.frames[0], s.frames[t]) for t in range(3))
    assert all(np.array_equal(s.masks[:, 0], s.masks[:, t]) for t in range(3))


def test_ids_preserved_and_cropped_objects_disappear():
    frames, anns = clip_with_objects()
    keep_all = make_sample("v", frames, anns, np.arange(3), AugmentParams((40, 60), (0, 0, 40, 60), True), SPACE)
    assert keep_all.ids.tolist() == [1, 2] and keep_all.labels.tolist() == [0, 1]
    crop_left = make_sample("v", frames, anns, np.arange(3), AugmentParams((40, 60), (0, 0, 40, 30), False), SPACE)
    assert crop_left.ids.tolist() == [1]  # object 2 lies in x >= 40
    assert crop_left.labels.tolist() == [0]


def test_points_follow_the_geometry():
    p = AugmentParams(size=(80, 120), crop=(10, 20, 50, 60), flip=True)
    m = np.zeros((40, 60), bool)
    m[12, 33] = True
    out = augment_masks(m, p)
    ys, xs = np.nonzero(out)
    pt = augment_points(np.array([[33.5, 12.5]]), 40, 60, p)[0]  # centre of that pixel
    assert xs.min() <= pt[0] <= xs.max() + 1 and ys.min() <= pt[1] <= ys.max() + 1


def test_augment_image_shape():
    img = np.zeros((40, 60, 3), np.uint8)
    assert augment_image(img, AugmentParams((80, 120), (5, 5, 64, 100), True)).shape == (64, 100, 3)


# ------------------------------------------------------------------------------------------- targets


def test_tubes_union_of_ids_absent_frames_and_ignore():
    h, w = 8, 8
    a0 = ann([3], [5], [box_mask(h, w, 0, 4, 0, 4)], ignore=box_mask(h, w, 7, 8, 0, 8))
    a1 = ann([4, 9], [9, 5], [box_mask(h, w, 4, 8, 4, 8), box_mask(h, w, 0, 2, 0, 2)],
             iscrowd=np.array([False, True]))
    t = make_targets([a0, a1, None], SPACE, h, w, where="v")
    assert t.ids.tolist() == [3, 4] and t.labels.tolist() == [0, 1] and t.isthing.all()
    assert t.masks.shape == (2, 3, h, w) and not t.masks[0, 1].any() and not t.masks[1, 0].any()
    assert t.ignore[0, 7].all() and t.ignore[1, :2, :2].all() and t.ignore[2].all()  # void, crowd, no annotation
    assert not t.ignore[0, 0].any()


def test_empty_masks_are_dropped_and_size_checked():
    e = ann([1], [5], [np.zeros((4, 4), bool)])
    assert build_tubes([e], 4, 4).ids.shape == (0,)
    with pytest.raises(ValueError, match=r"vidX.*4x4.*5x5"):
        build_tubes([e], 5, 5, where="vidX")


# ------------------------------------------------------------------------------------------ collate


def test_collate_pads_to_32_and_records_sizes():
    frames, anns = clip_with_objects()
    a = make_sample("a", frames, anns, np.arange(3), AugmentParams((40, 60), (0, 0, 40, 60), False), SPACE)
    b = make_sample("b", frames, anns, np.array([4, 5, 6]), AugmentParams((70, 105), (0, 0, 70, 105), False), SPACE)
    c = collate([a, b])
    assert c.frames.shape == (2, 3, 3, 96, 128) and c.frames.dtype == torch.uint8  # normalised on the device
    assert c.image_sizes.tolist() == [[40, 60], [70, 105]]
    assert c.frame_index.tolist() == [[0, 1, 2], [4, 5, 6]] and c.video_ids == ["a", "b"]
    x = c.float_frames()
    assert (x[0, :, :, 40:] == 0).all() and (x[0, :, :, :, 60:] == 0).all()
    t = c.targets[0]
    assert t.masks.shape == (2, 3, 96, 128) and not t.masks[:, :, 40:].any()
    assert t.ignore[:, 40:].all() and not t.ignore[:, :40, :60].any()
    # normalisation: a red pixel has a positive R channel, black is negative
    assert x[0, 0, 0, 10, 10] > 0 and x[0, 0, 1, 10, 10] < 0
    assert c.reference is None and c.exemplars is None


def test_collate_one_frame_no_objects_and_reference():
    img = [np.full((20, 30, 3), 128, np.uint8)]
    p = AugmentParams((20, 30), (0, 0, 20, 30), False)
    s = make_sample("v", img, [FrameAnnotation.empty(20, 30)], np.zeros(1, np.int64), p, SPACE)
    s.reference = make_sample("v", img, [None], np.zeros(1, np.int64), p, SPACE)
    c = collate([s])
    assert c.frames.shape == (1, 1, 3, 32, 32)
    assert c.targets[0].masks.shape == (0, 1, 32, 32) and c.targets[0].labels.shape == (0,)
    assert c.reference is not None and c.reference.targets[0].ignore[0].all()


def test_collate_rejects_mixed_lengths():
    img = np.zeros((8, 8, 3), np.uint8)
    p = AugmentParams((8, 8), (0, 0, 8, 8), False)
    a = make_sample("a", [img], None, np.zeros(1, np.int64), p, SPACE)
    b = make_sample("b", [img, img], None, np.zeros(2, np.int64), p, SPACE)
    with pytest.raises(ValueError, match="b"):
        collate([a, b])
    assert collate([a]).targets is None


# ----------------------------------------------------------------------------------------- exemplars


def test_training_exemplars_from_first_frame():
    frames, anns = clip_with_objects()
    anns[0] = ann([1], [5], anns[0].masks[:1])  # object 2 not visible in the first frame
    s = make_sample("v", frames, anns, np.arange(3), AugmentParams((40, 60), (0, 0, 40, 60), False), SPACE)
    rng = np.random.default_rng(0)
    for _ in range(10):
        e = draw_exemplars(s, rng, ("mask", "point"))
        assert e.ids.tolist() == [1]
        if e.kind[0] == 0:  # point: a pixel inside the mask
            x, y = e.points[0]
            assert s.masks[0, 0, int(y), int(x)] and not e.masks[0].any()
        else:
            assert np.array_equal(e.masks[0], s.masks[0, 0])
    s.exemplars = draw_exemplars(s, rng, ("point",))
    c = collate([s])
    assert c.exemplars[0].kind == ["point"] and c.exemplars[0].masks.shape == (1, 64, 64)


def many_objects_sample(n=24, h=32, w=48):
    """One frame of n small square objects (ids 1..n), all visible."""
    masks = np.stack([box_mask(h, w, 4 * (i // 12), 4 * (i // 12) + 3, 4 * (i % 12), 4 * (i % 12) + 3) for i in range(n)])
    a = ann(list(range(1, n + 1)), [5] * n, masks)
    return make_sample("v", [np.zeros((h, w, 3), np.uint8)], [a], np.zeros(1, np.int64),
                       AugmentParams((h, w), (0, 0, h, w), False), SPACE)


def test_exemplar_kind_mix_follows_weights_and_seed():
    s = many_objects_sample()
    counts = np.zeros(3)
    for seed in range(40):  # 40 x 24 = 960 hints
        e = draw_exemplars(s, np.random.default_rng(seed), ("mask", "point", "box"), (0.6, 0.3, 0.1))
        counts += np.bincount(e.kind, minlength=3)[[2, 0, 1]]  # codes: point 0, box 1, mask 2
    frac = counts / counts.sum()
    np.testing.assert_allclose(frac, [0.6, 0.3, 0.1], atol=0.05)
    a = draw_exemplars(s, np.random.default_rng(7), ("mask", "point"), (3, 1))
    b = draw_exemplars(s, np.random.default_rng(7), ("mask", "point"), (3, 1))
    assert np.array_equal(a.kind, b.kind) and np.array_equal(a.points, b.points)  # seeded: reproducible
    only_points = draw_exemplars(s, np.random.default_rng(0), ("mask", "point"), (0.0, 1.0))
    assert (only_points.kind == 0).all() and not only_points.masks.any()


def test_box_exemplar_is_the_tight_box():
    s = many_objects_sample(n=2)
    e = draw_exemplars(s, np.random.default_rng(0), ("box",))
    assert e.boxes.tolist() == [[0, 0, 3, 3], [4, 0, 7, 3]] and not e.masks.any()


class _FixedDraw:
    """A stand-in generator whose ``integers(n)`` returns a chosen value (checks every pixel index)."""

    def __init__(self, i):
        self.i = i

    def integers(self, n):
        assert 0 <= self.i < n
        return self.i


def test_random_pixel_is_the_nonzero_pixel_of_the_draw():
    """Every index i picks the i-th pixel of np.nonzero's row-major order (the pre-#17 definition), on masks
    with empty leading/trailing rows, one-pixel rows and a strided (padded) view."""
    rng = np.random.default_rng(4)
    buf = np.zeros((3, 16, 24), bool)  # padded buffer; the masks are [:, :13, :21] views
    buf[0, 5, 7] = True  # one pixel
    buf[1, 2:9, 3:6] = True
    buf[1, 4, 19] = True  # a row with two runs
    buf[2, :13, :21] = rng.uniform(size=(13, 21)) < 0.3  # scattered, rows of 0..n pixels
    for m in buf[:, :13, :21]:
        ys, xs = np.nonzero(m)
        for i in range(len(ys)):
            assert random_pixel(m, _FixedDraw(i)) == (xs[i] + 0.5, ys[i] + 0.5)
        assert tight_box(m) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("weights", [(1.0,), (1.0, -1.0), (0.0, 0.0)])
def test_bad_exemplar_weights_name_the_video(weights):
    with pytest.raises(ValueError, match="v: exemplar weights"):
        draw_exemplars(many_objects_sample(n=1), np.random.default_rng(0), ("mask", "point"), weights)


def test_keep_hinted_drops_objects_without_a_hint():
    frames, anns = clip_with_objects()
    anns[0] = ann([1], [5], anns[0].masks[:1])  # object 2 enters after the first frame: no hint
    s = make_sample("v", frames, anns, np.arange(3), AugmentParams((40, 60), (0, 0, 40, 60), False), SPACE)
    s.exemplars = draw_exemplars(s, np.random.default_rng(0), ("mask",))
    k = keep_hinted(s)
    assert k.ids.tolist() == [1] and k.labels.tolist() == [0] and k.masks.shape == (1, 3, 40, 60)
    assert np.array_equal(k.masks[0], s.masks[0]) and k.exemplars is s.exemplars
    with pytest.raises(ValueError, match="v: keep_hinted needs"):
        keep_hinted(make_sample("v", frames, anns, np.arange(3), AugmentParams((40, 60), (0, 0, 40, 60), False), SPACE))


def test_record_exemplars_in_clip_only_and_transformed():
    mask = box_mask(40, 60, 0, 10, 0, 10)
    exs = [Exemplar(1, 5, "mask", mask=mask), Exemplar(2, 6, "point", point=(5.0, 5.0)),
           Exemplar(3, 99, "box", box=(0, 0, 10, 10))]
    p = AugmentParams((40, 60), (0, 0, 40, 60), True)
    e = record_exemplars(exs, np.array([4, 5, 6]), 40, 60, p)
    assert e.ids.tolist() == [1, 2] and e.frame.tolist() == [1, 2]
    assert e.masks[0, :10, 50:].all() and e.points[1].tolist() == [55.0, 5.0]


def test_buffers_are_reused_only_once_nothing_refers_to_them():
    """The pipeline's recycled memory: never handed out twice while a tensor, a NumPy view of the array or a
    view of a view lives (Sample.frames / .masks are NumPy views of pool memory)."""
    from gvseg.data.transforms import _Buffers

    pool = _Buffers(keep=2)
    a = torch.from_numpy(pool.empty((2, 3, 4), np.float32))
    a.fill_(1.0)
    b = torch.from_numpy(pool.empty((2, 3, 4), np.float32))  # a is alive: other memory
    assert a.data_ptr() != b.data_ptr()
    view = a[1]
    ptr = a.data_ptr()
    del a
    c = torch.from_numpy(pool.empty((2, 3, 4), np.float32))  # a's view is alive: still not a's memory (not kept)
    assert c.data_ptr() != ptr and float(view.sum()) == 12.0 and len(pool.slots) == 2
    del view, b
    d = torch.from_numpy(pool.empty((1, 3, 4), np.float32))  # a smaller request takes a free buffer: a's
    assert d.data_ptr() == ptr and len(pool.slots) == 2
    e = torch.from_numpy(pool.empty((5, 3, 4), np.float32))  # larger than any kept buffer: fresh memory
    assert e.shape == (5, 3, 4) and e.is_contiguous()
    del d, e

    pool = _Buffers(keep=4)
    arr = pool.empty((4, 6), np.uint8)
    arr[...] = 7
    ptr = arr.ctypes.data
    sub = arr[1:, :3].T[::2]  # a NumPy view of a view: its base is the pool's buffer, which it keeps
    del arr
    other = pool.empty((4, 6), np.uint8)
    assert other.ctypes.data != ptr and (sub == 7).all()
    del sub
    again = pool.empty((2, 6), np.uint8)  # the smallest free buffer that fits: the first one again
    assert again.ctypes.data == ptr
    big = pool.empty((100,), np.uint8)  # nothing free fits: new memory, kept (4 slots allowed)
    assert big.ctypes.data not in (ptr, other.ctypes.data) and len(pool.slots) == 3


def test_padded_parts_of_a_plain_array_is_the_array_itself_contiguous():
    from gvseg.data.transforms import padded_parts

    a = np.arange(2 * 5 * 7, dtype=np.uint8).reshape(2, 5, 7)[:, :, ::-1]  # no padded buffer behind it
    buf, hw = padded_parts(a)
    assert hw == (5, 7) and buf.flags.c_contiguous and np.array_equal(buf, a)


def test_adopted_padded_buffer_collates_as_it_is_and_empty_clips_work():
    from gvseg.data.transforms import _padded_base, adopt_padded

    buf = np.zeros((2, 3, 64, 96), np.uint8)
    buf.flags.writeable = False  # as Ray hands it out
    view = adopt_padded(buf, 50, 70)
    assert view.shape == (2, 3, 50, 70) and np.shares_memory(_padded_base(view, 64, 96), buf)
    assert adopt_padded(np.zeros((0, 3, 0, 0), np.uint8), 0, 0).shape == (0, 3, 0, 0)
    with pytest.raises(ValueError, match="C-contiguous"):
        adopt_padded(np.zeros((4, 6), np.uint8)[:, ::2], 2, 2)
