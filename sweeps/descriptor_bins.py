"""Table 4c: histogram size u×v of the shape-position descriptor (paper picks 36×12)."""

from pathlib import Path

from gvseg.config import apply_overrides
from gvseg.recipes import load_recipe
from gvseg.sweep import Sweep

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "vps_vipseg.py")
# Debug trials train inside the Tune trial process (no TorchTrainer start-up per trial), one core each.
DEBUG_TRIAL = ["runtime.num_workers=1"]
BINS = "model.descriptor.angle_bins,model.descriptor.radius_bins"


def sweep() -> Sweep:
    return Sweep(
        name="descriptor_bins",
        base=load_recipe(f"{TASK}:full"),
        grid={BINS: [(12, 6), (24, 12), (36, 12), (36, 18), (48, 12)]},
        metric="vpq_mean_1246",
        plot="bar",
        resources_per_trial={"cpu": 8.0, "gpu": 8.0},
    )


def debug() -> Sweep:
    return Sweep(
        name="descriptor_bins_debug",
        base=apply_overrides(load_recipe(f"{TASK}:debug"), DEBUG_TRIAL),
        grid={BINS: [(12, 6), (36, 12)]},
        metric="vpq_mean_1246",
        plot="bar",
        resources_per_trial={"cpu": 1.0, "gpu": 0.0},
        max_concurrent=2,  # one trial per core
    )
