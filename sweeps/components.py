"""Table 4a (components), 4d (thing/stuff association cues) and 4e (TCL sampling) as named variants."""

from pathlib import Path

from gvseg.recipes import load_recipe
from gvseg.sweep import Sweep, debug_base

TASK = str(Path(__file__).resolve().parent.parent / "tasks" / "vps_vipseg.py")

_BASELINE = {
    "model.decoder.spa_inject": False,
    "model.association.thing_cues": "appearance",
    "model.queries.task_oriented": False,
    "loss.contrastive.thing_reference": "frame",
    "loss.contrastive.stuff_reference": "frame",
}

# Table 4a: baseline -> +SPA matching -> +task-oriented init & association -> +task-oriented TCL (= GvSeg).
TABLE_4A = {
    "baseline": _BASELINE,
    "+spa": {**_BASELINE, "model.decoder.spa_inject": True, "model.association.thing_cues": "spa"},
    "+task_init_assoc": {**_BASELINE, "model.decoder.spa_inject": True, "model.association.thing_cues": "spa",
                         "model.queries.task_oriented": True},
    "gvseg": {},
}

# Table 4d: which association cues (shape/position) thing and stuff queries use. The paper's own row
# (SPA for things only) is the "gvseg" row of Table 4a, so it is not repeated.
TABLE_4D = {
    "assoc_appearance_only": {"model.association.thing_cues": "appearance", "model.association.spa_stuff": False},
    "assoc_spa_things_and_stuff": {"model.association.thing_cues": "spa", "model.association.spa_stuff": True},
}

# Table 4e: where TCL samples come from (Frame = nearby frames; Video = whole video by ΔH; Dataset = queue).
# Video/Dataset is GvSeg itself (the "gvseg" row) and Frame/Frame is the "+task_init_assoc" row.
TABLE_4E = {
    f"tcl_thing_{t}_stuff_{s}": {"loss.contrastive.thing_reference": t, "loss.contrastive.stuff_reference": s}
    for t in ("frame", "video")
    for s in ("frame", "dataset")
    if (t, s) not in {("video", "dataset"), ("frame", "frame")}
}


def sweep() -> Sweep:
    return Sweep(
        name="components",
        base=load_recipe(f"{TASK}:full"),
        variants={**TABLE_4A, **TABLE_4D, **TABLE_4E},
        metric="vpq_mean_1246",
        plot="bar",
        resources_per_trial={"cpu": 8.0, "gpu": 8.0},
    )


def debug() -> Sweep:
    return Sweep(
        name="components_debug",
        base=debug_base(load_recipe(f"{TASK}:debug")),
        variants=TABLE_4A,
        metric="vpq_mean_1246",
        plot="bar",
        resources_per_trial={"cpu": 1.0, "gpu": 0.0},
        max_concurrent=2,  # one trial per core
    )
