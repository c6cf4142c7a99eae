"""Before training, the run's resource ask is compared with the cluster's: a run that cannot start is one line."""

from __future__ import annotations

import pytest

from gvseg.config import ConfigError, RuntimeConfig
from gvseg.resources import check_cluster_fits


def test_a_run_that_fits_passes():
    check_cluster_fits(RuntimeConfig(num_workers=2, cpus_per_worker=1.0), {"CPU": 3.0})


def test_too_few_cpus_names_the_fix():
    with pytest.raises(ConfigError) as ei:
        check_cluster_fits(RuntimeConfig(num_workers=2, cpus_per_worker=1.0), {"CPU": 2.0})
    msg = str(ei.value)
    assert "has 2 CPUs but the run needs 3" in msg and "--set runtime.num_workers=1" in msg and "\n" not in msg


def test_too_few_gpus_names_the_fix():
    rt = RuntimeConfig(num_workers=4, use_gpu=True, gpus_per_worker=1.0, cpus_per_worker=1.0)
    with pytest.raises(ConfigError, match=r"has 2 GPUs but the run needs 4 .*runtime.num_workers=2"):
        check_cluster_fits(rt, {"CPU": 16.0, "GPU": 2.0})


def test_no_room_at_all_says_add_nodes():
    with pytest.raises(ConfigError, match=r"num_workers=0 .*\(or add nodes\)"):
        check_cluster_fits(RuntimeConfig(num_workers=1, cpus_per_worker=4.0), {"CPU": 2.0})


def test_autoscaling_clusters_can_skip(monkeypatch):
    monkeypatch.setenv("RAY_GVSEG_SKIP_FIT_CHECK", "1")
    check_cluster_fits(RuntimeConfig(num_workers=8), {"CPU": 1.0})
