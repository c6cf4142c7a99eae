"""Task-oriented TCL (Eq. 10): ΔH positives, far_same_id, stuff queues (FIFO, state_dict), loss sanity."""

import math

import pytest
import torch

from gvseg.config import ContrastiveConfig
from gvseg.losses.contrastive import Samples, TemporalContrastive, delta_h, gather_samples, positive_mask
from gvseg.structures import Targets

U = 8  # descriptor length in these tests


def samples(ids, labels, isthing, desc, clip=None, frame=None, embeds=None, dim=4):
    k = len(ids)
    return Samples(
        embeds=torch.randn(k, dim) if embeds is None else embeds,
        ids=torch.tensor(ids, dtype=torch.int64),
        labels=torch.tensor(labels, dtype=torch.int64),
        isthing=torch.tensor(isthing, dtype=torch.bool),
        clip=torch.zeros(k, dtype=torch.int64) if clip is None else torch.tensor(clip),
        desc=torch.as_tensor(desc, dtype=torch.float32).reshape(k, U),
        frame=torch.zeros(k, dtype=torch.int64) if frame is None else torch.tensor(frame),
    )


def unit(i, scale=1.0):
    v = torch.zeros(U)
    v[i] = scale
    return v


def test_delta_h_formula_and_empty_key():
    hk, hr = torch.tensor([3.0, 4.0]), torch.tensor([3.0, 5.0])
    assert delta_h(hk, hr).item() == pytest.approx(1.0 / 5.0)
    assert math.isinf(delta_h(torch.zeros(2), hr).item())
    pair = delta_h(torch.stack([hk, hk])[:, None], torch.stack([hk, hr])[None])  # [2, 2] broadcast
    assert pair.shape == (2, 2) and pair[0, 0] == 0


def test_tau_selects_exactly_the_expected_positives():
    base = torch.ones(U)
    key = samples([1, 2], [0, 0], [True, True], torch.stack([base, base]))
    # refs of id 1 with ΔH = 0.05, 0.15, 0.25, 0.35 (||base|| = sqrt(8)); one ref of id 2 with ΔH = 0
    refs = [base + unit(0, d * math.sqrt(U)) for d in (0.05, 0.15, 0.25, 0.35)] + [base]
    ref = samples([1, 1, 1, 1, 2], [0] * 5, [True] * 5, torch.stack(refs))
    for tau, n_pos in [(0.1, 1), (0.2, 2), (0.3, 3)]:
        pos, neg = positive_mask(key, ref, ContrastiveConfig(tau=tau))
        assert pos[0].tolist() == [i < n_pos for i in range(4)] + [False]
        assert neg[0].tolist() == [i >= n_pos for i in range(4)] + [True]  # far same id: negative
        assert pos[1].tolist() == [False] * 4 + [True]


def test_far_same_id_ignore_excludes_instead_of_negating():
    base = torch.ones(U)
    key = samples([1], [0], [True], base[None])
    ref = samples([1, 1, 3], [0, 0, 0], [True] * 3, torch.stack([base, base * 2, base]))
    pos, neg = positive_mask(key, ref, ContrastiveConfig(far_same_id="ignore"))
    assert pos[0].tolist() == [True, False, False]
    assert neg[0].tolist() == [False, False, True]
    pos, neg = positive_mask(key, ref, ContrastiveConfig(far_same_id="negative"))
    assert neg[0].tolist() == [False, True, True]


def test_absent_object_and_other_clips_are_excluded():
    base = torch.ones(U)
    key = samples([1, 1], [0, 0], [True, True], torch.stack([base, base]), clip=[0, 1])
    ref = samples([1, 1, 5], [0, 0, 0], [True] * 3, torch.stack([torch.zeros(U), base, base]), clip=[0, 0, 1])
    pos, neg = positive_mask(key, ref, ContrastiveConfig())
    assert pos.tolist() == [[False, True, False], [False, False, False]]  # other clip pair: never
    assert neg.tolist() == [[False, False, False], [False, False, True]]  # absent same id: neither


def test_thing_reference_frame_uses_nearby_frames_only():
    base = torch.ones(U)
    key = samples([1], [0], [True], base[None], frame=[10])
    ref = samples([1, 1, 2], [0, 0, 0], [True] * 3, torch.stack([base * 3, base, base]), frame=[12, 40, 11])
    pos, neg = positive_mask(key, ref, ContrastiveConfig(thing_reference="frame", frame_window=5))
    assert pos[0].tolist() == [True, False, False]  # near same id is positive whatever its ΔH
    assert neg[0].tolist() == [False, False, True]


