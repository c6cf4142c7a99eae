"""Coded tubes (issue #17): label-map samples carry one code map; the K planes are derived only where read, and
every consumer (matcher, mask losses, GT descriptors) sees exactly what explicit planes give."""

import numpy as np
import pytest
import torch

from gvseg.config import DataConfig, DescriptorConfig, LossConfig, SyntheticConfig
from gvseg.data.pipeline import build_records, label_space_for, load_sample, sample_rng
from gvseg.data.transforms import collate, keep_hinted
from gvseg.losses.criterion import SetCriterion
from gvseg.losses.matcher import HungarianMatcher
from gvseg.model.descriptor import target_descriptors
from gvseg.structures import Targets


def _coded(k=3, t=2, h=5, w=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    code = torch.randint(0, k + 2, (t, h, w), generator=g).to(torch.uint8)  # 0 nothing, k + 1 ignore
    tc = torch.arange(1, k + 1)
    return Targets(None, torch.arange(k), torch.arange(10, 10 + k), torch.ones(k, dtype=torch.bool),
                   code=code, tube_codes=tc, ignore_code=k + 1)


def _explicit(tg: Targets) -> Targets:
    return Targets(tg.masks.clone(), tg.labels, tg.ids, tg.isthing, tg.ignore.clone())


def test_coded_targets_derive_planes_and_ignore_from_the_code_map():
    tg = _coded()
    assert tg.coded and tg.shape == (3, 2, 5, 7)
    for k in range(3):
        assert torch.equal(tg.masks[k], tg.code == k + 1)
    assert torch.equal(tg.ignore, tg.code == 4) and not tg.coded  # derived once, then kept


def test_coded_targets_move_as_code_map():
    moved = _coded().to("cpu")
    assert moved.coded and moved.__dict__.get("_masks") is None


def test_no_objects_coded():
    tg = Targets(None, torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long),
                 torch.zeros(0, dtype=torch.bool), code=torch.zeros(2, 4, 4, dtype=torch.uint8),
                 tube_codes=torch.zeros(0, dtype=torch.long), ignore_code=1)
    assert tg.shape == (0, 2, 4, 4) and tg.masks.shape == (0, 2, 4, 4) and not tg.ignore.any()
    assert tg.masks_at(torch.zeros(2, 3, dtype=torch.long)).shape == (0, 2, 3)


def test_targets_without_masks_or_code_are_an_error():
    with pytest.raises(TypeError, match="masks, or code"):
        Targets(None, torch.zeros(1), torch.zeros(1), torch.zeros(1, dtype=torch.bool))


def test_point_lookups_match_explicit_planes():
    tg = _coded(seed=1)
    ex = _explicit(_coded(seed=1))
    shared = torch.randint(0, 35, (2, 11))  # [T, P]
    per_row = torch.randint(0, 35, (2, 2, 11))  # [n, T, P]
    rows = torch.tensor([2, 0])
    assert torch.equal(tg.masks_at(shared), ex.masks_at(shared))
    assert torch.equal(tg.masks_at(per_row, rows), ex.masks_at(per_row, rows))
    assert torch.equal(tg.ignore_at(per_row), ex.ignore_at(per_row))
    assert torch.equal(tg.frame_masks(1), ex.frame_masks(1))
    assert tg.coded  # none of these wrote the planes


@pytest.fixture(scope="module")
def vipseg(tmp_path_factory):
    root = tmp_path_factory.mktemp("coded")
    cfg = DataConfig(format="vipseg", root=str(root / "d"), synthetic=True, min_size=(64,), max_size=96,
                     synth=SyntheticConfig(videos=2, frames=6, height=64, width=80, thing_classes=2,
                                           stuff_classes=2, val_fraction=0.0))
    records = build_records(cfg, "train")
    return cfg, records, label_space_for(records)


