"""Seeded sampling of a training clip and its TCL reference clip from one video (frame indices only).

Contract:
  * input: the video length ``num_frames``, optionally ``annotated`` ([N] bool, which frames have ground
    truth), the key clip length T and the reference clip length R, and a ``numpy.random.Generator``;
  * output: :class:`ClipIndices` with ``key`` [T] and ``reference`` [R] int64 frame indices into the video,
    each sorted ascending; ``reference`` is empty when R = 0.

Rules:
  * **Candidates.** A clip is T *consecutive candidate* frames. In training (``annotated`` given) the
    candidates are the annotated frames only, so sparsely labelled videos (OVIS / YouTube-VIS every 5th
    frame, VIPSeg's non-consecutive names) give clips whose every frame has ground truth. When every frame
    is annotated (or ``annotated`` is None) all frames are candidates.
  * **Short videos.** With fewer than T candidates the clip holds all of them and then repeats the last
    index (``[0, 1, 1]`` for a 2-frame video, ``[0, 0, 0]`` for one frame), so every clip in a batch has T
    frames and the model never sees a blank frame.
  * **Reference clip (TCL, Eq. 10).** ``reference_range = 0``: the reference clip may start anywhere in the
    video ("Video" sampling of Table 4e; GvSeg's reference set spans the whole video). ``reference_range > 0``:
    its start lies within ±range video frames of the key clip's start ("Frame" ablation of Table 4e, the
    nearby-frames sampling of IDOL/CTVIS). A start different from the key clip's is preferred when one exists.
  * A video with no annotated frame cannot give a training clip: ``ValueError`` naming the video.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClipIndices:
    key: np.ndarray  # [T] int64 frame indices into the video, ascending (may repeat for short videos)
    reference: np.ndarray  # [R] int64, ascending; empty when no reference clip was asked for


def candidate_frames(num_frames: int, annotated: np.ndarray | None = None, video_id: str = "") -> np.ndarray:
    """[N'] int64: frames a training clip may use (annotated ones; all when annotated is None)."""
    if num_frames < 1:
        raise ValueError(f"{video_id or 'video'}: has no frames")
    if annotated is None:
        return np.arange(num_frames, dtype=np.int64)
    annotated = np.asarray(annotated, bool)
    if annotated.shape != (num_frames,):
        raise ValueError(f"{video_id or 'video'}: annotated has shape {annotated.shape}, expected ({num_frames},)")
    cand = np.flatnonzero(annotated).astype(np.int64)
    if cand.size == 0:
        raise ValueError(f"{video_id or 'video'}: no annotated frame to sample a training clip from")
    return cand


def window(candidates: np.ndarray, start: int, length: int) -> np.ndarray:
    """``length`` consecutive candidates from position ``start``; the last one repeats past the end."""
    pos = np.minimum(np.arange(start, start + length), len(candidates) - 1)
    return candidates[pos]


def sample_clip(num_frames: int, clip_frames: int, rng: np.random.Generator, *,
                annotated: np.ndarray | None = None, reference_frames: int = 0, reference_range: int = 0,
                video_id: str = "") -> ClipIndices:
    """A random key clip and reference clip (see the module docstring)."""
    if clip_frames < 1:
        raise ValueError(f"clip_frames must be >= 1, got {clip_frames}")
    if reference_frames < 0 or reference_range < 0:
        raise ValueError(f"reference_frames and reference_range must be >= 0, got {reference_frames}, {reference_range}")
    cand = candidate_frames(num_frames, annotated, video_id)
    n = len(cand)
    key_start = int(rng.integers(max(n - clip_frames + 1, 1)))
    key = window(cand, key_start, clip_frames)
    if reference_frames == 0:
        return ClipIndices(key, np.zeros(0, np.int64))

    starts = np.arange(max(n - reference_frames + 1, 1))
    if reference_range > 0:  # "Frame" sampling: only starts near the key clip, measured in video frames
        near = np.abs(cand[starts] - cand[key_start]) <= reference_range
        starts = starts[near]  # never empty: key_start itself is near when it is a valid start
        if starts.size == 0:
            starts = np.array([min(key_start, max(n - reference_frames, 0))])
    others = starts[starts != key_start]
    pool = others if others.size else starts
    ref_start = int(pool[rng.integers(len(pool))])
    return ClipIndices(key, window(cand, ref_start, reference_frames))


def eval_clips(num_frames: int, clip_frames: int, overlap: int = 0) -> list[np.ndarray]:
    """Consecutive clips covering a whole video for inference: stride T - overlap, last clip padded by
    repeating the last frame. Returns a list of [T] int64 index arrays (one clip for a one-frame video)."""
    if not 0 <= overlap < clip_frames:
        raise ValueError(f"overlap must be in [0, {clip_frames}), got {overlap}")
    idx = np.arange(num_frames, dtype=np.int64)
    stride = clip_frames - overlap
    starts = range(0, max(num_frames - overlap, 1), stride)
    return [window(idx, s, clip_frames) for s in starts]
