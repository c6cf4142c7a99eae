import random
from pathlib import Path

import numpy as np
import pytest
import torch

from gvseg import checkpoint

ROOT = Path(__file__).resolve().parent.parent


def _objects():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [5])
    return model, opt, sched


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """The VPS debug recipe shrunk to CPU size, with one training batch (key + TCL reference clip)."""
    from gvseg.config import apply_overrides
    from gvseg.data.pipeline import build_records, iterate_batches
    from gvseg.data.synthetic import synth_dataset
    from gvseg.recipes import load_recipe

    root = tmp_path_factory.mktemp("vipseg")
    synth_dataset("vipseg", root, videos=2, frames=6, height=48, width=64, seed=0, thing_classes=3,
                  stuff_classes=4, progress=False)
    cfg = apply_overrides(load_recipe(f"{ROOT}/tasks/vps_vipseg.py:debug"), [
        f"data.root={root}", "data.synthetic=false", "data.min_size=(48,)", "data.test_size=48",
        "train.batch_size=2", "train.lr=1e-3", "train.warmup_iters=2", "train.lr_steps=(2,)",
        "loss.num_points=64", "model.decoder.num_layers=2"])
    records = build_records(cfg.data, "train")
    clip = next(iter(iterate_batches(records, cfg.data, batch_size=2, seed=0, epoch=0, train=True)))
    return cfg, clip


def _optimizer_tensors(opt: torch.optim.Optimizer) -> dict[tuple[int, str], torch.Tensor]:
    """Every per-parameter AdamW tensor, keyed by (parameter index, name), so two optimizers compare exactly."""
    state = opt.state_dict()["state"]
    return {(i, k): torch.as_tensor(v) for i, s in state.items() for k, v in s.items()}


def test_round_trip_restores_everything(tiny_run, tmp_path):
    """Save after real steps (moments, schedule, class bank and TCL queues all moved), restore into parts
    built afresh from another seed, and every piece equals the original."""
    from gvseg.engine import LoopState, build_parts, restore_state, save_state, seed_everything, train_step

    cfg, clip = tiny_run
    seed_everything(0)
    parts = build_parts(cfg)
    for _ in range(3):
        assert train_step(parts, clip, cfg).finite
    model, loss_state = parts.model.state_dict(), parts.loss_state().state_dict()
    # the test means something only if the state to restore differs from a fresh build's
    assert model["query_init.class_bank"].abs().sum() > 0 and loss_state["contrastive.queue_count"].sum() > 0
    assert set(_optimizer_tensors(parts.optimizer)) >= {(0, "exp_avg"), (0, "exp_avg_sq"), (0, "step")}
    path = save_state(parts, LoopState(step=3, epoch=1, nonfinite_total=2), cfg, tmp_path / "step_3")
    expect = (torch.rand(1).item(), np.random.rand(), random.random())

    seed_everything(1)
    fresh = build_parts(cfg)
    assert not torch.equal(fresh.model.state_dict()["query_init.class_bank"], model["query_init.class_bank"])
    state = restore_state(fresh, path.parent, torch.device("cpu"))

    assert (state.step, state.epoch, state.nonfinite_total) == (3, 1, 2)
    restored = fresh.model.state_dict()
    assert restored.keys() == model.keys() and all(torch.equal(restored[k], model[k]) for k in model)
    restored_loss = fresh.loss_state().state_dict()
    assert restored_loss.keys() == loss_state.keys()
    assert all(torch.equal(restored_loss[k], loss_state[k]) for k in loss_state)  # TCL queues, ptrs, counts
    before, after = _optimizer_tensors(parts.optimizer), _optimizer_tensors(fresh.optimizer)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert fresh.optimizer.state_dict()["param_groups"] == parts.optimizer.state_dict()["param_groups"]
    assert fresh.scheduler.state_dict() == parts.scheduler.state_dict()
    assert fresh.scheduler.last_epoch == 3 and fresh.scheduler.get_last_lr() == parts.scheduler.get_last_lr()
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
    from gvseg.model.gvseg import build_gvseg
    from gvseg.recipes import unit_model_config

    cfg = unit_model_config("vps")
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


def _step_dirs(root: Path, steps: list[int]) -> list[Path]:
    dirs = []
    for s in steps:
        (root / f"step_{s}").mkdir(parents=True)
        (root / f"step_{s}" / checkpoint.FILENAME).write_bytes(b"x")
        dirs.append(root / f"step_{s}")
    return dirs


def test_resume_candidates_stop_at_the_recorded_checkpoint(tmp_path):
    d2, d4, _ = _step_dirs(tmp_path, [2, 4, 6])
    assert checkpoint.resume_candidates(d4, tmp_path) == [d2, d4]  # never a newer one the launcher did not record


def test_resume_candidates_without_a_record_are_the_runs_own_step_dirs(tmp_path):
    dirs = _step_dirs(tmp_path, [2, 10, 4])
    assert checkpoint.resume_candidates(None, tmp_path) == [dirs[0], dirs[2], dirs[1]]  # by step, not by name


def test_resume_candidates_without_a_record_or_local_storage_are_empty(tmp_path):
    _step_dirs(tmp_path, [2])
    assert checkpoint.resume_candidates(None, None) == []
    assert checkpoint.resume_candidates(None, tmp_path / "fresh") == []
