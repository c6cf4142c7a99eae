"""Data-loading throughput: the Ray Data pipeline vs a plain torch DataLoader doing identical work, same run.

Workload (the real VIPSeg training transform): synthetic VIPSeg videos of 480x640 JPEG frames + 16-bit PNG
panoptic masks written by ``gvseg.data.synthetic``; each sample is a 3-frame key clip + a 3-frame reference
clip, resized (short side 480-800, long side <= 1333), flipped, turned into [K, T, H, W] tubes, and
collated into a typed ``Clip`` (ImageNet-normalised, padded to /32).

  * ``dataloader``: ``DataLoader(ClipDataset, num_workers=W, collate_fn=collate)``.
  * ``ray``: ``build_dataset`` (one Ray Data task per video, ``ray.init(num_cpus=W)``) consumed by
    ``iterate_shard`` in the driver, as a Train worker would.

Both variants produce the same samples (same seeds). Each variant runs in its own child process, alternating
``dataloader, ray, dataloader, ray, ...`` so machine noise hits both; the parent writes one JSON with every run.
Peak memory is the sum over the child's process tree (the driver, its DataLoader workers or the Ray
raylet/GCS/workers) sampled every 0.2 s: RSS (counts shared object-store pages once per process mapping them)
and PSS (shares them out; the honest total).

Scaling (issue #17): ``--workers-list 1 2`` runs every variant with 1 and 2 workers (DataLoader workers =
Ray CPUs) in one run, interleaved, and draws clips/s against workers with the ideal linear line (1-worker
median x W) on a PNG beside the JSON (``data_throughput_cpu.json`` / ``.png``).

Measured (data_throughput_cpu.json, 2026-12-03, idle 2-core machine, load average ~2-3, 2 repeats, medians,
after the clip-pipeline work of issue #17): DataLoader 7.26 -> 10.69 clips/s from 1 to 2 workers (74% of the
ideal 14.5; steady 7.9 -> 12.0), Ray Data 4.18 -> 3.21 clips/s (38% of ideal: slower with 2 CPUs; steady
9.5 -> 6.7). Scaling stops at 2 workers because the machine has 2 cores: the consumer (collate and the
float frames) needs one of them, so 2 workers oversubscribe it. Ray pays a per-epoch start-up (first batch
after ~11 s) and its raylet, GCS and object store compete for the same cores (peak PSS 3.3-3.7 GB against
1.0-1.5 GB for the DataLoader). The run of 2026-12-02 under load average ~10 gave 1.31 -> 1.28 clips/s
(DataLoader) and 0.90 -> 0.86 (Ray).

Coded tubes (2026-12-04; label-map samples carry one code map per clip, not K x T x H x W planes), interleaved
before (ff3e44f, from a second checkout) / after, 2 runs each of 1 repeat, idle 2-core Xeon, medians
(data_throughput_cpu_coded_before_after.json; data_throughput_cpu.json / .png are the last after run):
DataLoader 19.0 -> 33.1 clips/s (1 worker), 21.6 -> 42.3 (2 workers; 63% of linear), peak PSS 910 -> 558 MB
and 1249 -> 720 MB; Ray Data 7.0 -> 7.5 (1 CPU), 6.4 -> 6.6 (2 CPUs; 44% of linear): unchanged within noise,
bound by Ray's own start-up and daemons on 2 cores.

Ray Data producer as one-row batches (2026-12-04, later): ``map_batches`` instead of ``flat_map`` (Ray sized
every row of its 1-2-row blocks by serialising it: 18% of the producer's time in a py-spy profile), and
frames and code maps shipped as make_sample's padded buffers (Ray's ravel of the transposed frame view was a
strided copy: 15%); the consumer's collate takes them as they are. Producer CPU per 192 samples 12.5 -> 9.3 s
(Ray's own share of its task ~50% -> ~25%). Interleaved before (ab96ba8, second checkout) / after, 2 runs of
1 repeat, idle 2-core AMD EPYC, means (data_throughput_cpu_ray_batches_before_after.json):

    epoch            variant, workers    clips/s before -> after     steady before -> after
    192 clips        Ray Data, 1 CPU       9.9 -> 12.7 (1.28x)         12.8 -> 18.1
    (8 a video)      Ray Data, 2 CPUs      9.8 -> 13.2 (1.34x)         14.5 -> 19.1
                     DataLoader, 1         23.0 -> 22.7 (unchanged)
                     DataLoader, 2         31.6 -> 35.1 (noise; nothing changed there)
    48 clips         Ray Data, 1 CPU       5.1 -> 5.8                  11.4 -> 15.6
    (2 a video)      Ray Data, 2 CPUs      4.7 -> 4.9                   9.7 -> 10.1

The 48-clip epoch (the old default) is mostly Ray's start-up (first batch after 4-6 s of a 7-10 s epoch: the
streaming executor, worker processes importing torch and gvseg), which a training run pays once, since
``build_dataset`` streams all its epochs in one pass; so the default is now 8 clips a video (192 clips).
Ray Data still runs at 0.56x the DataLoader with 1 worker: its task shares the 2 cores with the consumer and
with Ray's own actors (``_StatsActor``, the autoscaling coordinator and the dashboard agent took ~50% of a
core in ``ps`` during the run), and from 1 to 2 CPUs it gains 3% (DataLoader 55%): with 2 cores there is no
second core to give it.

    python benchmarks/data_throughput.py                     # ~5-10 minutes on 2 cores
    python benchmarks/data_throughput.py --smoke             # DataLoader only, seconds (no files written)

Performance on a GPU: not measured yet. ``benchmarks/gpu_suite.py`` measures this and every other issue-#16 GPU
target in one prepared device run (its docstring has the command); quote only numbers from its JSONs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "benchmarks"))
ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
       "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class MemorySampler(threading.Thread):
    """Peak total RSS / PSS (bytes) of this process and all its descendants."""

    def __init__(self, period: float = 0.2):
        super().__init__(daemon=True)
        self.period, self.peak_rss, self.peak_pss, self._halt = period, 0, 0, threading.Event()

    def sample(self) -> tuple[int, int]:
        import psutil

        me = psutil.Process()
        rss = pss = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                rss += info.rss
                pss += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return rss, pss

    def run(self) -> None:
        while not self._halt.is_set():
            rss, pss = self.sample()
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)
            self._halt.wait(self.period)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def data_config(root: str):
    from gvseg.config import DataConfig

    # VIPSeg training defaults (method.md): short side 480-800, long side <= 1333, flip, T=3 + 3 reference
    return DataConfig(format="vipseg", root=root, clip_frames=3, reference_frames=3, clips_per_video=ARGS.clips_per_video)


def child(variant: str) -> dict:
    import torch

    torch.set_num_threads(1)
    from gvseg.data.pipeline import ClipDataset, build_records
    from gvseg.data.transforms import collate

    cfg = data_config(ARGS.root)
    records = build_records(cfg, "train")
    mem = MemorySampler()
    base_rss, base_pss = mem.sample()
    setup = 0.0
    if variant == "dataloader":
        ds = ClipDataset(records, cfg, seed=0)
        ds.set_epoch(0)
        loader = torch.utils.data.DataLoader(ds, batch_size=ARGS.batch_size, num_workers=ARGS.workers,
                                             collate_fn=collate, prefetch_factor=2)
        batches = lambda: iter(loader)
    else:
        import ray

        from gvseg.runtime.ray_data import build_dataset, iterate_shard

        t = time.perf_counter()
        ray.init(num_cpus=ARGS.workers, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        setup = time.perf_counter() - t
        base_rss, base_pss = mem.sample()  # Ray's own daemons are the baseline of this variant
        ds = build_dataset(records, cfg, seed=0, epochs=1, buffer_mb=ARGS.ray_buffer_mb)
        batches = lambda: iterate_shard(ds, cfg, ARGS.batch_size)
    mem.start()
    clips, first = 0, None
    t0 = time.perf_counter()
    for clip in batches():
        clips += clip.shape[0]
        if first is None:
            first, first_clips = time.perf_counter() - t0, clips
    total = time.perf_counter() - t0
    mem.stop()
    if variant == "ray":
        import ray

        ray.shutdown()
    return {
        "variant": variant, "clips": clips, "seconds": round(total, 3),
        "clips_per_s": round(clips / total, 3),
        "steady_clips_per_s": round((clips - first_clips) / max(total - first, 1e-9), 3),
        "first_batch_s": round(first, 3), "setup_s": round(setup, 3),
        "baseline_rss_mb": round(base_rss / 2**20, 1), "peak_rss_mb": round(mem.peak_rss / 2**20, 1),
        "baseline_pss_mb": round(base_pss / 2**20, 1), "peak_pss_mb": round(mem.peak_pss / 2**20, 1),
    }


def parent() -> None:
    from common import machine

    from gvseg.data.synthetic import synth_dataset

    workers_list = ARGS.workers_list or [ARGS.workers]
    with tempfile.TemporaryDirectory(prefix="gvseg_bench_") as tmp:
        root = os.path.join(tmp, "vipseg")
        t = time.perf_counter()
        synth_dataset("vipseg", root, videos=ARGS.videos, frames=ARGS.frames, height=480, width=640, seed=0,
                      val_fraction=0.0, thing_classes=8, stuff_classes=6, progress=False)
        synth_s = time.perf_counter() - t
        runs = []
        for r in range(ARGS.repeats):
            for workers in workers_list:
                for variant in VARIANTS:
                    cmd = [sys.executable, __file__, "--child", variant, "--root", root, f"--workers={workers}"] + [
                        f"--{k.replace('_', '-')}={getattr(ARGS, k)}" for k in
                        ("videos", "frames", "clips_per_video", "batch_size", "ray_buffer_mb")]
                    out = subprocess.run(cmd, env={**os.environ, **ENV}, capture_output=True, text=True, check=False)
                    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
                    if out.returncode != 0 or not lines:
                        raise SystemExit(f"{variant} run failed (rc {out.returncode}):\n{out.stderr[-3000:]}")
                    res = json.loads(lines[-1])
                    res["repeat"], res["workers"] = r, workers
                    runs.append(res)
                    print(json.dumps(res), flush=True)

    def med(variant: str, workers: int, key: str) -> float:
        return statistics.median(x[key] for x in runs if x["variant"] == variant and x["workers"] == workers)

    keys = ("clips_per_s", "steady_clips_per_s", "peak_pss_mb", "peak_rss_mb", "baseline_pss_mb")
    summary: dict = {}
    for v in VARIANTS:
        summary[v] = {str(w): {k: med(v, w, k) for k in keys} for w in workers_list}
        one = summary[v][str(workers_list[0])]["clips_per_s"] / workers_list[0]
        for w in workers_list:
            summary[v][str(w)]["ideal_clips_per_s"] = round(one * w, 3)
            summary[v][str(w)]["scaling_efficiency"] = round(summary[v][str(w)]["clips_per_s"] / (one * w), 3)
    w_top = str(workers_list[-1])
    summary["ray_over_dataloader"] = None if "ray" not in summary else round(summary["ray"][w_top]["clips_per_s"] / summary["dataloader"][w_top]["clips_per_s"], 3)
    summary["note"] = ("clips_per_s = whole epoch from the first request (Ray: excluding ray.init, including "
                       "Ray Data start-up). steady_* excludes the first batch; Ray's producers keep working "
                       "while its first batch is pending, so that figure flatters Ray: compare clips_per_s. "
                       "ideal = the 1-worker median times W; efficiency = measured / ideal.")
    import numpy
    import ray
    import torch

    result = {
        "benchmark": "data_throughput",
        "machine": {**machine(), "node": platform.node(), "cpu_count": os.cpu_count(),
                    "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                    "load_average_at_end": os.getloadavg(), "ray": ray.__version__, "numpy": numpy.__version__,
                    "torch": torch.__version__,
                    "note": "shared machine: other jobs ran concurrently; compare variants within this file"},
        "workload": {"frame": "480x640 JPEG + RGB PNG (VIPSeg panomasksRGB + JSON)", "key_frames": 3,
                     "reference_frames": 3, "min_size": "480-800", "max_size": 1333, "flip": True,
                     "videos": ARGS.videos, "frames_per_video": ARGS.frames,
                     "clips_per_video": ARGS.clips_per_video, "batch_size": ARGS.batch_size,
                     "workers_list": workers_list, "ray_buffer_mb": ARGS.ray_buffer_mb,
                     "synth_seconds": round(synth_s, 1)},
        "summary_median": summary,
        "runs": runs,
    }
    print(json.dumps(summary, indent=2))
    if ARGS.smoke:
        return
    out = Path(ARGS.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


def plot(result: dict, path: Path) -> None:
    """clips/s against workers per variant, with each variant's ideal linear line (dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ws = result["workload"]["workers_list"]
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for v, colour in (("dataloader", "tab:blue"), ("ray", "tab:orange")):
        if v not in result["summary_median"]:
            continue
        s = result["summary_median"][v]
        ax.plot(ws, [s[str(w)]["clips_per_s"] for w in ws], "o-", color=colour, label=f"{v} (median)")
        ax.plot(ws, [s[str(w)]["ideal_clips_per_s"] for w in ws], "--", color=colour, alpha=0.6, label=f"{v} ideal")
        for x in result["runs"]:
            if x["variant"] == v:
                ax.plot(x["workers"], x["clips_per_s"], ".", color=colour, alpha=0.4)
    m = result["machine"]
    ax.set_xticks(ws)
    ax.set_xlabel("workers (DataLoader workers = Ray CPUs)")
    ax.set_ylabel("clips / s (whole epoch)")
    ax.set_title(f"VIPSeg clip feed, {m.get('cores')} cores (shared)", fontsize=10)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=24)
    ap.add_argument("--frames", type=int, default=6)
    ap.add_argument("--clips-per-video", type=int, default=8, help="8: an epoch long enough that Ray's start-up does not dominate")
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers = Ray CPUs")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ray-buffer-mb", type=float, default=0, help="object-store cap for the Ray dataset (0 = Ray's default)")
    ap.add_argument("--workers-list", type=int, nargs="*", default=[1, 2], help="scaling sweep (overrides --workers)")
    ap.add_argument("--smoke", action="store_true", help="4 videos, 1 repeat, 1 and 2 workers; writes nothing")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/data_throughput_cpu.json"))
    ap.add_argument("--child", choices=("dataloader", "ray"), help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    ARGS = ap.parse_args()
    VARIANTS = ("dataloader", "ray")
    if ARGS.smoke:  # Ray's start-up alone takes 15-30 s here: the smoke run checks the DataLoader sweep only
        ARGS.videos, ARGS.frames, ARGS.repeats, ARGS.clips_per_video = 4, 4, 1, 1
        VARIANTS = ("dataloader",)
    os.environ.update(ENV)
    if ARGS.child:
        print(json.dumps(child(ARGS.child)), flush=True)
    else:
        parent()
