"""Result and GT files given to the VIS and BURST metrics: a bad file is one line that names it."""

from __future__ import annotations

import re

import pytest

from gvseg.metrics import hota, ytvis


@pytest.mark.parametrize("evaluate", [ytvis.evaluate, hota.evaluate], ids=["ytvis", "burst"])
def test_non_utf8_file_is_named(evaluate, tmp_path):
    path = tmp_path / "results.json"
    path.write_bytes(b'{"sequences": [], "name": "caf\xe9"}')
    with pytest.raises(ValueError, match=re.escape(f"{path}: not UTF-8 text: byte 0xe9")):
        evaluate(path, path)


@pytest.mark.parametrize("evaluate", [ytvis.evaluate, hota.evaluate], ids=["ytvis", "burst"])
def test_missing_file_is_named(evaluate, tmp_path):
    path = tmp_path / "nope.json"
    with pytest.raises(FileNotFoundError, match=re.escape(f"{path}: JSON file not found")):
        evaluate(path, path)
