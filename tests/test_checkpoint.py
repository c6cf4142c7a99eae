import random

import numpy as np
import pytest
import torch

from gvseg import checkpoint


def _objects():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    model.register_buffer("bank", torch.randn(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [5])
    model(torch.randn(1, 3)).sum().backward()
    opt.step()
    sched.step()
    return model, opt, sched


def test_round_trip_restores_everything(tmp_path):
    model, opt, sched = _objects()
    crit = torch.nn.Module()
    crit.register_buffer("queue", torch.arange(6.0))
    state = checkpoint.build_state(model=model, criterion=crit, optimizer=opt, scheduler=sched, step=7, epoch=2,
                                   config={"train": {"lr": 1e-3}})
    path = checkpoint.save(state, tmp_path / "step_7")
    expect = (torch.rand(1).item(), np.random.rand(), random.random())

    model2, opt2, sched2 = _objects()
    with torch.no_grad():
        model2.bank.zero_()
    crit2 = torch.nn.Module()
    crit2.register_buffer("queue", torch.zeros(6))
    step, epoch = checkpoint.restore(checkpoint.load(path), model=model2, criterion=crit2, optimizer=opt2,
                                     scheduler=sched2)
    assert (step, epoch) == (7, 2)
    assert torch.equal(model2.bank, model.bank) and torch.equal(crit2.queue, torch.arange(6.0))
    assert sched2.last_epoch == sched.last_epoch
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == expect  # RNG resumes exactly


def test_load_uses_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    bad = tmp_path / "checkpoint.pt"
    torch.save({"x": Evil()}, bad)
    with pytest.raises(ValueError, match="not a readable gvseg checkpoint"):
        checkpoint.load(bad)


def test_torn_file_is_a_clear_error(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match=str(tmp_path)):
        checkpoint.load(tmp_path)


def test_failed_write_keeps_previous(tmp_path, monkeypatch):
    checkpoint.save({"step": 1}, tmp_path)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        checkpoint.save({"step": 2}, tmp_path)
    assert checkpoint.load(tmp_path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


def test_prune_and_latest(tmp_path):
    for s in (5, 10, 15, 20):
        checkpoint.save({"step": s}, tmp_path / f"step_{s}")
    checkpoint.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_15", "step_20"]
    assert checkpoint.latest(tmp_path).name == "step_20"


def test_saved_config_has_no_credentials(tmp_path):
    model, opt, sched = _objects()
    config = {"tracking": {"tracking_uri": "http://alice:SECRET@mlflow:5000", "api_token": "SECRET2"},
              "data": {"root": "/data", "sizes": [1, 2]}}
    state = checkpoint.build_state(model=model, criterion=None, optimizer=opt, scheduler=sched, step=1, epoch=0,
                                   config=config)
    path = checkpoint.save(state, tmp_path)
    assert b"SECRET" not in path.read_bytes()
    saved = checkpoint.load(path)["config"]
    assert saved["tracking"] == {"tracking_uri": "http://***@mlflow:5000", "api_token": "***"}
    assert saved["data"] == config["data"]


def test_newest_valid_skips_a_torn_latest(tmp_path, capsys):
    for s in (2, 4):
        checkpoint.save({"step": s, "model": {}}, tmp_path / f"step_{s:07d}")
    torn = tmp_path / "step_0000004" / checkpoint.FILENAME
    torn.write_bytes(torn.read_bytes()[:40])
    path, state, skipped = checkpoint.newest_valid(checkpoint.step_dirs(tmp_path))
    assert path.name == "step_0000002" and state["step"] == 2
    assert len(skipped) == 1 and "step_0000004" in skipped[0]
    assert capsys.readouterr().out.count("\n") == 1  # one line, no traceback
    assert checkpoint.newest_valid([tmp_path / "step_0000004"], quiet=True) is None


def test_prune_never_deletes_the_newest_valid_checkpoint(tmp_path):
    for s in (1, 2, 3):
        checkpoint.save({"step": s, "model": {}}, tmp_path / f"step_{s}")
    (tmp_path / "step_3" / checkpoint.FILENAME).write_bytes(b"torn")
    checkpoint.prune(tmp_path, keep=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_2", "step_3"]
    with pytest.raises(ValueError, match="not a gvseg training checkpoint"):
        checkpoint.verify(checkpoint.save({"x": 1}, tmp_path / "other"))


def test_load_model_reads_a_checkpoint_or_a_bare_state_dict(tmp_path):
    from gvseg.model.gvseg import build_gvseg, debug_model_config

    cfg = debug_model_config("vps")
    torch.manual_seed(0)
    weights = build_gvseg(cfg).state_dict()
    checkpoint.save({"model": weights, "step": 1}, tmp_path / "step_1")  # a training checkpoint's layout
    torch.save(weights, tmp_path / "model.pt")  # what benchmarks/learning.py writes
    for path in (tmp_path / "step_1", tmp_path / "model.pt"):
        torch.manual_seed(1)  # a different init: equal weights below can only come from the file
        model = checkpoint.load_model(path, cfg)
        assert not model.training
        loaded = model.state_dict()
        assert loaded.keys() == weights.keys() and all(torch.equal(loaded[k], weights[k]) for k in weights)
    torch.save({"step": 3, "note": "no weights"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"other\.pt: neither a gvseg checkpoint .* nor a model state dict$"):
        checkpoint.load_model(tmp_path / "other.pt", cfg)
