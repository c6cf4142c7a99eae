"""A tracking URI's password (and an MLflow password from the environment) reaches no checkpoint, artifact,
registered model, param, tag, metric file or console line of a run (the job entrypoint: test_jobs.py)."""

import mlflow
import pytest
from live_services import MlflowServer

from gvseg.checkpoint import run_dir
from gvseg.config import apply_overrides
from gvseg.runtime.ray_train import run_train

pytestmark = pytest.mark.slow


def test_no_credential_is_stored_or_printed(tiny_cfg, tmp_path, capfd, monkeypatch):
    (tmp_path / "server").mkdir()
    server = MlflowServer(tmp_path / "server")  # no auth: it ignores the credentials, we check where they go
    try:
        host = server.uri.split("://", 1)[1]
        uri = f"http://alice:SECRET1@{host}"
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "SECRET2")
        cfg = apply_overrides(tiny_cfg, ["runtime.local=true", "train.max_iters=2", f"tracking.tracking_uri={uri}",
                                         "tracking.registered_model=gvseg-cred", "tracking.log_system_metrics=true"])
        run_train(cfg, recipe="tasks/vps_vipseg.py:debug")
        out = capfd.readouterr()
        client = mlflow.MlflowClient(server.uri)
        (run,) = client.search_runs([client.get_experiment_by_name("gvseg").experiment_id])
        (version,) = client.search_model_versions("name = 'gvseg-cred'")
    finally:
        server.stop()
    assert run.info.status == "FINISHED" and run.data.params["tracking.tracking_uri"] == f"http://***@{host}"
    assert "loss" in run.data.metrics and version.run_id == run.info.run_id
    seen = [out.out, out.err, repr(run.data.params), repr(run.data.tags), repr(version)]
    files = [p for root in (run_dir(cfg), tmp_path / "server") for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "checkpoint.pt" for p in files) and any("artifacts" in p.parts for p in files)
    for secret in ("SECRET1", "SECRET2"):
        assert not [s for s in seen if secret in s]
        # checkpoints, the registered model's weights, metric fallback, the server's database and artifacts
        assert not [p for p in files if secret.encode() in p.read_bytes()]
