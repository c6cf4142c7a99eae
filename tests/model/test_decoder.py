import pytest
import torch

from gvseg.model.decoder import MaskedAttentionDecoder

torch.set_num_threads(1)  # 2 shared CPU cores: avoid oversubscription

D, DP, C, L, Q = 32, 24, 5, 3, 6


def _decoder(**kw):
    torch.manual_seed(0)
    return MaskedAttentionDecoder(dim=D, num_heads=4, ffn_dim=64, num_layers=L, num_classes=C, mask_dim=DP,
                                  memory_dim=DP, **kw).eval()


def _inputs(b=2, t=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    mems = [torch.randn(b * t, DP, s, s, generator=g) for s in (2, 4, 8)]
    mf = torch.randn(b * t, DP, 16, 16, generator=g)
    return torch.randn(b, Q, D, generator=g), torch.randn(b, Q, D, generator=g), mems, mf


@pytest.mark.parametrize("t", [1, 3])
def test_shapes(t):
    dec = _decoder()
    q, pos, mems, mf = _inputs(t=t)
    out = dec(q, pos, mems, mf, t)
    assert out["pred_logits"].shape == (2, Q, C + 1)
    assert out["pred_masks"].shape == (2, Q, t, 16, 16)
    assert out["queries"].shape == out["pred_embeds"].shape == (2, Q, D)
    assert len(out["aux_outputs"]) == L
    for aux in out["aux_outputs"]:
        assert aux["pred_masks"].shape == (2, Q, t, 16, 16)


def test_injection_changes_outputs_and_sees_previous_prediction():
    dec = _decoder()
    q, pos, mems, mf = _inputs()
    base = dec(q, pos, mems, mf, 3)
    seen = []

    def none_inject(layer, prev):
        seen.append((layer, tuple(prev["pred_masks"].shape)))
        return None

    same = dec(q, pos, mems, mf, 3, inject=none_inject)
    torch.testing.assert_close(same["pred_masks"], base["pred_masks"])
    assert seen == [(i, (2, Q, 3, 16, 16)) for i in range(L)]
    # the prediction passed to layer l is the one reported as aux_outputs[l]
    prevs = []
    dec(q, pos, mems, mf, 3, inject=lambda layer, prev: prevs.append(prev["pred_logits"]) or None)
    for p, aux in zip(prevs, base["aux_outputs"]):
        torch.testing.assert_close(p, aux["pred_logits"])

    h = torch.zeros(2, Q, D)
    h[0, 1] = 0.5
    changed = dec(q, pos, mems, mf, 3, inject=lambda layer, prev: h)
    diff = (changed["pred_masks"] - base["pred_masks"]).abs().flatten(2).amax(-1)  # [B, Q]
    assert diff[0, 1] > 1e-4
    # clip 1 got nothing injected and clips do not interact
    torch.testing.assert_close(changed["pred_masks"][1], base["pred_masks"][1])


def test_pos_mode_injection_also_changes_outputs():
    dec = _decoder(spa_mode="pos")
    q, pos, mems, mf = _inputs()
    base = dec(q, pos, mems, mf, 3)
    out = dec(q, pos, mems, mf, 3, inject=lambda layer, prev: torch.full((2, Q, D), 0.3))
    assert not torch.allclose(out["pred_logits"], base["pred_logits"])


def test_all_masked_guard_gives_no_nan():
    dec = _decoder()
    q, pos, mems, mf = _inputs()
    with torch.no_grad():  # every mask logit very negative -> every query fully "masked"
        dec.mask_embed.layers[-1].weight.zero_()
        dec.mask_embed.layers[-1].bias.fill_(1.0)
    mf = -torch.ones_like(mf) * 5
    _, masks, _, blocked = dec.predict(q, mf.view(2, 3, DP, 16, 16), (4, 4))
    assert (masks < 0).all()
    assert not blocked.all(-1).any()  # no query is left with nothing to attend to
    out = dec(q, pos, mems, mf, 3)
    assert torch.isfinite(out["pred_logits"]).all() and torch.isfinite(out["pred_masks"]).all()


def test_masked_attention_only_sees_masked_region():
    """A query's cross-attention output must not depend on memory outside its (previous) mask."""
    dec = _decoder()
    q, pos, mems, mf = _inputs(b=1, t=1)
    _, masks, _, blocked = dec.predict(q, mf.view(1, 1, DP, 16, 16), (2, 2))
    allowed = ~blocked[0].view(Q, 4)  # head 0, level 1/32 (2x2 tokens)
    qi = int(((allowed.sum(1) > 0) & (allowed.sum(1) < 4)).float().argmax())
    assert 0 < allowed[qi].sum() < 4, "test setup: need a query with a partial mask"
    mem = dec.input_proj[0](mems[0])
    memory = mem.flatten(2).transpose(1, 2)
    layer = dec.transformer_cross_attention_layers[0]
    from gvseg.model.pixel_decoder import sine_pos_2d
    p = (sine_pos_2d(2, 2, D, mem.device).flatten(1).t() + dec.level_embed.weight[0])[None]
    out1 = layer(q, memory, blocked, p, pos)
    memory2 = memory.clone()
    memory2[0, ~allowed[qi]] += 10.0  # change only tokens the query may not see
    out2 = layer(q, memory2, blocked, p, pos)
    torch.testing.assert_close(out1[0, qi], out2[0, qi])
