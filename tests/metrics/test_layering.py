"""The layers of the panoptic scorers, read from the source with ``ast`` (nothing is imported).

``panoptic_io`` is the bottom; ``vpq`` and ``stq`` sit side by side on it; ``vipseg`` (the one-pass VIPSeg scan
that feeds both) sits above them. An import of one side metric from the other would make the joint scan's
home ambiguous again, so each edge is checked here, wherever in the file the import statement stands.
"""

import ast
from pathlib import Path

import pytest

METRICS = Path(__file__).resolve().parents[2] / "platform" / "gvseg" / "metrics"


def imported_metrics_modules(name: str) -> set[str]:
    """Names of the ``gvseg.metrics`` modules that ``metrics/<name>.py`` imports, at any level of the file."""
    tree = ast.parse((METRICS / f"{name}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from . import x / from .x import y
                base = "gvseg.metrics" + ("." + base if base else "")
            mods = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        for m in mods:
            parts = m.split(".")
            if parts[:2] == ["gvseg", "metrics"] and len(parts) > 2:
                out.add(parts[2])
    return out


def test_the_parser_sees_real_imports():
    # guards the guard: a parser that found nothing would pass every test below
    assert {"panoptic_io", "vpq", "stq"} <= imported_metrics_modules("vipseg")


@pytest.mark.parametrize("module, other", [("vpq", "stq"), ("stq", "vpq")])
def test_vpq_and_stq_do_not_import_each_other(module, other):
    imported = imported_metrics_modules(module)
    assert other not in imported and "vipseg" not in imported, imported


def test_panoptic_io_is_the_bottom():
    assert imported_metrics_modules("panoptic_io") & {"vpq", "stq", "vipseg"} == set()
