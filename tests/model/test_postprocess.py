"""Each post-processing rule on hand-built logits: C = 4 real classes (0, 1 things; 2, 3 stuff) + no-object."""

import math

import pytest
import torch

from gvseg.config import PostprocessConfig
from gvseg.video.postprocess import (
    allowed_classes,
    class_probs,
    exemplar_maps,
    instance_results,
    panoptic_maps,
    semantic_maps,
    vis_topk,
    vss_maps,
)

torch.set_num_threads(1)

BIG = 20.0
C, N_TH = 4, 2  # classes 0, 1 are things; 2, 3 stuff


def _logits(rows):
    """rows: [(class, p)]: query q puts probability p on its class and 1 - p on no-object (others ~0)."""
    out = torch.full((len(rows), C + 1), -BIG)
    for i, (c, p) in enumerate(rows):
        out[i, c], out[i, -1] = math.log(p), math.log(1 - p)
    return out


def _mask(h, w, y0, y1, x0, x1, t=1, inside=BIG, outside=-BIG):
    m = torch.full((t, h, w), outside)
    m[:, y0:y1, x0:x1] = inside
    return m


def _pan(logits, masks, size=(8, 8), **kw):
    kw = {"object_mask_threshold": 0.8, "overlap_threshold": 0.8, **kw}
    return panoptic_maps(logits, masks, size, N_TH, **kw)


# ----------------------------------------------------------------------------------------------- VIS


def test_vis_topk_picks_the_k_best_pairs_across_tracks_and_classes():
    probs = torch.tensor([[0.9, 0.05, 0.0, 0.0], [0.2, 0.6, 0.0, 0.0], [0.3, 0.1, 0.0, 0.0]])
    picks = vis_topk([11, 12, 13], probs, torch.ones(3), k=3)
    assert [(t, c) for t, c, _ in picks] == [(11, 0), (12, 1), (13, 0)]
    assert [s for _, _, s in picks] == pytest.approx([0.9, 0.6, 0.3])


def test_vis_topk_same_track_with_two_classes():
    probs = torch.tensor([[0.5, 0.45, 0.0, 0.0], [0.1, 0.0, 0.0, 0.0]])
    picks = vis_topk([1, 2], probs, torch.ones(2), k=2)
    assert [(t, c) for t, c, _ in picks] == [(1, 0), (1, 1)]


def test_vis_score_is_class_prob_times_mask_score_or_class_only():
    probs = torch.tensor([[0.8, 0.0, 0.0, 0.0], [0.6, 0.0, 0.0, 0.0]])
    masks = torch.tensor([0.5, 1.0])
    picks = vis_topk([1, 2], probs, masks, k=2)  # default: class x mask
    assert [(t, s) for t, _, s in picks] == [(2, pytest.approx(0.6)), (1, pytest.approx(0.4))]
    picks = vis_topk([1, 2], probs, masks, k=2, score="class")
    assert [(t, s) for t, _, s in picks] == [(1, pytest.approx(0.8)), (2, pytest.approx(0.6))]


def test_vis_topk_never_emits_zero_score_pairs_and_empty_gives_nothing():
    probs = torch.tensor([[0.7, 0.0, 0.0, 0.0]])  # classes 1..3 gated out
    assert vis_topk([5], probs, torch.ones(1), k=10) == [(5, 0, pytest.approx(0.7))]
    assert vis_topk([], torch.zeros(0, C), torch.zeros(0), k=10) == []


def test_instance_results_mask_score_is_mean_sigmoid_inside_the_mask():
    m = _mask(4, 4, 0, 2, 0, 4, inside=math.log(3.0))  # sigmoid 0.75 inside, ~0 outside
    m[:, 0, 0] = math.log(9.0)  # one pixel at 0.9
    res = instance_results(_logits([(0, 0.9)]), m[None], (4, 4), torch.tensor([True]))
    assert int(res.masks[0].sum()) == 8
    assert float(res.mask_scores[0, 0]) == pytest.approx((7 * 0.75 + 0.9) / 8)
    assert res.probs.shape == (1, C) and float(res.probs[0, 0]) == pytest.approx(0.9)


def test_instance_results_keeps_low_score_tracked_queries():
    """No per-clip score cut: a tracked query at p = 0.1 still reports its mask and probabilities."""
    res = instance_results(_logits([(0, 0.1), (1, 0.9)]), torch.stack([_mask(4, 4, 0, 2, 0, 2)] * 2), (4, 4),
                           torch.tensor([True, True]))
    assert res.query_idx.tolist() == [0, 1] and res.masks[0].shape == (2, 4, 4)


