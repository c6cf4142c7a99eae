"""EVS, point-guided, on BURST (trained on YouTube-VOS in the paper; evaluated at 1 FPS). H_all 35.9.

The point exemplar of each track comes from ``first_frame_annotations.json``. Training hints are drawn at
random as masks or points (§4.4), in the key and the TCL reference clip.
"""

from gvseg.config import Config, DataConfig, ModelConfig, TrackingConfig
from gvseg.recipes import debug_variant, paper_backbone, paper_schedule


def full() -> Config:
    return Config(
        name="evs_burst",
        model=ModelConfig(task="evs", num_classes=1, num_thing_classes=1, backbone=paper_backbone()),
        data=DataConfig(
            format="burst", root="datasets/BURST", val_split="val", test_size=720,  # {train,val,test}/
            exemplar_kinds=("mask", "point"),  # §4.4: "randomly adopt mask or point exemplars"
        ),
        train=paper_schedule(15000),
        tracking=TrackingConfig(registered_model="gvseg-evs-burst"),
    )


def debug() -> Config:
    return debug_variant(full(), "evs_burst_debug")
