import dataclasses
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from model_helpers import make_clip
from torchvision.ops.misc import FrozenBatchNorm2d

from gvseg.config import BackboneConfig, Config, ContrastiveConfig, LossConfig
from gvseg.engine import build_parts, train_step
from gvseg.losses.matcher import HungarianMatcher
from gvseg.model.backbone import Backbone, load_backbone_checkpoint
from gvseg.model.convert_d2 import load_d2_checkpoint, load_d2_pkl, rename_d2
from gvseg.model.gvseg import build_gvseg
from gvseg.recipes import load_recipe, unit_model_config
from gvseg.structures import Clip

torch.set_num_threads(1)  # 2 shared CPU cores: avoid oversubscription

TINY = BackboneConfig(name="test_resnet")


def test_features_at_four_strides():
    bb = Backbone(TINY)
    out = bb(torch.randn(2, 3, 64, 96))
    assert sorted(out) == [4, 8, 16, 32]
    for s, f in out.items():
        assert f.shape == (2, bb.channels[s], 64 // s, 96 // s)


def test_wrong_strides_raise():
    with pytest.raises(ValueError, match="strides"):
        Backbone(BackboneConfig(name="test_resnet", out_indices=(0, 1, 2, 3)))


def test_unknown_model_names_itself():
    with pytest.raises(ValueError, match="no_such_net"):
        Backbone(BackboneConfig(name="no_such_net"))


def test_local_checkpoint_load_reports_keys(tmp_path):
    src = Backbone(TINY)
    state = {f"backbone.{k}": v + 1.0 if v.is_floating_point() else v for k, v in src.body.state_dict().items()}
    victim = "layer1.0.conv1.weight"
    state[f"backbone.{victim}"] = torch.zeros(3, 3)  # wrong shape: must be skipped, not forced
    state["backbone.extra.weight"] = torch.zeros(1)
    path = tmp_path / "bb.pt"
    torch.save({"state_dict": state}, path)

    dst = Backbone(TINY)
    before = dst.body.state_dict()[victim].clone()
    report = load_backbone_checkpoint(dst, str(path))
    assert "extra.weight" in report.unexpected
    assert any(s.startswith(victim) for s in report.shape_mismatch)
    assert victim in report.missing
    torch.testing.assert_close(dst.body.state_dict()[victim], before)
    k = "layer2.0.conv2.weight"
    torch.testing.assert_close(dst.body.state_dict()[k], src.body.state_dict()[k] + 1.0)


def test_checkpoint_via_config(tmp_path):
    src = Backbone(TINY)
    torch.save(src.body.state_dict(), tmp_path / "w.pth")
    dst = Backbone(BackboneConfig(name="test_resnet", checkpoint=str(tmp_path / "w.pth")))
    assert dst.load_report is not None and not dst.load_report.missing and not dst.load_report.unexpected
    x = torch.randn(1, 3, 32, 32)
    src.eval(), dst.eval()
    torch.testing.assert_close(src(x)[32], dst(x)[32])


def test_missing_checkpoint_names_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        Backbone(BackboneConfig(name="test_resnet", checkpoint=str(tmp_path / "nope.pt")))


# ------------------------------------------------------------------------------------- detectron2 .pkl


def _d2_pickle(path, arrays):
    with open(path, "wb") as f:
        pickle.dump({"model": arrays, "__author__": "test", "matching_heuristics": True}, f)


def test_convert_d2_renames_and_reports(tmp_path):
    cfg = unit_model_config("vis")
    cfg.pixel_decoder.kind = "msdeform"
    cfg.queries.task_oriented = False  # learned queries: query_feat / query_embed exist
    model = build_gvseg(cfg, HungarianMatcher(LossConfig(num_points=64)))
    own = model.state_dict()
    rng = np.random.default_rng(0)

    def arr(name):
        return rng.standard_normal(tuple(own[name].shape)).astype(np.float32)

    pairs = {  # Mask2Former name -> ours
        "backbone.res2.0.conv1.weight": "backbone.body.layer1.0.conv1.weight",
        "backbone.res3.0.conv2.norm.running_var": "backbone.body.layer2.0.bn2.running_var",
        "sem_seg_head.pixel_decoder.adapter_1.weight": "pixel_decoder.adapter_1.0.weight",
        "sem_seg_head.pixel_decoder.layer_1.norm.bias": "pixel_decoder.layer_1.1.bias",
        "sem_seg_head.pixel_decoder.transformer.level_embed": "pixel_decoder.level_embed",
        "sem_seg_head.pixel_decoder.transformer.encoder.layers.0.self_attn.sampling_offsets.weight":
            "pixel_decoder.encoder.layers.0.self_attn.sampling_offsets.weight",
        "sem_seg_head.pixel_decoder.input_proj.2.1.weight": "pixel_decoder.input_proj.2.1.weight",
        "sem_seg_head.pixel_decoder.mask_features.bias": "pixel_decoder.mask_features.bias",
        "sem_seg_head.predictor.transformer_cross_attention_layers.1.multihead_attn.in_proj_weight":
            "decoder.transformer_cross_attention_layers.1.multihead_attn.in_proj_weight",
        "sem_seg_head.predictor.transformer_self_attention_layers.0.norm.weight":
            "decoder.transformer_self_attention_layers.0.norm.weight",
        "sem_seg_head.predictor.transformer_ffn_layers.2.linear1.weight": "decoder.transformer_ffn_layers.2.linear1.weight",
        "sem_seg_head.predictor.mask_embed.layers.2.bias": "decoder.mask_embed.layers.2.bias",
        "sem_seg_head.predictor.level_embed.weight": "decoder.level_embed.weight",
        "sem_seg_head.predictor.query_feat.weight": "query_init.query_feat.weight",
        "sem_seg_head.predictor.query_embed.weight": "query_init.query_embed.weight",
    }
    arrays = {d2: arr(ours) for d2, ours in pairs.items()}
    arrays["sem_seg_head.predictor.class_embed.weight"] = np.zeros((134, 32), np.float32)  # COCO classes
    arrays["criterion.empty_weight"] = np.ones(134, np.float32)
    path = tmp_path / "model_final.pkl"
    _d2_pickle(path, arrays)

    report = load_d2_checkpoint(model, path)
    new = model.state_dict()
    for d2, ours in pairs.items():
        np.testing.assert_allclose(new[ours].numpy(), arrays[d2], err_msg=d2)
    assert sorted(report.loaded) == sorted(pairs.values())
    assert any(s.startswith("decoder.class_embed.weight") for s in report.shape_mismatch)
    assert "criterion.empty_weight" in report.unexpected
    assert "decoder.class_embed.weight" in report.missing
    assert len(report.missing) == len([k for k in own if not k.endswith("num_batches_tracked")]) - len(pairs)


def test_convert_d2_rule_for_shortcut():
    out, unmatched = rename_d2({"backbone.res4.2.shortcut.norm.weight": np.zeros(2, np.float32),
                                "pixel_mean": np.zeros(3, np.float32)})
    assert list(out) == ["backbone.body.layer3.2.downsample.1.weight"]
    assert unmatched == ["pixel_mean"]


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_d2_pickle_refuses_code(tmp_path):
    path = tmp_path / "evil.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"a": _Evil()}}, f)
    with pytest.raises(ValueError, match="evil.pkl"):
        load_d2_pkl(path)


# ------------------------------------------------------------------------------------------ BatchNorm


def _bn_state(model):
    """Every BatchNorm tensor (statistics and affine, trainable or frozen) of the backbone, copied."""
    return {f"{name}.{k}": v.detach().clone() for name, m in model.backbone.named_modules()
            if isinstance(m, torch.nn.BatchNorm2d | FrozenBatchNorm2d)
            for k, v in m.state_dict().items() if k != "num_batches_tracked"}


@pytest.mark.parametrize("norm", ["frozen_bn", "bn"])
def test_frozen_bn_stays_fixed_through_a_train_step(norm):
    torch.manual_seed(0)
    model_cfg = unit_model_config("vps")
    model_cfg = dataclasses.replace(model_cfg, backbone=dataclasses.replace(model_cfg.backbone, norm=norm))
    cfg = Config(model=model_cfg, loss=LossConfig(num_points=64, contrastive=ContrastiveConfig(enabled=False)))
    parts = build_parts(cfg)
    body = parts.model.backbone.body
    frozen = [m for m in body.modules() if isinstance(m, FrozenBatchNorm2d)]
    trainable_bn = [m for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_tensors = {id(x) for m in body.modules() if isinstance(m, torch.nn.BatchNorm2d | FrozenBatchNorm2d)
                  for x in [*m.parameters(), *m.buffers()]}
    in_optimizer = {id(p) for g in parts.optimizer.param_groups for p in g["params"]}
    before = _bn_state(parts.model)
    assert before and any("running_var" in k for k in before)
    result = train_step(parts, make_clip("vps"), cfg)
    assert result.finite
    after = _bn_state(parts.model)
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    if norm == "frozen_bn":
        assert frozen and not trainable_bn
        assert not (in_optimizer & bn_tensors)  # the optimizer holds no BN tensor
        assert changed == []
    else:
        assert trainable_bn and not frozen and in_optimizer & bn_tensors
        assert any("running_mean" in k for k in changed) and any(k.endswith("bn1.weight") for k in changed)


def test_frozen_bn_loads_detectron2_frozen_bn_buffers(tmp_path):
    cfg = unit_model_config("vis")
    cfg = dataclasses.replace(cfg, backbone=dataclasses.replace(cfg.backbone, norm="frozen_bn"))
    model = build_gvseg(cfg, LossConfig(num_points=64))
    shape = tuple(model.state_dict()["backbone.body.layer1.0.bn1.running_var"].shape)
    arrays = {f"backbone.res2.0.conv1.norm.{k}": np.full(shape, v, np.float32)
              for k, v in (("weight", 2.0), ("bias", 0.5), ("running_mean", 0.25), ("running_var", 4.0))}
    _d2_pickle(tmp_path / "m.pkl", arrays)
    report = load_d2_checkpoint(model, tmp_path / "m.pkl")
    bn = model.backbone.body.layer1[0].bn1
    assert type(bn).__name__ == "FrozenBatchNorm2d" and len(report.loaded) == 4
    assert float(bn.weight[0]) == 2.0 and float(bn.running_var[0]) == 4.0


def test_full_recipes_freeze_batch_norm_and_debug_recipes_train_it():
    tasks = sorted((Path(__file__).resolve().parents[2] / "tasks").glob("*.py"))
    assert tasks
    for path in tasks:
        assert load_recipe(f"{path}:full").model.backbone.norm == "frozen_bn", path.stem
        assert load_recipe(f"{path}:debug").model.backbone.norm == "bn", path.stem


# ---------------------------------------------------------------------------------------------- Swin

TINY_SWIN = BackboneConfig(name="swin_tiny_patch4_window7_224", out_indices=(0, 1, 2, 3), timm_kwargs=(
    ("embed_dim", 16), ("depths", (1, 1, 1, 1)), ("num_heads", (1, 1, 2, 2))))


@pytest.mark.parametrize("size", [(192, 320), (160, 288)])
def test_swin_runs_at_non_square_non_224_sizes(size):
    torch.manual_seed(0)
    bb = Backbone(TINY_SWIN)
    h, w = size
    out = bb(torch.randn(1, 3, h, w))
    assert sorted(out) == [4, 8, 16, 32]
    for s, f in out.items():  # NCHW, whatever timm's Swin emits
        assert f.shape == (1, bb.channels[s], h // s, w // s) and f.is_contiguous()


def test_swin_in_the_whole_model_pads_any_size():
    torch.manual_seed(0)
    cfg = dataclasses.replace(unit_model_config("vis"), backbone=TINY_SWIN)
    model = build_gvseg(cfg, LossConfig(num_points=64)).eval()
    for h, w in [(192, 320), (160, 288), (150, 270)]:  # the last is padded to 160 x 288 inside
        frames = torch.randn(1, 3, 3, h, w)
        clip = Clip(frames, torch.tensor([[h, w]]), torch.arange(3)[None], ["v"])
        with torch.no_grad():
            out = model(clip)
        q = out["pred_logits"].shape[1]
        assert out["pred_masks"].shape == (1, q, 3, -(-h // 4), -(-w // 4))
        assert torch.isfinite(out["pred_masks"]).all()


def test_timm_kwargs_may_not_reach_for_weights():
    with pytest.raises(ValueError, match="timm_kwargs may not set"):
        Backbone(BackboneConfig(name="test_resnet", timm_kwargs=(("pretrained", True),)))


# --------------------------------------------------------------------------- detectron2 query placement


def _queries_pkl(path, n, d=32):
    rng = np.random.default_rng(1)
    arrays = {"sem_seg_head.predictor.query_feat.weight": rng.standard_normal((n, d)).astype(np.float32),
              "sem_seg_head.predictor.query_embed.weight": rng.standard_normal((n, d)).astype(np.float32),
              "sem_seg_head.predictor.class_embed.weight": np.zeros((134, d), np.float32),
              "criterion.empty_weight": np.ones(134, np.float32)}
    _d2_pickle(path, arrays)
    return arrays


@pytest.mark.parametrize("n_file", [1, 2, 5])
def test_convert_d2_puts_mask2former_queries_into_the_class_bank(tmp_path, n_file):
    torch.manual_seed(0)
    model = build_gvseg(unit_model_config("vps"), LossConfig(num_points=64))  # bank of 2 stuff classes
    init = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("query_init.bank_")}
    arrays = _queries_pkl(tmp_path / "m.pkl", n_file)
    report = load_d2_checkpoint(model, tmp_path / "m.pkl")
    new = model.state_dict()
    n = min(n_file, 2)
    for ours, theirs in (("bank_feat", "query_feat"), ("bank_pos", "query_embed")):
        key = f"query_init.{ours}.weight"
        np.testing.assert_allclose(new[key][:n].numpy(), arrays[f"sem_seg_head.predictor.{theirs}.weight"][:n])
        torch.testing.assert_close(new[key][n:], init[key][n:])  # rows the file has not: keep their init
        assert key in report.loaded and (key in report.partial) == (n_file != 2)
    text = report.describe()
    if n_file == 1:
        assert "query_init.bank_feat [weight]: rows 0..0 from sem_seg_head.predictor.query_feat.weight" in text
        assert "rows 1..1 keep their init" in text
    if n_file == 5:
        assert "the file's rows 2..4 are dropped" in text


@pytest.mark.parametrize("task", ["vis", "evs"])
def test_convert_d2_names_dropped_queries_and_every_reinitialised_group(tmp_path, task):
    model = build_gvseg(unit_model_config(task, 2, 2), LossConfig(num_points=64))
    _queries_pkl(tmp_path / "m.pkl", 10)
    report = load_d2_checkpoint(model, tmp_path / "m.pkl")
    assert {"sem_seg_head.predictor.query_feat.weight", "sem_seg_head.predictor.query_embed.weight"} <= set(report.unexpected)
    groups = {(status, group): why for status, group, _, why in report.groups()}
    why = groups[("dropped", "sem_seg_head.predictor.query_feat")]
    assert f"task '{task}'" in why and "no learned per-query embedding" in why
    assert "shape file (134, 32)" in groups[("re-initialised", "decoder.class_embed")]
    assert ("dropped", "criterion") in groups
    init = "query_init.grid_ffn.layers.0" if task == "vis" else "query_init.exemplar_ffn.layers.0"
    assert groups[("re-initialised", init)] == "not in the file"
    # every key that was not loaded shows up under a named group
    named = {f"{g}.{leaf}" for _, g, leaves, _ in report.groups() for leaf in leaves}
    assert set(report.missing) | {k for k in report.unexpected if "." in k} <= named
    text = report.describe()
    assert all(f" {g} [" in text for _, g in groups)
