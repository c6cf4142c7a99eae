import json
import subprocess
import sys
from pathlib import Path

from gvseg.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_help_runs():
    out = subprocess.run([sys.executable, "-m", "gvseg.cli", "--help"], capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "platform"), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0
    for command in ("config", "data", "eval", "train"):
        assert command in out.stdout


def test_config_prints_resolved_tree(capsys):
    assert main(["config", f"{ROOT}/tasks/vps_vipseg.py:debug", "--set", "train.lr=0.002"]) == 0
    tree = json.loads(capsys.readouterr().out)
    assert tree["train"]["lr"] == 0.002 and tree["model"]["task"] == "vps"


def test_config_error_is_one_line_and_exit_2(capsys):
    code = main(["config", f"{ROOT}/tasks/vps_vipseg.py:debug", "--set", "train.lrr=1"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "train.lrr: unknown key" in err and "Traceback" not in err


def test_bad_type_exit_2(capsys):
    assert main(["config", f"{ROOT}/tasks/vps_vipseg.py", "--set", "model.decoder.num_layers=x"]) == 2
    assert "expected int" in capsys.readouterr().err
