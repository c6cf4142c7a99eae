import numpy as np

from gvseg.visualize import id_colors, overlay, side_by_side


def test_colors_are_stable_and_void_is_black():
    ids = np.array([[0, 7], [7, 9]])
    c = id_colors(ids)
    assert (c[0, 0] == 0).all() and (c[0, 1] == c[1, 0]).all() and not (c[0, 1] == c[1, 1]).all()


def test_overlay_keeps_background_pixels():
    frame = np.full((8, 8, 3), 50, np.uint8)
    ids = np.zeros((8, 8), np.int64)
    assert (overlay(frame, ids) == frame).all()


def test_side_by_side_shapes_and_enlarges_tiny_frames():
    frame = np.zeros((64, 96, 3), np.uint8)
    ids = np.zeros((64, 96), np.int64)
    ids[10:20, 10:20] = 3
    out = side_by_side(frame, ids, ids)
    assert out.shape == (256, 2 * 384, 3)
    assert side_by_side(np.zeros((300, 40, 3), np.uint8), np.zeros((300, 40), np.int64)).shape == (300, 40, 3)
