import pickle

import numpy as np
import pytest
import torch

from gvseg.config import BackboneConfig, LossConfig
from gvseg.losses.matcher import HungarianMatcher
from gvseg.model.backbone import Backbone, load_backbone_checkpoint
from gvseg.model.convert_d2 import load_d2_checkpoint, load_d2_pkl, rename_d2
from gvseg.model.gvseg import build_gvseg, debug_model_config

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
    cfg = debug_model_config("vis")
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
