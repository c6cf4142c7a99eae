"""How the TCL reference clip is trained (issue #17 item 1): does making it a key clip too (symmetric Eq. 10),
or forwarding it without a backward, change what VPS learns? The learning benchmark's data, sizes and recipe.

    python benchmarks/tcl_reference.py            # 7 runs of vps (900 / 1400 steps), ~50 min on 2 cores
    python benchmarks/tcl_reference.py --only no_backward_matched   # re-run some arms, keep the others
    python benchmarks/tcl_reference.py --only one_way,symmetric --seeds 2,3   # add seeds to some arms
    python benchmarks/tcl_reference.py --smoke    # tiny sizes, about a minute: checks the script

Arms (``benchmarks/learning.py`` ``run_one``; scored on the plain val set with the SPA cue):
  * one_way (seeds 0, 1)      the recipe (kept by this measurement): the key clip anchors, the reference clip is a
                              candidate set and is segmented too (``loss.reference_segmentation``).
  * symmetric (seeds 0, 1)    ``loss.contrastive.symmetric=true``: the reference clip's samples anchor as well
                              (against the key clip's) and feed the stuff queues: both clips are key clips.
  * no_backward (seed 0)      ``loss.reference_segmentation=false loss.reference_backward=false``: the
                              reference is forwarded under ``torch.no_grad`` and only supplies k+ / k-.
  * no_backward_matched (seeds 0, 1)  no_backward at 1400 steps: the CPU time one_way's 900 steps take.

Results (2026-12-03, 2 shared cores; thing VPQ_1 / VPQ_6, mean of seeds; paired difference to one_way):
  one_way              45.7 / 36.1
  symmetric            45.3 / 33.7   VPQ_6 -2.4 +- 2.6 (-4.2, -0.5), VPQ_1 -0.4 +- 1.6
  no_backward          38.9 / 28.1   VPQ_6 -6.4 (seed 0), VPQ_1 -4.6
  no_backward_matched  46.4 / 33.7   VPQ_6 -2.4 +- 0.4 (-2.7, -2.2), VPQ_1 +0.7 +- 1.7
Seeds 2 and 3 added to one_way and symmetric (2026-12-04, idle 2-core AMD EPYC, ``--seeds 2,3``; seeds 0, 1
ran on the Xeon, each seed's machine is in its record): one_way 45.3 / 35.1 and 48.6 / 40.4, symmetric
46.3 / 36.6 and 45.1 / 37.4. Over the 4 seeds symmetric minus one_way: thing VPQ_6 -1.6 +- 2.5 (-4.2, -0.5,
+1.5, -3.0), VPQ_1 -0.9 +- 2.1, stuff VPQ_6 -0.5 +- 1.0, STQ +0.01: not better, so one_way stays.
Stuff VPQ_6 moves by <= 0.5 in every arm (seeds 0, 1). Neither lever replaces the recipe: the gradient through the
reference clip (one_way) buys thing VPQ_6 even at equal compute. one_way reproduces the learning benchmark's
vps/gvseg run of the same seeds (45.7 / 36.1; seed 0: VPQ_6 identical, VPQ_1 within 1e-4, the same TCL
counters): training is deterministic on one CPU thread.

Writes ``benchmarks/results/tcl_reference_cpu.json`` (machine named; per-seed metrics, the TCL counters of the
last log window, training wall seconds).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import learning as L  # noqa: E402

ARMS = {
    "one_way": ["loss.contrastive.symmetric=false"],
    "symmetric": ["loss.contrastive.symmetric=true"],
    "no_backward": ["loss.contrastive.symmetric=false", "loss.reference_segmentation=false",
                    "loss.reference_backward=false"],
}
# Compute-matched: a no_backward step costs ~0.65x a one_way step (benchmarks/results/train_step_cpu.json,
# 10.0 vs 15.6 CPU s at 256x256), so 1400 steps cost what one_way's 900 do.
MATCHED_STEPS = 1400
ARMS["no_backward_matched"] = ARMS["no_backward"] + [f"train.max_iters={MATCHED_STEPS}",
                                                      f"train.lr_steps=({int(MATCHED_STEPS * 5 / 6)},)"]
SEEDS_OF = {"no_backward": 1}
KEYS = ("vpq_1_thing", "vpq_6_thing", "vpq_1_stuff", "vpq_6_stuff", "vpq_mean_1246", "stq")


def main(argv: list[str] | None = None) -> int:
    from common import machine

    from gvseg.data.pipeline import build_records

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the script end to end")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated arms to (re)run; the others are kept from the "
                                                "existing result file")
    ap.add_argument("--seeds", default="", help="comma-separated seeds to add to the --only arms (their other "
                                                "seeds are kept from the existing result file)")
    args = ap.parse_args(argv)
    if args.seeds and not args.only:
        ap.error("--seeds adds seeds to the arms named by --only")
    added = [int(x) for x in args.seeds.split(",") if x]
    s = L.sizes(args.smoke)
    tag = "smoke" if args.smoke else "cpu"
    work = ROOT / "benchmarks" / "data" / "tcl_reference" / tag
    data = work / "data_vps"
    base = L.data_overrides("vps", data, s) + [f"train.max_iters={s['steps']}",
                                               f"train.lr_steps=({int(s['steps'] * 5 / 6)},)"]
    cfg = L.config("vps", base)
    build_records(cfg.data, cfg.data.train_split)  # written once, before the workers read it
    specs = [{"name": f"{arm}/s{seed}", "task": "vps", "seed": seed, "cues": ("spa",),
              "overrides": base + [f"train.seed={seed}"] + extra, "out": str(work / f"{arm}_s{seed}")}
             for arm, extra in ARMS.items() for seed in (added or s["seeds"][: SEEDS_OF.get(arm)])
             if not args.only or arm in args.only.split(",")]
    if args.smoke:  # the matched arm's step count is for the full sizes
        specs = [sp for sp in specs if not sp["name"].startswith("no_backward_matched")]
    t0 = time.time()
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=mp.get_context("spawn")) as pool:
        runs = list(pool.map(L.run_one, specs))
    out = ROOT / "benchmarks" / "results" / f"tcl_reference_{tag}.json"
    prev = json.loads(out.read_text()) if args.only and out.exists() else {}
    arms: dict[str, dict] = {a: v for a, v in prev.get("arms", {}).items()
                             if added or a not in args.only.split(",")}  # --seeds: keep the arms' other seeds
    here = machine()
    for a in arms.values():  # runs from before the per-seed record ran on the previous file's machine
        for p in a["per_seed"].values():
            p.setdefault("cpu", prev.get("machine", here)["cpu"])
    for r in runs:
        arm = r["name"].split("/")[0]
        last = r["history"][-1] if r["history"] else {}
        a = arms.setdefault(arm, {"per_seed": {}})
        a["per_seed"][str(r["seed"])] = {**{k: r["metrics"]["spa"].get(k) for k in KEYS}, "train_s": r["train_s"],
                                    "cpu": here["cpu"],  # seeds added later may come from another machine
                                    "tcl_last_log": {k: v for k, v in last.items() if k.startswith("mech/tcl")}}
    for a in arms.values():
        for k in (*KEYS, "train_s"):
            a[k] = L.mean_sd([p[k] for p in a["per_seed"].values()])
    diffs = {f"{arm}_minus_one_way": {k: L.mean_sd([arms[arm]["per_seed"][sd][k] - arms["one_way"]["per_seed"][sd][k]
                                                    for sd in arms[arm]["per_seed"] if sd in arms["one_way"]["per_seed"]])
                                      for k in KEYS} for arm in arms if arm != "one_way"}
    result = {"benchmark": "tcl_reference", "machine": here, "settings": {**s, "arms": ARMS, "jobs": args.jobs},
              "wall_s": time.time() - t0 + prev.get("wall_s", 0.0), "arms": arms, "paired_differences": diffs}
    out.write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps({arm: {k: round(a[k]["mean"], 2) for k in ("vpq_1_thing", "vpq_6_thing", "vpq_6_stuff", "train_s")}
                      for arm, a in arms.items()}, indent=1))
    print(json.dumps({d: {k: round(v["mean"], 2) for k, v in x.items() if k in ("vpq_1_thing", "vpq_6_thing")}
                      for d, x in diffs.items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
