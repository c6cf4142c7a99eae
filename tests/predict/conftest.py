"""A tiny debug checkpoint per task, saved with gvseg.checkpoint like a training run would."""

import pytest
import torch

from gvseg import checkpoint
from gvseg.config import Config, DataConfig, SyntheticConfig, to_dict
from gvseg.data.synthetic import synthetic_label_space
from gvseg.model.gvseg import build_gvseg
from gvseg.recipes import unit_model_config

FORMAT = {"vps": "vipseg", "vss": "vspw", "vis": "ytvis", "evs": "davis"}


def make_cfg(task: str) -> Config:
    things, stuff = {"vps": (2, 2), "vss": (2, 2), "vis": (2, 0), "evs": (0, 0)}[task]
    nc, nt = synthetic_label_space(FORMAT[task], things, stuff)  # VSPW's 124 classes are fixed
    model = unit_model_config(task, num_classes=nc, num_thing_classes=nt)
    if task == "vis":  # an untrained model's scores are low; keep its queries so instances come out
        model.postprocess.track_min_score = 0.0
    data = DataConfig(format=FORMAT[task], synthetic=True, test_size=32, max_size=64,
                      synth=SyntheticConfig(thing_classes=things, stuff_classes=stuff))
    return Config(name=f"tiny_{task}", model=model, data=data)


@pytest.fixture(scope="session")
def make_checkpoint(tmp_path_factory):
    cache = {}

    def make(task: str):
        if task not in cache:
            torch.manual_seed(0)
            cfg = make_cfg(task)
            model = build_gvseg(cfg.model)
            state = checkpoint.build_state(model=model, criterion=None, optimizer=None, scheduler=None, step=0,
                                           epoch=0, config=to_dict(cfg))
            cache[task] = checkpoint.save(state, tmp_path_factory.mktemp(f"ckpt_{task}"))
        return cache[task]

    return make
