import json

import pytest

from gvseg.config import Config, ConfigError, apply_overrides, flatten, from_dict, override, to_dict


def test_round_trip_is_exact():
    cfg = apply_overrides(Config(), ["train.lr=3e-4", "data.crop=(256, 320)", "model.descriptor.outside_ref=own_mask"])
    again = from_dict(Config, json.loads(json.dumps(to_dict(cfg))))
    assert again == cfg


def test_dotted_overrides():
    cfg = apply_overrides(Config(), ["train.lr=1e-4", "model.descriptor.angle_bins=48", "data.flip=false"])
    assert cfg.train.lr == 1e-4
    assert cfg.model.descriptor.angle_bins == 48
    assert cfg.data.flip is False


def test_override_does_not_mutate_input():
    cfg = Config()
    override(cfg, "train.lr=0.5")
    assert cfg.train.lr == 1e-4


def test_int_is_accepted_for_float():
    assert override(Config(), "train.lr=1").train.lr == 1.0


def test_string_value_without_quotes():
    assert override(Config(), "tracking.experiment=my-exp").tracking.experiment == "my-exp"


def test_unknown_key_lists_valid_keys_at_that_level():
    with pytest.raises(ConfigError) as e:
        override(Config(), "train.learning_rate=1e-4")
    msg = str(e.value)
    assert "train.learning_rate" in msg and "lr" in msg and "weight_decay" in msg
    assert "angle_bins" not in msg  # only that level's keys


def test_unknown_section():
    with pytest.raises(ConfigError, match="modle: unknown key in <root>; valid keys: name, model"):
        override(Config(), "modle.decoder.dim=3")


def test_wrong_type_names_key_type_and_value():
    with pytest.raises(ConfigError) as e:
        override(Config(), "model.decoder.num_layers=nine")
    msg = str(e.value)
    assert "model.decoder.num_layers" in msg and "int" in msg and "'nine'" in msg


def test_bool_is_not_an_int():
    with pytest.raises(ConfigError, match="train.max_iters: expected int"):
        override(Config(), "train.max_iters=true")


def test_literal_value_checked():
    with pytest.raises(ConfigError) as e:
        override(Config(), "model.pixel_decoder.kind=transformer")
    assert "one of 'msdeform', 'dense', 'fpn'" in str(e.value)


def test_tuple_elements_checked():
    with pytest.raises(ConfigError, match=r"data.min_size\[1\]: expected int"):
        override(Config(), "data.min_size=(480, 'x')")


def test_setting_a_section_fails_clearly():
    with pytest.raises(ConfigError, match="model.decoder: is a section"):
        override(Config(), "model.decoder=3")


def test_missing_equals():
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        override(Config(), "train.lr")


def test_from_dict_rejects_unknown_nested_key():
    with pytest.raises(ConfigError, match="loss.contrastive.taus: unknown key"):
        from_dict(Config, {"loss": {"contrastive": {"taus": 0.1}}})


def test_flatten_gives_dotted_scalars():
    flat = flatten(Config())
    assert flat["train.lr"] == 1e-4
    assert flat["model.descriptor.angle_bins"] == 36
    assert flat["loss.contrastive.tau"] == 0.2
    assert all(not isinstance(v, dict) for v in flat.values())
