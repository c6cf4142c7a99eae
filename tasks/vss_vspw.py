"""VSS on VSPW (124 classes, 0 and 255 ignored). Paper Table 1: mIoU 44.5 / mVC8 90.5.

VSS has no instances: every class is "stuff" for the model (class-bank queries, no SPA, queue TCL).
"""

from gvseg.config import Config, DataConfig, ModelConfig, TrackingConfig
from gvseg.recipes import debug_variant, paper_backbone, paper_schedule


def full() -> Config:
    return Config(
        name="vss_vspw",
        model=ModelConfig(task="vss", num_classes=124, num_thing_classes=0, backbone=paper_backbone()),
        data=DataConfig(format="vspw", root="datasets/VSPW_480p", test_size=720),
        train=paper_schedule(10000),
        tracking=TrackingConfig(registered_model="gvseg-vss-vspw"),
    )


def debug() -> Config:
    return debug_variant(full(), "vss_vspw_debug")
