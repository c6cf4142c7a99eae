"""Side study of the learning benchmark (issue #12, SPA >= appearance + 3 on look-alike val): does training
on look-alike instances (same texture, crossing paths: only shape and position tell them apart) make the
shape-position cue of Eq. (6) matter more than appearance?

    python benchmarks/learning_lookalike.py          # 2 runs of vps/gvseg (seed 0, 600 steps), ~15 min on 2 cores
    python benchmarks/learning_lookalike.py --smoke  # tiny sizes, about a minute: checks the script

Trains vps/gvseg once on the plain synthetic VIPSeg set and once on the look-alike one (the learning
benchmark's sizes and recipe), then scores both on both val sets with each association cue (Table 4d:
spa = cos(q^+H, q^'+H'), appearance = cos(q^, q^'), position = H only), counting identity switches across
clip boundaries. Writes ``benchmarks/results/learning_lookalike_cpu.json`` (machine named).

Result (2026-12-03, 2 shared cores, thing VPQ_6 spa / appearance / position; VPQ_1):
  trained plain:     plain val 29.6 / 27.9 / 29.2 (39.2);  look-alike val 12.1 / 11.0 / 10.5 (17.8)
  trained look-alike: plain val 23.2 / 22.8 / 20.8 (32.8); look-alike val 12.6 / 12.3 / 11.5 (23.7)
Look-alike training buys look-alike segmentation (VPQ_1 17.8 -> 23.7) and costs plain (39.2 -> 32.8); SPA's
lead over appearance does not grow (+1.1 -> +0.3 on look-alike val). Not adopted: the training data stays
plain.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import multiprocessing as mp
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "benchmarks"))

import learning as L  # noqa: E402

SETS = ("plain", "look")


def train_and_score(spec: dict) -> dict:
    """One run (:func:`learning.train`), then every (val set, cue) cell."""
    from gvseg.config import apply_overrides
    from gvseg.evaluation import evaluate_split

    parts, history, _ = L.train(L.config("vps", spec["overrides"][spec["train"]]))
    model = parts.model.eval()
    out = Path(spec["out"])
    cells = {}
    for val in SETS:  # each val set with its own data flags: a synthetic root is rewritten when they differ
        for cue in L.CUES:
            c = apply_overrides(L.config("vps", spec["overrides"][val]), [f"model.association.thing_cues={cue}"])
            r, _ = evaluate_split(model, c, out / f"eval_{val}_{cue}", progress=False)
            ids = L.identity_switches(Path(c.data.root), out / f"eval_{val}_{cue}", c.model.association.clip_frames)
            cells[f"{val}_val/{cue}"] = {k: r[k] for k in ("vpq_1_thing", "vpq_6_thing", "vpq_6_stuff")} | {
                "switch_rate_across_clips": ids["switch_rate_across_clips"],
                "matched_thing_frames_frac": ids["matched_thing_frames"] / max(1, ids["gt_thing_frames"])}
    last = history[-1] if history else {}
    return {"train": spec["train"], "cells": cells, "tcl_last_log": {k: v for k, v in last.items() if k.startswith("mech/tcl")}}


def main(argv: list[str] | None = None) -> int:
    import argparse

    from common import machine

    from gvseg.data.pipeline import build_records

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: check the script end to end")
    args = ap.parse_args(argv)
    s = L.sizes(args.smoke)
    tag = "smoke" if args.smoke else "cpu"
    work = ROOT / "benchmarks" / "data" / "learning_lookalike" / tag
    overrides = {name: L.data_overrides("vps", work / f"data_{name}", s, name == "look") + [
        "train.seed=0", f"train.max_iters={s['steps']}", f"train.lr_steps=({int(s['steps'] * 5 / 6)},)"]
        for name in SETS}
    for name in SETS:  # written once, before the two runs read them
        cfg = L.config("vps", overrides[name])
        build_records(cfg.data, cfg.data.train_split)
    specs = [{"train": name, "overrides": overrides, "out": str(work / f"run_{name}")} for name in SETS]
    with cf.ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as pool:
        runs = list(pool.map(train_and_score, specs))
    result = {"benchmark": "learning_lookalike", "machine": machine(), "settings": {**s, "seeds": [0]},
              "runs": {f"trained_{r['train']}": r for r in runs}}
    path = ROOT / "benchmarks" / "results" / f"learning_lookalike_{tag}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    print(json.dumps({k: {c: round(v["vpq_6_thing"], 1) for c, v in r["cells"].items()} for k, r in result["runs"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