def test_stuff_positives_are_same_class_and_queue():
    cfg = ContrastiveConfig(queue_size=4)
    tcl = TemporalContrastive(cfg, num_classes=5, dim=4)
    tcl.enqueue(torch.tensor([3, 3, 4]), torch.randn(3, 4))
    key = samples([7], [3], [False], torch.ones(1, U))
    ref = samples([7, 8], [3, 4], [False, False], torch.ones(2, U))
    pos, neg = positive_mask(key, ref, cfg)
    assert pos[0].tolist() == [True, False] and neg[0].tolist() == [False, True]
    out = tcl(key, ref, update_queue=False)
    assert torch.isfinite(out["loss_tcl"]) and out["loss_tcl"] > 0
    # without the queue the loss changes (the queue adds 2 positives and 1 negative)
    frame = TemporalContrastive(ContrastiveConfig(queue_size=4, stuff_reference="frame"), 5, 4)
    frame.load_state_dict(tcl.state_dict())
    assert not torch.allclose(frame(key, ref, update_queue=False)["loss_tcl"], out["loss_tcl"])


def test_fifo_queue_order_and_size():
    tcl = TemporalContrastive(ContrastiveConfig(queue_size=3), num_classes=4, dim=2)
    vals = torch.arange(10.0)[:, None].repeat(1, 2)
    tcl.enqueue(torch.tensor([1, 1]), vals[:2])
    assert tcl.queue_items(1)[:, 0].tolist() == [0.0, 1.0]
    tcl.enqueue(torch.tensor([1, 2, 1]), vals[2:5])
    assert tcl.queue_items(1)[:, 0].tolist() == [1.0, 2.0, 4.0]  # oldest dropped, order kept
    assert tcl.queue_items(2)[:, 0].tolist() == [3.0]
    tcl.enqueue(torch.tensor([1] * 5), vals[5:10])  # more than N_Q at once: only the newest N_Q stay
    assert tcl.queue_items(1)[:, 0].tolist() == [7.0, 8.0, 9.0]
    assert tcl.queue_count.tolist() == [0, 3, 1, 0]


def test_queue_lives_in_state_dict_and_updates_only_in_training():
    cfg = ContrastiveConfig(queue_size=5)
    tcl = TemporalContrastive(cfg, num_classes=3, dim=4)
    sd = tcl.state_dict()
    assert {"queue", "queue_ptr", "queue_count"} <= set(sd) and sd["queue"].shape == (3, 5, 4)
    key = samples([1, 2], [0, 2], [True, False], torch.ones(2, U))
    ref = samples([1, 2], [0, 2], [True, False], torch.ones(2, U))
    tcl.eval()
    tcl(key, ref)
    assert tcl.queue_count.sum() == 0
    tcl.train()
    tcl(key, ref)
    assert tcl.queue_count.tolist() == [0, 0, 1]  # only the stuff sample is enqueued
    other = TemporalContrastive(cfg, 3, 4)
    other.load_state_dict(tcl.state_dict())
    assert torch.equal(other.queue_items(2), tcl.queue_items(2))


def test_loss_is_low_when_positives_align_and_grads_flow():
    d = 8
    base = torch.ones(U)
    e = torch.eye(d) * 10
    key = samples([1, 2], [0, 0], [True, True], torch.stack([base, base]), embeds=e[:2].clone().requires_grad_(), dim=d)
    good = samples([1, 2], [0, 0], [True, True], torch.stack([base, base]), embeds=e[:2].clone(), dim=d)
    bad = samples([1, 2], [0, 0], [True, True], torch.stack([base, base]), embeds=e[[1, 0]].clone(), dim=d)
    tcl = TemporalContrastive(ContrastiveConfig(), 2, d)
    lg, lb = tcl(key, good), tcl(key, bad)
    assert lg["loss_tcl"] < 1e-3 < lb["loss_tcl"]
    assert lg["loss_tcl_aux"] < lb["loss_tcl_aux"]
    (lb["loss_tcl"] + lb["loss_tcl_aux"]).backward()
    assert torch.isfinite(key.embeds.grad).all() and key.embeds.grad.abs().sum() > 0


def test_no_samples_gives_attached_zero():
    tcl = TemporalContrastive(ContrastiveConfig(), 3, 4)
    emb = torch.zeros(0, 4, requires_grad=True)
    empty = Samples(emb, *(torch.zeros(0, dtype=torch.int64) for _ in range(2)), torch.zeros(0, dtype=torch.bool),
                    torch.zeros(0, dtype=torch.int64), torch.zeros(0, U), torch.zeros(0, dtype=torch.int64))
    out = tcl(empty, empty)
    assert out["loss_tcl"].item() == 0.0 and out["loss_tcl"].requires_grad


