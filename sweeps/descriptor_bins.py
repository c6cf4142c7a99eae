"""Table 4c: histogram size u×v of the shape-position descriptor (paper picks 36×12)."""

from pathlib import Path

from gvseg.recipes import load_recipe
from gvseg.sweep import Sweep, debug_base

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "vps_vipseg.py")
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
        base=debug_base(load_recipe(f"{TASK}:debug")),
        grid={BINS: [(12, 6), (36, 12)]},
        metric="vpq_mean_1246",
        plot="bar",
        resources_per_trial={"cpu": 1.0, "gpu": 0.0},
        max_concurrent=2,  # one trial per core
    )
