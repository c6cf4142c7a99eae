"""Shared test environment: no telemetry, one thread for torch, Ray token auth on with a throwaway token, and
the ``ray_local`` fixture (embedded Ray for a test module).

Every Ray a test starts (``init_embedded``, or a bare ``ray.init()``) runs with token auth, on one token
written for this pytest process: never the user's ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``, and a bare
``ray.init()`` finds it instead of saving a new one to ``~/.ray/auth_token``. ``RAY_AUTH_MODE=disabled``
in the environment still turns it off."""

import os
from pathlib import Path

from gvseg.runtime.ray_init import init_embedded, write_token_file

for key, value in {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0",
                   "RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}.items():
    os.environ.setdefault(key, value)
if os.environ["RAY_AUTH_MODE"] == "token":
    os.environ.pop("RAY_AUTH_TOKEN", None)
    os.environ["RAY_AUTH_TOKEN_PATH"] = write_token_file()

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """GPU tests skip cleanly where there is no CUDA device (CI never has one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


PLATFORM = Path(__file__).resolve().parents[1] / "platform"


def pytest_configure(config):
    config.addinivalue_line("markers", "ray_local(num_cpus=2, dashboard=False): how the module's ray_local "
                                       "fixture starts Ray")


@pytest.fixture(scope="module")
def ray_local(request):
    """Embedded Ray for the test module, started the way gvseg starts it (``init_embedded``: loopback only,
    token auth, a watchdog), on 2 CPUs without a dashboard unless the module says otherwise, e.g.
    ``pytestmark = pytest.mark.ray_local(num_cpus=3, dashboard=True)`` (Ray Train's controller needs the
    dashboard's state API). Its workers import this checkout's gvseg (``PYTHONPATH``), not whichever one
    the venv has installed (an editable install of another checkout), so what runs in a Ray task or Tune
    trial is the code under test."""
    import ray

    marker = request.node.get_closest_marker("ray_local")
    options = {"num_cpus": 2, "dashboard": False, **(marker.kwargs if marker else {})}
    init_embedded(options["num_cpus"], dashboard=options["dashboard"], log_to_driver=False,
                  runtime_env={"env_vars": {"PYTHONPATH": str(PLATFORM)}})
    yield
    ray.shutdown()
