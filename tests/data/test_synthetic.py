"""Synthetic video generator: determinism, segment-id invariants, enter/leave, lookalike property."""

import numpy as np
import pytest

from gvseg.data.synthetic import generate_split, generate_video, plan_video, render_texture, select_categories
from gvseg.structures import Category

CATS = [Category(i, f"thing{i}", True) for i in range(1, 5)] + [Category(10 + i, f"stuff{i}", False) for i in range(4)]
KW = dict(frames=6, height=48, width=64)


def test_deterministic_given_seed():
    a = generate_video("0_a", CATS, seed=7, **KW)
    b = generate_video("0_a", CATS, seed=7, **KW)
    c = generate_video("0_a", CATS, seed=8, **KW)
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert all(np.array_equal(x, y) for x, y in zip(a.id_maps, b.id_maps))
    assert a.segment_category == b.segment_category
    assert not all(np.array_equal(x, y) for x, y in zip(a.frames, c.frames))


def test_shapes_and_ids_are_consistent():
    v = generate_video("0_a", CATS, seed=1, **KW)
    assert len(v.frames) == len(v.id_maps) == KW["frames"]
    for f, m in zip(v.frames, v.id_maps):
        assert f.shape == (48, 64, 3) and f.dtype == np.uint8
        assert m.shape == (48, 64) and m.dtype == np.int64
        # every id drawn is a known segment; segments never overlap by construction (one id per pixel)
        assert set(np.unique(m).tolist()) - {0} <= set(v.segment_category)
    known = {c.id for c in CATS}
    assert set(v.segment_category.values()) <= known
    # stuff classes get exactly one segment id each
    stuff = [c for s, c in v.segment_category.items() if not next(k for k in CATS if k.id == c).isthing]
    assert len(stuff) == len(set(stuff)) >= 2


def test_things_enter_and_leave():
    for seed in range(5):
        v = generate_video("0_a", CATS, seed=seed, **KW)
        things = [s for s, c in v.segment_category.items() if c < 10]
        present = np.array([[(m == s).any() for m in v.id_maps] for s in things])  # [N, T]
        entered = (~present[:, 0] & present.any(1)).any()
        left = (present[:, 0] & ~present[:, -1]).any()
        assert entered and left, f"seed {seed}: no instance enters ({entered}) or leaves ({left})"


def test_lookalike_instances_share_texture_and_shape_and_cross():
    plan = plan_video("0_a", CATS, seed=3, lookalike=True, **KW)
    look = [t for t in plan.things if t.role == "lookalike"]
    assert len(look) >= 2
    cls = look[0].category_id
    same_class = [t for t in plan.things if t.category_id == cls]
    assert all(t.texture == look[0].texture for t in same_class)
    assert len({t.shape for t in same_class}) == 1
    # the crossing pair meets in the middle of the video: centres far apart at the ends, close at mid
    p = lambda t, i: np.array(t.pose(i, KW["frames"])[:2])
    d0 = np.linalg.norm(p(look[0], 0) - p(look[1], 0))
    dmid = np.linalg.norm(p(look[0], (KW["frames"] - 1) / 2) - p(look[1], (KW["frames"] - 1) / 2))
    assert dmid < 0.2 * d0
    # every visible lookalike pixel takes its colour from the one shared palette (no per-instance jitter)
    v = generate_video("0_a", CATS, seed=3, lookalike=True, **KW)
    palette = set(look[0].texture.palette)
    seen = 0
    for t in look:
        cols = {tuple(int(x) for x in c) for c in v.frames[0][v.id_maps[0] == t.segment_id]}
        assert cols <= palette
        seen += bool(cols)
    assert seen >= 2


def test_plain_instances_of_a_class_differ_in_appearance():
    plan = plan_video("0_a", [Category(1, "a", True)], seed=0, **KW)
    textures = [t.texture for t in plan.things]
    assert len(textures) >= 2 and len({t.palette for t in textures}) > 1


def test_no_stuff_categories_gives_unlabelled_background():
    v = generate_video("0_a", [Category(1, "a", True)], seed=0, **KW)
    assert (v.id_maps[0] == 0).any()
    assert set(v.segment_category.values()) == {1}


def test_no_thing_categories_and_one_frame():
    v = generate_video("0_a", [Category(3, "s", False), Category(4, "t", False)], seed=0, frames=1, height=16, width=16)
    assert len(v.frames) == 1 and set(v.segment_category.values()) <= {3, 4}


def test_bad_size_raises():
    with pytest.raises(ValueError, match="0_a"):
        generate_video("0_a", CATS, seed=0, frames=0, height=16, width=16)


def test_texture_uses_palette_only():
    plan = plan_video("0_a", CATS, seed=0, **KW)
    tex = plan.things[0].texture
    xs = np.linspace(-20, 20, 200)
    out = render_texture(tex, xs, xs[::-1])
    assert {tuple(c) for c in out} <= set(tex.palette)


def test_split_ids_unique_and_class_subset():
    cats = select_categories(CATS, thing_classes=2, stuff_classes=2)
    assert [c.id for c in cats] == [1, 2, 10, 11]
    vids = generate_split(cats, videos=3, seed=0, start_index=5, frames=2, height=16, width=16)
    assert [v.video_id for v in vids] == ["5_synth0", "6_synth0", "7_synth0"]
    assert all(set(v.segment_category.values()) <= {1, 2, 10, 11} for v in vids)
