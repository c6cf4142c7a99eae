"""The one table of datasets (``gvseg.data.formats.FORMATS``): every layer finds its part of a format there."""

from __future__ import annotations

from typing import get_args

import pytest

from gvseg import writers
from gvseg.config import DataFormat, apply_overrides
from gvseg.data.formats import FORMATS, default_format, format_of, val_split
from gvseg.data.transforms import LabelSpace
from gvseg.evaluation import SCORERS, headline_metric
from gvseg.recipes import load_recipe
from gvseg.structures import Category


def test_config_names_the_same_formats():
    assert tuple(get_args(DataFormat)) == tuple(FORMATS)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_names_a_writer_and_a_scorer_that_exist(fmt, tmp_path):
    spec = FORMATS[fmt]
    assert spec.task in ("vps", "vss", "vis", "evs") and spec.scorer in SCORERS
    space = LabelSpace.from_categories([Category(1, "a", True)])
    w = writers.official_writer(fmt, tmp_path, space, split=spec.val_split)
    assert type(w).__name__ == spec.writer and isinstance(w, writers.Writer)
    w.close()


def test_defaults_and_split_names():
    assert {t: default_format(t) for t in ("vps", "vss", "vis", "evs")} == {
        "vps": "vipseg", "vss": "vspw", "vis": "ytvis", "evs": "davis"}
    assert val_split("ytvos") == "valid" and val_split("davis") == val_split("burst") == "val"


def test_headline_comes_from_the_table():
    base = load_recipe("tasks/vps_vipseg.py:debug")
    assert headline_metric(base) == "vpq_mean_1246"
    assert headline_metric(apply_overrides(base, ["data.format=kitti-step"])) == "stq"


def test_unknown_format_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown dataset format 'vipsge'; known: "):
        format_of("vipsge")
