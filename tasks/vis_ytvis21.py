"""VIS on YouTube-VIS 2021 (40 classes, all things). Paper Table 2: R50 AP 49.6.

Supplementary: for YouTube-VIS the short side is 240-480 and the long side at most 768 (R50); test 360p.
"""

from gvseg.config import Config, DataConfig, ModelConfig, TrackingConfig
from gvseg.recipes import debug_variant, paper_backbone, paper_schedule


def full() -> Config:
    return Config(
        name="vis_ytvis21",
        model=ModelConfig(task="vis", num_classes=40, num_thing_classes=40, backbone=paper_backbone()),
        data=DataConfig(
            format="ytvis", root="datasets/ytvis_2021", val_split="valid",
            min_size=(240, 288, 336, 384, 432, 480), max_size=768, test_size=360,
        ),
        train=paper_schedule(15000),
        tracking=TrackingConfig(registered_model="gvseg-vis-ytvis21"),
    )


def debug() -> Config:
    return debug_variant(full(), "vis_ytvis21_debug")
