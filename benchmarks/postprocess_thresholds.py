"""VPS panoptic post-processing thresholds on the learning benchmark's saved vps/gvseg weights (inference only).

Mask2Former's panoptic rule keeps a query if its class score > ``object_mask_threshold`` and a segment only if
the pixels it wins are >= ``overlap_threshold`` of its own mask. The debug recipes use 0.3 / 0.5
(``recipes.debug_variant``). This re-scores the weights of ``python benchmarks/learning.py`` (seeds 0, 1) on its
plain and look-alike val sets at a grid of both thresholds, so the choice rests on more than one checkpoint.

    python benchmarks/learning.py                      # first: trains and saves the weights
    python benchmarks/postprocess_thresholds.py        # ~5 min on 2 cores: benchmarks/results/postprocess_thresholds_cpu.json
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "benchmarks"))

GRID = ((0.8, 0.8), (0.8, 0.5), (0.5, 0.5), (0.3, 0.5), (0.3, 0.3), (0.3, 0.2), (0.5, 0.3))
KEYS = ("vpq_1_thing", "vpq_6_thing", "vpq_1_stuff", "vpq_6_stuff", "vpq_mean_1246", "stq")


def score(job: tuple) -> dict:
    spec, (obj, ovl), look = job
    import learning as L
    import torch

    from gvseg.checkpoint import load_model
    from gvseg.config import apply_overrides
    from gvseg.evaluation import evaluate_split

    torch.set_num_threads(1)
    cfg = L.config("vps", spec["overrides"])
    model = load_model(Path(spec["out"]) / "model.pt", cfg.model)
    ov = [f"model.postprocess.object_mask_threshold={obj}", f"model.postprocess.overlap_threshold={ovl}"]
    if look:
        ov += [f"data.root={spec['look_root']}", "data.synth.lookalike=true"]
    m, _ = evaluate_split(model, apply_overrides(cfg, ov), Path(spec["out"]) / f"thr_{obj}_{ovl}_{int(look)}",
                          progress=False)
    return {"run": spec["name"], "object_mask_threshold": obj, "overlap_threshold": ovl,
            "val": "lookalike" if look else "plain", **{k: m[k] for k in KEYS}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "data" / "learning" / "cpu"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "postprocess_thresholds_cpu.json"))
    p.add_argument("--jobs", type=int, default=2)
    args = p.parse_args(argv)

    import statistics

    import learning as L
    from common import machine
    from tqdm import tqdm

    work = Path(args.work)
    s = L.sizes(False)
    data = {t: work / f"data_{t}" for t in L.RECIPES} | {"vps_look": work / "data_vps_look"}
    specs = [sp for sp in L.plan(s, data, work / "runs") if sp["name"].startswith("vps/gvseg/")]
    missing = [sp["out"] for sp in specs if not (Path(sp["out"]) / "model.pt").is_file()]
    if missing:
        raise SystemExit(f"{missing[0]}: no model.pt; run benchmarks/learning.py first")
    jobs = [(sp, g, look) for sp in specs for g in GRID for look in (False, True)]
    with cf.ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        rows = list(tqdm(pool.map(score, jobs), total=len(jobs), desc="thresholds", unit="eval"))
    mean = {}
    for g in GRID:
        for val in ("plain", "lookalike"):
            sel = [r for r in rows if (r["object_mask_threshold"], r["overlap_threshold"]) == g and r["val"] == val]
            mean[f"{g[0]}/{g[1]}/{val}"] = {k: statistics.fmean(r[k] for r in sel) for k in KEYS}
    out = {"benchmark": "postprocess_thresholds", "machine": machine(), "grid": GRID, "rows": rows,
           "mean_over_seeds": mean}
    Path(args.out).write_text(json.dumps(out, indent=1))
    for k, v in mean.items():
        print(k, {m: round(x, 2) for m, x in v.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
