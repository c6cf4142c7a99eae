"""Metric dispatcher (gvseg.metrics.evaluate): lazy registry, JSON output, table formatting."""

import json
import math

import numpy as np
import pytest

from gvseg.metrics import evaluate as ev
from gvseg.metrics import panoptic_io as pio

CATS = [{"id": 0, "name": "person", "isthing": 1}, {"id": 1, "name": "sky", "isthing": 0}]


def test_every_metric_name_resolves_to_an_evaluate_function():
    assert set(ev.METRICS) == {"vpq", "stq", "miou", "ytvis", "jf", "hota"}  # the CLI's --metric choices
    for name in ev.METRICS:
        assert callable(ev.get_metric(name))


def test_unknown_metric_lists_the_choices():
    with pytest.raises(ValueError, match="unknown metric 'pq'.*vpq"):
        ev.get_metric("pq")


def test_run_metric_writes_json(tmp_path):
    f = np.zeros((4, 4), np.uint32)
    f[:, :2], f[:, 2:] = 3, 4
    segs = pio.segments_from_ids(f, {3: 1, 4: 0})  # stuff listed first: the person is no STQ crowd
    stems = [f"{i:08d}" for i in range(8)]
    pio.write_vipseg(tmp_path / "gt", {"v": (stems, [f] * 8, [segs] * 8)}, CATS)
    pio.write_vipseg(tmp_path / "pred", {"v": (stems, [f] * 8, [segs] * 8)}, kind="pred")
    out = tmp_path / "res" / "results.json"
    res = ev.run_metric("vpq", tmp_path / "gt", tmp_path / "pred", out=out, progress=False, workers=1)
    assert res["vpq_mean_12468"] == pytest.approx(100.0)
    saved = json.loads(out.read_text())
    assert saved["metric"] == "vpq" and saved["results"]["vpq_mean_1246"] == pytest.approx(100.0)
    stq = ev.run_metric("stq", tmp_path / "gt", tmp_path / "pred", progress=False, workers=1)
    assert stq["stq"] == pytest.approx(1.0)


def test_numpy_values_and_nan_are_serialisable(tmp_path, monkeypatch):
    def fake(gt, pred, *, progress=True, **options):
        return {"a": np.float64(0.5), "b": np.int64(3), "c": np.array([1, 2]), "d": float("nan"), **options}

    monkeypatch.setattr(ev, "get_metric", lambda name: fake)
    res = ev.run_metric("vpq", "g", "p", out=tmp_path / "r.json", progress=False, k=2)
    assert res == {"a": 0.5, "b": 3, "c": [1, 2], "d": res["d"], "k": 2} and math.isnan(res["d"])
    assert type(res["a"]) is float and type(res["b"]) is int
    assert math.isnan(json.loads((tmp_path / "r.json").read_text())["results"]["d"])


def test_format_table_shows_scalars_and_summarises_big_nests():
    res = {"stq": 0.123456, "n": 3, "x": float("nan"), "spans": {"1": 50.0}, "deep": {"1": {"pq": 1.0}},
           "per_class": {str(i): {"pq": 1.0} for i in range(30)}}
    table = ev.format_table(res)
    assert "stq" in table and "0.1235" in table and "nan" in table
    assert any(r.split() == ["spans.1", "|", "50.0000"] for r in table.splitlines())
    assert any(r.split() == ["deep", "|", "(1", "entries)"] for r in table.splitlines())
    assert any(r.split() == ["per_class", "|", "(30", "entries)"] for r in table.splitlines())
    assert ev.format_table({}) == "(no results)"


def test_describe_names_the_definition_of_each_headline_number(tmp_path, monkeypatch):
    text = ev.describe({"vpq_mean_1246": 50.0, "vpq_mean_12468": 48.0, "other": 1.0})
    assert "k=1,2,4,6 (VIPSeg paper" in text and "k=1,2,4,6,8 (eval_vpq_vspw.py" in text
    assert "other" not in text
    # a metric's own (option-dependent) texts win, and go into the JSON beside the results
    res = {"HOTA_all": 0.5, "definitions": {"HOTA_all": "HOTA on masks"}}
    assert "HOTA_all: HOTA on masks" in ev.describe(res)
    assert ev.describe({"x": 1.0}) == ""
    monkeypatch.setattr(ev, "get_metric", lambda name: lambda gt, pred, progress=True: dict(res))
    ev.run_metric("hota", "g", "p", out=tmp_path / "r.json", progress=False)
    assert json.loads((tmp_path / "r.json").read_text())["definitions"] == {"HOTA_all": "HOTA on masks"}
    assert "definitions" not in ev.format_table(res)
