from pathlib import Path

import pytest

from gvseg.config import apply_overrides
from gvseg.recipes import load_recipe

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def vipseg_root(tmp_path_factory):
    from gvseg.data.synthetic import synth_dataset

    root = tmp_path_factory.mktemp("vipseg")
    # the debug recipe's label space (3 things + 4 stuff); 6 frames: VPQ^6 is defined
    synth_dataset("vipseg", root, videos=4, frames=6, height=48, width=64, seed=0, thing_classes=3, stuff_classes=4,
                  progress=False)
    return root


@pytest.fixture()
def tiny_cfg(vipseg_root, tmp_path):
    """The VPS debug recipe, shrunk to a few CPU steps, writing everything under tmp_path."""
    cfg = load_recipe(f"{ROOT}/tasks/vps_vipseg.py:debug")
    return apply_overrides(cfg, [
        f"data.root={vipseg_root}", "data.synthetic=false", "data.min_size=(48,)", "data.test_size=48",
        "train.max_iters=4", "train.batch_size=2", "train.checkpoint_every=2", "train.log_every=1",
        "train.lr_steps=(100,)", "loss.num_points=64", "model.decoder.num_layers=2",
        f"runtime.storage_path={tmp_path}/runs", f"tracking.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
        "tracking.run_name=tiny", "tracking.log_system_metrics=false",
    ])