def test_instance_results_nothing_kept():
    res = instance_results(_logits([(0, 0.9)]), _mask(4, 4, 0, 2, 0, 2, t=2)[None], (8, 8), torch.tensor([False]))
    assert res.query_idx.numel() == 0 and res.masks[0].shape == (0, 8, 8) and res.mask_scores.shape == (2, 0)


# ----------------------------------------------------------------------------------------------- VPS


def test_panoptic_drops_a_query_whose_argmax_is_no_object():
    logits = _logits([(0, 0.45)])  # no-object 0.55 wins the argmax over C+1
    res = _pan(logits, _mask(8, 8, 0, 8, 0, 8)[None], object_mask_threshold=0.0)
    assert res.query_idx.numel() == 0 and (res.segment_map == -1).all()


def test_panoptic_drops_a_low_score_query():
    res = _pan(_logits([(0, 0.7), (1, 0.9)]), torch.stack([_mask(8, 8, 0, 4, 0, 8), _mask(8, 8, 4, 8, 0, 8)]))
    assert res.query_idx.tolist() == [1]  # 0.7 < object_mask_threshold 0.8
    assert (res.segment_map[0, :4] == -1).all() and (res.segment_map[0, 4:] == 0).all()


def test_panoptic_pixel_where_the_winner_is_below_half_is_void():
    m = _mask(8, 8, 0, 8, 0, 8)
    m[:, :, 6:] = -1.0  # sigmoid 0.27: the query still wins these pixels (no rival), but does not hold them
    res = _pan(_logits([(0, 0.9)]), m[None])
    assert res.query_idx.tolist() == [0]
    assert (res.segment_map[0, :, :6] == 0).all() and (res.segment_map[0, :, 6:] == -1).all()


def test_panoptic_overlap_goes_to_higher_score_and_occluded_query_is_dropped():
    logits = _logits([(0, 0.99), (1, 0.85), (2, 0.99)])  # query 1 is the least confident
    masks = torch.stack([_mask(8, 8, 0, 4, 0, 8), _mask(8, 8, 0, 5, 0, 8), _mask(8, 8, 6, 8, 0, 8)])
    res = _pan(logits, masks)
    qm = res.segment_map[0]
    assert 1 not in res.query_idx.tolist()  # wins 1 row of its 5 -> 20% < 80%: dropped
    assert (qm[4] == -1).all()  # its pixels become void, not someone else's
    assert (qm[5:6] == -1).all()  # nobody's mask
    assert sorted(res.query_idx.tolist()) == [0, 2] and sorted(res.labels.tolist()) == [0, 2]
    seg = {q: i for i, q in enumerate(res.query_idx.tolist())}
    assert (qm[:4] == seg[0]).all() and (qm[6:] == seg[2]).all()


def test_panoptic_two_stuff_queries_of_one_class_merge():
    logits = _logits([(3, 0.9), (3, 0.95), (0, 0.9)])
    masks = torch.stack([_mask(8, 8, 0, 3, 0, 8), _mask(8, 8, 3, 6, 0, 8), _mask(8, 8, 6, 8, 0, 8)])
    res = _pan(logits, masks)
    assert sorted(res.labels.tolist()) == [0, 3] and len(res.query_idx) == 2
    stuff = res.labels.tolist().index(3)
    assert (res.segment_map[0, :6] == stuff).all()  # one segment over both queries' pixels
    assert int(res.query_idx[stuff]) == 1 and not bool(res.isthing[stuff])  # represented by its best query


def test_panoptic_thing_instances_of_one_class_stay_separate():
    logits = _logits([(1, 0.9), (1, 0.9), (1, 0.95)])
    masks = torch.stack([_mask(8, 8, 0, 2, 0, 8), _mask(8, 8, 3, 5, 0, 8), _mask(8, 8, 6, 8, 0, 8)])
    res = _pan(logits, masks)
    assert sorted(res.query_idx.tolist()) == [0, 1, 2] and res.labels.tolist() == [1, 1, 1]
    assert res.isthing.all() and set(res.segment_map.unique().tolist()) == {-1, 0, 1, 2}


def test_panoptic_survival_is_decided_on_the_whole_tube():
    """Query 1 loses frame 0 to query 0 but wins all it covers of frame 1: 32 of its 96 tube pixels < 80%, so
    it is dropped in both frames (a per-frame decision would keep it in frame 1: no blinking within a clip)."""
    m0 = torch.cat([_mask(8, 8, 0, 8, 0, 8), _mask(8, 8, 0, 0, 0, 0)])  # [2, 8, 8]: frame 0 only
    m1 = torch.cat([_mask(8, 8, 0, 8, 0, 8), _mask(8, 8, 0, 4, 0, 8)])  # frame 0 all, frame 1 top half
    res = _pan(_logits([(0, 0.99), (1, 0.9)]), torch.stack([m0, m1]))
    assert res.query_idx.tolist() == [0]
    assert (res.segment_map[1] == -1).all()


