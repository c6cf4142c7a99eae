"""Where a CPU train step goes, GvSeg against HF Mask2Former, phase by phase (issue #17 item 1).

    python benchmarks/train_step_phases.py          # ResNet-50, 9 layers, 100 queries (+ VPS class bank), 256x256
    python benchmarks/train_step_phases.py --smoke  # toy sizes: checks the script

One clip of 3 frames, no TCL reference clip (``gvseg`` in ``train_step_cpu.py``): the unit a TCL step runs twice.
Each phase is the CPU time (``time.process_time``, 2 threads) of one module's forward, wrapped in place:
backbone, pixel decoder, query decoder (GvSeg's includes its per-layer matching, which is also reported alone),
criterion (HF's includes its matching), the backward and the optimiser step. Rounds alternate GvSeg / HF;
medians per phase. Both models use ``train.keep_freed_memory``'s allocator setting (the process's, set first).

Writes ``benchmarks/results/train_step_phases_cpu.json`` (machine named).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _timer(store: dict, name: str, fn):
    def timed(*a, **kw):
        t0 = time.process_time()
        try:
            return fn(*a, **kw)
        finally:
            store[name] += time.process_time() - t0
    return timed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=0, help="timed rounds (default 5; smoke 1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args(argv)

    from gvseg import host_memory

    host_memory.keep_freed_memory()  # as engine.fit does for a run
    import dataclasses

    import torch
    from common import machine
    from gpu_suite import hf_model, hf_train_step, synthetic_clip

    from gvseg import engine
    from gvseg.config import Config, DataConfig, LossConfig, TrainConfig
    from gvseg.losses.matcher import HungarianMatcher
    from gvseg.recipes import load_recipe, unit_model_config

    torch.set_num_threads(args.threads)
    rounds = args.rounds or (1 if args.smoke else 5)
    size = 48 if args.smoke else 256
    mc = unit_model_config("vps", 6, 3) if args.smoke else load_recipe(str(ROOT / "tasks" / "vps_vipseg.py:full")).model
    mc = dataclasses.replace(mc, pretrained="")  # random weights: nothing is loaded
    cfg = Config(name="train_step_phases", model=mc, data=DataConfig(format="vipseg"),
                 loss=LossConfig(num_points=256 if args.smoke else 12544), train=TrainConfig(amp="off"))
    clip = synthetic_clip(1, 3, size, size, 8, mc.num_classes, mc.num_thing_classes, torch.device("cpu"))

    phases: dict[str, dict[str, float]] = {"gvseg": collections.defaultdict(float), "hf": collections.defaultdict(float)}
    g = phases["gvseg"]
    engine.seed_everything(0)
    parts = engine.build_parts(cfg)
    m = parts.model
    for name in ("backbone", "pixel_decoder", "decoder"):
        mod = getattr(m, name)
        mod.forward = _timer(g, name, mod.forward)
    parts.criterion.forward = _timer(g, "criterion", parts.criterion.forward)
    HungarianMatcher.__call__ = _timer(g, "matching (inside decoder)", HungarianMatcher.__call__)
    warnings.filterwarnings("ignore", message="Seems like `optimizer.step\\(\\)` has been overridden")  # the wrap below
    parts.optimizer.step = _timer(g, "optimizer", parts.optimizer.step)
    backward = torch.Tensor.backward
    timed_backward = _timer(g, "backward", backward)

    def gvseg_step() -> None:
        torch.Tensor.backward = timed_backward  # engine.train_step calls total.backward()
        try:
            engine.train_step(parts, clip, cfg)
        finally:
            torch.Tensor.backward = backward

    steps = {"gvseg": gvseg_step}

    peer = None
    try:
        model, _ = hf_model(args.smoke, mc.num_classes)
        h = phases["hf"]
        inner = model.model
        for name, mod in (("backbone", inner.pixel_level_module.encoder), ("pixel_decoder", inner.pixel_level_module.decoder),
                          ("decoder", inner.transformer_module)):
            mod.forward = _timer(h, name, mod.forward)
        model.get_loss_dict = _timer(h, "criterion", model.get_loss_dict)  # HF's matcher runs inside
        hf_step = hf_train_step(model, clip, cfg.train.lr, cfg.train.weight_decay, phases=h)
        steps["hf"] = hf_step
    except ImportError as e:
        peer = f"HF peer skipped: {e}"

    per_round: dict[str, list[dict[str, float]]] = {n: [] for n in steps}
    for fn in steps.values():  # warm-up: optimiser state and grads exist before timing
        fn()
    for _ in range(rounds):
        for name, fn in steps.items():
            phases[name].clear()
            t0 = time.process_time()
            fn()
            per_round[name].append({**phases[name], "step": time.process_time() - t0})

    result = {"benchmark": "train_step_phases", "machine": machine(), "threads": args.threads, "rounds": rounds,
              "clip": {"frames": 3, "height": size, "width": size, "objects": 8}, "peer": peer or "HF Mask2Former",
              "cpu_s": {n: {k: statistics.median(r.get(k, 0.0) for r in rs) for k in rs[0]} for n, rs in per_round.items()},
              "rounds_cpu_s": per_round}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / ("train_step_phases_cpu_smoke.json" if args.smoke else "train_step_phases_cpu.json")
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps({n: {k: round(v, 3) for k, v in r.items()} for n, r in result["cpu_s"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
