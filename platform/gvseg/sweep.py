"""A hyper-parameter sweep: a base recipe, a search space, a scheduler and the number of samples.

``sweeps/*.py`` are functions returning a :class:`Sweep`. The search space is a grid: each entry of
``grid`` maps a dotted config key to the values to try, and a comma-joined key sets several keys together
from tuples (``"model.descriptor.angle_bins,model.descriptor.radius_bins": [(36, 12), (48, 12)]``).
``variants`` are named sets of overrides (ablation rows); trials are the product of grid and variants.
Pure Python: ``gvseg.runtime.ray_tune`` turns a Sweep into a ``ray.tune.Tuner``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Literal

from gvseg.config import Config, ConfigError, apply_overrides


@dataclass
class Sweep:
    name: str
    base: Config
    grid: dict[str, list[Any]] = field(default_factory=dict)
    variants: dict[str, dict[str, Any]] = field(default_factory=dict)  # row name -> {dotted key: value}
    metric: str = "vpq"  # what the scheduler and the summary table rank by
    mode: Literal["max", "min"] = "max"
    scheduler: Literal["fifo", "asha"] = "fifo"
    num_samples: int = 1  # repeats of the whole grid (different seeds)
    max_concurrent: int = 0  # 0 = as many as resources allow
    resources_per_trial: dict[str, float] = field(default_factory=lambda: {"cpu": 1.0, "gpu": 0.0})
    plot: Literal["heatmap", "bar", "line"] = "bar"

    def trials(self) -> list[dict[str, Any]]:
        """Every trial as ``{"variant": name | None, dotted key: value, ...}``, in a stable order."""
        axes = [[(key, v) for v in values] for key, values in self.grid.items()]
        rows = list(self.variants.items()) or [(None, {})]
        out = []
        for seed in range(self.num_samples):
            for name, overrides in rows:
                for combo in itertools.product(*axes) if axes else [()]:
                    trial: dict[str, Any] = {"variant": name, **overrides}
                    for key, value in combo:
                        keys = key.split(",")
                        values = value if len(keys) > 1 else (value,)
                        if len(values) != len(keys):
                            raise ConfigError(f"sweep {self.name}: {key} needs {len(keys)} values, got {value!r}")
                        trial.update(zip(keys, values))
                    if self.num_samples > 1:
                        trial["train.seed"] = self.base.train.seed + seed
                    out.append(trial)
        return out

    def trial_config(self, trial: dict[str, Any]) -> Config:
        sets = [f"{k}={v!r}" for k, v in trial.items() if k != "variant"]
        return apply_overrides(self.base, sets)
