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
    # A meta-path hook makes ray and mlflow unimportable in a fresh interpreter.
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('ray', 'mlflow'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
import importlib, pkgutil, gvseg
core = ['gvseg.config', 'gvseg.structures', 'gvseg.sweep', 'gvseg.recipes', 'gvseg.cli']
for pkg in ('gvseg.model', 'gvseg.losses', 'gvseg.metrics', 'gvseg.data'):
    mod = importlib.import_module(pkg)
    core += [m.name for m in pkgutil.walk_packages(mod.__path__, pkg + '.')]
for extra in ('gvseg.engine', 'gvseg.video.associate', 'gvseg.video.stream', 'gvseg.video.postprocess', 'gvseg.checkpoint'):
    if importlib.util.find_spec(extra) is not None:
        core.append(extra)
for name in core:
    importlib.import_module(name)
assert 'ray' not in sys.modules and 'mlflow' not in sys.modules
print(len(core))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "platform"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 5


def test_runtime_is_the_only_place_importing_ray_or_mlflow():
    import re

    pattern = re.compile(r"^\s*(import|from)\s+(ray|mlflow)\b", re.M)
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "platform" / "gvseg").rglob("*.py")
        if "runtime" not in p.parts and pattern.search(p.read_text())
    ]
    assert offenders == []
