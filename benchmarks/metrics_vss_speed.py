"""VSPW mIoU + mVC8 + mVC16 speed against merely reading the PNGs, on a VSPW-val-sized synthetic split.

Writes a synthetic split in the real VSPW layout (cached under --data): ``data/<video>/mask/<%08d>.png``
(8-bit L, raw 0..124 plus 255 on boundaries, frame names not starting at 1), ``val.txt``, and predictions
``pred/<video>/<%08d>.png`` (0..123, some 255). Default size = VSPW val: 343 videos x ~70 frames at
480x854; scale down with --videos/--frames/--size.

In one run it times, with the same worker processes and the same PNG reader:
  (a) reading every GT and prediction PNG once (no metric work), and
  (b) ``gvseg.metrics.semantic.evaluate`` (mIoU, mVC8, mVC16 in one pass per video),
alternating a, b, a, b after a warm-up read so both see the same page cache, and reports the best of each.
Target: (b) <= 2 x (a). Result JSON: benchmarks/results/metrics_vss_speed.json (names the machine and the
size actually used).

    python benchmarks/metrics_vss_speed.py --videos 40 --frames 70 --size 480x854 --data /tmp/vspw_synth
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
from gvseg.metrics import semantic  # noqa: E402

START_FRAME = 121  # VSPW frame names start at the clip's start frame, not 1


def _voronoi(seeds: np.ndarray, labels: np.ndarray, h: int, w: int) -> np.ndarray:
    """[h, w] uint8 label of the nearest seed: irregular, temporally smooth regions (moving seeds)."""
    yy, xx = np.ogrid[:h, :w]
    best = np.full((h, w), np.inf, np.float32)
    out = np.zeros((h, w), np.uint8)
    for (sy, sx), lab in zip(seeds, labels):
        d = (yy - np.float32(sy)) ** 2 + (xx - np.float32(sx)) ** 2 * np.float32(0.7)
        closer = d < best
        best = np.where(closer, d, best)
        out[closer] = lab
    return out


def _write_video(args) -> int:
    root, video, frames, h, w, seed = args
    rng = np.random.default_rng(seed)
    k = int(rng.integers(4, 9))
    seeds = rng.uniform([0, 0], [h, w], (k, 2))
    vel = rng.normal(0, 2.0, (k, 2))
    raw = rng.integers(0, 125, k).astype(np.uint8)  # includes 0 ("others") sometimes
    mask_dir, pred_dir = root / "data" / video / "mask", root / "pred" / video
    mask_dir.mkdir(parents=True, exist_ok=True)
    pred_dir.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        seeds = seeds + vel
        gt = _voronoi(seeds, raw, h, w)
        edge = np.zeros((h, w), bool)
        edge[:, 1:] |= gt[:, 1:] != gt[:, :-1]
        edge[1:] |= gt[1:] != gt[:-1]
        gt[edge] = 255  # VSPW void on boundaries
        # prediction: jittered seeds (boundary errors) and an occasional flickering wrong class
        pred_lab = np.clip(raw.astype(np.int16) - 1, 0, 123).astype(np.uint8)
        if rng.random() < 0.2:
            pred_lab[rng.integers(k)] = rng.integers(0, 124)
        pred = _voronoi(seeds + rng.normal(0, 3.0, seeds.shape), pred_lab, h, w)
        pred[rng.random((h, w)) < 0.001] = 255  # a few unassigned pixels
        name = f"{START_FRAME + t:08d}.png"
        cv2.imwrite(str(mask_dir / name), gt)
        cv2.imwrite(str(pred_dir / name), pred)
    return frames


def make_split(root: Path, videos: int, frames: int, h: int, w: int, workers: int) -> list[str]:
    names = [f"{i}_synth{i:05d}" for i in range(videos)]
    stamp = root / "SIZE.json"
    size = {"videos": videos, "frames": frames, "height": h, "width": w}
    if stamp.is_file() and json.loads(stamp.read_text()) == size:
        return names
    rng = np.random.default_rng(0)
    # ~70 frames per video on average, as VSPW val (343 videos, ~24k frames)
    lengths = np.clip(rng.normal(frames, frames * 0.25, videos).round(), 3, None).astype(int)
    jobs = [(root, v, int(t), h, w, i) for i, (v, t) in enumerate(zip(names, lengths))]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        list(pool.map(_write_video, jobs))
    (root / "val.txt").write_text("".join(f"{v}\n" for v in names))
    stamp.write_text(json.dumps(size))
    return names


def _read_video(args) -> int:
    """(a): read every GT and prediction PNG of one video, nothing else."""
    gt_root, pred_root, video = args
    mask_dir = Path(gt_root) / "data" / video / "mask"
    n = 0
    for name in sorted(p.name for p in mask_dir.iterdir() if p.suffix == ".png"):
        semantic.read_label_png(mask_dir / name)
        semantic.read_label_png(Path(pred_root) / video / name)
        n += 2
    return n


def time_read(root: Path, videos: list[str], workers: int) -> tuple[float, int]:
    t0 = time.perf_counter()
    jobs = [(str(root), str(root / "pred"), v) for v in videos]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=semantic._init_worker) as pool:
        n = sum(pool.map(_read_video, jobs, chunksize=1))
    return time.perf_counter() - t0, n


def time_eval(root: Path, workers: int) -> tuple[float, dict]:
    t0 = time.perf_counter()
    res = semantic.evaluate(root, root / "pred", split="val", progress=False, workers=workers)
    return time.perf_counter() - t0, res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=343)
    ap.add_argument("--frames", type=int, default=70, help="mean frames per video")
    ap.add_argument("--size", default="480x854", help="HxW")
    ap.add_argument("--data", type=Path, default=Path("/tmp/gvseg_vspw_synth"))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "metrics_vss_speed.json")
    args = ap.parse_args()
    h, w = (int(x) for x in args.size.lower().split("x"))
    root = args.data / f"{args.videos}v_{args.frames}f_{h}x{w}"
    root.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    cached = (root / "SIZE.json").is_file()
    videos = make_split(root, args.videos, args.frames, h, w, args.workers)
    gen_s = time.perf_counter() - t0

    time_read(root, videos, args.workers)  # warm-up: page cache and worker imports for both
    reads, evals, res, n_png = [], [], None, 0
    for _ in range(args.repeats):
        t, n_png = time_read(root, videos, args.workers)
        reads.append(t)
        t, res = time_eval(root, args.workers)
        evals.append(t)
    a, b = min(reads), min(evals)
    full = (args.videos, args.frames, h, w) == (343, 70, 480, 854)
    out = {
        "benchmark": "VSPW mIoU + mVC8 + mVC16 vs reading the PNGs",
        "machine": {"node": platform.node(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
                    "numpy": np.__version__, "opencv": cv2.__version__},
        "size": {"videos": args.videos, "mean_frames": args.frames, "height": h, "width": w,
                 "frames_total": res["num_frames"], "pngs_read": n_png,
                 "vspw_val_full_size": full,
                 "note": "full VSPW-val size" if full else "REDUCED size (not the full 343 x ~70 x 480x854)"},
        "workers": args.workers,
        "data_dir": str(root),
        "data_cached": cached,
        "generate_s": round(gen_s, 2),
        "read_only_s": [round(x, 3) for x in reads],
        "evaluate_s": [round(x, 3) for x in evals],
        "best_read_only_s": round(a, 3),
        "best_evaluate_s": round(b, 3),
        "ratio_evaluate_over_read": round(b / a, 3),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()],
        "target_ratio": 2.0,
        "meets_target": b <= 2 * a,
        "metrics": {k: res[k] for k in ("miou", "mvc8", "mvc16", "pixel_acc", "num_videos", "num_frames")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
