"""`gvseg submit` / `gvseg jobs`: runtime env, entrypoint, auth token, and a real job on a real Ray head.

Fast tests build the runtime env, the entrypoint and the auth headers, and zip a checkout with Ray's own
packaging code. The slow tests start a real Ray head (`ray start --head` on 127.0.0.1 in its own session
and temp dir) and a real `mlflow server` on loopback, submit a tiny training job with --wait, read its
logs and its MLflow run through the server's REST API, and stop both services by the PIDs they started
as (never `ray stop`, which would end every Ray on the machine).
"""

import json
import os
import secrets
import sys
import time
import tomllib
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml
from live_services import MlflowServer, RayHead, _session_pids  # tests/runtime/live_services.py

from gvseg.cli import main
from gvseg.config import ConfigError
from gvseg.runtime import jobs

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _at_repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)


# ---------------------------------------------------------------------------------------- runtime env


def test_default_runtime_env_ships_the_checkout_and_pyprojects_pins():
    env = jobs.load_runtime_env(None, ROOT)
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert env["working_dir"] == str(ROOT)
    assert env["pip"]["packages"] == pins
    assert env["env_vars"]["PYTHONPATH"].split(os.pathsep)[0] == "platform"
    assert {"/data/", "/.venv/", "/runs/", "/mlruns/", "/mlflow.db", "/.git/"} <= set(env["excludes"])


@pytest.mark.parametrize("path", [None, "cluster/runtime_env.yaml"])
def test_runtime_envs_pass_rays_own_validation(path):
    from ray.runtime_env import RuntimeEnv

    env = RuntimeEnv(**jobs.load_runtime_env(path, ROOT))  # what the head would reject, rejected here
    assert env["working_dir"] == str(ROOT) and env["pip"]["packages"]
    with pytest.raises(Exception, match="pip"):
        RuntimeEnv(**{**jobs.load_runtime_env(path, ROOT), "pip": {"packages": ["x"], "bogus": 1}})


def test_excludes_drop_data_venv_outputs_but_keep_the_package(tmp_path):
    """Zip a fake checkout with Ray's own packaging code, exactly as a submission would."""
    from ray._private.runtime_env.packaging import create_package

    files = ["pyproject.toml", "tasks/a.py", "platform/gvseg/__init__.py", "platform/gvseg/data/pipeline.py",
             "data/VIPSeg/x.png", ".venv/bin/python", "runs/r/ckpt.pt", "mlruns/0/meta.yaml", "mlflow.db",
             ".git/HEAD", "platform/gvseg/__pycache__/x.pyc"]
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("x")
    (tmp_path / "platform/gvseg").mkdir(exist_ok=True)
    env = jobs.load_runtime_env(None, ROOT)
    out = tmp_path.parent / f"{tmp_path.name}.zip"
    create_package(str(tmp_path), out, include_gitignore=True, excludes=env["excludes"])
    shipped = {n.rstrip("/") for n in zipfile.ZipFile(out).namelist()}
    assert {"pyproject.toml", "tasks/a.py", "platform/gvseg/__init__.py", "platform/gvseg/data/pipeline.py"} <= shipped
    for gone in ["data/VIPSeg/x.png", ".venv/bin/python", "runs/r/ckpt.pt", "mlruns/0/meta.yaml", "mlflow.db",
                 ".git/HEAD", "platform/gvseg/__pycache__/x.pyc"]:
        assert gone not in shipped


def test_a_runtime_env_file_can_add_excludes_but_not_drop_them(tmp_path):
    path = tmp_path / "env.yaml"
    path.write_text(yaml.safe_dump({"working_dir": ".", "excludes": ["/benchmarks/"],
                                    "env_vars": {"PYTHONPATH": "extra", "FOO": 1}}))
    env = jobs.load_runtime_env(path, ROOT)
    assert env["working_dir"] == str(ROOT)  # relative to the checkout root
    assert env["excludes"][0] == "/benchmarks/" and "/data/" in env["excludes"]
    assert env["env_vars"]["PYTHONPATH"].split(os.pathsep) == ["platform", "extra"]
    assert env["env_vars"]["FOO"] == "1"  # Ray wants strings
    assert "pip" not in env  # the file decides; no pins added behind its back


@pytest.mark.parametrize("text, reason", [("[1, 2]", "must be a mapping"), ("a: [", "not valid YAML"),
                                          ("working_dir: nowhere/at/all", "does not exist")])
def test_bad_runtime_env_file_names_the_file(tmp_path, text, reason):
    path = tmp_path / "env.yaml"
    path.write_text(text)
    with pytest.raises(jobs.JobError, match=reason) as e:
        jobs.load_runtime_env(path, ROOT)
    assert str(path) in str(e.value)


# ----------------------------------------------------------------------------------------- entrypoint


