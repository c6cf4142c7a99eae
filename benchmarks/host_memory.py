"""Does keeping freed host memory (``train.keep_freed_memory``, :mod:`gvseg.host_memory`) speed the CPU train step?

    python benchmarks/host_memory.py            # 3 interleaved process pairs, VPS recipe at 256x256, ~10 min on 2 cores
    python benchmarks/host_memory.py --smoke    # toy sizes: checks the script

mallopt settings are process-wide and cannot be undone, so each arm runs in its own process and the arms
alternate (default, keep, default, keep, ...). Every process times the same steps as
``benchmarks/train_step_cpu.py``: ``gvseg_tcl`` (the VPS recipe: key clip + TCL reference clip, both segmented)
and the HF Mask2Former peer on the key clip's 3 frames, after one warm-up step each. Per step it records CPU
seconds (user + system, ``getrusage``), system seconds, minor page faults and wall seconds; per process the peak
RSS and the resident MB after every step (does the kept heap stop growing?). Medians over all steps of an arm.

Results (2026-12-04, idle 2-core AMD EPYC): run 1, 3 steps a process (kept as ``host_memory_cpu_run1.json``):
  gvseg_tcl 12.12 -> 11.22 CPU s (1.08x), default 112k faults a step. Run 2, 40 min later, ``--steps 6``
  (``host_memory_cpu.json``, copied to ``_run2``): 9.56 -> 9.50 (1.006x), default only 18k faults. HF 1.00x both.

Writes ``benchmarks/results/host_memory_cpu.json`` (machine named).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "benchmarks"))

ARMS = ("default", "keep")
KEYS = ("cpu_s", "sys_s", "wall_s", "minflt", "rss_mb")


def _usage() -> tuple[float, float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime, r.ru_stime, r.ru_minflt


def _rss_mb() -> float:
    """Resident memory now (not the peak): does the kept heap stop growing?"""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _timed(fn, steps: int) -> list[dict]:
    fn()  # warm-up: optimiser state and grads exist before timing
    rows = []
    for _ in range(steps):
        u0, s0, f0 = _usage()
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
        u1, s1, f1 = _usage()
        rows.append({"cpu_s": u1 - u0 + s1 - s0, "sys_s": s1 - s0, "wall_s": wall, "minflt": f1 - f0,
                     "rss_mb": _rss_mb()})
    return rows


def worker(arm: str, smoke: bool, steps: int, threads: int) -> dict:
    """One process of one arm: the allocator setting first, then the timed steps."""
    from gvseg import host_memory

    took = host_memory.keep_freed_memory() if arm == "keep" else None
    import dataclasses

    import torch
    from gpu_suite import hf_model, hf_train_step, synthetic_clip

    from gvseg import engine
    from gvseg.config import Config, DataConfig, LossConfig, TrainConfig
    from gvseg.recipes import load_recipe, unit_model_config

    torch.set_num_threads(threads)
    size = 48 if smoke else 256
    mc = unit_model_config("vps", 6, 3) if smoke else load_recipe(str(ROOT / "tasks" / "vps_vipseg.py:full")).model
    mc = dataclasses.replace(mc, pretrained="")  # random weights: nothing is loaded
    cfg = Config(name="host_memory", model=mc, data=DataConfig(format="vipseg"),
                 loss=LossConfig(num_points=256 if smoke else 12544), train=TrainConfig(amp="off"))
    clip = synthetic_clip(1, 3, size, size, 8, mc.num_classes, mc.num_thing_classes, torch.device("cpu"),
                          with_reference=True)
    engine.seed_everything(0)
    parts = engine.build_parts(cfg)
    out = {"arm": arm, "mallopt_took": took,
           "gvseg_tcl": _timed(lambda: engine.train_step(parts, clip, cfg), steps)}
    try:
        model, _ = hf_model(smoke, mc.num_classes)
        hf_step = hf_train_step(model, clip, cfg.train.lr, cfg.train.weight_decay)
        out["hf"] = _timed(hf_step, steps)
    except ImportError as e:
        out["hf_skipped"] = str(e)
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--pairs", type=int, default=0, help="process pairs (default 3; smoke 1)")
    ap.add_argument("--steps", type=int, default=0, help="timed steps per process (default 3; smoke 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", choices=ARMS, help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)
    pairs = args.pairs or (1 if args.smoke else 3)
    steps = args.steps or (1 if args.smoke else 3)
    if args.worker:
        print(json.dumps(worker(args.worker, args.smoke, steps, args.threads)))
        return 0

    from common import machine

    runs: list[dict] = []
    for i in range(pairs):
        for arm in ARMS:
            cmd = [sys.executable, __file__, "--worker", arm, "--steps", str(steps), "--threads", str(args.threads)]
            proc = subprocess.run(cmd + (["--smoke"] if args.smoke else []), capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{arm} process {i}: exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:]}")
            runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"pair {i} {arm}: gvseg_tcl {[round(r['cpu_s'], 2) for r in runs[-1]['gvseg_tcl']]} CPU s",
                  file=sys.stderr, flush=True)

    result = {"benchmark": "host_memory", "machine": machine(), "threads": args.threads, "pairs": pairs,
              "steps_per_process": steps, "order": "default, keep alternating; one process each", "arms": {}}
    for arm in ARMS:
        mine = [r for r in runs if r["arm"] == arm]
        row: dict = {"mallopt_took": mine[0]["mallopt_took"],
                     "maxrss_mb": [round(r["maxrss_mb"], 1) for r in mine]}
        for model in ("gvseg_tcl", "hf"):
            steps_ = [s for r in mine for s in r.get(model, [])]
            if steps_:
                row[model] = {k: statistics.median(s[k] for s in steps_) for k in KEYS}
                row[model]["cpu_s_steps"] = [round(s["cpu_s"], 3) for s in steps_]
                # resident MB after each timed step, per process (the warm-up step comes before the first)
                row[model]["rss_mb_steps"] = [[round(s["rss_mb"]) for s in r.get(model, [])] for r in mine]
        if "hf" in row:  # per key frame: both take 3 key frames a step
            row["gvseg_tcl_vs_hf_per_key_frame"] = row["hf"]["cpu_s"] / row["gvseg_tcl"]["cpu_s"]
        result["arms"][arm] = row
    d, k = result["arms"]["default"], result["arms"]["keep"]
    result["keep_vs_default"] = {m: d[m]["cpu_s"] / k[m]["cpu_s"] for m in ("gvseg_tcl", "hf") if m in d}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("host_memory_cpu_smoke.json" if args.smoke else "host_memory_cpu.json")
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({a: {m: v for m, v in r.items() if isinstance(v, (dict, float))} for a, r in result["arms"].items()}
                     | {"keep_vs_default": result["keep_vs_default"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
