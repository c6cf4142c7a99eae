"""Hungarian matcher: batched cost, empty targets, time as a dimension, identity on perfect predictions."""

import torch

from gvseg.config import LossConfig
from gvseg.losses.matcher import HungarianMatcher
from gvseg.structures import Targets

C = 5  # classes; index C is "no object"


def blobs(k, t, h=32, w=32, seed=0):
    """k non-overlapping rectangles, identical in every frame: [k, t, h, w] bool."""
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(k, t, h, w, dtype=torch.bool)
    for i in range(k):
        y = int(torch.randint(0, h - 8, (1,), generator=g))
        m[i, :, y:y + 8, i * (w // k):(i + 1) * (w // k) - 1] = True
    return m


def targets(k, t, seed=0, ignore=False):
    m = blobs(k, t, seed=seed)
    ign = torch.zeros(t, 32, 32, dtype=torch.bool) if ignore else None
    if ignore:
        ign[:, :2] = True
    return Targets(masks=m, labels=torch.arange(k) % C, ids=torch.arange(k) + 1,
                   isthing=torch.ones(k, dtype=torch.bool), ignore=ign)


def perfect(tgs, q, big=20.0):
    """Predictions: query i predicts target perm[i] exactly; the other queries predict nothing."""
    b, t = len(tgs), tgs[0].masks.shape[1]
    logits = torch.full((b, q, C + 1), -big)
    logits[..., C] = big
    masks = torch.full((b, q, t, 32, 32), -big)
    perms = []
    for i, tg in enumerate(tgs):
        k = tg.labels.numel()
        perm = torch.randperm(q, generator=torch.Generator().manual_seed(i))[:k]  # query for each target
        logits[i, perm] = -big
        logits[i, perm, tg.labels] = big
        masks[i, perm] = torch.where(tg.masks, big, -big)
        perms.append(perm)
    return logits, masks, perms


def test_perfect_prediction_is_recovered():
    tgs = [targets(4, 3, seed=0), targets(3, 3, seed=1)]
    logits, masks, perms = perfect(tgs, q=10)
    out = HungarianMatcher(LossConfig(num_points=500))(logits, masks, tgs)
    for (src, tgt), perm in zip(out, perms):
        assert src.dtype == torch.int64
        assert torch.equal(perm[tgt], src)  # query src[i] is the one built for target tgt[i]


def test_identity_assignment_when_queries_are_in_order():
    tg = targets(3, 1)
    logits = torch.full((1, 3, C + 1), -10.0)
    logits[0, torch.arange(3), tg.labels] = 10.0
    masks = torch.where(tg.masks, 10.0, -10.0)[None]  # [1, 3, 1, 32, 32]
    src, tgt = HungarianMatcher(LossConfig(num_points=300))(logits, masks, [tg])[0]
    assert torch.equal(src[torch.argsort(tgt)], torch.arange(3))


def test_batched_equals_per_sample():
    tgs = [targets(4, 3, seed=s) for s in range(3)]
    logits, masks, _ = perfect(tgs, q=8, big=3.0)
    logits = logits + 0.5 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(3))
    m = HungarianMatcher(LossConfig(num_points=2000))
    batched = m(logits, masks, tgs)
    for b in range(3):
        single = m(logits[b:b + 1], masks[b:b + 1], tgs[b:b + 1])[0]
        assert torch.equal(batched[b][0], single[0]) and torch.equal(batched[b][1], single[1])


def test_empty_targets_give_empty_indices():
    empty = Targets(masks=torch.zeros(0, 2, 32, 32, dtype=torch.bool), labels=torch.zeros(0, dtype=torch.int64),
                    ids=torch.zeros(0, dtype=torch.int64), isthing=torch.zeros(0, dtype=torch.bool))
    tgs = [empty, targets(2, 2)]
    logits, masks = torch.randn(2, 6, C + 1), torch.randn(2, 6, 2, 8, 8)
    out = HungarianMatcher(LossConfig(num_points=100))(logits, masks, tgs)
    assert out[0][0].numel() == 0 and out[0][1].numel() == 0
    assert out[1][0].numel() == 2


def test_t1_and_t3_alike():
    """A 3-frame clip of one repeated frame costs what the 1-frame clip costs (up to dice's +1 smoothing,
    which is relative to T*P points) and gets the same assignment."""
    tg1 = targets(3, 1)
    tg3 = Targets(masks=tg1.masks.expand(-1, 3, -1, -1).clone(), labels=tg1.labels, ids=tg1.ids, isthing=tg1.isthing)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 7, C + 1, generator=g)
    masks1 = torch.randn(1, 7, 1, 16, 16, generator=g)
    masks3 = masks1.expand(-1, -1, 3, -1, -1).clone()
    m = HungarianMatcher(LossConfig(num_points=400))
    torch.manual_seed(0)
    c1 = m.cost_matrix(logits[0], masks1[0], tg1)
    torch.manual_seed(0)
    c3 = m.cost_matrix(logits[0], masks3[0], tg3)
    assert torch.allclose(c1, c3, rtol=5e-3)
    torch.manual_seed(0)
    i1 = m(logits, masks1, [tg1])[0]
    torch.manual_seed(0)
    i3 = m(logits, masks3, [tg3])[0]
    assert torch.equal(i1[0], i3[0]) and torch.equal(i1[1], i3[1])