def test_entrypoint_quotes_overrides_and_joins_the_jobs_cluster():
    cmd = jobs.entrypoint("tasks/vps_vipseg.py:debug", ["data.min_size=(48, 64)", "tracking.run_name=a b"])
    assert cmd.startswith("python -m gvseg.cli train tasks/vps_vipseg.py:debug ")
    assert cmd.endswith("--address auto")
    from gvseg.cli import build_parser

    args = build_parser().parse_args(__import__("shlex").split(cmd)[3:])  # what the shell hands the CLI
    assert args.sets == ["data.min_size=(48, 64)", "tracking.run_name=a b"] and args.address == "auto"
    assert jobs.entrypoint("sweeps/x.py:debug", [], tune=True).startswith("python -m gvseg.cli tune sweeps/x.py")


def test_credentials_travel_in_the_jobs_environment_never_its_entrypoint(monkeypatch, capsys):
    sent = {}

    class FakeClient:
        def get_address(self):
            return "http://127.0.0.1:9"

        def submit_job(self, **kw):
            sent.update(kw)
            return "job-1"

    monkeypatch.setattr(jobs, "client", lambda address: FakeClient())
    uri = "http://alice:SECRET@mlflow:5000"
    jobs.submit("tasks/vps_vipseg.py:debug", ["runtime.storage_path=/shared/runs", f"tracking.tracking_uri={uri}"],
                "http://127.0.0.1:9", None, pip=False)
    assert "SECRET" not in sent["entrypoint"] and "SECRET" not in json.dumps(sent["metadata"])
    assert sent["runtime_env"]["env_vars"]["MLFLOW_TRACKING_URI"] == uri  # what resolve_tracking_uri falls back on
    assert "SECRET" not in capsys.readouterr().out
    with pytest.raises(jobs.JobError, match="env_vars"):
        jobs.submit("tasks/vps_vipseg.py:debug", ["runtime.storage_path=s3://bob:SECRET@minio/runs"],
                    "http://127.0.0.1:9", None, pip=False)


def test_recipe_outside_the_checkout_is_refused(tmp_path):
    outside = tmp_path / "r.py"
    outside.write_text("")
    with pytest.raises(jobs.JobError, match="inside the shipped checkout"):
        jobs._recipe_in_checkout(str(outside), ROOT)
    with pytest.raises(jobs.JobError, match="not found"):
        jobs._recipe_in_checkout("tasks/nope.py:debug", ROOT)
    assert jobs._recipe_in_checkout(str(ROOT / "tasks/vps_vipseg.py") + ":debug", ROOT) == "tasks/vps_vipseg.py:debug"


def test_submit_demands_shared_checkpoint_storage_before_contacting_the_head():
    # Nothing listens on port 9: reaching the network would fail differently.
    with pytest.raises(ConfigError, match="shared checkpoint storage"):
        jobs.submit("tasks/vps_vipseg.py:debug", [], "http://127.0.0.1:9", None, pip=False)


def test_submit_reports_a_bad_override_key_locally(capsys):
    rc = main(["submit", "tasks/vps_vipseg.py:debug", "--address", "http://127.0.0.1:9", "--no-pip",
               "--set", "runtime.storage_path=/shared/runs", "--set", "train.nope=1"])
    assert rc == 2 and "train.nope" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- auth


def test_auth_token_is_found_the_way_ray_finds_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert jobs.auth_token() is None and jobs.auth_headers() == {}
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-home\n")
    assert jobs.auth_token() == "from-home"
    (tmp_path / "t").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert jobs.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert jobs.auth_headers() == {"Authorization": "Bearer from-env"}


