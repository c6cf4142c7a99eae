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


def test_data_synth_writes_a_readable_dataset(tmp_path, capsys):
    from gvseg.data.formats import read_dataset

    out = tmp_path / "vspw"
    assert main(["data", "synth", "--format", "vspw", "--out", str(out), "--videos", "2", "--frames", "3",
                 "--size", "32x48"]) == 0
    records, errors = read_dataset("vspw", out, "train")
    assert records and not errors and (records[0].height, records[0].width) == (32, 48)


def test_bad_size_is_a_usage_error(tmp_path, capsys):
    assert main(["data", "synth", "--format", "vspw", "--out", str(tmp_path), "--size", "big"]) == 2
    assert "--size 'big': expected HxW" in capsys.readouterr().err


def test_results_table_puts_the_baselines_beside_the_model():
    from gvseg.cli import _results_table

    table = _results_table({"vpq_1_thing": 42.0, "stq": float("nan"), "baseline/copy_first/vpq_1_thing": 16.8,
                            "baseline/redrawn_ids/vpq_1_thing": 100.0, "mech_inference/assoc/spa_calls": 8.0})
    header, _, row, nan_row = table.splitlines()[:4]
    assert header.split() == ["metric", "model", "copy_first", "redrawn_ids"]
    assert row.split() == ["vpq_1_thing", "42.0000", "16.8000", "100.0000"]
    assert nan_row.split()[:2] == ["stq", "n/a"] and "mech_inference" not in table.split("(1 mech")[0]
