"""EVS, mask-guided, on YouTube-VOS 2018 (class-agnostic objects). Paper Table 3: G 81.5.

Exemplars are first-appearance masks; objects may first appear mid-video.
"""

from gvseg.config import Config, DataConfig, ModelConfig, TrackingConfig
from gvseg.recipes import debug_variant, paper_schedule


def full() -> Config:
    return Config(
        name="evs_ytvos18",
        model=ModelConfig(task="evs", num_classes=1, num_thing_classes=1),
        data=DataConfig(
            format="ytvos", root="datasets/youtube-vos-2018", val_split="valid",
            min_size=(240, 288, 336, 384, 432, 480), max_size=768, test_size=360,
        ),
        train=paper_schedule(15000),
        tracking=TrackingConfig(registered_model="gvseg-evs-ytvos18"),
    )


def debug() -> Config:
    return debug_variant(full(), "evs_ytvos18_debug")
