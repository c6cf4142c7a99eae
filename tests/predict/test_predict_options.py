"""`gvseg predict`'s paper-003 options: TTA (per-pixel vote over scales and flips) and two-model aggregation
(the more flow-consistent model's maps are the ones written)."""

import dataclasses

import numpy as np
import pytest
import torch
from predict_helpers import moving_square, write_video

from gvseg.config import ConfigError
from gvseg.predict import configure, load_model, predict
from gvseg.video.stream import predict_video


class _Counting(torch.nn.Module):
    """The model, counting its forwards."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, clip):
        self.calls += 1
        return self.model(clip)


def _vss_model(make_checkpoint):
    model, cfg = load_model(make_checkpoint("vss"))
    return model, cfg


def _maps(model, cfg, n=4):
    frames = [moving_square(t, 32, 48) for t in range(n)]
    return np.stack([p.semantic for p in predict_video(model, frames, cfg.model, "vss", progress=False)])


def test_tta_runs_one_forward_per_scale_and_flip(make_checkpoint):
    model, cfg = _vss_model(make_checkpoint)
    counted = _Counting(model).eval()
    pp = dataclasses.replace(cfg.model.postprocess, tta_scales=(1.0, 1.25), tta_flip=True)
    m = dataclasses.replace(cfg.model, postprocess=pp, association=dataclasses.replace(
        cfg.model.association, clip_frames=2, clip_overlap=0))
    out = np.stack([p.semantic for p in predict_video(counted, [moving_square(t, 32, 48) for t in range(4)], m, "vss",
                                                      progress=False)])
    assert counted.calls == 2 * 4  # 2 clips x (2 scales x 2 flips)
    assert out.shape == (4, 32, 48) and out.min() >= 0


def test_tta_with_the_identity_view_alone_is_plain_inference(make_checkpoint):
    model, cfg = _vss_model(make_checkpoint)
    pp = dataclasses.replace(cfg.model.postprocess, tta_scales=(1.0,), tta_flip=False)
    plain = _maps(model, cfg)
    tta = _maps(model, dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, postprocess=pp)))
    assert np.array_equal(plain, tta)  # one view: the vote is that view, through the same post-processing


def test_tta_is_refused_outside_vss(make_checkpoint):
    _, cfg = load_model(make_checkpoint("vps"))
    with pytest.raises(ConfigError, match="--tta.*VSS"):
        configure(cfg, "vps", formats=("official",), clip=3, overlap=1, tta=True)
    vss, _ = configure(load_model(make_checkpoint("vss"))[1], "vss", formats=("official",), clip=3, overlap=1, tta=True)
    assert vss.model.postprocess.tta_scales == (0.9, 1.0, 1.1, 1.2) and vss.model.postprocess.tta_flip


def _pngs(folder):
    """Every PNG written under ``folder``, as (relative path, pixel bytes): comparable with ==."""
    from PIL import Image

    return [(p.relative_to(folder), np.asarray(Image.open(p)).tobytes()) for p in sorted(folder.rglob("*.png"))]


def test_aggregate_writes_the_chosen_model(make_checkpoint, tmp_path, monkeypatch):
    import gvseg.video.aggregate as agg
    from gvseg import checkpoint
    from gvseg.config import to_dict
    from gvseg.model.gvseg import build_gvseg

    video = write_video(tmp_path / "v.mp4", 5, h=32, w=48)
    a = make_checkpoint("vss")
    _, cfg = load_model(a)
    torch.manual_seed(1)  # a second, different model
    state = checkpoint.build_state(model=build_gvseg(cfg.model), criterion=None, optimizer=None, scheduler=None,
                                   step=0, epoch=0, config=to_dict(cfg))
    b = checkpoint.save(state, tmp_path / "ckpt_b")
    for name, ck in (("a", a), ("b", b)):
        predict(video, ck, "vss", out_dir=tmp_path / name, formats=("official",), progress=False)
    assert _pngs(tmp_path / "a") != _pngs(tmp_path / "b")  # the test needs two models that disagree

    s = predict(video, a, "vss", out_dir=tmp_path / "tie", formats=("official",), progress=False, aggregate_with=a)
    assert s["aggregate"]["v"]["chosen"] == 0  # equal consistency: a is kept (Eq. 7 ties)
    assert _pngs(tmp_path / "tie") == _pngs(tmp_path / "a")
    monkeypatch.setattr(agg, "choose", lambda frames, la, lb: (1, 0.1, 0.9))
    s = predict(video, a, "vss", out_dir=tmp_path / "ab", formats=("official",), progress=False, aggregate_with=b)
    assert s["aggregate"]["v"]["chosen"] == 1 and s["frames"] == 5
    assert _pngs(tmp_path / "ab") == _pngs(tmp_path / "b")


def test_aggregate_is_refused_outside_vss(make_checkpoint, tmp_path):
    video = write_video(tmp_path / "v.mp4", 3, h=32, w=48)
    with pytest.raises(ConfigError, match="--aggregate-with.*VSS"):
        predict(video, make_checkpoint("vps"), "vps", out_dir=tmp_path / "o", aggregate_with=make_checkpoint("vps"),
                progress=False)


def test_cli_tta_and_aggregate_flags(make_checkpoint, tmp_path, capsys):
    from gvseg.cli import main

    video = write_video(tmp_path / "v.mp4", 3, h=32, w=48)
    ck = str(make_checkpoint("vss"))
    rc = main(["predict", str(video), "--checkpoint", ck, "--task", "vss", "--out", str(tmp_path / "t"),
               "--format", "official", "--tta", "--aggregate-with", ck, "--quiet"])
    assert rc == 0 and "aggregate: 1 video(s) from --checkpoint, 0 from --aggregate-with" in capsys.readouterr().out
    rc = main(["predict", str(video), "--checkpoint", str(make_checkpoint("vps")), "--task", "vps",
               "--out", str(tmp_path / "p"), "--tta", "--quiet"])
    assert rc == 2 and "--tta" in capsys.readouterr().err
