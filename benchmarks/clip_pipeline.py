"""Clip pipeline speed per dataset format against a decode+resize lower bound measured on the same files.

One training sample = ``load_sample`` (3 key + 3 reference frames, VIPSeg training resize: short side
480-800, long side <= 1333, flip; EVS formats also draw ("mask", "point") hints as their recipes do) and
``collate([sample])`` into a typed ``Clip``, single-threaded (torch and OpenCV at 1 thread).

Lower bound, on the very same sample (same seed, so the same frames and the same output size): decode every
distinct frame file with ``cv2.imread`` and resize it bilinearly to the sample's size; decode every distinct
label file once (``cv2.imread(IMREAD_UNCHANGED)`` for PNG formats; ``pycocotools`` RLE decode of every object
for the JSON formats) and resize it by nearest neighbour (an [H, W, K] stack for RLE formats). That is the
work no pipeline can skip; the pipeline's extra is colour conversion, tubes, ignore, flip and collate.

Synthetic data in every real on-disk format (``gvseg.data.synthetic``), 480x640 frames. Samples alternate
``pipeline, bound, bound, pipeline, ...`` on the same sample so machine noise hits both; we report medians.

Timing: per-process CPU time (``time.process_time``, user + system, so page faults count) of each sample,
medians over 24 interleaved samples per format (4 videos x 6 draws); ``wall_ratio`` and median page faults per
sample are stored too. Earlier results (clip_pipeline_cpu_before.json, _run2.json, the previous
clip_pipeline_cpu.json: wall time, load 5-12) ranged 1.6-4.4x.

Results on the shared 2-core machine (another engineer's benchmarks running, load 1.3-2), ratio = median
pipeline / median bound; before = commit fd3b409 re-run with this script right before
(clip_pipeline_cpu_fd3b409.json), after = clip_pipeline_cpu.json as of commit d14c93c (since overwritten):
vipseg 2.04 -> 1.59, kitti-step 2.17 -> 1.52, vspw 2.39 -> 1.99, ytvis 1.55 -> 1.31, ovis 1.74 -> 1.27,
ytvos 3.02 -> 1.89, davis 3.02 -> 1.76, burst 2.36 -> 1.37.
The 1.5x target of issue #17 is met for ytvis, ovis and burst and missed for vipseg and kitti-step (barely),
vspw, ytvos and davis. What is left is work the bound does not do and the Clip contract requires: the float
frames (normalising 6 frames of ~640x853 is ~6-8 ms: ~40 MB of float32 written) and the K x T x H x W bool
tubes plus ignore (one pass per object over the padded clip, ~5-8 ms). That is a fixed ~15 ms a sample, so
it fits under 1.5x only where the bound is large: the cheap-to-decode formats (8-bit palette / grey label
PNGs: vspw, ytvos, davis, bound ~20 ms) cannot reach 1.5x without changing the Clip contract (e.g. uint8
frames normalised on the device). Fresh memory is the other cost on this VM (a page fault per 4 KB, up to
~10 us each): the pipeline's 50-80 MB of output per sample faults whenever glibc has returned the previous
sample's memory to the OS (vipseg: 2.9k faults a sample before, 0 in this run; other runs saw 1-5k after too,
+5-15 ms); collate recycled its float buffers for that reason, the mask buffers were still fresh allocations
(all recycled since target 3, below).

Since 2026-12-03 the Clip carries uint8 frames that the model normalises on its device (``Clip.float_frames``,
bit-identical). Interleaved against the float version on a quiet box (clip_pipeline_cpu_uint8.json) the
pipeline takes 0.69-0.80x its former time; ratio to the bound 1.94-3.45x before and 1.64-2.40x after in that
run (the old code measured slower than in the run quoted above: machine variance between days), so no format
meets 1.5x there. clip_pipeline_cpu_uint8_loaded.json is the same comparison on a loaded box (0.67-0.84x).

Tubes, planar frames, recycled buffers (issue #17, target 3; ``transforms.make_sample``): frames are written
channels-first into a buffer padded to /32 (``cv2.split`` of the input, then each plane resized in place;
BGR decodes reordered by the split, no colour swap pass; flip in place per plane), which collate hands to
torch as it is; the K tubes are one broadcast comparison of the clip codes with the code buffer (half the
time of one pass per object); which objects a clip holds comes from the decoders (``IndexedAnnotation
.present``) instead of histograms; label maps go to clip codes in one pass (``IndexedAnnotation.coded``);
code maps resize by ``cv2.resize(INTER_NEAREST_EXACT)`` on the axes where its map is verified equal to ours;
EVS builds only the first-frame tubes ``keep_hinted`` keeps; frames, tubes, ignore, code maps and hint masks
live in recycled buffers (``transforms._Buffers``: fresh memory faulted at 50-100 us a fault on this VM).
Interleaved before (7fd2143, from a second checkout), after, before, after on the shared 2-core box
(another engineer's training benchmarks running, load 2.4-3.0), medians of the two runs of each side
(clip_pipeline_cpu_before_after.json; the last after run is clip_pipeline_cpu.json):

    format       pipeline ms before -> after   bound ms   ratio before -> after
    vipseg           47.9 -> 37.2               23.1        2.10 -> 1.61
    kitti-step       48.4 -> 37.7               22.8        2.06 -> 1.65
    vspw             41.2 -> 28.9               17.3        2.36 -> 1.67
    ytvis            37.2 -> 26.2               23.1        1.63 -> 1.14
    ovis             36.4 -> 26.4               22.9        1.60 -> 1.15
    ytvos            41.6 -> 27.7               17.1        2.42 -> 1.62
    davis            42.5 -> 27.1               17.2        2.45 -> 1.58
    burst            40.2 -> 29.0               23.9        1.68 -> 1.22

The pipeline takes 0.64-0.78x its former time. The 1.5x target is met for ytvis, ovis and burst (their bound
decodes every RLE object and resizes a K-channel stack) and missed for the label-map formats davis, vipseg,
ytvos, kitti-step and vspw (1.58-1.67x), whose bound is one PNG decode and one resize a frame. Stage medians
of a vspw sample after (CPU ms): frame decode 10.3 (the bound's), label decode 5.0 (bound ~3.4), planar frames
5.9 (the bound's interleaved resize ~3.5), tubes 6.4 (bound ~1 of nearest resize): per-frame code maps 2.4,
the K x T x H x W comparison 2.4, ignore 0.6. The comparison and ignore write the bytes the Clip contract
requires (bool tubes and ignore at the padded output size, ~15-30 MB a sample, at memory bandwidth here); the
rest is within ~0.3-0.4 ms a frame of the bound's own calls. Median page faults per sample are 0 on both sides.

Coded tubes (2026-12-04): label-map samples carry the clip's code map instead of K x T x H x W planes
(``Sample.code`` / ``Targets.code``; planes derived where read). "consumer ms" timed, apart from the pipeline,
the planes the train step then still derived on the consumer (the GT descriptors' frame; the matcher and
losses look codes up at their points), and "ratio with it" added them to the pipeline. Interleaved
before (ff3e44f, from a second checkout with this script), after, before, after on the idle 2-core box
(clip_pipeline_cpu_coded_before_after.json; clip_pipeline_cpu.json is the last after run), means of 2 runs:

    format       pipeline ms before -> after   bound ms   ratio before -> after   consumer ms   ratio with it
    vipseg           29.4 -> 26.1               19.7        1.51 -> 1.31           4.6           1.55
    kitti-step       30.4 -> 25.5               19.8        1.56 -> 1.27           4.4           1.49
    vspw             23.0 -> 20.7               15.1        1.50 -> 1.39           2.6           1.57
    ytvis            20.6 -> 18.0               18.7        1.09 -> 0.97           2.1           1.09
    ovis             21.9 -> 17.8               19.9        1.04 -> 0.95           2.1           1.06
    ytvos            22.1 -> 19.0               15.0        1.45 -> 1.28           2.5           1.45
    davis            22.3 -> 18.9               15.1        1.44 -> 1.28           2.5           1.46
    burst            23.3 -> 20.3               19.7        1.17 -> 1.04           2.4           1.17

Every format meets 1.5x for the pipeline (the old code: 5 of 8 on this quiet day; 3 of 8 under load). On a CPU
trainer the moved planes cost about what the pipeline saved, so vipseg and vspw exceeded 1.5x again once they
were counted; a Ray Data row is 3.4x smaller either way.

Coded descriptors (same day, later): ``target_descriptors`` describes coded targets from the frame's code map
(``compute_descriptor_coded``, bit-identical; no planes), so the consumer writes no planes at all. The consumer
step now times the GT descriptors of key and reference clip on the targets as given and on the same targets
as planes (derived untimed; what the consumer ran when the pipeline handed planes over), in alternating
order: ``consumer_descriptor_ms`` {as_given, as_planes}, ``consumer_extra_ms`` = median of the per-sample
difference, ``ratio_with_consumer_extra`` = (pipeline + extra) / bound. One run on an idle 2-core AMD EPYC
(clip_pipeline_cpu.json):

    format       pipeline ms   bound ms   ratio   descriptors ms as given / as planes   extra ms   ratio with it
    vipseg           32.0        24.9      1.29        7.95 / 8.53                       -0.08       1.28
    kitti-step       36.7        29.6      1.24        7.28 / 7.57                       -0.01       1.24
    vspw             20.9        14.9      1.40        5.79 / 6.40                       -0.24       1.39
    ytvis            19.7        19.8      1.00        4.14 / 3.84 (both planes)         -0.00       1.00
    ovis             19.9        22.9      0.87        4.85 / 4.27 (both planes)         -0.03       0.87
    ytvos            24.7        19.1      1.30        5.32 / 5.35                       -0.07       1.29
    davis            21.5        16.7      1.28        4.49 / 4.75                       -0.46       1.25
    burst            20.2        21.7      0.93        4.37 / 3.97 (both planes)         -0.09       0.92

All 8 formats meet 1.5x with the consumer's share counted: the coded targets cost the consumer nothing beyond
what handed-over planes did (the code map's contour pass replaces the planes' row scan). ytvis, ovis and burst
come as explicit masks (RLE, points), where both columns run the same code (their gap is order noise).

    python benchmarks/clip_pipeline.py                 # all formats, ~1 min on 2 shared cores
    python benchmarks/clip_pipeline.py --smoke         # seconds
    python benchmarks/clip_pipeline.py --profile vipseg   # cProfile of the pipeline on one format
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "benchmarks"))

FORMATS = ("vipseg", "kitti-step", "vspw", "ytvis", "ovis", "ytvos", "davis", "burst")
EVS = ("ytvos", "davis", "burst")
RLE = ("ytvis", "ovis", "burst")


def setup(fmt: str, root: Path, videos: int, frames: int):
    from gvseg.config import DataConfig
    from gvseg.data import formats
    from gvseg.data.pipeline import label_space_for
    from gvseg.data.synthetic import synth_dataset

    synth_dataset(fmt, root, videos=videos, frames=frames, height=480, width=640, seed=0, val_fraction=0.0,
                  thing_classes=8, stuff_classes=6, progress=False)
    records, _ = formats.read_dataset(fmt, root, "train", progress=False)
    cfg = DataConfig(format=fmt, root=str(root), clip_frames=3, reference_frames=3,
                     exemplar_kinds=("mask", "point") if fmt in EVS else ())
    return records, cfg, label_space_for(records)


def run_pipeline(record, cfg, space, v: int, k: int):
    from gvseg.data.pipeline import load_sample, sample_rng
    from gvseg.data.transforms import collate

    return collate([load_sample(record, cfg, space, sample_rng(0, 0, v, k))])


def consumer_descriptors(clip, planes_first: bool = False) -> tuple[float, float]:
    """CPU seconds of the train step's GT descriptors (``target_descriptors``, key and reference clip) on the
    clip's targets as they come (coded for label-map formats), and on the same targets as explicit planes (the
    planes derived untimed first: what the consumer ran when the pipeline handed planes over), in turn
    (``planes_first`` alternates the order between samples). Their difference is the work coded tubes move to
    (or save on) the consumer; the matcher and the mask losses look coded targets up at their points
    (``Targets.masks_at``), the same gathers as on planes."""
    from gvseg.config import DescriptorConfig
    from gvseg.model.descriptor import target_descriptors
    from gvseg.structures import Targets

    cfg, spent = DescriptorConfig(), {"given": 0.0, "planes": 0.0}
    for c in (clip, clip.reference):
        if c is None or not c.targets:
            continue
        runs = {"given": c.targets,
                "planes": [Targets(tg.masks.clone(), tg.labels, tg.ids, tg.isthing) for tg in c.targets]}  # untimed
        for what in (("planes", "given") if planes_first else ("given", "planes")):
            c0 = time.process_time()
            target_descriptors(runs[what], c.image_sizes, cfg, 256)
            spent[what] += time.process_time() - c0
    return spent["given"], spent["planes"]


def run_bound(record, cfg, v: int, k: int) -> None:
    """Decode + resize the distinct files of the same sample (see the module docstring)."""
    import cv2
    import numpy as np
    from pycocotools import mask as mask_util

    from gvseg.data.clips import sample_clip
    from gvseg.data.pipeline import _annotated, sample_rng
    from gvseg.data.transforms import sample_augment

    rng = sample_rng(0, 0, v, k)  # the same draws as load_sample: same frames, same output size
    idx = sample_clip(len(record), cfg.clip_frames, rng, annotated=_annotated(record),
                      reference_frames=cfg.reference_frames, reference_range=cfg.reference_range)
    p = sample_augment(record.height, record.width, rng, min_size=cfg.min_size, max_size=cfg.max_size,
                       crop=cfg.crop, flip=cfg.flip)
    h, w = p.size
    for t in sorted(set(idx.key.tolist()) | set(idx.reference.tolist())):
        cv2.resize(cv2.imread(record.frame_paths[t]), (w, h), interpolation=cv2.INTER_LINEAR)
        ann = record.annotations[t]
        if record.format in RLE:
            rles = [{"size": [record.height, record.width], "counts": (o[-1]["counts"] if isinstance(o[-1], dict)
                                                                        else o[-1])} for o in ann]
            rles = [mask_util.frPyObjects(r, record.height, record.width) if isinstance(r["counts"], list)
                    else {"size": r["size"], "counts": r["counts"].encode()} for r in rles]
            m = mask_util.decode(rles) if rles else np.zeros((record.height, record.width, 1), np.uint8)
            for c in range(0, m.shape[2], 512):  # cv2 takes at most 512 channels
                cv2.resize(np.ascontiguousarray(m[..., c:c + 512]), (w, h), interpolation=cv2.INTER_NEAREST)
        else:
            path = ann[1] if isinstance(ann, tuple) else ann
            cv2.resize(cv2.imread(path, cv2.IMREAD_UNCHANGED), (w, h), interpolation=cv2.INTER_NEAREST)


def bench_format(fmt: str, tmp: Path, args) -> dict:
    records, cfg, space = setup(fmt, tmp / fmt, args.videos, args.frames)
    draws = [(v, k) for k in range(args.draws) for v in range(len(records))]
    for v, k in draws[:2]:  # warm the page cache and the libraries
        run_pipeline(records[v], cfg, space, v, k)
        run_bound(records[v], cfg, v, k)
    pipe, bound, derive = [], [], []  # (CPU seconds, wall seconds, minor page faults) per sample
    for i, (v, k) in enumerate(draws):
        order = ("pipe", "bound") if i % 2 == 0 else ("bound", "pipe")
        for what in order:
            f0, c0, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.process_time(), time.perf_counter()
            if what == "pipe":
                clip = run_pipeline(records[v], cfg, space, v, k)
            else:
                run_bound(records[v], cfg, v, k)
            c1, t1, f1 = time.process_time(), time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            (pipe if what == "pipe" else bound).append((c1 - c0, t1 - t0, f1 - f0))
            if what == "pipe":  # the consumer's share, timed apart: its GT descriptors, coded and as planes
                derive.append(consumer_descriptors(clip, planes_first=i % 2 == 1))
                del clip
    med = lambda xs, j: statistics.median(x[j] for x in xs)
    mp, mb = med(pipe, 0), med(bound, 0)
    md = statistics.median(a - b for a, b in derive)  # the consumer's extra work (negative: saved)
    return {"format": fmt, "samples": len(draws), "pipeline_ms": round(1e3 * mp, 2), "bound_ms": round(1e3 * mb, 2),
            "ratio": round(mp / mb, 3), "target_ratio": 1.5, "meets_target": mp / mb <= 1.5,
            "consumer_descriptor_ms": {"as_given": round(1e3 * med(derive, 0), 2), "as_planes": round(1e3 * med(derive, 1), 2)},
            "consumer_extra_ms": round(1e3 * md, 2), "ratio_with_consumer_extra": round((mp + md) / mb, 3),
            "ratio_of_medians_per_pair": round(statistics.median(a[0] / b[0] for a, b in zip(pipe, bound)), 3),
            "wall_ratio": round(med(pipe, 1) / med(bound, 1), 3),
            "page_faults_per_sample": {"pipeline": med(pipe, 2), "bound": med(bound, 2)}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--formats", nargs="*", default=list(FORMATS))
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--draws", type=int, default=6, help="samples per video")
    ap.add_argument("--smoke", action="store_true", help="2 formats, 2 videos, 1 draw: seconds")
    ap.add_argument("--profile", metavar="FORMAT", help="cProfile the pipeline on FORMAT and print the top entries")
    ap.add_argument("--label", default="", help="stored with the results (e.g. 'before', 'after')")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/clip_pipeline_cpu.json"))
    args = ap.parse_args()
    import cv2
    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    from common import machine

    if args.smoke:
        args.formats, args.videos, args.draws = ["vipseg", "ytvis"], 2, 2
    with tempfile.TemporaryDirectory(prefix="gvseg_clip_") as tmp:
        tmp = Path(tmp)
        if args.profile:
            records, cfg, space = setup(args.profile, tmp / args.profile, args.videos, args.frames)
            prof = cProfile.Profile()
            prof.enable()
            for k in range(args.draws):
                for v in range(len(records)):
                    run_pipeline(records[v], cfg, space, v, k)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(25)
            return
        rows = []
        for fmt in args.formats:
            rows.append(bench_format(fmt, tmp, args))
            print(json.dumps(rows[-1]), flush=True)
    result = {"benchmark": "clip_pipeline", "label": args.label, "machine": machine(),
              "workload": {"frame": "480x640 synthetic, real on-disk formats", "key_frames": 3, "reference_frames": 3,
                           "min_size": "480-800", "max_size": 1333, "flip": True, "threads": 1,
                           "videos": args.videos, "frames_per_video": args.frames, "draws_per_video": args.draws,
                           "evs_hints": list(EVS)},
              "note": "medians of per-process CPU time (time.process_time, user + system: page faults count) over "
                      "interleaved samples; wall_ratio from perf_counter; the bound decodes + resizes the same "
                      "files in the same run",
              "results": rows}
    if not args.smoke:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
