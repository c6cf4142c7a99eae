import gc
import tracemalloc

import numpy as np
import pytest
import torch

from gvseg.model.gvseg import build_gvseg
from gvseg.recipes import unit_model_config
from gvseg.structures import Exemplar
from gvseg.video.postprocess import upsample
from gvseg.video.stream import predict_video

torch.set_num_threads(1)  # 2 shared CPU cores: avoid oversubscription

H = W = 64


def _model(task, overlap=0, score=0.0):
    torch.manual_seed(0)
    cfg = unit_model_config(task)
    cfg.association.clip_overlap = overlap
    # an untrained model: keep every query so every path runs
    cfg.postprocess.track_min_score = score  # VIS: what the tracker sees
    cfg.postprocess.object_mask_threshold = score  # VPS: Mask2Former's 0.8 would leave a random model void
    cfg.postprocess.overlap_threshold = 0.0
    return build_gvseg(cfg).eval(), cfg


def _frames(n, seed=0, constant=False, size=(H, W)):
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
    for i in range(n):  # lazily: the video is never held in memory
        if constant:
            yield base
        else:
            f = base.copy()
            f[10:30, 5 + i % 20:25 + i % 20] = 250  # a moving bright box
            yield f


def _record_windows(model):
    windows = []
    real = model.forward

    def spy(clip):
        windows.append(clip.frame_index[0].tolist())
        return real(clip)

    model.forward = spy
    return windows


@pytest.mark.parametrize("overlap,n,expect", [
    (0, 7, [[0, 1, 2], [3, 4, 5], [4, 5, 6]]),
    (1, 8, [[0, 1, 2], [2, 3, 4], [4, 5, 6], [5, 6, 7]]),
    (0, 2, [[0, 1]]),
    (0, 6, [[0, 1, 2], [3, 4, 5]]),
])
def test_clip_windows_and_each_frame_once(overlap, n, expect):
    model, cfg = _model("vss", overlap)
    windows = _record_windows(model)
    out = list(predict_video(model, _frames(n), cfg, progress=False))
    assert windows == expect
    assert [f.frame_index for f in out] == list(range(n))


def test_streaming_20_frames_vps_with_overlap():
    model, cfg = _model("vps", overlap=1)
    out = list(predict_video(model, _frames(20), cfg, video_id="v", progress=False))
    assert len(out) == 20
    for f in out:
        assert f.id_map.shape == (H, W) and f.id_map.dtype == np.int32 and f.semantic.shape == (H, W)
        present = set(np.unique(f.id_map).tolist()) - {0}
        assert present == {s.id for s in f.segments}
        for s in f.segments:
            assert s.area == int((f.id_map == s.id).sum())
            assert s.isthing == (s.label < cfg.num_thing_classes)
            assert (f.semantic[f.id_map == s.id] == s.label).all()
        assert (f.semantic[f.id_map == 0] == -1).all()


def test_constant_video_keeps_track_ids():
    model, cfg = _model("vps")
    out = list(predict_video(model, _frames(9, constant=True), cfg, progress=False))
    assert out[0].id_map.max() > 0
    for f in out[1:]:
        np.testing.assert_array_equal(f.id_map, out[0].id_map)


def test_vis_rle_segments():
    from pycocotools import mask as mask_util

    model, cfg = _model("vis")
    out = list(predict_video(model, _frames(4), cfg, progress=False))
    assert len(out) == 4
    segs = [s for f in out for s in f.segments]
    assert segs, "score_threshold 0 keeps queries"
    for s in segs:
        m = mask_util.decode(s.rle)
        assert m.shape == (H, W) and int(m.sum()) == s.area > 0


def test_vis_clip_that_keeps_no_instance():
    model, cfg = _model("vis", score=1.01)  # no class score can pass: every clip keeps nothing
    out = list(predict_video(model, _frames(4), cfg, progress=False))
    assert len(out) == 4 and all(f.segments == [] for f in out)


def test_vss_semantic_map():
    model, cfg = _model("vss")
    out = list(predict_video(model, _frames(3), cfg, progress=False))
    sem = out[0].semantic
    assert sem.shape == (H, W) and sem.min() >= 0 and sem.max() < cfg.num_classes
    assert sum(s.area for s in out[0].segments) == H * W


