"""Shared test environment: no telemetry, one thread for torch, and Ray token auth on with a throwaway token.

Every Ray a test starts (``init_embedded``, or a bare ``ray.init()``) runs with token auth, on one token
written for this pytest process: never the user's ``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``, and a bare
``ray.init()`` finds it instead of saving a new one to ``~/.ray/auth_token``. ``RAY_AUTH_MODE=disabled``
in the environment still turns it off."""

import os

from gvseg.runtime.ray_init import write_token_file

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
