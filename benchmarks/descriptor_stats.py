"""Does the shape-position descriptor H make τ meaningful? ΔH (Eq. 10) statistics on synthetic ground truth.

TCL (method.md) takes a same-id reference as a positive when ΔH = ||H' - H|| / ||H|| < τ = 0.2 (Table 4b), so H
must give a small ΔH for the same object in nearby frames and a large one for another shape or place.
Masks come from the project's own generator (``gvseg.data.synthetic``: ``plan_video``, ``render_frame``,
``ThingTrack.pose``, the ``SHAPES`` families) at the paper's resolution, 240x360, and H is computed the way
the model computes GT descriptors (full input resolution, ``contour_stride`` inside; M=200, 36x12,
d_model=256). Every object is rendered alone and kept only where it is fully inside the image, so ΔH
measures the descriptor, not occlusion or border crossings (those are reported separately, ``in_scene``).

Sets:
  (a) ``same_object``: one track at frames t and t+Δt, Δt = 1, 3, 10 (the generator moves objects ~4% of
      the short side per frame, up to 0.08 rad of spin, plus growth and wobble); ``same_object_slow``: the
      same trajectories at 4x the frame rate (t + Δt/4), closer to real 25-30 fps video.
  (a') ``same_mask_moved_1x2px``: the frame-t mask itself moved by 1 row and 2 columns: no change of shape,
      so any ΔH here is pixelisation and sampling noise of the descriptor.
  (b) ``shifted``: the frame-t mask moved horizontally by 1/8, 1/4, 1/2 of the width (kept inside).
  (c) ``other_shape``: a different shape family at the same centre with the same area; ``_own_pose`` gives
      it a random aspect and angle (like another object), ``_same_pose`` keeps the first object's (hardest).
Each design (a ``DescriptorConfig``) gets the same pairs; the JSON lists them side by side with the time
they take. Targets (issue #12): (a) Δt=1 median <= 0.1 and >= 70% < 0.2; (c) >= 95% > 0.2; (b) grows.

    PYTHONPATH=platform python benchmarks/descriptor_stats.py [--videos 30] [--smoke]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform as pyplatform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from gvseg.config import DescriptorConfig  # noqa: E402
from gvseg.data.synthetic import SHAPES, ThingTrack, VideoPlan, plan_video, render_frame  # noqa: E402
from gvseg.losses.contrastive import delta_h  # noqa: E402
from gvseg.model.descriptor import compute_descriptor  # noqa: E402
from gvseg.structures import Category  # noqa: E402

TAU = 0.2  # Table 4b
D_MODEL = 256
CATEGORIES = [Category(i + 1, name, True) for i, name in enumerate(SHAPES)]  # one thing class per shape family

_FIRST = dict(contour_stride=4, sampling="raster", binning="hard", angle_smooth=0, outside_edge="hard")
DESIGNS: dict[str, DescriptorConfig] = {  # name -> config; "default" is DescriptorConfig()
    "first_stride4_raster_hard": DescriptorConfig(**_FIRST),
    "paper_literal_stride4_along_hard": DescriptorConfig(**{**_FIRST, "sampling": "along"}),
    "stride4_weighted_hard": DescriptorConfig(**{**_FIRST, "sampling": "weighted"}),
    "stride4_weighted_linear_smooth_soft": DescriptorConfig(contour_stride=4),
    "stride2_weighted_linear_smooth_soft": DescriptorConfig(contour_stride=2),
    "stride1_raster_hard": DescriptorConfig(**{**_FIRST, "contour_stride": 1}),
    "paper_literal_stride1_along_hard": DescriptorConfig(**{**_FIRST, "contour_stride": 1, "sampling": "along"}),
    "stride1_weighted_hard": DescriptorConfig(**{**_FIRST, "contour_stride": 1, "sampling": "weighted"}),
    "stride1_weighted_linear": DescriptorConfig(contour_stride=1, angle_smooth=0, outside_edge="hard"),
    "stride1_weighted_linear_soft": DescriptorConfig(contour_stride=1, angle_smooth=0),
    "stride1_weighted_linear_smooth": DescriptorConfig(contour_stride=1, outside_edge="hard"),
    "stride1_weighted_linear_smooth2_soft": DescriptorConfig(contour_stride=1, angle_smooth=2),
    "default": DescriptorConfig(),
}


# ------------------------------------------------------------------------------------------ ground truth


def alone(plan: VideoPlan, track: ThingTrack, t: float) -> np.ndarray:
    """[H, W] bool mask of one track at (possibly fractional) frame t, rendered with nothing in front."""
    solo = VideoPlan(plan.video_id, plan.frames, plan.height, plan.width, None, plan.background,
                     [dataclasses.replace(track, first=0, last=1 << 30)])
    return render_frame(solo, t)[1] == track.segment_id


def still(plan: VideoPlan, track: ThingTrack, shape: str, centre: tuple, radius: tuple, angle: float) -> np.ndarray:
    """A motionless object of another shape family at a given pose, rendered like ``track``."""
    tr = dataclasses.replace(track, shape=shape, start=centre, velocity=(1e-9, 0.0), radius=radius, growth=0.0,
                             angle=angle, spin=0.0, wobble=0.0)
    return alone(plan, tr, 0)


def fully_inside(m: np.ndarray, min_area: int = 16) -> bool:
    return int(m.sum()) >= min_area and not (m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())


def make_pairs(videos: int, height: int, width: int, frames: int, anchors: tuple[int, ...], seed: int = 0) -> dict:
    """{set name: (A [P, H, W] bool, B [P, H, W] bool, shape names)} for every set of the module docstring."""
    rng = np.random.default_rng(seed)
    sets: dict[str, list] = {}

    def add(name: str, a: np.ndarray, b: np.ndarray, shape: str) -> None:
        sets.setdefault(name, []).append((a, b, shape))

    for v in range(videos):
        plan = plan_video(f"stats{v}", CATEGORIES, frames=frames, height=height, width=width, seed=v)
        _, scene0 = render_frame(plan, 0)  # warm-up of the generator's own path (and a sanity check)
        assert scene0.shape == (height, width)
        for track in (tr for tr in plan.things if tr.role == "plain"):
            for t0 in anchors:
                a = alone(plan, track, t0)
                if not fully_inside(a):
                    continue
                for dt in (1, 3, 10):  # (a)
                    for name, t1 in ((f"same_object_dt{dt}", t0 + dt), (f"same_object_slow_dt{dt}", t0 + dt / 4)):
                        if t1 < frames and fully_inside(b := alone(plan, track, t1)):
                            add(name, a, b, track.shape)
                if t0 + 1 < frames:  # (a) as the GT id maps give it: occlusion and borders included
                    ids0, ids1 = render_frame(plan, t0)[1], render_frame(plan, t0 + 1)[1]
                    m0, m1 = ids0 == track.segment_id, ids1 == track.segment_id
                    if m0.any() and m1.any():
                        add("in_scene_dt1", m0, m1, track.shape)
                if t0 != anchors[0]:
                    continue
                add("same_mask_moved_1x2px", a, np.roll(a, (1, 2), axis=(0, 1)), track.shape)  # pixelisation alone
                cols = np.nonzero(a.any(0))[0]
                for frac in (1 / 8, 1 / 4, 1 / 2):  # (b)
                    d = int(round(frac * width))
                    for sign in (1, -1):
                        if 0 < cols.min() + sign * d and cols.max() + sign * d < width - 1:
                            add(f"shifted_{frac:g}w", a, np.roll(a, sign * d, axis=1), track.shape)
                            break
                cx, cy, rx, ry, ang = track.pose(t0, frames)  # (c): another family, same centre and area
                other = [s for s in SHAPES if s != track.shape][int(rng.integers(len(SHAPES) - 1))]
                for pose in ("own_pose", "same_pose"):
                    ox, oy, oang = rx, ry, ang
                    if pose == "own_pose":
                        aspect, r = rng.uniform(0.7, 1.4), (rx * ry) ** 0.5
                        ox, oy, oang = r * aspect, r / aspect, rng.uniform(0, 2 * np.pi)
                    b = still(plan, track, other, (cx, cy), (ox, oy), oang)
                    if b.any():  # rescale to the same area
                        k = float((a.sum() / b.sum()) ** 0.5)
                        if fully_inside(b := still(plan, track, other, (cx, cy), (ox * k, oy * k), oang)):
                            add(f"other_shape_{pose}", a, b, f"{track.shape}/{other}")
    return {k: (torch.from_numpy(np.stack([p[0] for p in v])), torch.from_numpy(np.stack([p[1] for p in v])),
                [p[2] for p in v]) for k, v in sets.items()}


# ------------------------------------------------------------------------------------------------- stats


def describe(d: torch.Tensor, above: bool) -> dict:
    q = torch.quantile(d.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
    out = {"n": int(d.numel()), "median": round(q[1], 4), "p10": round(q[0], 4), "p90": round(q[2], 4),
           "frac_below_tau": round(float((d < TAU).double().mean()), 4)}
    if above:
        out["frac_above_tau"] = round(float((d > TAU).double().mean()), 4)
    return out


def split_parts(ha: torch.Tensor, hb: torch.Tensor) -> dict:
    """ΔH of the positive (point-count) and the negative (outside-bin) parts alone, each over ||H^t||."""
    norm = ha.norm(dim=1)
    pos = (hb.clamp_min(0) - ha.clamp_min(0)).norm(dim=1) / norm
    neg = (hb.clamp_max(0) - ha.clamp_max(0)).norm(dim=1) / norm
    return {"positive_part_median": round(float(pos.median()), 4), "negative_part_median": round(float(neg.median()), 4)}


def run_design(cfg: DescriptorConfig, pairs: dict, height: int, width: int, quarter: bool = False) -> dict:
    """ΔH per set for one design. ``quarter``: describe masks pooled to 1/4 (the model's predicted-mask path)."""
    out: dict = {"config": dataclasses.asdict(cfg), "sets": {}}
    seconds, masks_done = 0.0, 0
    for name, (a, b, _) in pairs.items():
        canvas = torch.tensor([[height, width]] * len(a))
        if quarter:
            a, b = (F.interpolate(m[:, None].float(), scale_factor=0.25, mode="area")[:, 0] > 0.5 for m in (a, b))
            canvas = torch.ceil(canvas / 4)
        t0 = time.perf_counter()
        ha = compute_descriptor(a, canvas, cfg, D_MODEL, downsample=1 if quarter else None)
        hb = compute_descriptor(b, canvas, cfg, D_MODEL, downsample=1 if quarter else None)
        seconds += time.perf_counter() - t0
        masks_done += 2 * len(a)
        d = delta_h(ha, hb)  # Eq. (10)
        out["sets"][name] = describe(d, above=name.startswith("other_shape"))
        if name in ("same_object_dt1", "same_mask_moved_1x2px", "shifted_0.5w"):
            out["sets"][name].update(split_parts(ha, hb))
    out["ms_per_100_masks"] = round(1e5 * seconds / max(masks_done, 1), 2)
    a1 = out["sets"].get("same_object_dt1")
    c_own, c_same = out["sets"].get("other_shape_own_pose"), out["sets"].get("other_shape_same_pose")
    if a1 and c_own:
        out["meets_targets"] = {"a_dt1_median_le_0.1": a1["median"] <= 0.1, "a_dt1_70pct_below_tau": a1["frac_below_tau"] >= 0.7,
                                "c_95pct_above_tau": c_own["frac_above_tau"] >= 0.95,
                                "c_same_pose_95pct_above_tau": bool(c_same and c_same["frac_above_tau"] >= 0.95)}
    return out


def one_line(res: dict) -> str:
    def med(k: str) -> str:
        return f"{res['sets'][k]['median']:.3f}" if k in res["sets"] else "-"

    def frac(k: str, key: str) -> str:
        return f"{res['sets'][k][key]:.0%}" if k in res["sets"] else "-"
    return (f"dt1 {med('same_object_dt1')} ({frac('same_object_dt1', 'frac_below_tau')} <τ)  dt3 {med('same_object_dt3')}"
            f"  slow-dt1 {med('same_object_slow_dt1')}  shift 1/8,1/4,1/2 "
            + "/".join(med(f"shifted_{f:g}w") for f in (1 / 8, 1 / 4, 1 / 2))
            + f"  shape {med('other_shape_own_pose')} ({frac('other_shape_own_pose', 'frac_above_tau')} >τ)"
            f"  {res['ms_per_100_masks']:.1f} ms/100")


def machine() -> dict:
    cpu = pyplatform.processor() or pyplatform.machine()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                   if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu_model": cpu, "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": pyplatform.python_version(), "date": datetime.datetime.now().isoformat(timespec="seconds"),
            "loadavg_1m": round(os.getloadavg()[0], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--videos", type=int, default=30)
    ap.add_argument("--smoke", action="store_true", help="2 videos at 120x180, 3 designs: runs in seconds")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "descriptor_stats.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    height, width, frames, videos = 240, 360, 24, args.videos
    anchors: tuple[int, ...] = (1, 5, 9, 13)
    designs = dict(DESIGNS)
    if args.smoke:
        height, width, frames, videos, anchors = 120, 180, 12, 2, (1,)
        designs = {k: designs[k] for k in ("first_stride4_raster_hard", "stride1_weighted_linear", "default")}

    t0 = time.perf_counter()
    pairs = make_pairs(videos, height, width, frames, anchors)
    print(f"{sum(len(p[0]) for p in pairs.values())} pairs in {time.perf_counter() - t0:.1f}s: "
          + ", ".join(f"{k} {len(v[0])}" for k, v in pairs.items()))
    result = {"benchmark": "descriptor_stats", "machine": machine(), "smoke": args.smoke,
              "data": {"generator": "gvseg.data.synthetic (plan_video + render_frame, objects rendered alone)",
                       "height": height, "width": width, "frames": frames, "videos": videos, "anchors": list(anchors),
                       "d_model": D_MODEL, "tau": TAU},
              "targets": {"same_object_dt1": "median <= 0.1 and >= 70% < tau", "other_shape": ">= 95% > tau",
                          "shifted": "grows with the shift"},
              "designs": {}}
    for name, cfg in designs.items():
        result["designs"][name] = res = run_design(cfg, pairs, height, width)
        print(f"{name:38s} {one_line(res)}")
    result["designs"]["default_on_quarter_masks"] = run_design(DescriptorConfig(), pairs, height, width, quarter=True)
    result["designs"]["default_on_quarter_masks"]["note"] = (
        "the inference path: predicted masks at 1/4, downsample=1 (not used for ΔH, which is computed on GT)")
    out = Path(args.out)
    if args.smoke and out == Path(ap.get_default("out")):  # a smoke run never overwrites the real result
        out = Path(tempfile.gettempdir()) / "descriptor_stats_smoke.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out} in {time.perf_counter() - t0:.1f}s")


if __name__ == "__main__":
    main()