def test_evs_objects_enter_at_their_hint_and_get_reinitialised():
    model, cfg = _model("evs")
    mask = np.zeros((H, W), bool)
    mask[10:30, 5:25] = True
    ex = [Exemplar(track_id=7, frame=0, kind="mask", mask=mask),
          Exemplar(track_id=9, frame=4, kind="point", point=(40.0, 45.0))]
    kinds = []
    real = model.forward

    def spy(clip):
        kinds.append(dict(zip(clip.exemplars[0].ids.tolist(), clip.exemplars[0].kind)))
        return real(clip)

    model.forward = spy
    out = list(predict_video(model, _frames(9), cfg, exemplars=ex, progress=False))
    assert kinds[0] == {7: "mask"} and 9 in kinds[1] and kinds[1][9] == "point"
    assert all(9 not in f.id_map for f in out[:4])  # object 9 does not exist before its hint
    assert set(np.unique(np.concatenate([f.id_map.ravel() for f in out]))) <= {0, 7, 9}
    if any(7 in f.id_map for f in out[:3]):  # re-initialised from its predicted mask once it was seen
        assert kinds[1][7] == "mask"


def test_frame_size_change_raises():
    model, cfg = _model("vss")

    def frames():
        yield np.zeros((H, W, 3), np.uint8)
        yield np.zeros((H, W + 32, 3), np.uint8)

    with pytest.raises(ValueError, match="frame 1"):
        list(predict_video(model, frames(), cfg, progress=False))


def _peak(model, cfg, n):
    gc.collect()
    gc.disable()  # a collection landing at a random point made the peak swing by ~10% (CI, 2026-12-03)
    tracemalloc.start()
    try:
        # 128x128: per-clip outputs (numpy maps) dominate; torch's own small allocations stay in the noise
        for f in predict_video(model, _frames(n, size=(128, 128)), cfg, progress=False):
            del f  # a consumer that writes each frame out and forgets it
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        gc.enable()
    return peak


def test_long_video_memory_does_not_grow():
    model, cfg = _model("vps")
    _peak(model, cfg, 6)  # warm-up: lazy imports and caches
    # 60 frames: past the tracker's warm-up (its live tracks settle once the first ones retire after
    # max_missing_clips); a per-frame leak of one 128x128 int32 map would add 11 MiB over 180 more frames
    short = _peak(model, cfg, 60)
    long = _peak(model, cfg, 240)
    assert long <= 1.10 * short, (short, long)


# ------------------------------------------------------------------ scripted outputs: one rule at a time


