"""Mechanism counters of a fixed short run, for before/after comparisons of model, loss and data changes.

The same 20 training steps (VPS debug recipe on the learning benchmark's plain data, seed 0, one log window of
all 20 steps) and the same inference (the trained weights on the 16 val videos of 12 frames): every
``mech/*`` training counter of the window, every ``mech_inference/*`` counter, the loss and VPQ / STQ. Run it
from two checkouts (before / after) into two files and compare; identical code paths give identical counts.

    PYTHONPATH=platform python benchmarks/mechanism_counters.py --out /tmp/after.json [--steps 20] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--smoke", action="store_true", help="toy data and 3 steps")
    args = ap.parse_args(argv)
    from common import machine
    from learning import config, data_overrides, sizes, train

    from gvseg import counters
    from gvseg.evaluation import evaluate_split

    s = sizes(args.smoke)
    steps = 3 if args.smoke else args.steps
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config("vps", data_overrides("vps", Path(tmp) / "data", s) + [
            f"train.max_iters={steps}", f"train.log_every={steps}", "train.seed=0"])
        t0 = time.process_time()
        parts, history, _ = train(cfg)
        cpu_s = time.process_time() - t0
        window = history[-1]
        counters.reset()
        metrics, _ = evaluate_split(parts.model.eval(), cfg, Path(tmp) / "eval", progress=False)
    result = {
        "benchmark": "mechanism_counters", "machine": machine(), "code": str(ROOT),
        "what": f"{steps} training steps (VPS debug recipe, learning-benchmark plain data, seed 0, one log window) "
                "and inference of the trained weights on the val split",
        "train": {"cpu_s": round(cpu_s, 1), **{k: v for k, v in window.items() if k == "loss" or k.startswith("mech/")}},
        "inference": {k: v for k, v in metrics.items()
                      if k.startswith("mech_inference/") or k in ("vpq_1_thing", "vpq_6_thing", "stq")},
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["train"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
