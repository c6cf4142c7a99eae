"""VPQ (all spans) + STQ speed against merely reading the PNGs, on a VIPSeg-val-sized synthetic set.

    python benchmarks/metrics_vpq_speed.py --data /tmp/vpq_bench            # 343 videos x 24 frames, 720x1280
    python benchmarks/metrics_vpq_speed.py --data /tmp/vpq_small --videos 20 --frames 12 --size 360x640

The set (GT ``panomasksRGB`` + JSON and predictions ``pan_pred`` + ``pred.json``, simple moving shapes with
void borders, ID switches and class errors) is written once under ``--data`` and reused when the parameters
match. In one run the script times (a) reading every GT and prediction PNG (``panoptic_io.read_id_png``,
same worker count) and (b) ``vipseg.evaluate(..., with_stq=True)``, interleaved ``--repeats`` times (plus a
final (a)); the best time of each is compared, since the machine may be shared. Target: (b) <= 2 x (a) on 2 cores (the official scripts take ~18x (a) for VPQ alone).
Writes ``benchmarks/results/metrics_vpq_speed.json`` with the machine named.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

from gvseg.metrics import panoptic_io as pio  # noqa: E402
from gvseg.metrics import vipseg  # noqa: E402

NUM_CATS = 124
THING_IDS = list(range(0, 58))  # 58 things, 66 stuff as in VIPSeg (ids only matter via isthing)
CATEGORIES = [{"id": i, "name": f"c{i}", "isthing": int(i < 58), "color": [i, i, i]} for i in range(NUM_CATS)]


def make_video(args: tuple[int, int, int, int]):
    """Frames of one synthetic video: GT ids, prediction ids and their segments_info (areas from PNGs)."""
    v, T, H, W = args
    rng = np.random.default_rng(v)
    stuff = rng.choice(np.arange(58, NUM_CATS), 3, replace=False)
    n_things = int(rng.integers(3, 9))
    cats = rng.choice(THING_IDS, n_things)
    pos = rng.uniform([0, 0], [H, W], (n_things, 2))
    vel = rng.uniform(-0.02, 0.02, (n_things, 2)) * [H, W]
    rad = rng.uniform(0.04, 0.12, n_things) * H
    split_y = int(H * rng.uniform(0.3, 0.6))
    switch_t = int(rng.integers(1, T)) if T > 1 else T
    gt_frames, pred_frames = [], []
    gt_cat = {1: stuff[0], 2: stuff[1], 3: stuff[2]}
    pred_cat = dict(gt_cat)
    for t in range(T):
        g = np.zeros((H, W), np.int32)
        g[:split_y] = 1
        g[split_y:] = 2
        g[split_y - H // 20 : split_y + H // 20, : W // 3] = 3
        p = g.copy()
        for k in range(n_things):
            cy, cx = pos[k] + vel[k] * t
            gid = 1000 + 37 * k  # ids spread over the 24-bit range via G/B channels
            cv2.circle(g, (int(cx), int(cy)), int(rad[k]), gid, -1)
            gt_cat[gid] = cats[k]
            pid = 5000 + 41 * k
            if k < 2 and t >= switch_t:  # ID switch of the first two tracks
                pid = 5000 + 41 * (1 - k)
            shift = int(rad[k] * 0.15)
            cv2.circle(p, (int(cx) + shift, int(cy)), int(rad[k]), pid, -1)
            pred_cat[pid] = cats[k] if k % 4 else (cats[k] + 1) % 58  # some class errors
        g[:, : W // 64] = 0  # void border
        g[H - H // 50 :] = 0
        gt_frames.append(g)
        pred_frames.append(p)
    gsegs = [pio.segments_from_ids(f, gt_cat) for f in gt_frames]
    psegs = [pio.segments_from_ids(f, pred_cat) for f in pred_frames]
    return gt_frames, gsegs, pred_frames, psegs


def write_video(args: tuple[int, int, int, int], root: Path):
    v, T, H, W = args
    gt_frames, gsegs, pred_frames, psegs = make_video(args)
    vid = f"{v}_synthetic{v:04d}"
    stems = [f"{10 + 5 * t:08d}" for t in range(T)]
    for s, g, p in zip(stems, gt_frames, pred_frames):
        pio.write_id_png(root / "gt" / "panomasksRGB" / vid / f"{s}.png", g)
        pio.write_id_png(root / "pred" / "pan_pred" / vid / f"{s}.png", p)
    images = [{"id": s, "width": W, "height": H, "file_name": f"{s}.png"} for s in stems]
    g_ann = [{"image_id": s, "file_name": f"{s}.png", "segments_info": x} for s, x in zip(stems, gsegs)]
    p_ann = [{"image_id": s, "file_name": f"{s}.png", "segments_info": x} for s, x in zip(stems, psegs)]
    return {"video_id": vid, "images": images}, {"video_id": vid, "annotations": g_ann}, {"video_id": vid, "annotations": p_ann}


def build(root: Path, videos: int, frames: int, H: int, W: int, workers: int) -> None:
    meta = {"videos": videos, "frames": frames, "height": H, "width": W}
    meta_path = root / "meta.json"
    if meta_path.is_file() and json.loads(meta_path.read_text()) == meta:
        print(f"reusing {root}")
        return
    print(f"writing {videos} videos x {frames} frames at {H}x{W} to {root} ...")
    t0 = time.perf_counter()
    jobs = [(v, frames, H, W) for v in range(videos)]
    with mp.get_context().Pool(workers) as pool:
        out = pool.map(partial(write_video, root=root), jobs, chunksize=1)
    gt = {"videos": [o[0] for o in out], "annotations": [o[1] for o in out], "categories": CATEGORIES}
    (root / "gt" / "panoptic_gt_VIPSeg_val.json").write_text(json.dumps(gt, default=int))
    (root / "pred" / "pred.json").write_text(json.dumps({"annotations": [o[2] for o in out]}, default=int))
    meta_path.write_text(json.dumps(meta))
    print(f"  written in {time.perf_counter() - t0:.1f} s")


def read_video(paths: list[str]) -> int:
    return sum(int(pio.read_id_png(p).shape[0]) for p in paths)


def time_reading(split: pio.PanopticSplit, workers: int) -> float:
    jobs = [v.gt_paths + v.pred_paths for v in split.videos]
    t0 = time.perf_counter()
    with mp.get_context().Pool(workers, initializer=pio._init_worker) as pool:
        for _ in pool.imap(read_video, jobs, chunksize=1):
            pass
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="cache folder for the synthetic set")
    ap.add_argument("--videos", type=int, default=343)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", default="720x1280", help="HxW")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="timed (a)/(b) pairs; the best of each is compared")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "metrics_vpq_speed.json"))
    args = ap.parse_args()
    H, W = (int(x) for x in args.size.lower().split("x"))
    root = Path(args.data)
    build(root, args.videos, args.frames, H, W, args.workers)

    split = pio.load_vipseg(root / "gt", root / "pred")
    # The machine is shared: interleave (a) and (b) and compare the best of each (least disturbed) run.
    reads, metrics = [], []
    for _ in range(args.repeats):
        reads.append(time_reading(split, args.workers))
        t0 = time.perf_counter()
        res = vipseg.evaluate(root / "gt", root / "pred", workers=args.workers, with_stq=True, progress=False)
        metrics.append(time.perf_counter() - t0)
    reads.append(time_reading(split, args.workers))
    read_s, metric_s = min(reads), min(metrics)
    n_png = 2 * args.videos * args.frames
    report = {
        "benchmark": "metrics_vpq_speed",
        "machine": {"node": platform.node(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
        "data": {"videos": args.videos, "frames": args.frames, "height": H, "width": W, "pngs": n_png,
                 "full_vipseg_val_size": (args.videos, args.frames, H, W) == (343, 24, 720, 1280)},
        "workers": args.workers,
        "read_only_s": {"runs": reads, "best": read_s},
        "vpq_all_spans_plus_stq_s": {"runs": metrics, "best": metric_s},
        "ratio_metric_over_read": metric_s / read_s,
        "target_ratio": 2.0,
        "per_png_ms": {"read": 1000 * read_s * args.workers / n_png, "metric": 1000 * metric_s * args.workers / n_png},
        "results": {k: res[k] for k in ("vpq_mean_1246", "vpq_mean_12468", "stq", "aq", "sq")},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