class _Scripted(torch.nn.Module):
    """Stands in for GvSeg: clip k returns ``logits[k]`` [Q, C+1] (the last one repeats) and the same masks
    ``masks`` [Q, H, W] (logits at input size) in every frame; orthogonal, constant track embeddings."""

    def __init__(self, logits, masks, **extra):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))  # predict_video reads the device from the parameters
        self.logits, self.masks, self.extra, self.calls = logits, masks, extra, 0

    def forward(self, clip):
        _, t, _, h, w = clip.frames.shape
        lg = self.logits[min(self.calls, len(self.logits) - 1)]
        self.calls += 1
        q = lg.shape[0]
        m = torch.nn.functional.interpolate(self.masks[None], size=(-(-h // 4), -(-w // 4)))[0]  # [Q, h4, w4]
        return {"pred_logits": lg[None], "pred_masks": m[:, None].expand(q, t, *m.shape[1:])[None],
                "pred_embeds": torch.eye(q, 8)[None], "pred_descriptors": torch.zeros(1, q, t, 16),
                "query_is_stuff": torch.zeros(q, dtype=torch.bool), "query_class": torch.full((q,), -1),
                **self.extra}


def _rows(*rows, c=4):
    """rows of (class, p): p on the class, 1 - p on no-object -> [Q, C+1] logits."""
    out = torch.full((len(rows), c + 1), -20.0)
    for i, (k, p) in enumerate(rows):
        out[i, k], out[i, -1] = float(np.log(p)), float(np.log(1 - p))
    return out


def _halves(q=2):
    masks = torch.full((q, H, W), -20.0)
    masks[0, : H // 2], masks[1, H // 2:] = 20.0, 20.0
    return masks


def test_vis_track_whose_score_dips_in_one_clip_keeps_its_id_and_frames():
    """No per-clip threshold ends a track: at p = 0.2 in clip 1 (below the old 0.5 cut) query 0 is still
    tracked, so frames 3-5 keep its masks and its id."""
    cfg = unit_model_config("vis")
    logits = [_rows((0, 0.9), (1, 0.9)), _rows((0, 0.2), (1, 0.9)), _rows((0, 0.9), (1, 0.9))]
    out = list(predict_video(_Scripted(logits, _halves()), _frames(9), cfg, progress=False))
    ids = [{s.id: s for s in f.segments} for f in out]
    first = out[0].segments[0].id if out[0].segments[0].label == 0 else out[0].segments[1].id
    assert all(first in f for f in ids) and all(len(f) == 2 for f in ids)
    assert ids[4][first].score == pytest.approx(0.2, abs=1e-4) and ids[7][first].score == pytest.approx(0.9, 1e-4)
    s = ids[0][first]
    assert s.class_probs.shape == (cfg.num_classes,) and s.mask_score == pytest.approx(1.0, abs=1e-3)
    assert out[0].postprocess is cfg.postprocess


def test_vis_track_min_score_is_only_a_noise_floor():
    cfg = unit_model_config("vis")
    out = list(predict_video(_Scripted([_rows((0, 0.04), (1, 0.9))], _halves()), _frames(3), cfg, progress=False))
    assert [s.label for s in out[0].segments] == [1]  # 0.04 < track_min_score 0.05


def test_vps_query_type_gate_in_predict_video():
    """Thing (grid) query 0 prefers stuff class 2 and bank query 1 (class 3) prefers thing class 0; the gate
    leaves each only what its kind allows."""
    cfg = unit_model_config("vps")  # 4 classes, 0-1 things
    lg = torch.full((2, 5), -20.0)
    lg[0, 0], lg[0, 2], lg[0, 4] = 4.0, 8.0, 0.0  # gated: p(0) = 0.98 > 0.8
    lg[1, 0], lg[1, 3], lg[1, 4] = 8.0, 4.0, 0.0  # gated: p(3) = 0.98
    gate = {"query_kind": torch.tensor([1, 2]), "query_class": torch.tensor([-1, 3])}
    out = list(predict_video(_Scripted([lg], _halves(), **gate), _frames(3), cfg, progress=False))
    f = out[0]
    assert (f.semantic[: H // 2] == 0).all() and (f.semantic[H // 2:] == 3).all()
    assert sorted((s.label, s.isthing) for s in f.segments) == [(0, True), (3, False)]
    cfg.postprocess.class_gate = False  # ablation: the ungated argmax
    out = list(predict_video(_Scripted([lg], _halves(), **gate), _frames(3), cfg, progress=False))
    assert (out[0].semantic[: H // 2] == 2).all() and (out[0].semantic[H // 2:] == 0).all()


def test_vss_panoptic_mode_leaves_void():
    cfg = unit_model_config("vss")
    cfg.postprocess.vss_mode = "panoptic"
    masks = _halves()
    masks[1] = -20.0  # query 1 holds nothing: the bottom half is void
    out = list(predict_video(_Scripted([_rows((2, 0.9), (3, 0.9))], masks), _frames(3), cfg, progress=False))
    sem = out[0].semantic
    assert (sem[: H // 2] == 2).all() and (sem[H // 2:] == -1).all()
    assert [(s.label, s.area) for s in out[0].segments] == [(2, H * W // 2)]


class _BoxModel(torch.nn.Module):
    """Stub EVS segmenter: object ``i`` (row band by id) is a box whose columns move with the clip and the
    frame, so a hint re-made from a prediction shows which clip and frame it came from."""

    ROWS = {7: (1, 4), 9: (5, 8)}  # rows at 1/4 resolution

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # predict_video reads the device from a parameter
        self.seen = []  # per clip: (frame index, exemplars)

    @staticmethod
    def cols(clip_start, f):
        c = clip_start // 3 * 2 + f
        return 2 + c, 6 + c

    def forward(self, clip):
        ex = clip.exemplars[0]
        self.seen.append((clip.frame_index[0].tolist(), ex))
        b, t, _, h, w = clip.frames.shape
        ids = ex.ids
        masks = torch.full((1, len(ids), t, h // 4, w // 4), -10.0)
        start = int(clip.frame_index[0, 0])
        for q, i in enumerate(ids.tolist()):
            r0, r1 = self.ROWS[i]
            for f in range(t):
                c0, c1 = self.cols(start, f)
                masks[0, q, f, r0:r1, c0:c1] = 10.0
        logits = torch.tensor([[5.0, -5.0]]).expand(len(ids), 2)[None]
        return {"pred_logits": logits, "pred_masks": masks, "query_ids": ids[None],
                "query_is_stuff": torch.zeros(len(ids), dtype=torch.bool)}


def test_evs_later_clips_get_mask_hints_from_the_previous_clips_last_frame():
    """method.md: later clips re-initialise each object from the previous clip's last predicted mask."""
    cfg = unit_model_config("evs")
    model = _BoxModel()
    ex = [Exemplar(track_id=7, frame=0, kind="point", point=(10.0, 10.0)),
          Exemplar(track_id=9, frame=4, kind="box", box=(30.0, 20.0, 8.0, 8.0))]
    out = list(predict_video(model, _frames(9), cfg, exemplars=ex, progress=False))
    assert len(out) == 9 and [s[0] for s in model.seen] == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]

    def expected(track, clip_start):  # the stub's last-frame mask of that clip, as predicted at input size
        logit = torch.full((1, H // 4, W // 4), -10.0)
        (r0, r1), (c0, c1) = _BoxModel.ROWS[track], _BoxModel.cols(clip_start, 2)
        logit[0, r0:r1, c0:c1] = 10.0
        m = upsample(logit, (H, W))[0] > 0
        assert m[4 * r0 + 1:4 * r1 - 1, 4 * c0 + 1:4 * c1 - 1].all() and m.sum() < 4 * 4 * (r1 - r0) * (c1 - c0)
        return m

    def hints(k):
        e = model.seen[k][1]
        return {i: (kind, int(f), m) for i, kind, f, m in zip(e.ids.tolist(), e.kind, e.frame, e.masks)}

    first, second, third = hints(0), hints(1), hints(2)
    assert first.keys() == {7} and first[7][0] == "point"  # the given hint; 9 has not appeared yet
    kind, frame, mask = second[7]
    assert kind == "mask" and frame == 0  # the previous clip's last frame comes right before this clip
    assert torch.equal(mask, expected(7, 0))
    assert second[9][:2] == ("box", 1)  # first appearance: the given hint, at its own frame (video frame 4)
    for track in (7, 9):  # third clip: both re-made from the second clip's last frame, not the first's
        kind, frame, mask = third[track]
        assert kind == "mask" and frame == 0 and torch.equal(mask, expected(track, 3))
    assert out[0].id_map[4 * 1 + 1, 4 * 2 + 1] == 7 and 9 not in out[3].id_map  # 9 is absent before its hint


def test_vps_keeps_several_instances_of_one_thing_class_in_a_frame():
    """Things come from thing (grid) queries, one segment each: two grid queries on class 0 give two
    instances with two track ids in the same frame (the VPS bug: one segment per thing class)."""
    from gvseg.structures import QUERY_THING

    cfg = unit_model_config("vps")  # 4 classes, 2 things
    cfg.postprocess.object_mask_threshold = 0.5
    model = _Scripted([_rows((0, 0.9), (0, 0.9))], _halves(),
                      query_kind=torch.full((2,), QUERY_THING), query_meta=None)
    out = list(predict_video(model, _frames(6), cfg, "vps", progress=False))
    for f in out:
        things = [s for s in f.segments if s.isthing and s.label == 0]
        assert len(things) == 2 and things[0].id != things[1].id
    assert {s.id for s in out[0].segments} == {s.id for s in out[-1].segments}  # and they are tracked
