"""The array kernels of the clip pipeline (gvseg.data.arrays) and the RLE stack -> index map step equal the
plain NumPy expressions they replace (issue #17)."""

import numpy as np
import pytest
from pycocotools import mask as mask_util

from gvseg.data.arrays import lookup, paint_runs, runs
from gvseg.data.formats import _common as C


def label_map(rng, h=37, w=53, n=7, dtype=np.uint32):
    """Blocky map with a few scattered pixels (runs of every length, including 1)."""
    m = rng.integers(0, n, (h // 4 + 1, w // 4 + 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    m[rng.uniform(size=(h, w)) < 0.05] = n + 3
    return (m * 65536 + 255).astype(dtype)  # large values: 24-bit keys as in KITTI-STEP / VIPSeg


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32, np.int64])
def test_runs_give_the_map_back_and_its_distinct_values(dtype):
    rng = np.random.default_rng(0)
    m = label_map(rng).astype(dtype)  # narrower dtypes wrap: still a label map
    lengths, values = runs(m)
    assert lengths.sum() == m.size and (lengths > 0).all()
    assert (values[1:] != values[:-1]).all()  # maximal runs
    assert np.array_equal(np.repeat(values, lengths).reshape(m.shape), m)
    assert np.array_equal(np.unique(values), np.unique(m))
    u, inv = np.unique(values, return_inverse=True)
    code = np.arange(len(u), dtype=np.uint8)[::-1].copy()
    assert np.array_equal(paint_runs(lengths, code[inv], m.shape), code[np.searchsorted(u, m)])


def test_runs_of_empty_and_constant_maps():
    lengths, values = runs(np.zeros((0, 5), np.uint32))
    assert lengths.size == 0 and values.size == 0
    lengths, values = runs(np.full((3, 4), 9, np.uint16))
    assert lengths.tolist() == [12] and values.tolist() == [9]


def test_lookup_matches_take_into_a_strided_view():
    rng = np.random.default_rng(1)
    values = rng.integers(0, 11, (29, 41)).astype(np.uint8)
    lut = rng.integers(0, 256, 11).astype(np.uint8)  # fewer than 256 entries
    buf = np.full((32, 64), 77, np.uint8)
    out = lookup(lut, values, out=buf[:29, :41])
    assert out.base is buf or out.ctypes.data == buf.ctypes.data
    assert np.array_equal(buf[:29, :41], lut[values])
    assert (buf[29:] == 77).all() and (buf[:, 41:] == 77).all()  # the padding is left alone
    assert np.array_equal(lookup(lut, values), lut[values])
    wide = lut.astype(np.uint16) * 300  # not a uint8 table: the np.take path
    assert np.array_equal(lookup(wide, values), wide[values])


def stack_of(masks):
    """[K, H, W] bool -> the [H, W, K] Fortran uint8 stack pycocotools decodes."""
    rles = [mask_util.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    return mask_util.decode(rles)


def test_indexed_if_disjoint_equals_the_masks():
    rng = np.random.default_rng(2)
    ids = np.array([4, 9, 12], np.int64)
    cats = np.array([1, 1, 2], np.int64)
    h, w = 23, 31
    lab = rng.integers(0, 4, (h, w))
    masks = np.stack([lab == k + 1 for k in range(3)])  # disjoint
    a = C.indexed_if_disjoint(ids, cats, stack_of(masks), np.zeros(3, bool))
    assert isinstance(a, C.IndexedAnnotation) and a.index.shape == (h, w)
    assert np.array_equal(a.masks, masks) and a.ignore is None
    assert np.array_equal(a.index, lab.astype(np.uint8))
    over = masks.copy()
    over[0, 0, :] = over[1, 0, :] = True  # two objects share a row: the per-mask path
    b = C.indexed_if_disjoint(ids, cats, stack_of(over), np.zeros(3, bool))
    assert not isinstance(b, C.IndexedAnnotation) and b.masks.dtype == bool
    assert np.array_equal(b.masks, over)
    e = C.indexed_if_disjoint(np.zeros(0, np.int64), np.zeros(0, np.int64), C.decode_stack([], h, w, "x"))
    assert e.masks.shape == (0, h, w)
