# gvseg: the two commands of the README.
#   make demo   installs everything, then runs the main job end to end (synthetic data -> train -> eval -> MLflow)
#   make test   installs everything, then runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

# The environment every gvseg process gets (shared/specs/stack.md).
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := true
export RAY_USAGE_STATS_ENABLED := 0
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER := 0
export PYTHONUNBUFFERED := 1

.PHONY: install test lint demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

# The main job: synthetic VIPSeg-format data -> 2-worker Ray Train (gloo, CPU) -> VPQ/STQ -> MLflow (./mlflow.db).
# Its embedded Ray runs with token auth, on a fresh token of its own (gvseg/runtime/ray_init.py).
demo: install
	$(VENV)/bin/gvseg train tasks/vps_vipseg.py:debug --workers 2

test: install
	$(PY) -m pytest -q

lint: install
	$(VENV)/bin/ruff check platform tests tasks sweeps benchmarks