def test_panoptic_nothing_above_threshold_is_all_void():
    res = _pan(_logits([(0, 0.5)]), _mask(4, 4, 0, 4, 0, 4)[None], object_mask_threshold=0.99)
    assert (res.segment_map == -1).all() and res.segment_map.shape == (1, 8, 8)
    assert (res.label_map() == -1).all()


def test_panoptic_no_queries_is_all_void():
    res = _pan(torch.zeros(0, C + 1), torch.zeros(0, 2, 4, 4))
    assert res.segment_map.shape == (2, 8, 8) and (res.segment_map == -1).all() and res.query_idx.numel() == 0


# ------------------------------------------------------------------------------------ query-type gate


def _gated_out(kind, cls):
    return {"query_kind": torch.tensor(kind), "query_class": torch.tensor(cls)}


def test_allowed_classes_per_kind():
    """Kinds as gvseg.structures: ANY, THING, STUFF (own class, or any stuff class without one), EXEMPLAR."""
    allowed = allowed_classes(_gated_out([0, 1, 2, 2, 3], [-1, -1, 3, -1, -1]), C, N_TH)
    assert allowed.tolist() == [[True] * 4, [True, True, False, False], [False, False, False, True],
                                [False, False, True, True], [True] * 4]
    assert allowed_classes({"query_class": torch.tensor([-1])}, C, N_TH) is None  # no query_kind: all allowed


def test_allowed_classes_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="unknown query_kind"):
        allowed_classes(_gated_out([7], [-1]), C, N_TH)


def test_gate_thing_query_cannot_produce_a_stuff_label():
    logits = torch.tensor([[2.0, -BIG, 5.0, -BIG, -BIG]])  # ungated: stuff class 2
    allowed = allowed_classes(_gated_out([1], [-1]), C, N_TH)
    p = class_probs(logits, allowed)
    assert p[0, 2] == 0 and p.sum() == pytest.approx(1.0) and int(p[0, :-1].argmax()) == 0
    res = _pan(logits, _mask(8, 8, 0, 8, 0, 8)[None], allowed=allowed)
    assert res.labels.tolist() == [0]


def test_gate_bank_query_only_its_own_class():
    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0, -BIG]])  # ungated: class 0
    allowed = allowed_classes(_gated_out([2], [3]), C, N_TH)
    sem = semantic_maps(logits, _mask(4, 4, 0, 4, 0, 4)[None], (4, 4), allowed)
    assert (sem == 3).all()
    assert vis_topk([1], class_probs(logits, allowed)[:, :-1], torch.ones(1))[0][1] == 3


# ----------------------------------------------------------------------------------------------- VSS


def test_semantic_maps_upsampled_argmax():
    logits = _logits([(2, 0.99), (1, 0.99)])
    masks = torch.stack([_mask(4, 4, 0, 2, 0, 4), _mask(4, 4, 2, 4, 0, 4)])
    sem = semantic_maps(logits, masks, (8, 8))
    assert sem.shape == (1, 8, 8)
    assert (sem[0, :3] == 2).all() and (sem[0, 5:] == 1).all()


def test_vss_modes_semantic_never_void_panoptic_void_where_nothing_holds():
    logits, masks = _logits([(2, 0.99)]), _mask(4, 4, 0, 2, 0, 4)[None]
    sem = vss_maps(logits, masks, (4, 4), PostprocessConfig())
    assert (sem >= 0).all()
    pan = vss_maps(logits, masks, (4, 4), PostprocessConfig(vss_mode="panoptic"))
    assert (pan[0, :2] == 2).all() and (pan[0, 2:] == -1).all()


def test_semantic_maps_no_queries():
    assert (semantic_maps(torch.zeros(0, C + 1), torch.zeros(0, 2, 4, 4), (8, 8)) == 0).all()


# ----------------------------------------------------------------------------------------------- EVS


def test_exemplar_maps_background_padding_and_start_frame():
    masks = torch.stack([_mask(4, 4, 0, 2, 0, 4, t=2), _mask(4, 4, 2, 4, 0, 4, t=2), _mask(4, 4, 0, 4, 0, 4, t=2)])
    qm = exemplar_maps(masks, (4, 4), valid=torch.tensor([True, True, False]), start_frame=torch.tensor([0, 1, 0]))
    assert (qm[0, :2] == 0).all() and (qm[0, 2:] == -1).all()  # query 1 starts at frame 1; 2 is padding
    assert (qm[1, 2:] == 1).all()
