"""EVS, mask-guided, on YouTube-VOS 2018 (class-agnostic objects). Paper Table 3: G 81.5.

Training hints are drawn from the ground truth at random as masks or points (§4.4), in the key and the TCL
reference clip. Evaluation uses the ``valid`` split's first-appearance masks; objects may first appear mid-video.
"""

from gvseg.config import Config, DataConfig, ModelConfig, TrackingConfig
from gvseg.recipes import debug_variant, paper_backbone, paper_schedule


def full() -> Config:
    return Config(
        name="evs_ytvos18",
        model=ModelConfig(task="evs", num_classes=1, num_thing_classes=1, backbone=paper_backbone()),
        data=DataConfig(
            format="ytvos", root="datasets/youtube-vos-2018", val_split="valid",  # {train,valid,test}/
            min_size=(240, 288, 336, 384, 432, 480), max_size=768, test_size=360,
            exemplar_kinds=("mask", "point"),  # §4.4: "randomly adopt mask or point exemplars"
        ),
        train=paper_schedule(15000),
        tracking=TrackingConfig(registered_model="gvseg-evs-ytvos18"),
    )


def debug() -> Config:
    return debug_variant(full(), "evs_ytvos18_debug")