def test_unreadable_token_path_is_an_error_not_no_token(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(jobs.JobError, match="RAY_AUTH_TOKEN_PATH"):
        jobs.auth_token()


def test_no_address_and_unreachable_head_are_one_line_errors(capsys, monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["jobs", "list"]) == 1
    assert "--address" in capsys.readouterr().err
    assert main(["jobs", "list", "--address", "http://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err.strip()
    assert "http://127.0.0.1:9" in err and "Traceback" not in err and len(err.splitlines()) == 1


def _tiny_sets(vipseg_root: Path, run_name: str) -> list[str]:
    """tests/runtime/conftest.py's tiny_cfg, on one Ray Train worker (the head has 2 CPUs)."""
    return [f"data.root={vipseg_root}", "data.synthetic=false", "data.min_size=(48,)", "data.test_size=48",
            "train.max_iters=2", "train.batch_size=2", "train.checkpoint_every=2", "train.log_every=1",
            "train.lr_steps=(100,)", "loss.num_points=64", "model.decoder.num_layers=2", f"tracking.run_name={run_name}",
            "tracking.log_system_metrics=false", "tracking.registered_model=", "runtime.num_workers=1"]


def _set_args(sets: list[str]) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


@pytest.mark.ray
@pytest.mark.slow
def test_submit_a_training_job_to_a_real_head_and_find_its_run_in_mlflow(vipseg_root, tmp_path, capsys):
    server = MlflowServer(tmp_path)
    head = None
    try:
        # Token auth as on a cluster, on tests/conftest.py's token: this client, the head and the job's driver
        # all find it through RAY_AUTH_TOKEN_PATH.
        head = RayHead()
        with pytest.raises(urllib.error.HTTPError) as refused:  # without the token: 401
            urllib.request.urlopen(f"{head.address}/api/jobs/", timeout=10)
        assert refused.value.code == 401
        port = server.uri.rsplit(":", 1)[1]
        storage = tmp_path / "shared" / "runs"
        # Tracking URI and storage come from the runtime env (the cluster's environment), not the config;
        # the URI carries a credential that must never reach MLflow params/tags or the job logs.
        env_file = tmp_path / "runtime_env.yaml"
        env_file.write_text(yaml.safe_dump({"working_dir": ".", "env_vars": {
            "MLFLOW_TRACKING_URI": f"http://alice:s3cret@127.0.0.1:{port}", "GVSEG_STORAGE_PATH": str(storage)}}))
        job_id = f"gvseg-test-{secrets.token_hex(4)}"
        t0 = time.monotonic()
        rc = main(["submit", "tasks/vps_vipseg.py:debug", "--address", head.address, "--runtime-env", str(env_file),
                   "--wait", "--job-id", job_id, *_set_args(_tiny_sets(vipseg_root, "jobtest"))])
        streamed = capsys.readouterr().out
        print(f"job took {time.monotonic() - t0:.0f} s", file=sys.stderr)
        assert rc == 0, streamed[-3000:]
        assert f"{job_id} SUCCEEDED" in streamed

        assert main(["jobs", "status", job_id, "--address", head.address]) == 0
        assert capsys.readouterr().out.strip() == "SUCCEEDED"
        assert main(["jobs", "list", "--address", head.address]) == 0
        assert job_id in capsys.readouterr().out

        # The run, through the tracking server's REST API.
        exp = server.api("experiments/get-by-name?experiment_name=gvseg")["experiment"]
        runs = server.api("runs/search", {"experiment_ids": [exp["experiment_id"]],
                                          "filter": "tags.mlflow.runName = 'jobtest'"})["runs"]
        assert len(runs) == 1 and runs[0]["info"]["status"] == "FINISHED"
        run = runs[0]
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert params["tracking.tracking_uri"] == f"http://***@127.0.0.1:{port}"  # redacted, not dropped
        assert params["runtime.storage_path"] == str(storage)  # GVSEG_STORAGE_PATH honoured
        assert "s3cret" not in json.dumps(run["data"])
        assert {"loss", "train_seconds"} <= {m["key"] for m in run["data"]["metrics"]}
        assert any((storage / "jobtest").glob("step_*"))  # checkpoints on the shared path

        assert main(["jobs", "logs", job_id, "--address", head.address]) == 0
        logs = capsys.readouterr().out
        assert f"MLflow run {run['info']['run_id']}" in logs and "vpq" in logs
        assert "s3cret" not in logs  # gvseg and MLflow print the URI redacted / not at all
        assert main(["jobs", "logs", job_id, "--follow", "--address", head.address]) == 0  # ended: returns
        assert f"MLflow run {run['info']['run_id']}" in capsys.readouterr().out

        # Stop: a second submission, stopped before it can finish.
        second = f"{job_id}-stop"
        assert main(["submit", "tasks/vps_vipseg.py:debug", "--address", head.address, "--runtime-env",
                     str(env_file), "--job-id", second, *_set_args(_tiny_sets(vipseg_root, "jobstop"))]) == 0
        assert main(["jobs", "stop", second, "--address", head.address]) == 0
        c = jobs.client(head.address)
        assert jobs.wait_for(c, second, stream=False, timeout_s=60) == "STOPPED"
        assert main(["jobs", "status", "nope-no-such-job", "--address", head.address]) == 1
        assert "nope-no-such-job" in capsys.readouterr().err
    finally:
        if head is not None:
            head.stop()
        server.stop()
    assert not _session_pids(head.proc.pid, head.temp) and server.proc.poll() is not None


@pytest.mark.ray
@pytest.mark.slow
def test_token_auth_head_accepts_the_token_and_rejects_a_wrong_one(tmp_path, capsys, monkeypatch):
    token = secrets.token_hex(16)
    head = RayHead(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    try:
        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token to fall back on
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        monkeypatch.setenv("RAY_AUTH_TOKEN", "wrong-" + token)
        assert main(["jobs", "list", "--address", head.address]) == 1
        err = capsys.readouterr().err
        assert head.address in err and "auth" in err.lower()
        monkeypatch.setenv("RAY_AUTH_TOKEN", token)
        assert main(["jobs", "list", "--address", head.address]) == 0
        assert "JOB_ID" in capsys.readouterr().out
    finally:
        head.stop()


def test_wait_is_bounded_by_timeout():
    """A job stuck waiting for resources never hangs the submitting shell: --timeout ends the wait in one line."""
    import asyncio
    import types

    from gvseg.runtime.jobs import JobError, wait_for

    class Stuck:
        def get_job_status(self, job_id):
            return types.SimpleNamespace(value="RUNNING")

        async def tail_job_logs(self, job_id):
            while True:  # a job whose log never ends
                await asyncio.sleep(0.05)
                yield ""

    with pytest.raises(JobError, match=r"job j1 still RUNNING after 0 s \(--timeout\); it keeps running"):
        wait_for(Stuck(), "j1", stream=True, poll_s=0.01, timeout_s=0.3)
