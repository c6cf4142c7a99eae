"""VIS on OVIS (25 classes, heavy occlusion, long videos). Paper Table 2: R50 AP 35.9."""

from gvseg.config import Config, DataConfig, ModelConfig, TrackingConfig
from gvseg.recipes import debug_variant, paper_backbone, paper_schedule


def full() -> Config:
    return Config(
        name="vis_ovis",
        model=ModelConfig(task="vis", num_classes=25, num_thing_classes=25, backbone=paper_backbone()),
        data=DataConfig(format="ovis", root="datasets/ovis", val_split="valid", test_size=720),
        train=paper_schedule(10000),
        tracking=TrackingConfig(registered_model="gvseg-vis-ovis"),
    )


def debug() -> Config:
    return debug_variant(full(), "vis_ovis_debug")