def test_ignore_pixels_do_not_count():
    """Predictions that differ only on ignored pixels have the same cost."""
    tg = targets(2, 1, ignore=True)
    logits = torch.zeros(1, 2, C + 1)
    masks = torch.where(tg.masks, 5.0, -5.0)[None].clone()
    other = masks.clone()
    other[..., :1, :] = 5.0  # disagree on row 0 only: bilinear reach stays inside the ignored rows 0-1
    m = HungarianMatcher(LossConfig(num_points=1000))
    torch.manual_seed(0)
    a = m.cost_matrix(logits[0], masks[0], tg)
    torch.manual_seed(0)
    b = m.cost_matrix(logits[0], other[0], tg)
    assert torch.allclose(a, b)


# ------------------------------------------------------------------------------------------ the gate


def _vps_meta(num_thing_q, bank_classes, b=1):
    from gvseg.structures import QUERY_STUFF, QUERY_THING, QueryMeta

    kind = torch.tensor([QUERY_THING] * num_thing_q + [QUERY_STUFF] * len(bank_classes))
    cls = torch.tensor([-1] * num_thing_q + list(bank_classes))
    return QueryMeta(kind, cls, torch.full((b, kind.numel()), -1))


def _vps_targets():
    """Two things (labels 0, 1) and two stuff tubes (labels 3, 4)."""
    m = blobs(4, 2)
    return Targets(masks=m, labels=torch.tensor([0, 1, 3, 4]), ids=torch.tensor([1, 2, 3, 4]),
                   isthing=torch.tensor([True, True, False, False]))


def test_gate_sends_things_to_thing_queries_and_stuff_to_their_bank_query():
    tg = _vps_targets()
    # the predictions invite the wrong assignment: bank query 3 (class 3) predicts thing 0 perfectly,
    # thing query 0 predicts stuff class 3 perfectly
    logits, masks, _ = perfect([tg], q=5)
    logits[0, 3], masks[0, 3] = logits[0, 0].clone(), torch.where(tg.masks[0], 20.0, -20.0)
    meta = _vps_meta(3, [3, 4])  # queries 0-2 things, 3 = bank class 3, 4 = bank class 4
    qi, ti = HungarianMatcher(LossConfig(num_points=300))(logits, masks, [tg], meta)[0]
    pairs = dict(zip(ti.tolist(), qi.tolist()))
    assert pairs[2] == 3 and pairs[3] == 4  # each stuff tube on its own class's bank query
    assert pairs[0] in (0, 1, 2) and pairs[1] in (0, 1, 2)


def test_gate_leaves_a_target_unmatched_rather_than_break_it():
    tg = _vps_targets()
    logits, masks = torch.zeros(1, 3, C + 1), torch.zeros(1, 3, 2, 32, 32)  # uninformative predictions
    meta = _vps_meta(1, [3, 9])  # one thing query for two things; no bank query for class 4
    qi, ti = HungarianMatcher(LossConfig(num_points=100))(logits, masks, [tg], meta)[0]
    assert len(ti) == 2  # one thing and stuff class 3; the rest stay unmatched
    assert set(zip(qi.tolist(), ti.tolist())) >= {(1, 2)}


