"""VPS on KITTI-STEP (19 Cityscapes trainIds; things: person 11, car 13). Paper Table 1: STQ 0.71."""

from gvseg.config import Config, DataConfig, ModelConfig, TrackingConfig
from gvseg.recipes import debug_variant, paper_backbone, paper_schedule


def full() -> Config:
    return Config(
        name="vps_kitti_step",
        model=ModelConfig(task="vps", num_classes=19, num_thing_classes=2, backbone=paper_backbone()),
        data=DataConfig(format="kitti-step", root="datasets/kitti-step", test_size=720),
        train=paper_schedule(10000),
        tracking=TrackingConfig(registered_model="gvseg-vps-kitti-step"),
    )


def debug() -> Config:
    return debug_variant(full(), "vps_kitti_step_debug")
