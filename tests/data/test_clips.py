"""Clip sampling: lengths, determinism, short videos, annotated-only frames, reference range."""

import numpy as np
import pytest

from gvseg.data.clips import eval_clips, sample_clip


def rng(s=0):
    return np.random.default_rng(s)


def test_key_clip_is_consecutive_and_seeded():
    a = sample_clip(20, 3, rng(1), reference_frames=3)
    b = sample_clip(20, 3, rng(1), reference_frames=3)
    assert np.array_equal(a.key, b.key) and np.array_equal(a.reference, b.reference)
    assert len(a.key) == 3 and np.array_equal(np.diff(a.key), [1, 1])
    assert a.key.dtype == np.int64


def test_reference_from_anywhere_in_the_video():
    starts = {int(sample_clip(60, 3, rng(s), reference_frames=3).reference[0]) for s in range(300)}
    assert min(starts) < 5 and max(starts) > 52  # whole-video reference set (TCL)


def test_reference_range_limits_distance():
    for s in range(100):
        c = sample_clip(60, 3, rng(s), reference_frames=3, reference_range=4)
        assert abs(int(c.reference[0]) - int(c.key[0])) <= 4
        assert c.reference[0] != c.key[0]  # a different clip is preferred


def test_short_video_repeats_last_frame():
    c = sample_clip(2, 3, rng(), reference_frames=3)
    assert c.key.tolist() == [0, 1, 1] and c.reference.tolist() == [0, 1, 1]


def test_one_frame_video():
    c = sample_clip(1, 3, rng(), reference_frames=2, reference_range=1)
    assert c.key.tolist() == [0, 0, 0] and c.reference.tolist() == [0, 0]


def test_only_annotated_frames_are_sampled():
    ann = np.zeros(30, bool)
    ann[::5] = True  # OVIS / YTVIS: every 5th frame
    for s in range(50):
        c = sample_clip(30, 3, rng(s), annotated=ann, reference_frames=3)
        assert ann[c.key].all() and ann[c.reference].all()
        assert np.all(np.diff(c.key) == 5)


def test_no_reference_requested():
    assert sample_clip(10, 3, rng()).reference.shape == (0,)


def test_unannotated_video_raises():
    with pytest.raises(ValueError, match="vid7"):
        sample_clip(4, 3, rng(), annotated=np.zeros(4, bool), video_id="vid7")


def test_eval_clips_cover_every_frame():
    clips = eval_clips(7, 3)
    assert [c.tolist() for c in clips] == [[0, 1, 2], [3, 4, 5], [6, 6, 6]]
    assert [c.tolist() for c in eval_clips(5, 3, overlap=1)] == [[0, 1, 2], [2, 3, 4]]
    assert [c.tolist() for c in eval_clips(1, 3)] == [[0, 0, 0]]
