"""Time ``compute_descriptor``: the first implementation, the previous one and the current one, interleaved.

The first implementation (baseline, ``old``) is copied below; the previous one (``prev``, git 67a969e, before
issue #17 item 2) is frozen in ``tests/model/descriptor_frozen.py``.

Cases (100 masks each, default DescriptorConfig unless noted; the baseline runs its own fixed recipe):
  * ``pred_quarter_bool``: 100 bool masks at 180x320 (1/4 of 720p), ``downsample=1``: what the model does for
    the predicted-mask descriptors (``GvSeg._mask_descriptors`` passes ``pred_masks > 0``), once per layer.
    Issue #17 target: <= 10 ms on 1 CPU thread.
  * ``pred_quarter_prob``: the same masks as probabilities (thresholded at 0.5 inside: one extra pass).
  * ``gt_train``: 100 bool GT masks at 480x832, the training path (``GvSeg._injector`` / ``target_descriptors``
    call it at the input resolution with ``contour_stride``): the current default stride, and stride 4.
  * ``gt_coded``: the same 100 ellipses painted into one uint8 code map (void where none is), as the clip
    pipeline hands targets over: ``prev_planes`` writes the 100 planes (``Targets.frame_masks``) and describes
    them, as ``target_descriptors`` did; ``new_coded`` is ``compute_descriptor_coded`` on the map (checked equal).

Old, previous and new run interleaved (old, prev, new, old, prev, new, ...) so that load changes on a shared
machine hit all of them; medians of wall time (``perf_counter``) and of CPU time (``process_time``). Writes
``benchmarks/results/descriptor_speed_<device>.json`` naming the machine.

    PYTHONPATH=platform python benchmarks/descriptor_speed.py [--device cuda|cpu] [--runs 30] [--threads 1]

Performance on a GPU: not measured yet. ``benchmarks/gpu_suite.py`` measures this and every other issue-#16 GPU
target in one prepared device run (its docstring has the command); quote only numbers from its JSONs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform as pyplatform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from gvseg.config import DescriptorConfig  # noqa: E402
from gvseg.model.descriptor import compute_descriptor, compute_descriptor_coded  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "model"))
from descriptor_frozen import compute_descriptor as previous_descriptor  # noqa: E402  (git 67a969e, verbatim)

# ------------------------------------------------------------------------------------------------ baseline


def baseline_descriptor(masks: torch.Tensor, canvas: torch.Tensor, cfg: DescriptorConfig, d_model: int,
                        downsample: int | None = None) -> torch.Tensor:
    """The first implementation (git 95a0e25, canvas reading only): raster sampling, hard bins, hard edge.

    Whole-stack float32 row/column sums for the centroid and an int32 cumsum over every pixel for the ranks.
    """
    from gvseg.model.descriptor import _pool

    n_obj = masks.shape[0]
    u, v, m_pts = cfg.angle_bins, cfg.radius_bins, cfg.num_points
    device = masks.device
    s = cfg.contour_stride if downsample is None else int(downsample)
    inv = 1.0 / math.sqrt(d_model)
    fg = masks if masks.dtype == torch.bool else masks > 0.5
    fg = _pool(fg, s)
    h, w = fg.shape[-2:]
    col = fg.sum(1, dtype=torch.float32)
    row = fg.sum(2, dtype=torch.float32)
    area = col.sum(1)
    nonempty = area > 0
    bg = F.pad(~fg, (1, 1, 1, 1), value=True)
    bg = bg[:, :, :-2] | bg[:, :, 1:-1] | bg[:, :, 2:]
    contour = fg & (bg[:, :-2] | bg[:, 1:-1] | bg[:, 2:])
    flat = contour.view(n_obj, h * w)
    csum = flat.cumsum(1, dtype=torch.int32)
    n_c = csum[:, -1]
    ranks = (torch.arange(m_pts, device=device, dtype=torch.float32) + 0.5)[None] * n_c[:, None] / m_pts
    ranks = ranks.floor().to(torch.int32)
    idx = torch.searchsorted(csum, ranks, right=True).clamp_max(h * w - 1)
    px = ((idx % w).to(torch.float32) + 0.5) * s
    py = (torch.div(idx, w, rounding_mode="floor").to(torch.float32) + 0.5) * s
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
    safe_area = area.clamp_min(1.0)
    cx = (col * xs).sum(1) / safe_area
    cy = (row * ys).sum(1) / safe_area
    dx, dy = px - cx[:, None], py - cy[:, None]
    theta = torch.atan2(dy, dx)
    a_bin = torch.floor((theta + math.pi) * (u / (2 * math.pi))).long() % u
    r = torch.hypot(dx, dy)
    canvas = canvas.to(device=device, dtype=torch.float32)
    ch, cw = canvas[:, 0], canvas[:, 1]
    diag = torch.hypot(ch, cw).clamp_min(1.0)
    j = torch.arange(v, device=device, dtype=torch.float32)
    r0, span = diag / 256.0, math.log(256.0)
    r_bin = torch.floor(torch.log(r.clamp_min(1e-6) / r0[:, None]) / span * v).clamp(0, v - 1).long()
    r_centre = r0[:, None] * torch.exp((j[None] + 0.5) / v * span)
    weight = (n_c > 0).to(torch.float32)[:, None].expand(n_obj, m_pts)
    count = torch.zeros(n_obj, u * v, device=device)
    count.scatter_add_(1, a_bin * v + r_bin, weight)
    desc = count * inv
    a_centre = -math.pi + (torch.arange(u, device=device, dtype=torch.float32) + 0.5) * (2 * math.pi / u)
    bx = cx[:, None, None] + r_centre[:, None, :] * torch.cos(a_centre)[None, :, None]
    by = cy[:, None, None] + r_centre[:, None, :] * torch.sin(a_centre)[None, :, None]
    outside = (bx < 0) | (by < 0) | (bx >= cw[:, None, None]) | (by >= ch[:, None, None])
    outside = outside.reshape(n_obj, u * v)
    desc = torch.where(outside & (count == 0), torch.full_like(desc, -inv), desc)
    return desc * nonempty[:, None].to(desc.dtype)


# ------------------------------------------------------------------------------------------------ inputs


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


def machine(device: torch.device, threads: int) -> dict:
    """The machine a result was measured on."""
    cpu = pyplatform.processor() or pyplatform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = {"cpu_model": cpu, "cpu_count": os.cpu_count(), "threads": threads, "torch": torch.__version__,
           "python": pyplatform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds")}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    else:
        out["loadavg_1m"] = round(os.getloadavg()[0], 2)
    return out


def time_interleaved(fns: dict, device: torch.device, warmup: int, runs: int) -> dict:
    """{name: fn} -> {name: {wall_ms: [...], cpu_ms: [...]}}, each round running every fn once in turn."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    out = {k: {"wall_ms": [], "cpu_ms": []} for k in fns}
    for _ in range(runs):
        for k, fn in fns.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            sync()
            out[k]["wall_ms"].append((time.perf_counter() - t0) * 1e3)
            out[k]["cpu_ms"].append((time.process_time() - c0) * 1e3)
    return out


