import pytest
import torch
from model_helpers import make_clip

from gvseg.config import LossConfig
from gvseg.losses.matcher import HungarianMatcher
from gvseg.model.gvseg import build_gvseg
from gvseg.recipes import unit_model_config

torch.set_num_threads(1)  # 2 shared CPU cores: avoid oversubscription

LOSS = LossConfig(num_points=256)


def _model(task, **dec):
    torch.manual_seed(0)
    cfg = unit_model_config(task)
    for k, v in dec.items():
        setattr(cfg.decoder, k, v)
    return build_gvseg(cfg, HungarianMatcher(LOSS))


def _finite(out):
    for k in ("pred_logits", "pred_masks", "pred_embeds", "queries"):
        assert torch.isfinite(out[k]).all(), k


@pytest.mark.parametrize("task", ["vis", "vps", "vss", "evs"])
def test_forward_train_and_eval(task):
    model = _model(task)
    clip = make_clip(task)
    out = model.train()(clip)
    q = {"vis": 10, "vps": 12, "vss": 4, "evs": 3}[task]
    assert out["pred_logits"].shape == (2, q, 5)
    assert out["pred_masks"].shape == (2, q, 3, 16, 16)
    assert out["query_is_stuff"].shape == (q,)
    assert len(out["aux_outputs"]) == 3 and len(out["indices"]) == 2
    _finite(out)
    out["pred_masks"].sum().backward()  # the graph is intact
    with torch.no_grad():
        ev = model.eval()(clip)
    _finite(ev)
    assert ev["pred_descriptors"].shape == (2, q, 3, 12 * 6)


def test_one_frame_and_odd_size():
    model = _model("vps").eval()
    clip = make_clip("vps", b=1, t=1, h=40, w=72)
    with torch.no_grad():
        out = model(clip)
    assert out["pred_masks"].shape == (1, 12, 1, 10, 18)  # ceil(H/4), ceil(W/4) of the unpadded input
    _finite(out)
    out = model.train()(clip)
    _finite(out)


def test_no_objects():
    model = _model("vis").train()
    clip = make_clip("vis", k=0)
    out = model(clip)
    _finite(out)
    assert all(len(q) == 0 for q, _ in out["indices"])


def test_evs_without_exemplars_gives_zero_queries():
    model = _model("evs").eval()
    clip = make_clip("evs", k=0)
    with torch.no_grad():
        out = model(clip)
    assert out["pred_logits"].shape == (2, 0, 5) and out["pred_masks"].shape == (2, 0, 3, 16, 16)


def test_training_injects_gt_descriptor_into_matched_thing_queries_only():
    from gvseg.model.descriptor import compute_descriptor, descriptor_to_embedding

    model = _model("vps", predicted_descriptor_prob=0.0).train()
    clip = make_clip("vps", b=1)
    injected = []
    real = model.decoder.forward

    def spy(queries, query_pos, memories, mask_features, num_frames, inject=None):
        def wrapped(layer, prev):
            h = inject(layer, prev)
            injected.append(h)
            return h
        return real(queries, query_pos, memories, mask_features, num_frames, wrapped)

    model.decoder.forward = spy
    out = model(clip)
    assert len(injected) == 3
    tg = clip.targets[0]
    gt = descriptor_to_embedding(compute_descriptor(tg.masks[:, 1], torch.tensor([[64.0, 64.0]] * 3),
                                                    model.cfg.descriptor, 32), 32)
    for h, aux in zip(injected, out["aux_outputs"]):
        qi, ti = aux["indices"][0]
        expect = torch.zeros(12, 32)
        for q, t in zip(qi.tolist(), ti.tolist()):
            if tg.isthing[t] and not out["query_is_stuff"][q]:
                expect[q] = gt[t]
        torch.testing.assert_close(h[0], expect)
        assert h[0, out["query_is_stuff"]].abs().sum() == 0  # never into stuff queries
    assert int((injected[0].abs().sum(-1) > 0).sum()) == 2  # the two thing objects


def test_spa_injection_switch_changes_training_output():
    clip = make_clip("vis")
    torch.manual_seed(1)
    a = _model("vis", predicted_descriptor_prob=0.0).train()
    b = _model("vis", predicted_descriptor_prob=0.0, spa_inject=False).train()
    torch.manual_seed(2)
    oa = a(clip)
    torch.manual_seed(2)
    ob = b(clip)
    assert not torch.allclose(oa["pred_masks"], ob["pred_masks"])


def test_forward_never_updates_the_bank():
    """The engine updates the class bank once per step from the key clip (tests/runtime/test_engine.py);
    a forward (key, reference, eval) leaves it alone."""
    model = _model("vss")
    clip = make_clip("vss")
    model.train()(clip)
    with torch.no_grad():
        model.eval()(clip)
    assert int(model.query_init.bank_steps) == 0


