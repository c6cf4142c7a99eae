"""Time ``compute_descriptor`` for 100 masks of a 720x1280 input (target: <= 1 ms on an H100).

Two cases, both with the default DescriptorConfig (36x12 bins, M=200, canvas reading, log_abs):
  * ``pred_quarter``: 100 probability masks at 1/4 resolution (180x320), ``downsample=1``: what the decoder
    does for the predicted-mask descriptors at inference, once per layer.
  * ``gt_full``: 100 bool masks at full resolution (720x1280), pooled by ``contour_stride=4``: the
    ground-truth descriptors of one frame during training.

Median over many runs after warm-up (CUDA-synchronised). Writes
``benchmarks/results/descriptor_speed_<device>.json``.

    python benchmarks/descriptor_speed.py [--device cuda|cpu] [--runs 50] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform as pyplatform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from gvseg.config import DescriptorConfig  # noqa: E402
from gvseg.model.descriptor import compute_descriptor  # noqa: E402


def ellipses(n: int, h: int, w: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    """n random filled ellipses [n, h, w] bool, some touching the border."""
    g = torch.Generator().manual_seed(seed)
    cy, cx = torch.rand(n, generator=g) * h, torch.rand(n, generator=g) * w
    ry = 4 + torch.rand(n, generator=g) * h / 4
    rx = 4 + torch.rand(n, generator=g) * w / 4
    yy = torch.arange(h, dtype=torch.float32)[None, :, None]
    xx = torch.arange(w, dtype=torch.float32)[None, None, :]
    m = ((yy - cy[:, None, None]) / ry[:, None, None]) ** 2 + ((xx - cx[:, None, None]) / rx[:, None, None]) ** 2 <= 1
    return m.to(device)


def time_case(fn, device: torch.device, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--runs", type=int, default=0, help="timed runs (default 200 on CUDA, 20 on CPU)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (the dev box has 2 shared cores)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    runs = args.runs or (200 if device.type == "cuda" else 20)
    warmup = 20 if device.type == "cuda" else 3
    cfg, d_model, n, h, w = DescriptorConfig(), 256, 100, 720, 1280

    full = ellipses(n, h, w, device)  # [100, 720, 1280] bool
    quarter = torch.nn.functional.interpolate(full[:, None].float(), size=(h // 4, w // 4), mode="area")[:, 0]
    canvas_full = torch.tensor([[h, w]] * n, device=device)
    canvas_quarter = torch.tensor([[h // 4, w // 4]] * n, device=device)

    cases = {
        "pred_quarter": lambda: compute_descriptor(quarter, canvas_quarter, cfg, d_model, downsample=1),
        "gt_full": lambda: compute_descriptor(full, canvas_full, cfg, d_model),
    }
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = f"cpu ({pyplatform.processor() or pyplatform.machine()}, {args.threads} thread(s))"
    result = {"benchmark": "descriptor_speed", "device": name, "torch": torch.__version__, "num_masks": n,
              "input": [h, w], "config": {"angle_bins": cfg.angle_bins, "radius_bins": cfg.radius_bins,
                                          "num_points": cfg.num_points, "contour_stride": cfg.contour_stride},
              "warmup": warmup, "runs": runs, "target_ms_h100": 1.0, "cases": {}}
    if device.type == "cpu":  # the dev box is shared: a high load inflates CPU timings, so record it
        result["loadavg_1m_before"] = round(os.getloadavg()[0], 2)
        result["cpu_count"] = os.cpu_count()
    for key, fn in cases.items():
        t = time_case(fn, device, warmup, runs)
        result["cases"][key] = {"median_ms": round(statistics.median(t), 4), "min_ms": round(min(t), 4),
                                "max_ms": round(max(t), 4)}
        print(f"{key:14s} median {statistics.median(t):9.3f} ms  (min {min(t):.3f}, {runs} runs) on {name}")

    if device.type == "cpu":
        result["loadavg_1m_after"] = round(os.getloadavg()[0], 2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cuda_" + name.lower().replace(" ", "_") if device.type == "cuda" else "cpu"
    path = out / f"descriptor_speed_{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