def summary(t: dict) -> dict:
    return {"median_wall_ms": round(statistics.median(t["wall_ms"]), 3), "median_cpu_ms": round(statistics.median(t["cpu_ms"]), 3),
            "min_wall_ms": round(min(t["wall_ms"]), 3), "max_wall_ms": round(max(t["wall_ms"]), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--runs", type=int, default=0, help="timed rounds (default 200 on CUDA, 30 on CPU)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (the dev box has 2 shared cores)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    runs = args.runs or (200 if device.type == "cuda" else 30)
    warmup = 20 if device.type == "cuda" else 3
    cfg, d_model, n = DescriptorConfig(), 256, 100
    stride4 = DescriptorConfig(contour_stride=4)

    full = ellipses(n, 720, 1280, device)  # [100, 720, 1280] bool
    prob = F.interpolate(full[:, None].float(), size=(180, 320), mode="area")[:, 0]  # [100, 180, 320] in [0, 1]
    pred = prob > 0.5  # [100, 180, 320] bool, as GvSeg passes pred_masks > 0
    canvas_q = torch.tensor([[180, 320]] * n, device=device)
    gt = ellipses(n, 480, 832, device, seed=1)  # [100, 480, 832] bool
    canvas_gt = torch.tensor([[480, 832]] * n, device=device)
    del full
    # A panoptic code map (what the clip pipeline hands over): the same ellipses painted in turn, void (255)
    # where none is; the planes path first writes the planes the consumer wrote before (Targets.frame_masks)
    code = torch.full((480, 832), 255, dtype=torch.uint8, device=device)
    for k in range(n):
        code[gt[k]] = k
    tube_codes = torch.arange(n, dtype=torch.uint8, device=device)

    def planes_then_descriptor() -> torch.Tensor:
        return compute_descriptor(code[None] == tube_codes[:, None, None], canvas_gt, cfg, d_model)

    def coded_descriptor() -> torch.Tensor:
        return compute_descriptor_coded([code], [tube_codes], canvas_gt, cfg, d_model)

    if not torch.equal(planes_then_descriptor(), coded_descriptor()):
        raise SystemExit("descriptor_speed: the coded descriptor differs from the planes'")

    groups = {
        "pred_quarter_bool": {"old": lambda: baseline_descriptor(pred, canvas_q, stride4, d_model, downsample=1),
                              "prev": lambda: previous_descriptor(pred, canvas_q, cfg, d_model, downsample=1),
                              "new": lambda: compute_descriptor(pred, canvas_q, cfg, d_model, downsample=1)},
        "pred_quarter_prob": {"old": lambda: baseline_descriptor(prob, canvas_q, stride4, d_model, downsample=1),
                              "prev": lambda: previous_descriptor(prob, canvas_q, cfg, d_model, downsample=1),
                              "new": lambda: compute_descriptor(prob, canvas_q, cfg, d_model, downsample=1)},
        "gt_train": {"old_stride4": lambda: baseline_descriptor(gt, canvas_gt, stride4, d_model),
                     f"prev_stride{cfg.contour_stride}": lambda: previous_descriptor(gt, canvas_gt, cfg, d_model),
                     f"new_stride{cfg.contour_stride}": lambda: compute_descriptor(gt, canvas_gt, cfg, d_model),
                     "prev_stride4": lambda: previous_descriptor(gt, canvas_gt, stride4, d_model),
                     "new_stride4": lambda: compute_descriptor(gt, canvas_gt, stride4, d_model)},
        "gt_coded": {"prev_planes": planes_then_descriptor, "new_coded": coded_descriptor},
    }
    result = {"benchmark": "descriptor_speed", "machine": machine(device, args.threads), "num_masks": n,
              "config": {k: getattr(cfg, k) for k in ("angle_bins", "radius_bins", "num_points", "contour_stride",
                                                      "sampling", "binning", "angle_smooth", "outside_edge")},
              "baseline": "first implementation (git 95a0e25), copied into this script",
              "previous": "the implementation before issue #17 item 2 (git 67a969e), tests/model/descriptor_frozen.py",
              "warmup": warmup,
              "runs": runs, "target_ms": {"pred_quarter_bool": 10.0},
              "host_syncs": {"new": "CUDA: one, the nonzero that lists the contour pixels (data-dependent size); "
                                    "CPU also lists the rows near foreground first (no device to sync with)",
                             "prev": "one: the nonzero that lists the contour pixels",
                             "old": "none (cumsum + searchsorted over every pixel instead)"},
              "cases": {}}
    for case, fns in groups.items():
        times = time_interleaved(fns, device, warmup, runs)
        result["cases"][case] = {k: summary(t) for k, t in times.items()}
        prev, new = (next(k for k in times if k.startswith(p)) for p in ("prev", "new"))
        result["cases"][case]["new_over_prev_cpu"] = round(
            statistics.median(times[new]["cpu_ms"]) / statistics.median(times[prev]["cpu_ms"]), 3)
        line = "  ".join(f"{k} {summary(t)['median_wall_ms']:8.2f} ms (cpu {summary(t)['median_cpu_ms']:.2f})"
                         for k, t in times.items())
        print(f"{case:18s} {line}")
    result["machine"]["loadavg_1m_after"] = round(os.getloadavg()[0], 2) if device.type == "cpu" else None

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cuda_" + torch.cuda.get_device_name(device).lower().replace(" ", "_") if device.type == "cuda" else "cpu"
    path = out / f"descriptor_speed_{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
