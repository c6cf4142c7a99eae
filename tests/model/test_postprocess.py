import torch

from gvseg.postprocess import exemplar_maps, instance_results, panoptic_maps, semantic_maps

torch.set_num_threads(1)

BIG = 20.0


def _logits(rows):
    """rows: [(class, logit)] for C = 3 real classes + no-object (logit 0): p = sigmoid(logit)."""
    out = torch.full((len(rows), 4), -BIG)
    out[:, -1] = 0.0
    for i, (c, v) in enumerate(rows):
        out[i, c] = v
    return out


def _mask(h, w, y0, y1, x0, x1, t=1):
    m = torch.full((t, h, w), -BIG)
    m[:, y0:y1, x0:x1] = BIG
    return m


def test_panoptic_overlap_goes_to_higher_score_and_occluded_query_is_dropped():
    logits = _logits([(0, 5.0), (1, 1.0), (2, 5.0)])  # query 1 is the least confident
    masks = torch.stack([_mask(8, 8, 0, 4, 0, 8), _mask(8, 8, 0, 5, 0, 8), _mask(8, 8, 6, 8, 0, 8)])
    res = panoptic_maps(logits, masks, (8, 8), score_threshold=0.3, overlap_threshold=0.8)
    qm = res.query_map[0]
    assert (qm[:4] == 0).all()  # overlap resolved by score
    assert 1 not in res.query_idx.tolist()  # wins 1 row of its 5 -> 20% < 80%: dropped
    assert (qm[4] == -1).all()  # its pixels become void
    assert (qm[6:] == 2).all()
    assert sorted(res.query_idx.tolist()) == [0, 2] and res.labels.tolist() == [0, 2]


def test_panoptic_nothing_above_threshold_is_all_void():
    res = panoptic_maps(_logits([(0, -1.0)]), _mask(4, 4, 0, 4, 0, 4)[None], (8, 8), score_threshold=0.99)
    assert (res.query_map == -1).all() and res.query_map.shape == (1, 8, 8)


def test_semantic_maps_upsampled_argmax():
    logits = _logits([(2, 5.0), (1, 5.0)])
    masks = torch.stack([_mask(4, 4, 0, 2, 0, 4), _mask(4, 4, 2, 4, 0, 4)])
    sem = semantic_maps(logits, masks, (8, 8))
    assert sem.shape == (1, 8, 8)
    assert (sem[0, :3] == 2).all() and (sem[0, 5:] == 1).all()


def test_instances_topk_by_score():
    logits = _logits([(0, 1.0), (1, 5.0), (2, 3.0)])
    masks = torch.stack([_mask(4, 4, 0, 2, 0, 2, t=2)] * 3)
    res = instance_results(logits, masks, (8, 8), score_threshold=0.0, topk=2)
    assert res.query_idx.tolist() == [1, 2] and len(res.masks) == 2
    assert res.masks[0].shape == (2, 8, 8) and int(res.masks[0][0].sum()) == 16


def test_exemplar_maps_background_padding_and_start_frame():
    masks = torch.stack([_mask(4, 4, 0, 2, 0, 4, t=2), _mask(4, 4, 2, 4, 0, 4, t=2), _mask(4, 4, 0, 4, 0, 4, t=2)])
    qm = exemplar_maps(masks, (4, 4), valid=torch.tensor([True, True, False]), start_frame=torch.tensor([0, 1, 0]))
    assert (qm[0, :2] == 0).all() and (qm[0, 2:] == -1).all()  # query 1 starts at frame 1; 2 is padding
    assert (qm[1, 2:] == 1).all()
