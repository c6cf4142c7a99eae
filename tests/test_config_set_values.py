"""config.set_values: typed values at dotted keys, one round trip; overrides are strings parsed onto it."""

import pytest

from gvseg.config import Config, ConfigError, apply_overrides, set_values


def test_set_values_keeps_python_types_and_equals_string_overrides():
    typed = set_values(Config(), {"train.lr": 1e-4, "model.descriptor.angle_bins": 48, "train.lr_steps": (3, 5),
                                  "loss.contrastive.thing_reference": "frame"})
    parsed = apply_overrides(Config(), ["train.lr=1e-4", "model.descriptor.angle_bins=48", "train.lr_steps=(3, 5)",
                                        "loss.contrastive.thing_reference=frame"])
    assert typed == parsed and typed.train.lr_steps == (3, 5) and typed.model.descriptor.angle_bins == 48


def test_later_assignment_of_a_key_wins_and_empty_is_identity():
    cfg = Config()
    assert apply_overrides(cfg, ["train.lr=1e-3", "train.lr=2e-3"]).train.lr == 2e-3
    assert set_values(cfg, {}) is cfg


def test_set_values_checks_keys_and_types():
    with pytest.raises(ConfigError, match="nope: unknown key"):
        set_values(Config(), {"train.nope": 1})
    with pytest.raises(ConfigError, match="train"):
        set_values(Config(), {"train.lr": "fast"})
    with pytest.raises(ConfigError, match="is a section"):
        set_values(Config(), {"train": 1})