def test_exemplar_queries_match_only_their_own_track():
    from gvseg.structures import QUERY_EXEMPLAR, QueryMeta

    tg = targets(3, 2)
    logits, masks, _ = perfect([tg], q=4)
    meta = QueryMeta(torch.full((4,), QUERY_EXEMPLAR), torch.full((4,), -1), torch.tensor([[3, 1, -1, 2]]))
    qi, ti = HungarianMatcher(LossConfig(num_points=100))(logits, masks, [tg], meta)[0]
    assert sorted(zip(ti.tolist(), qi.tolist())) == [(0, 1), (1, 3), (2, 0)]  # ids 1, 2, 3 -> queries 1, 3, 0


def test_matcher_counts_matches_by_query_kind():
    from gvseg import counters

    counters.reset()
    tg = _vps_targets()
    logits, masks, _ = perfect([tg], q=5)
    HungarianMatcher(LossConfig(num_points=100))(logits, masks, [tg], _vps_meta(3, [3, 4]))
    c = counters.take()
    assert c["match/calls"] == 1 and c["match/thing_gt_on_thing_q"] == 2 and c["match/stuff_gt_on_stuff_q"] == 2
    assert c["match/thing_gt_on_stuff_q"] == 0 and c["match/stuff_gt_on_thing_q"] == 0


def _explicit_cost(m, logits, masks, tg):
    """The cost written pair by pair (BCE and dice of each query against each target on the same points)."""
    import torch.nn.functional as F

    from gvseg.losses.matcher import gather_points, point_sample

    q, t = masks.shape[:2]
    coords = torch.rand(m.num_points, 2)
    pred = point_sample(masks.reshape(1, q * t, *masks.shape[-2:]), coords[None]).reshape(q, -1)
    tgt = gather_points(tg.masks, coords).flatten(1).float()
    valid = torch.ones(tgt.shape[1]) if tg.ignore is None else (~gather_points(tg.ignore, coords)).flatten().float()
    cost = torch.zeros(q, tgt.shape[0])
    for i in range(q):
        for j in range(tgt.shape[0]):
            bce = F.binary_cross_entropy_with_logits(pred[i], tgt[j], reduction="none")
            s = pred[i].sigmoid() * valid
            dice = 1 - (2 * (s * tgt[j]).sum() + 1) / (s.sum() + (tgt[j] * valid).sum() + 1)
            cls = -logits[i].softmax(-1)[tg.labels[j]]
            cost[i, j] = m.class_weight * cls + m.mask_weight * (bce * valid).sum() / valid.sum() + m.dice_weight * dice
    return cost


def test_cost_matrix_equals_the_pairwise_bce_and_dice():
    for ignore in (False, True):
        tg = targets(3, 2, ignore=ignore)
        g = torch.Generator().manual_seed(3)
        logits, masks = torch.randn(1, 4, C + 1, generator=g), 4 * torch.randn(1, 4, 2, 32, 32, generator=g)
        m = HungarianMatcher(LossConfig(num_points=200))
        torch.manual_seed(0)
        fast = m.cost_matrix(logits[0], masks[0], tg)
        torch.manual_seed(0)
        slow = _explicit_cost(m, logits[0], masks[0], tg)
        assert torch.allclose(fast, slow, atol=1e-5), (fast - slow).abs().max()


def test_gated_matching_equals_solving_the_full_gated_matrix():
    """Costing only the queries the gate lets take a target gives the full matrix's assignment."""
    from scipy.optimize import linear_sum_assignment

    from gvseg.losses.matcher import _FORBIDDEN

    tg = _vps_targets()
    meta = _vps_meta(6, [3, 7, 4, 8])  # bank queries of absent classes 7, 8 take nothing
    g = torch.Generator().manual_seed(1)
    logits, masks = torch.randn(1, 10, C + 1, generator=g), 4 * torch.randn(1, 10, 2, 32, 32, generator=g)
    m = HungarianMatcher(LossConfig(num_points=300))
    torch.manual_seed(0)
    qi, ti = m(logits, masks, [tg], meta)[0]
    torch.manual_seed(0)  # the same random points (drawn once per clip, whatever the number of queries)
    full = m.cost_matrix(logits[0], masks[0], tg)  # every query costed
    full = torch.where(meta.allowed(0, tg), full, torch.full_like(full, _FORBIDDEN)).numpy()
    i, j = linear_sum_assignment(full)
    assert sorted(zip(ti.tolist(), qi.tolist())) == sorted(zip(j.tolist(), i.tolist()))
    assert set(qi.tolist()).isdisjoint({7, 9})  # absent classes' bank queries never matched
