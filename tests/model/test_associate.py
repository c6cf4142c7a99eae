"""Cross-clip association: SPA re-identifies look-alikes, stuff tracks by class, track life cycle."""

import torch

from gvseg.config import AssociationConfig, DescriptorConfig
from gvseg.model.descriptor import compute_descriptor
from gvseg.video.associate import Tracker

D = 64
H, W = 64, 96


def rect(y0, x0, hh, ww):
    m = torch.zeros(H, W, dtype=torch.bool)
    m[y0:y0 + hh, x0:x0 + ww] = True
    return m


def desc(*masks):
    m = torch.stack(masks)
    return compute_descriptor(m, torch.tensor([[H, W]] * len(masks)), DescriptorConfig(), D)


def call(tr, emb, d_first, d_last, labels=None, stuff=None, keep=None, scores=None):
    q = emb.shape[0]
    return tr.update(
        emb, d_first, d_last,
        torch.linspace(1.0, 0.5, q) if scores is None else scores,
        torch.zeros(q, dtype=torch.int64) if labels is None else torch.tensor(labels),
        torch.zeros(q, dtype=torch.bool) if stuff is None else torch.tensor(stuff),
        torch.ones(q, dtype=torch.bool) if keep is None else torch.tensor(keep),
    )


def lookalike_run(spa_things=True, cues=None, scale=1.0, norm="unit"):
    """Two objects with the same appearance embedding but different shape and place; clip 2 lists them
    in swapped query order. Returns (ids of clip 1, ids of clip 2) in object order (A, B)."""
    g = torch.Generator().manual_seed(0)
    e = scale * torch.randn(D, generator=g)
    eps = 0.05 * scale * torch.randn(2, D, generator=g)  # ~0.5% of |e|: a look-alike pair
    a1, b1 = rect(8, 8, 12, 12), rect(36, 50, 10, 30)  # A: small square top-left; B: wide bar bottom-right
    a2, b2 = rect(8, 12, 12, 12), rect(36, 46, 10, 30)  # both moved by 4 px
    cues = cues or ("spa" if spa_things else "appearance")
    tr = Tracker(AssociationConfig(thing_cues=cues, spa_norm=norm))
    ids1 = call(tr, e + eps, desc(a1, b1), desc(a1, b1))
    # clip 2 lists B first, and each one's appearance now slightly resembles the other's (no ties to break)
    ids2 = call(tr, e + eps, desc(b2, a2), desc(b2, a2))
    return ids1.tolist(), ids2[[1, 0]].tolist()


def test_spa_reidentifies_permuted_lookalikes():
    ids1, ids2 = lookalike_run(spa_things=True)
    assert ids1 == ids2


def test_appearance_only_swaps_lookalikes():
    ids1, ids2 = lookalike_run(spa_things=False)
    assert ids1 == ids2[::-1]


def test_position_only_reidentifies_lookalikes():
    ids1, ids2 = lookalike_run(cues="position")
    assert ids1 == ids2


def test_unit_norm_keeps_spa_in_charge_whatever_the_embedding_scale():
    """Eq. (6) with spa_norm="unit": the balance of q-hat and H is spa_weight's, not an accident of their
    norms; with the plain sum ("raw") a large q-hat drowns H and the look-alikes swap as with appearance alone."""
    ids1, ids2 = lookalike_run(scale=100.0, norm="unit")
    assert ids1 == ids2
    ids1, ids2 = lookalike_run(scale=100.0, norm="raw")
    assert ids1 == ids2[::-1]


def test_stuff_tracks_by_class_regardless_of_embedding():
    tr = Tracker(AssociationConfig())
    g = torch.Generator().manual_seed(1)
    d = desc(rect(0, 0, 30, 96), rect(30, 0, 34, 96), rect(0, 0, 64, 40))
    ids1 = call(tr, torch.randn(3, D, generator=g), d, d, labels=[5, 6, 5], stuff=[True] * 3)
    assert ids1[0] == ids1[2] != ids1[1]  # one track per class
    ids2 = call(tr, torch.randn(3, D, generator=g), d, d, labels=[6, 7, 5], stuff=[True] * 3)
    assert ids2[0] == ids1[1] and ids2[2] == ids1[0]
    assert ids2[1] not in ids1.tolist()  # a new class starts a new track


def test_spa_stuff_matches_within_class_by_embedding():
    tr = Tracker(AssociationConfig(spa_stuff=True))
    e = torch.eye(D)[:2] * 5
    d = desc(rect(0, 0, 30, 96), rect(30, 0, 34, 96))
    ids1 = call(tr, e, d, d, labels=[5, 5], stuff=[True, True])
    assert ids1[0] != ids1[1]  # two stuff segments of one class are separate tracks now
    ids2 = call(tr, e[[1, 0]], d[[1, 0]], d[[1, 0]], labels=[5, 5], stuff=[True, True])
    assert ids2.tolist() == ids1[[1, 0]].tolist()