@pytest.mark.parametrize("task", ["vps", "vis", "vss", "evs"])
def test_every_layer_matching_obeys_the_query_type_gate(task):
    from gvseg.structures import QUERY_EXEMPLAR, QUERY_STUFF, QUERY_THING

    model = _model(task).train()
    clip = make_clip(task)
    out = model(clip)
    kind, qcls = out["query_kind"], out["query_class"]
    meta = out["query_meta"]
    # SPA injection matched every aux layer inside the model; without injection (VSS) the criterion matches
    layers = [aux.get("indices") or model.matcher(aux["pred_logits"], aux["pred_masks"], clip.targets, meta)
              for aux in out["aux_outputs"]] + [out["indices"]]
    assert ("indices" in out["aux_outputs"][0]) == (task != "vss")
    for indices in layers:
        for b, (qi, ti) in enumerate(indices):
            tg = clip.targets[b]
            for q, t in zip(qi.tolist(), ti.tolist()):
                if kind[q] == QUERY_THING:
                    assert tg.isthing[t], "a stuff target on a thing query"
                if kind[q] == QUERY_STUFF:
                    assert not tg.isthing[t] and qcls[q] in (-1, tg.labels[t]), "a thing / other class on a bank query"
                if kind[q] == QUERY_EXEMPLAR:
                    assert out["query_ids"][b, q] == tg.ids[t]
    if task == "vps":  # both things reach grid queries and the stuff target its bank query, in every layer
        for indices in layers:
            qi, ti = indices[0]
            assert sorted(ti.tolist()) == [0, 1, 2]


def test_pretrained_state_dict_roundtrip(tmp_path):
    src = _model("vis")
    torch.save({"model": src.state_dict()}, tmp_path / "m.pt")
    cfg = unit_model_config("vis")
    cfg.pretrained = str(tmp_path / "m.pt")
    dst = build_gvseg(cfg, HungarianMatcher(LOSS))
    assert not dst.load_report.missing and not dst.load_report.unexpected
    clip = make_clip("vis", b=1)
    with torch.no_grad():
        torch.testing.assert_close(src.eval()(clip)["pred_masks"], dst.eval()(clip)["pred_masks"])


def test_criterion_reuses_the_models_matchings():
    """The model matched every layer for SPA injection; the criterion must not run Hungarian again."""
    from gvseg import counters
    from gvseg.losses.criterion import SetCriterion
    from gvseg.losses.matcher import HungarianMatcher
    from gvseg.model.gvseg import build_gvseg
    from gvseg.recipes import unit_model_config

    torch.manual_seed(0)
    cfg = LossConfig(num_points=64)
    matcher = HungarianMatcher(cfg)
    model = build_gvseg(unit_model_config("vps"), matcher).train()
    crit = SetCriterion(cfg, 4, matcher)
    clip = make_clip("vps")
    counters.reset()
    out = model(clip)
    in_model = counters.take()["match/calls"]
    crit(out, clip.targets, out["indices"])
    assert in_model == 4  # initial prediction + 2 aux layers (injection) + the final layer
    assert counters.take().get("match/calls", 0) == 0


def _first_injection(model, clip):
    """The H the decoder received before its first self-attention: [B, Q, D]."""
    seen = []
    real = model.decoder.forward

    def spy(queries, query_pos, memories, mask_features, num_frames, inject=None):
        def wrapped(layer, prev):
            seen.append(inject(layer, prev))
            return seen[-1]
        return real(queries, query_pos, memories, mask_features, num_frames, wrapped)

    model.decoder.forward = spy
    model(clip)
    return seen[0]


def test_inject_unmatched_predicted_fills_every_thing_query():
    """decoder.inject_unmatched="predicted": unmatched thing queries carry the H of their own predicted mask (as
    at inference), matched ones the GT H; "zero" (default, Eq. 5 literal) leaves the unmatched at 0."""
    from gvseg.structures import QUERY_THING

    clip = make_clip("vps", b=1)
    got = {}
    for mode in ("zero", "predicted"):
        model = _model("vps", predicted_descriptor_prob=0.0, inject_unmatched=mode).train()
        with torch.no_grad():
            model.decoder.mask_embed.layers[-1].bias.fill_(3.0)  # every predicted mask non-empty
        h = _first_injection(model, clip)
        thing_q = model.query_init.flags(torch.device("cpu"))[0] == QUERY_THING
        got[mode] = int((h[0, thing_q].abs().sum(-1) > 0).sum())
    assert got["zero"] == 2 and got["predicted"] == 10  # the two thing targets vs every grid query
