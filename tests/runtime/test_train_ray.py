"""Ray Train: 2 CPU workers (gloo DDP) over Ray Data shards; a killed worker resumes; a re-run resumes."""

import json

import mlflow
import pytest

from gvseg import checkpoint
from gvseg.config import apply_overrides
from gvseg.runtime.ray_train import run_dir, run_train

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _loss_steps(cfg):
    lines = (run_dir(cfg) / "metrics_fallback.jsonl").read_text().splitlines()
    return [json.loads(x)["step"] for x in lines if "loss" in json.loads(x)]


def test_killed_worker_resumes_and_rerun_continues(ray_local, tiny_cfg, tmp_path):
    cfg = apply_overrides(tiny_cfg, [
        "runtime.num_workers=2", "runtime.max_failures=1", "train.max_iters=6",
        "train.fault.crash_at_step=4", f"train.fault.crash_marker={tmp_path}/crashed",
    ])
    metrics = run_train(cfg)
    assert (tmp_path / "crashed").exists()  # the last rank really died at step 4
    assert "vpq_mean_1246" in metrics
    final = checkpoint.load(run_dir(cfg) / "final_checkpoint")  # loads with weights_only: not torn
    assert final["step"] == 6
    steps = _loss_steps(cfg)
    assert steps[-1] == 6 and steps.count(3) == 2  # steps 3-4 ran again after the restart from step 2
    client = mlflow.MlflowClient(cfg.tracking.tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("gvseg").experiment_id])
    assert run.info.status == "FINISHED"

    # Re-running the same command with a longer schedule resumes from the last checkpoint (step 6).
    run_train(apply_overrides(cfg, ["train.max_iters=8"]))
    assert checkpoint.load(run_dir(cfg) / "final_checkpoint")["step"] == 8
    assert _loss_steps(cfg)[len(steps):] == [7, 8]