def test_gather_samples_follows_matcher_indices():
    tg = Targets(masks=torch.zeros(2, 3, 4, 4, dtype=torch.bool), labels=torch.tensor([0, 2]),
                 ids=torch.tensor([11, 12]), isthing=torch.tensor([True, False]))
    emb = torch.arange(2 * 5 * 3.0).view(2, 5, 3)
    idx = [(torch.tensor([4, 1]), torch.tensor([1, 0])), (torch.tensor([2]), torch.tensor([0]))]
    desc = [torch.eye(2, U), torch.eye(2, U) * 2]
    s = gather_samples(emb, idx, [tg, tg], desc, frame=torch.tensor([5, 9]))
    assert s.ids.tolist() == [12, 11, 11] and s.clip.tolist() == [0, 0, 1] and s.frame.tolist() == [5, 5, 9]
    assert torch.equal(s.embeds[0], emb[0, 4]) and torch.equal(s.desc[2], desc[1][0])


def _ddp_worker(rank, world, port, q):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        tcl = TemporalContrastive(ContrastiveConfig(queue_size=4), num_classes=3, dim=2)
        n = 1 if rank == 0 else 3  # different counts per rank -> padding path
        labels = torch.full((n,), 1, dtype=torch.int64)
        tcl.enqueue(labels, torch.full((n, 2), float(rank * 10)) + torch.arange(n)[:, None])
        q.put((rank, tcl.queue_items(1)[:, 0].tolist(), tcl.queue_count.tolist()))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ddp_queue_update_is_identical_on_every_rank():
    """Two gloo ranks enqueue different numbers of pairs; both end with the same queue (~10 s: spawn)."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, 2, port, q)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(q.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert results[0][1:] == results[1][1:]
    assert results[0][1] == [0.0, 10.0, 11.0, 12.0]  # rank 0's pair first, then rank 1's, FIFO order
    assert results[0][2] == [0, 4, 0]


def test_pipeline_from_model_outputs():
    """matcher indices -> GT descriptors -> gather_samples -> loss, as the engine wires it."""
    from gvseg.config import DescriptorConfig, LossConfig
    from gvseg.losses.matcher import HungarianMatcher
    from gvseg.model.descriptor import target_descriptors

    g = torch.Generator().manual_seed(0)

    def clip(shift):
        m = torch.zeros(3, 3, 32, 48, dtype=torch.bool)
        m[0, :, 4:14, 4 + shift:16 + shift] = True  # thing id 1
        m[1, :, 16:28, 20 + shift:40 + shift] = True  # thing id 2
        m[2, :, 28:] = True  # stuff class 3
        return Targets(masks=m, labels=torch.tensor([0, 1, 3]), ids=torch.tensor([1, 2, 3]),
                       isthing=torch.tensor([True, True, False]))

    key_t, ref_t = [clip(0), clip(0)], [clip(4), clip(4)]
    sizes = torch.tensor([[32, 48], [32, 48]])
    matcher = HungarianMatcher(LossConfig(num_points=200))
    tcl = TemporalContrastive(ContrastiveConfig(queue_size=8), num_classes=4, dim=16)
    side = []
    for tg, frames in ((key_t, torch.tensor([0, 0])), (ref_t, torch.tensor([30, 30]))):
        emb = torch.randn(2, 6, 16, generator=g, requires_grad=True)
        idx = matcher(torch.randn(2, 6, 5, generator=g), torch.randn(2, 6, 3, 8, 12, generator=g), tg)
        desc = target_descriptors(tg, sizes, DescriptorConfig(angle_bins=4, radius_bins=2), 16)
        side.append((emb, gather_samples(emb, idx, tg, desc, frames)))
    (k_emb, key), (r_emb, ref) = side
    pos, _ = positive_mask(key, ref, tcl.cfg)
    assert pos.sum() == 6  # every object of each clip pair: 2 things with small ΔH + 1 stuff
    tcl.train()
    out = tcl(key, ref)
    assert torch.isfinite(out["loss_tcl"]) and torch.isfinite(out["loss_tcl_aux"])
    (out["loss_tcl"] + out["loss_tcl_aux"]).backward()
    assert k_emb.grad.abs().sum() > 0 and r_emb.grad.abs().sum() > 0
    assert tcl.queue_count.tolist() == [0, 0, 0, 2]


def test_slowly_moving_object_gives_tcl_positives_with_the_real_descriptor():
    """With the descriptor at the paper's settings (M=200, 36x12), the same object a frame later (1 px at 1/4
    of a 240x360 frame) is a positive at tau=0.2, and another object of the same class is not."""
    from gvseg.config import DescriptorConfig
    from gvseg.model.descriptor import target_descriptors

    h, w = 240, 360
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")

    def ellipse(cx, cy, rx, ry):
        return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1

    def tg(cx):  # the moving ellipse (id 1) and a fixed star-ish cross (id 2), one frame each
        other = ((xx - 280).abs() < 30) & ((yy - 60).abs() < 8) | ((xx - 280).abs() < 8) & ((yy - 60).abs() < 30)
        m = torch.stack([ellipse(cx, 120, 40, 25), other])[:, None]  # [2, 1, H, W]
        return Targets(m, torch.tensor([0, 0]), torch.tensor([1, 2]), torch.tensor([True, True]))

    key_t, ref_t = tg(100), tg(104)  # 4 px at full resolution = 1 px at the 1/4 contour resolution
    sizes = torch.tensor([[h, w]])
    dk = target_descriptors([key_t], sizes, DescriptorConfig(), 256)[0]
    dr = target_descriptors([ref_t], sizes, DescriptorConfig(), 256)[0]
    key = samples([1, 2], [0, 0], [True, True], torch.zeros(2, U))
    ref = samples([1, 2], [0, 0], [True, True], torch.zeros(2, U))
    key.desc, ref.desc = dk, dr
    pos, _ = positive_mask(key, ref, ContrastiveConfig(tau=0.2))
    assert pos[0, 0] and pos[1, 1] and not pos[0, 1] and not pos[1, 0]


def _pair(dim=4):
    """A key clip and a reference clip with two things each (ids 1, 2) and one stuff sample of class 4."""
    g = torch.Generator().manual_seed(0)
    base = torch.ones(U)
    desc = torch.stack([base, base * 1.05, base])  # ΔH 0.05: the same ids are positives both ways
    key = samples([1, 2, 9], [0, 1, 4], [True, True, False], desc, embeds=torch.randn(3, dim, generator=g))
    ref = samples([2, 1, 9], [1, 0, 4], [True, True, False], desc, embeds=torch.randn(3, dim, generator=g))
    return key, ref


def test_symmetric_averages_both_directions_over_their_anchors():
    key, ref = _pair()
    one_way = TemporalContrastive(ContrastiveConfig(queue_size=4), 5, 4)
    both = TemporalContrastive(ContrastiveConfig(queue_size=4, symmetric=True), 5, 4)
    fwd, back = one_way(key, ref, update_queue=False), one_way(ref, key, update_queue=False)
    out = both(key, ref, update_queue=False)
    # the same 3 anchors each way: the mean over all anchors is the mean of the two one-way losses
    assert out["loss_tcl"].item() == pytest.approx((fwd["loss_tcl"] + back["loss_tcl"]).item() / 2, rel=1e-6)
    assert out["loss_tcl_aux"].item() == pytest.approx((fwd["loss_tcl_aux"] + back["loss_tcl_aux"]).item() / 2, rel=1e-6)
    assert not torch.allclose(out["loss_tcl"], fwd["loss_tcl"])  # the reverse direction is really there


def test_symmetric_gradient_reaches_the_reference_anchors_and_both_clips_feed_the_queue():
    key, ref = _pair()
    ref.embeds.requires_grad_(True)
    tcl = TemporalContrastive(ContrastiveConfig(queue_size=4, symmetric=True), 5, 4)
    tcl(key, ref, update_queue=True)["loss_tcl"].backward()
    assert ref.embeds.grad is not None and ref.embeds.grad.abs().sum() > 0
    assert int(tcl.queue_count[4]) == 2  # the stuff sample of each clip
    one_way = TemporalContrastive(ContrastiveConfig(queue_size=4), 5, 4)
    one_way(key, ref, update_queue=True)
    assert int(one_way.queue_count[4]) == 1  # the key's only


def test_symmetric_with_no_samples_gives_attached_zeros():
    empty = samples([], [], [], torch.zeros(0, U))
    empty.embeds.requires_grad_(True)
    out = TemporalContrastive(ContrastiveConfig(symmetric=True), 5, 4)(empty, empty, update_queue=False)
    assert out["loss_tcl"].item() == 0 and out["loss_tcl"].requires_grad
