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


def test_tune_turns_its_arguments_into_a_run_sweep_call(monkeypatch):
    import gvseg.runtime.ray_tune as ray_tune

    calls = []

    def run_sweep(sweep, **kwargs):
        calls.append((sweep, kwargs))
        return [{"status": "FINISHED"}, {"status": "FINISHED" if kwargs["resume"] else "INCOMPLETE"}]

    monkeypatch.setattr(ray_tune, "run_sweep", run_sweep)
    spec = f"{ROOT}/sweeps/tcl_tau_queue.py:debug"
    assert main(["tune", spec, "--set", "train.max_iters=2", "--workers", "2", "--scheduler", "fifo",
                 "--max-concurrent", "1", "--storage-path", "/tmp/s"]) == 1  # an INCOMPLETE trial: exit 1
    sweep, kwargs = calls[-1]
    assert sweep.name == "tcl_tau_queue_debug" and sweep.scheduler == "fifo"  # the sweep file says asha
    assert kwargs == {"address": None, "max_concurrent": 1, "resume": False, "storage_path": "/tmp/s",
                      "overrides": ["train.max_iters=2", "runtime.num_workers=2"], "source": spec}
    assert main(["tune", spec, "--resume"]) == 0 and calls[-1][0].scheduler == "asha"


def test_jobs_without_a_job_id_is_a_one_line_error(capsys):
    assert main(["jobs", "status", "--address", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "gvseg jobs status needs a JOB_ID" in err


def test_only_the_cli_parses_arguments():
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "platform" / "gvseg").rglob("*.py")
                 if p.name != "cli.py" and "argparse" in p.read_text()]
    assert offenders == []