def test_thing_class_gate_keeps_a_track_within_its_class():
    # one thing, same embedding and place in both clips, but its class changes: Eq. 6 alone continues the
    # track, the class gate starts a new one
    e = torch.eye(D)[:1] * 5
    d = desc(rect(8, 8, 12, 12))
    for gate, same in ((False, True), (True, False)):
        tr = Tracker(AssociationConfig(thing_class_gate=gate))
        ids1 = call(tr, e, d, d, labels=[1])
        ids2 = call(tr, e, d, d, labels=[2])
        assert (ids1.tolist() == ids2.tolist()) is same


def test_new_objects_start_tracks_and_dropped_queries_get_minus_one():
    tr = Tracker(AssociationConfig())
    e = torch.eye(D)[:3] * 4
    d = desc(rect(4, 4, 10, 10), rect(30, 40, 10, 20), rect(40, 4, 20, 10))
    ids1 = call(tr, e[:2], d[:2], d[:2])
    assert ids1.tolist() == [1, 2]
    ids2 = call(tr, e, d, d, keep=[True, False, True])
    assert ids2.tolist() == [1, -1, 3]


def test_tracks_retire_after_max_missing_clips():
    tr = Tracker(AssociationConfig(max_missing_clips=1))
    e = torch.eye(D)[:2] * 4
    d = desc(rect(4, 4, 10, 10), rect(30, 40, 10, 20))
    first = call(tr, e, d, d)
    call(tr, e[:1], d[:1], d[:1])  # object 2 missing once: still alive
    assert call(tr, e, d, d).tolist() == first.tolist()
    call(tr, e[:1], d[:1], d[:1])
    call(tr, e[:1], d[:1], d[:1])  # missing twice > max_missing_clips: retired
    assert tr.num_live == 1
    back = call(tr, e, d, d)
    assert back[0] == first[0] and back[1] not in first.tolist()


def test_state_dict_resumes_the_stream():
    g = torch.Generator().manual_seed(2)
    e = torch.randn(3, D, generator=g)
    d = desc(rect(4, 4, 10, 10), rect(30, 40, 10, 20), rect(0, 0, 64, 96))
    kw = dict(labels=[0, 1, 9], stuff=[False, False, True])
    a = Tracker(AssociationConfig())
    call(a, e, d, d, **kw)
    b = Tracker(AssociationConfig())
    b.load_state_dict(a.state_dict())
    assert call(a, e, d, d, **kw).tolist() == call(b, e, d, d, **kw).tolist()
    assert a.next_id == b.next_id


def test_empty_clip_ages_tracks_only():
    tr = Tracker(AssociationConfig(max_missing_clips=0))
    d = desc(rect(4, 4, 10, 10))
    call(tr, torch.ones(1, D), d, d)
    out = call(tr, torch.zeros(0, D), d[:0], d[:0])
    assert out.shape == (0,) and tr.num_live == 0


def _vote_clip(tr, probs):
    """One clip of one thing query with fixed embedding and shape; ``probs`` [C] its class probabilities."""
    e = torch.ones(1, D)
    d = desc(rect(8, 8, 12, 12))
    p = torch.tensor([probs])
    return tr.update(e, d, d, p.max(1).values, p.argmax(1), torch.zeros(1, dtype=torch.bool),
                     torch.ones(1, dtype=torch.bool), p)


def test_class_vote_keeps_a_flickering_thing_on_its_running_majority():
    tr = Tracker(AssociationConfig())
    ids = [int(_vote_clip(tr, p)[0]) for p in ([0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.3, 0.6, 0.1])]
    assert ids == [1, 1, 1]  # one track
    # clip 3 alone says class 1; the sum over the 3 clips (1.6, 1.1, 0.3) says class 0
    assert tr.voted_labels(torch.tensor([1])).tolist() == [0]
    # only the first `classes` columns vote (the thing classes of VPS)
    assert tr.voted_labels(torch.tensor([1]), classes=1).tolist() == [0]


def test_class_vote_is_minus_one_without_a_vote_and_survives_a_state_round_trip():
    tr = Tracker(AssociationConfig())
    assert tr.voted_labels(torch.tensor([1, 2])).tolist() == [-1, -1]  # nothing tracked yet
    _vote_clip(tr, [0.1, 0.8, 0.1])
    assert tr.voted_labels(torch.tensor([1, 7])).tolist() == [1, -1]  # 7: no such track
    again = Tracker(AssociationConfig())
    again.load_state_dict(tr.state_dict())
    _vote_clip(again, [0.5, 0.4, 0.1])  # (0.6, 1.2, 0.2): still class 1
    assert again.voted_labels(torch.tensor([1])).tolist() == [1]
    assert again.voted_labels(torch.zeros(0, dtype=torch.int64)).tolist() == []


def test_tracker_without_class_probs_has_no_vote():
    tr = Tracker(AssociationConfig())
    call(tr, torch.ones(1, D), desc(rect(8, 8, 12, 12)), desc(rect(8, 8, 12, 12)))
    assert tr.voted_labels(torch.tensor([1])).tolist() == [-1]
