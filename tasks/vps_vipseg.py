"""VPS on VIPSeg (124 classes: 58 things, 66 stuff). Paper Table 1: R50 VPQ 44.0 / STQ 44.9."""

from gvseg.config import Config, DataConfig, ModelConfig, TrackingConfig
from gvseg.recipes import debug_variant, paper_backbone, paper_schedule


def full() -> Config:
    return Config(
        name="vps_vipseg",
        model=ModelConfig(task="vps", num_classes=124, num_thing_classes=58, backbone=paper_backbone()),
        data=DataConfig(format="vipseg", root="datasets/VIPSeg/VIPSeg_720P", test_size=720),
        train=paper_schedule(10000),
        tracking=TrackingConfig(registered_model="gvseg-vps-vipseg"),
    )


def debug() -> Config:
    return debug_variant(full(), "vps_vipseg_debug")
