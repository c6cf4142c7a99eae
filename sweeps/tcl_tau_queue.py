"""Table 4b: TCL matching threshold τ × queue length N_Q on VIPSeg-VPS (paper picks τ=0.2, N_Q=100)."""

from pathlib import Path

from gvseg.recipes import load_recipe
from gvseg.sweep import Sweep, debug_base

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "vps_vipseg.py")


def sweep() -> Sweep:
    return Sweep(
        name="tcl_tau_queue",
        base=load_recipe(f"{TASK}:full"),
        grid={"loss.contrastive.tau": [0.1, 0.2, 0.3], "loss.contrastive.queue_size": [100, 200]},
        metric="vpq_mean_1246",
        plot="heatmap",
        resources_per_trial={"cpu": 8.0, "gpu": 8.0},
    )


def debug() -> Sweep:
    """4 trials that run on a 2-core machine in minutes."""
    return Sweep(
        name="tcl_tau_queue_debug",
        base=debug_base(load_recipe(f"{TASK}:debug")),
        grid={"loss.contrastive.tau": [0.1, 0.3], "loss.contrastive.queue_size": [4, 8]},
        metric="vpq_mean_1246",
        plot="heatmap",
        scheduler="asha",
        resources_per_trial={"cpu": 1.0, "gpu": 0.0},
        max_concurrent=2,  # one trial per core
    )
