import torch
from torch import nn

from gvseg.config import LossConfig
from gvseg.losses.matcher import HungarianMatcher
from gvseg.model.gvseg import build_gvseg
from gvseg.model.queries import QueryInit
from gvseg.recipes import unit_model_config
from gvseg.structures import ClipExemplars, Targets

torch.set_num_threads(1)  # 2 shared CPU cores: avoid oversubscription

CH = {4: 8, 8: 6, 16: 10, 32: 12}


def _feats(b=2, t=3, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {s: torch.randn(b * t, c, h // s, w // s, generator=g) for s, c in CH.items()}


def _init(task="vis", **qkw):
    cfg = unit_model_config(task)
    for k, v in qkw.items():
        setattr(cfg.queries, k, v)
    torch.manual_seed(0)
    return QueryInit(cfg, CH)


SIZES = torch.tensor([[64, 64], [64, 64]])


def test_grid_choice_fixed_at_test_time_random_in_training():
    qi = _init("vis").eval()
    f = _feats()
    a = qi(f, 2, 3, (64, 64), SIZES)
    b = qi(f, 2, 3, (64, 64), SIZES)
    torch.testing.assert_close(a.content, b.content)
    torch.testing.assert_close(a.pos[0], a.pos[1])  # same cells for every clip
    assert a.content.shape == (2, 10, 32) and not a.is_stuff.any()
    qi.train()
    picks = {tuple(qi(f, 2, 3, (64, 64), SIZES).pos[0].sum(-1).round(decimals=4).tolist()) for _ in range(4)}
    assert len(picks) > 1  # different cells in different steps


def test_grid_ignores_padding():
    qi = _init("vis").eval()
    f = _feats(b=1, h=64, w=64)
    valid = qi(f, 1, 3, (64, 64), torch.tensor([[32, 32]]))
    f2 = {s: x.clone() for s, x in f.items()}
    f2[32][..., 1:, :] += 100.0  # change only the padded area (rows/cols >= 32 px at 1/32 -> index >= 1)
    f2[32][..., :, 1:] += 100.0
    valid2 = qi(f2, 1, 3, (64, 64), torch.tensor([[32, 32]]))
    torch.testing.assert_close(valid.content, valid2.content)


def test_vps_layout_things_then_stuff_bank():
    qi = _init("vps").eval()
    qs = qi(_feats(), 2, 3, (64, 64), SIZES)
    assert qs.content.shape == (2, 12, 32)
    assert qs.is_stuff.tolist() == [False] * 10 + [True] * 2
    assert qs.query_class.tolist() == [-1] * 10 + [2, 3]
    assert "class_bank" in qi.state_dict() and "bank_steps" in qi.state_dict()


def test_plain_queries_baseline():
    qi = _init("vps", task_oriented=False).eval()
    qs = qi(_feats(), 2, 3, (64, 64), SIZES)
    assert qs.content.shape == (2, 10, 32)
    torch.testing.assert_close(qs.content[0], qi.query_feat.weight)


def _targets(labels):
    k = len(labels)
    return Targets(torch.zeros(k, 1, 4, 4, dtype=torch.bool), torch.tensor(labels, dtype=torch.long), torch.arange(k),
                   torch.tensor([lab < 2 for lab in labels]))


def test_bank_momentum_update_and_warmup():
    qi = _init("vss", bank_momentum=0.9, bank_warmup=2).train()  # 4 bank queries, classes 0..3
    q1 = torch.randn(2, 4, 32)
    idx = [(torch.tensor([0, 2]), torch.tensor([0, 1])), (torch.tensor([1]), torch.tensor([0]))]
    tg = [_targets([1, 1]), _targets([3])]
    qi.update_bank(q1, idx, tg)
    bank = qi.class_bank
    torch.testing.assert_close(bank[1], (q1[0, 0] + q1[0, 2]) / 2)  # first update copies the mean
    torch.testing.assert_close(bank[3], q1[1, 1])
    assert bank[0].abs().sum() == 0 and bank[2].abs().sum() == 0  # unseen classes untouched
    assert qi.bank_count.tolist() == [0, 1, 0, 1] and int(qi.bank_steps) == 1
    # before warm-up the learned embedding initialises the queries
    qs = qi(_feats(), 2, 3, (64, 64), SIZES)
    torch.testing.assert_close(qs.content[0, 1], qi.bank_feat.weight[1])
    old = bank[1].clone()
    q2 = torch.randn(2, 4, 32)
    qi.update_bank(q2, [(torch.tensor([3]), torch.tensor([0])), (torch.zeros(0, dtype=torch.long),) * 2],
                   [_targets([1]), _targets([])])
    torch.testing.assert_close(qi.class_bank[1], 0.9 * old + 0.1 * q2[0, 3])
    # warm now: seen classes start from the bank, unseen ones from the learned embedding
    qs = qi(_feats(), 2, 3, (64, 64), SIZES)
    torch.testing.assert_close(qs.content[1, 1], qi.class_bank[1])
    torch.testing.assert_close(qs.content[1, 0], qi.bank_feat.weight[0])
    assert not qs.content.requires_grad or qi.class_bank.grad_fn is None


def test_bank_travels_in_checkpoint():
    qi = _init("vss").train()
    qi.update_bank(torch.ones(1, 4, 32), [(torch.tensor([0]), torch.tensor([0]))], [_targets([2])])
    other = _init("vss")
    other.load_state_dict(qi.state_dict())
    torch.testing.assert_close(other.class_bank, qi.class_bank)
    assert other.bank_count.tolist() == qi.bank_count.tolist()


def test_exemplar_point_box_mask_features():
    qi = _init("evs").eval()
    qi.exemplar_ffn = nn.Identity()  # read the pooled backbone feature directly
    b, t, h8, w8 = 1, 2, 8, 8
    ys, xs = torch.meshgrid(torch.arange(h8).float(), torch.arange(w8).float(), indexing="ij")
    f8 = torch.zeros(b * t, 32, h8, w8)  # D channels, as the FFN is the identity here
    f8[:, 0] = xs  # channel 0 = cell column, channel 1 = cell row, channel 2 = frame marker
    f8[:, 1] = ys
    f8[1, 2] = 7.0
    feats = {s: torch.zeros(b * t, c, 64 // s, 64 // s) for s, c in CH.items()}
    feats[8] = f8
    mask = torch.zeros(3, 64, 64, dtype=torch.bool)
    mask[2, 16:32, 40:56] = True  # cells rows 2-3, cols 5-6
    ex = ClipExemplars(["point", "box", "mask"], torch.tensor([0, 0, 1]),
                       torch.tensor([[19.5, 35.5], [0, 0], [0, 0]]),  # point at pixel centre (20, 36)
                       torch.tensor([[0, 0, 0, 0], [8.0, 0.0, 32.0, 16.0], [0, 0, 0, 0]]),
                       mask, torch.tensor([5, 6, 7]))
    qs = qi(feats, b, t, (64, 64), torch.tensor([[64, 64]]), [ex])
    c = qs.content[0]
    # point: bilinear at ((x + 0.5) / 8 - 0.5) in cell units
    torch.testing.assert_close(c[0, :2], torch.tensor([20 / 8 - 0.5, 36 / 8 - 0.5]))
    # box x in [8, 32), y in [0, 16): cell centres at x = 12, 20, 28 (cols 1-3), y = 4, 12 (rows 0-1)
    torch.testing.assert_close(c[1, :2], torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(c[2, :3], torch.tensor([5.5, 2.5, 7.0]))  # mask: mean cell, from frame 1
    assert qs.query_ids.tolist() == [[5, 6, 7]]


def test_exemplar_padding_and_empty_mask():
    qi = _init("evs").eval()
    feats = _feats(b=2, t=1)
    empty = ClipExemplars(["mask"], torch.tensor([0]), torch.zeros(1, 2), torch.zeros(1, 4),
                          torch.zeros(1, 64, 64, dtype=torch.bool), torch.tensor([9]))
    none = ClipExemplars([], torch.zeros(0, dtype=torch.long), torch.zeros(0, 2), torch.zeros(0, 4),
                         torch.zeros(0, 64, 64, dtype=torch.bool), torch.zeros(0, dtype=torch.long))
    qs = qi(feats, 2, 1, (64, 64), SIZES, [empty, none])
    assert qs.content.shape == (2, 1, 32) and torch.isfinite(qs.content).all()
    assert qs.query_ids.tolist() == [[9], [-1]]
    torch.testing.assert_close(qs.content[1, 0], qi.pad_feat)


def test_build_rejects_too_many_grid_queries():
    cfg = unit_model_config("vis")
    cfg.decoder.num_queries = 17
    try:
        build_gvseg(cfg, HungarianMatcher(LossConfig()))
    except ValueError as e:
        assert "grid_size" in str(e)
    else:
        raise AssertionError("expected ValueError")