def test_label_map_samples_are_coded_and_equal_explicit_losses(vipseg):
    cfg, records, space = vipseg
    clip = collate([load_sample(records[0], cfg, space, sample_rng(0, 0, 0, 0))])
    coded = clip.targets
    assert all(tg.coded for tg in coded)
    explicit = [_explicit(tg) for tg in clip.targets]  # derives the coded ones' planes, on copies' behalf
    coded = collate([load_sample(records[0], cfg, space, sample_rng(0, 0, 0, 0))]).targets  # fresh, still coded
    b, t = 1, clip.frames.shape[1]
    k = coded[0].shape[0]
    q, c = k + 2, space.num_classes
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(b, q, c + 1, generator=g)
    masks = torch.randn(b, q, t, 16, 20, generator=g)
    loss_cfg = LossConfig(num_points=64)
    matcher = HungarianMatcher(loss_cfg)
    criterion = SetCriterion(loss_cfg, c, matcher)
    outs = {"pred_logits": logits, "pred_masks": masks, "aux_outputs": []}
    got = []
    for tgs in (coded, explicit):
        torch.manual_seed(0)  # the same random points for both
        idx = matcher(logits, masks, tgs)
        got.append((idx, criterion(outs, tgs, idx), target_descriptors(tgs, clip.image_sizes, DescriptorConfig(), 8)))
    (ia, la, da), (ib, lb, db) = got
    assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(ia, ib))
    assert la.keys() == lb.keys() and all(torch.equal(la[n], lb[n]) for n in la)
    assert all(torch.equal(x, y) for x, y in zip(da, db))
    assert all(tg.coded for tg in coded)  # the train step's consumers never wrote the K planes


def test_keep_hinted_drops_tube_codes_and_the_pixels_read_as_background(vipseg):
    cfg, records, space = vipseg
    from gvseg.data.transforms import SampleExemplars

    s = load_sample(records[0], cfg, space, sample_rng(0, 0, 0, 0))
    assert s.code is not None and len(s.ids) >= 2
    full = s.masks.copy()
    one = SampleExemplars(np.zeros(1, np.int8), np.zeros(1, np.int64), np.zeros((1, 2), np.float32),
                          np.zeros((1, 4), np.float32), np.zeros((1, *s.frames.shape[1:3]), bool), s.ids[:1])
    s.exemplars = one
    kept = keep_hinted(s)
    assert list(kept.ids) == [s.ids[0]] and kept.code is not None
    assert np.array_equal(kept.masks, full[:1]) and np.array_equal(kept.ignore, s.ignore)


def test_wide_codes_collate_to_int32_and_compare_exactly():
    from gvseg.data.transforms import Sample

    t, h, w, k = 2, 6, 9, 300  # > 254 objects: make_sample's code map is uint16
    rng = np.random.default_rng(0)
    code = rng.integers(0, k + 2, (t, h, w)).astype(np.uint16)
    s = Sample("v", np.zeros((t, h, w, 3), np.uint8), np.arange(t), np.arange(k), np.zeros(k, np.int64), None, None,
               1, code=code, tube_codes=np.arange(1, k + 1, dtype=np.uint16), ignore_code=k + 1)
    tg = collate([s]).targets[0]
    assert tg.coded and tg.code.dtype == torch.int32 and tg.code.shape == (t, 32, 32)
    assert torch.equal(tg.masks[:, :, :h, :w], torch.from_numpy(s.masks))
    assert tg.ignore[:, h:].all() and tg.ignore[:, :, w:].all()  # the padding is void


def test_duplicate_tube_codes_are_an_error():
    with pytest.raises(ValueError, match="tube codes must be unique"):
        Targets(None, torch.arange(2), torch.arange(2), torch.ones(2, dtype=torch.bool),
                code=torch.zeros(1, 4, 4, dtype=torch.uint8), tube_codes=torch.tensor([3, 3]))


def test_exemplars_of_a_coded_sample_without_first_visible_match_the_planes(vipseg):
    """Which tubes frame 0 holds, from the code map's histogram, is what the planes give."""
    from gvseg.data.transforms import Sample, draw_exemplars

    cfg, records, space = vipseg
    s = load_sample(records[0], cfg, space, sample_rng(0, 0, 0, 0))
    s.first_visible = None
    planes = Sample(s.video_id, s.frames, s.frame_index, s.ids, s.labels, s.masks.copy(), s.ignore.copy(),
                    s.num_thing_classes)
    a = draw_exemplars(s, np.random.default_rng(1), ("mask", "point", "box"))
    b = draw_exemplars(planes, np.random.default_rng(1), ("mask", "point", "box"))
    assert np.array_equal(a.ids, b.ids) and np.array_equal(a.kind, b.kind) and np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.boxes, b.boxes)
