"""The layout guard: `platform/` must never shadow the stdlib, and the core must not need ray/mlflow."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_stdlib_platform_is_not_shadowed():
    import platform

    assert platform.system()  # a package named `platform` would have no system()
    assert not (ROOT / "platform" / "__init__.py").exists()


def test_platform_holds_only_the_gvseg_package():
    loose = sorted(p.name for p in (ROOT / "platform").glob("*.py"))
    assert loose == []


def test_core_imports_without_ray_or_mlflow():
    # A meta-path hook makes ray and mlflow unimportable in a fresh interpreter; every module outside
    # gvseg.runtime must still import (cli too: it imports runtime only inside the commands that need it).
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'mlflow'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import importlib, pkgutil, gvseg
core = [m.name for m in pkgutil.walk_packages(gvseg.__path__, 'gvseg.') if not m.name.startswith('gvseg.runtime')]
for name in core:
    importlib.import_module(name)
assert 'ray' not in sys.modules and 'mlflow' not in sys.modules
print(len(core))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "platform"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 60  # every module, not a few


def test_runtime_is_the_only_place_importing_ray_or_mlflow():
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(ray|mlflow)\b", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "platform" / "gvseg").rglob("*.py")
        if "runtime" not in p.parts and pattern.search(p.read_text())
    ]
    assert offenders == []


# ------------------------------------------------------------------------------------------------ floors
# The floor plan of README "Layout": a module may import modules of its own room (package or module) and of
# rooms on lower floors, never higher ones. A new top-level module or package must be given a floor here.
FLOORS = {
    "config": 0, "counters": 0, "host_memory": 0,     # foundations: typed config, mechanism counters, malloc
    "structures": 1, "resources": 1, "sweep": 1,      # records and batches, cluster sizing, sweep plans
    "data": 2, "metrics": 2, "visualize": 2,          # formats and measures
    "model": 2, "losses": 2,                          # the network and its losses
    "checkpoint": 3,                                  # saved state -> a model
    "video": 4,                                       # clip outputs -> a video's predictions
    "writers": 5, "baselines": 5,                     # official files; ground-truth baselines
    "evaluation": 6,                                  # a split scored through the official files
    "engine": 7, "predict": 7, "recipes": 7,          # drivers: training loop, prediction, recipes
    "runtime": 8,                                     # the only code that imports Ray or MLflow
    "cli": 9,                                         # the `gvseg` command
}


def _room(module: str) -> str:
    """gvseg.video.stream -> video; gvseg.config -> config."""
    return module.split(".")[1]


def _imports(src: Path = ROOT / "platform") -> list[tuple[str, str, str]]:
    """(file, importing room, imported room) for every gvseg import under ``src``, at module level or inside
    functions."""
    import ast

    out = []
    for path in sorted((src / "gvseg").rglob("*.py")):
        rel = path.relative_to(src).with_suffix("")
        me = ".".join(rel.parts).removesuffix(".__init__")
        if me == "gvseg":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gvseg":
                targets = [f"gvseg.{a.name}" for a in node.names] if node.module == "gvseg" else [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.split(".")[0] == "gvseg"]
            else:
                continue
            out += [(str(rel), _room(me), _room(t)) for t in targets if t != "gvseg"]
    return out


def test_every_room_has_a_floor():
    rooms = {p.stem if p.is_file() else p.name for p in (ROOT / "platform" / "gvseg").iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert rooms - FLOORS.keys() == set(), "give the new module a floor in FLOORS and README 'Layout'"
    assert FLOORS.keys() - rooms == set(), "a room in FLOORS no longer exists"


def _upward(found: list[tuple[str, str, str]]) -> list[str]:
    return sorted({f"{f}: {a} (floor {FLOORS[a]}) imports {b} (floor {FLOORS[b]})" for f, a, b in found
                   if a != b and FLOORS[b] >= FLOORS[a]})


def test_no_import_runs_back_up():
    found = _imports()
    assert len(found) > 150  # the parser sees the real imports
    assert _upward(found) == []


def test_only_cli_and_runtime_import_runtime():
    assert sorted({f for f, a, b in _imports() if b == "runtime" and a not in ("runtime", "cli")}) == []


def test_floor_check_catches_an_upward_import(tmp_path):
    # the check itself can fail: a model module importing the engine inside a function is reported
    (tmp_path / "gvseg" / "model").mkdir(parents=True)
    (tmp_path / "gvseg" / "__init__.py").write_text("")
    (tmp_path / "gvseg" / "model" / "x.py").write_text("def f():\n    from gvseg.engine import train_step\n"
                                                      "from gvseg import config\n")
    assert _upward(_imports(tmp_path)) == ["gvseg/model/x: model (floor 2) imports engine (floor 7)"]
