"""Learning benchmark: every GvSeg mechanism, trained on controlled synthetic data, moves the metric the paper
says it moves (issue #12 item 5). CPU only; one command:

    python benchmarks/learning.py            # the benchmark (sized for <= 45 min on 2 CPU cores)
    python benchmarks/learning.py --smoke    # tiny sizes (~1-2 min): checks the script end to end

Data, written once under ``benchmarks/data/learning/`` in the real on-disk formats, each with a small label
space that train and val share:
  * vipseg: 3 thing + 4 stuff classes; VPS trains and is scored on it. A second set from the same generator
    with ``--lookalike`` (same-texture instances whose paths cross: only shape and position tell them apart,
    what SPA is for) is the val set of the association study (Table 4d), scored with the same weights.
  * ytvis (3 thing classes), vspw (3 + 4 classes drawn; VSPW's label space is its fixed 124), ytvos (objects).

Runs, each its own process on one thread (``--jobs`` at a time), each a shipped debug recipe plus overrides:
  * vps/gvseg (seeds 0, 1)          GvSeg as shipped.
  * vps/tcl_frame (seeds 0, 1)      Table 4e "Frame" for things: TCL references within 5 frames, every near
                                    same-id a positive (prior work), instead of whole-video references by ΔH.
  * vps/stuff_inbatch (seeds 0, 1)  Table 4e "Frame" for stuff: no per-class FIFO queue, in-batch positives.
  * vps/far_ignore (seed 0)         a same id with ΔH >= τ left out instead of a negative (the paper's wording,
                                    the default).
  * vis, vss, evs (seed 0)          the task recipes.
The vps/gvseg checkpoints are also scored with ``association.thing_cues`` = appearance and position (Table 4d,
inference only, same weights), on the plain val set and on the look-alike one, with the identity switches
counted directly (:func:`identity_switches`: inside a clip vs across clip boundaries), and against an oracle
that associates the same per-frame masks perfectly (:func:`oracle_association`: the headroom of any
association rule, and the retention VPQ_6/VPQ_1 that the segmentation alone allows). Ground-truth
baselines (``gvseg.baselines``: ids re-drawn every clip; copy the first frame) go through the same writers and
metrics.

Output: ``benchmarks/results/learning_<tag>.json`` (machine, settings, every metric, per-seed numbers, the
mechanism counters of training and inference, and each target met or missed) and ``learning_<tag>.png``
(loss curves, TCL positives, VPQ^k of the runs against the baselines).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(ROOT / "benchmarks"))

RECIPES = {"vps": "tasks/vps_vipseg.py:debug", "vis": "tasks/vis_ytvis21.py:debug",
           "vss": "tasks/vss_vspw.py:debug", "evs": "tasks/evs_ytvos18.py:debug"}
HEADLINES = {"vps": ("vpq_1_thing", "vpq_2_thing", "vpq_4_thing", "vpq_6_thing", "vpq_1_stuff", "vpq_6_stuff",
                     "vpq_mean_1246", "stq"),
             "vis": ("AP", "AP50", "AR10"), "vss": ("miou", "mvc8"), "evs": ("J&F-Mean", "J-Mean", "F-Mean")}
# the training ablations (Table 4e) and the association cues (Table 4d)
VARIANTS = {
    "gvseg": [],
    "tcl_frame": ["loss.contrastive.thing_reference=frame", "data.reference_range=5"],
    "stuff_inbatch": ["loss.contrastive.stuff_reference=frame"],
    "far_ignore": ["loss.contrastive.far_same_id=ignore"],  # a same id with ΔH >= τ left out, not a negative
}
SEEDS_OF = {"far_ignore": 1}  # arms run on fewer seeds to fit the budget
CUES = ("spa", "appearance", "position")


def sizes(smoke: bool) -> dict:
    """Everything the budget decides, in one place."""
    if smoke:
        return {"steps": 6, "videos": 6, "val_videos": 2, "frames": 6, "height": 48, "width": 64, "seeds": (0,)}
    # VSS takes 2 frames more in its data_overrides (mVC_8 needs more than 8). 16 val videos of 12 frames: the
    # saved checkpoints of the first run scored on 4 val videos of 8 frames moved by up to 7 VPQ points against
    # 16 of 12 (thing VPQ_1 25.0 vs 18.3 on the same weights); scoring costs seconds, training is the budget.
    # 900 steps (600 until 2026-12-03): at 600 the whole run took 28 min on 2 idle cores (2026-12-02), so 900 fits
    # the 45-min budget. A side run of vps/gvseg at 900 steps (2 seeds, same data) gave thing VPQ_1 44.4 vs 41.1,
    # but retention VPQ_6/VPQ_1 0.74 either way: more steps buy segmentation, not association.
    return {"steps": 900, "videos": 64, "val_videos": 16, "frames": 12, "height": 128, "width": 192,
            "seeds": (0, 1)}


# ---------------------------------------------------------------------------------------------- data


def data_overrides(task: str, root: Path, s: dict, look: bool = False) -> list[str]:
    return [f"data.root={root}", "data.synthetic=true", f"data.synth.videos={s['videos']}",
            f"data.synth.val_fraction={s['val_videos'] / s['videos']}",
            f"data.synth.frames={s['frames'] + (2 if task == 'vss' else 0)}",
            f"data.synth.height={s['height']}", f"data.synth.width={s['width']}", f"data.synth.lookalike={look}",
            f"data.min_size=({s['height']},)", f"data.test_size={s['height']}", f"data.max_size={s['width']}"]


def config(task: str, overrides: list[str]):
    from gvseg.config import apply_overrides
    from gvseg.recipes import load_recipe

    return apply_overrides(load_recipe(str(ROOT / RECIPES[task])), overrides)


# ---------------------------------------------------------------------------------------------- runs


def train(cfg) -> tuple:
    """One training run on one CPU thread: (parts, the logged metrics of each window, seconds)."""
    import torch

    from gvseg import counters
    from gvseg.data.pipeline import build_records, iterate_batches
    from gvseg.engine import build_parts, fit, seed_everything

    torch.set_num_threads(1)
    counters.reset()
    seed_everything(cfg.train.seed)
    parts = build_parts(cfg)
    records = build_records(cfg.data, cfg.data.train_split)
    history: list[dict] = []
    t0 = time.time()
    fit(cfg, parts, lambda e: iterate_batches(records, cfg.data, batch_size=cfg.train.batch_size,
                                              seed=cfg.train.seed, epoch=e),
        device=torch.device("cpu"), progress=False, on_metrics=lambda m, s: history.append({"step": s, **m}))
    return parts, history, time.time() - t0


def run_one(spec: dict) -> dict:
    """Train one run, save its weights, score it (VPS: once per association cue). In its own process."""
    import torch

    cfg = config(spec["task"], spec["overrides"])
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    parts, history, train_s = train(cfg)
    torch.save(parts.model.state_dict(), out / "model.pt")
    results = score(cfg, parts.model.eval(), spec)
    return {"name": spec["name"], "task": spec["task"], "seed": spec["seed"], "train_s": train_s,
            "eval_s": time.time() - t0 - train_s, "history": history, "metrics": results}


def score(cfg, model, spec: dict) -> dict:
    """The run's val metrics, once per association cue asked for (inference only, same weights); with
    ``look_root`` also on the look-alike val set, as ``look_<cue>``."""
    from gvseg.config import apply_overrides
    from gvseg.evaluation import evaluate_split

    out = Path(spec["out"])
    roots = {"": None} | ({"look_": spec["look_root"]} if spec.get("look_root") else {})
    results = {}
    for prefix, root in roots.items():
        for cue in spec["cues"]:
            c = apply_overrides(cfg, [f"model.association.thing_cues={cue}"] + ([f"data.root={root}",
                                "data.synth.lookalike=true"] if root else []))
            results[prefix + cue], _ = evaluate_split(model, c, out / f"eval_{prefix}{cue}", progress=False)
            if cfg.model.task == "vps":  # where identities are lost: inside a clip or at the tracker
                results[prefix + cue]["idsw"] = identity_switches(Path(root or cfg.data.root), out / f"eval_{prefix}{cue}",
                                                                  cfg.model.association.clip_frames)
        if cfg.model.task == "vps" and "spa" in spec["cues"]:  # the same masks, perfectly associated
            results[prefix + "oracle"] = oracle_association(Path(root or cfg.data.root), out / f"eval_{prefix}spa",
                                                            out / f"oracle_{prefix}spa")
    return results


def _thing_pairs(gt_root: Path, pred_dir: Path):
    """Per val video, per frame: (video, t, gt ids, pred ids, [K] GT id, pred id, overlap, union of each
    overlapping pair, GT thing id -> class, pred id -> class), from the files the writer wrote."""
    import numpy as np

    from gvseg.metrics import panoptic_io as pio

    gt_json = gt_root / "panoptic_gt_VIPSeg_val.json"
    split = pio.load_vipseg(gt_root, pred_dir, gt_json=str(gt_json), gt_png_dir=str(gt_root / "panomasksRGB"))
    thing = {c["id"] for c in split.categories if c["isthing"]}
    for v in split.videos:
        for t, (gt_png, pred_png) in enumerate(zip(v.gt_paths, v.pred_paths)):
            g, p = pio.read_id_png(gt_png), pio.read_id_png(pred_png)
            gi, pi, inter = pio.pair_counts(g, p)  # [K] joint histogram
            ids_g, area_g = np.unique(g, return_counts=True)
            ids_p, area_p = np.unique(p, return_counts=True)
            union = area_g[np.searchsorted(ids_g, gi)] + area_p[np.searchsorted(ids_p, pi)] - inter
            gcat = {s["id"]: s["category_id"] for s in v.gt_segments[t] if s["category_id"] in thing}
            pcat = {s["id"]: s["category_id"] for s in v.pred_segments[t]}
            yield v, t, g, p, gi, pi, inter, union, gcat, pcat


def identity_switches(gt_root: Path, pred_dir: Path, clip_frames: int) -> dict:
    """Association errors counted directly (MOT's IDSW on the VPQ TP rule): per frame, a GT thing and a
    predicted segment of its class with IoU > 0.5 are a match; along each GT thing's matched frames, a change
    of predicted id between consecutive matches is a switch. Split by where it happens: between two frames
    of one clip (the queries lost the object: segmentation) or across a clip boundary (the tracker's Eq. 6
    matching, Table 4d)."""
    import numpy as np

    n = {"transitions_within_clip": 0, "switches_within_clip": 0, "transitions_across_clips": 0,
         "switches_across_clips": 0, "gt_thing_frames": 0, "matched_thing_frames": 0}
    last: dict[tuple[str, int], tuple[int, int]] = {}  # (video, GT id) -> (frame, predicted id) of its last match
    for v, t, g, _, gi, pi, inter, union, gcat, pcat in _thing_pairs(gt_root, pred_dir):
        tp = np.array([gcat.get(a, -1) == pcat.get(b, -2) for a, b in zip(gi, pi)], bool) & (inter > 0.5 * union)
        match = dict(zip(gi[tp].tolist(), pi[tp].tolist()))  # GT id -> predicted id; IoU > 0.5 is one-to-one
        present = set(np.unique(g).tolist())
        n["gt_thing_frames"] += sum(int(k in present) for k in gcat)
        n["matched_thing_frames"] += len(match)
        for gid, pid in match.items():
            key = (v.video_id, gid)
            if key in last:
                where = "within_clip" if last[key][0] // clip_frames == t // clip_frames else "across_clips"
                n[f"transitions_{where}"] += 1
                n[f"switches_{where}"] += int(last[key][1] != pid)
            last[key] = (t, pid)
    for where in ("within_clip", "across_clips"):
        n[f"switch_rate_{where}"] = n[f"switches_{where}"] / n[f"transitions_{where}"] if n[f"transitions_{where}"] else float("nan")
    return n


def oracle_association(gt_root: Path, pred_dir: Path, out_dir: Path) -> dict:
    """What perfect association scores with the model's own per-frame masks: every predicted thing segment
    takes the identity of the GT thing of its class it overlaps most (in that frame); stuff and unmatched
    segments keep their ids. The gap between this and a cue's VPQ is all that any association rule could
    win back (Table 4d's headroom); the gap between its VPQ_6 and VPQ_1 is what segmentation alone loses."""
    import shutil

    import numpy as np

    from gvseg.metrics import panoptic_io as pio
    from gvseg.metrics import vipseg

    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(pred_dir, out_dir)
    pred = json.loads((pred_dir / "pred.json").read_text())
    frames = {a["video_id"]: a["annotations"] for a in pred["annotations"]}
    fresh: dict[tuple[str, int], int] = {}  # (video, GT id) -> oracle id (past every predicted id)
    for v, t, _, p, gi, pi, inter, _, gcat, pcat in _thing_pairs(gt_root, pred_dir):
        best: dict[int, tuple[int, int]] = {}  # predicted id -> (overlap, GT id)
        for a, b, k in zip(gi.tolist(), pi.tolist(), inter.tolist()):
            if a in gcat and gcat[a] == pcat.get(b, -2) and k > best.get(b, (0, 0))[0]:
                best[b] = (k, a)
        if not best:
            continue
        remap = {b: fresh.setdefault((v.video_id, a), 1 << 20 | len(fresh)) for b, (_, a) in best.items()}
        src, dst = np.array(list(remap), np.int64), np.array(list(remap.values()), np.int64)
        order = np.argsort(src)
        k = np.searchsorted(src[order], p).clip(0, len(src) - 1)
        hit = src[order][k] == p
        pio.write_id_png(out_dir / Path(v.pred_paths[t]).relative_to(pred_dir), np.where(hit, dst[order][k], p))
        for seg in frames[v.video_id][t]["segments_info"]:
            seg["id"] = remap.get(seg["id"], seg["id"])
    (out_dir / "pred.json").write_text(json.dumps(pred))
    gt_json = gt_root / "panoptic_gt_VIPSeg_val.json"
    m = vipseg.evaluate(gt_root, out_dir, gt_json=str(gt_json), gt_png_dir=str(gt_root / "panomasksRGB"),
                     with_stq=False, progress=False, workers=0)
    return {k: float(v) for k, v in m.items() if k.startswith("vpq_")}


def rescore_one(spec: dict) -> dict:
    """Score a finished run's saved weights again (post-processing or association settings changed)."""
    import torch

    from gvseg.checkpoint import load_model

    torch.set_num_threads(1)
    cfg = config(spec["task"], spec["overrides"])
    model = load_model(Path(spec["out"]) / "model.pt", cfg.model)  # a bare state dict (see run_one)
    return {"name": spec["name"], "metrics": score(cfg, model, spec)}


def plan(s: dict, data: dict[str, Path], work: Path) -> list[dict]:
    specs = []
    for variant, extra in VARIANTS.items():
        for seed in s["seeds"][: SEEDS_OF.get(variant)]:
            specs.append({"name": f"vps/{variant}/s{seed}", "task": "vps", "seed": seed,
                          "overrides": data_overrides("vps", data["vps"], s) + [f"train.seed={seed}",
                                                                               f"train.max_iters={s['steps']}"] + extra,
                          "cues": CUES if variant == "gvseg" else ("spa",),
                          "look_root": str(data["vps_look"]) if variant == "gvseg" else None})
    for task in ("vis", "vss", "evs"):
        specs.append({"name": f"{task}/gvseg/s0", "task": task, "seed": 0, "cues": ("spa",),
                      "overrides": data_overrides(task, data[task], s) + [f"train.max_iters={s['steps']}"]})
    for sp in specs:
        sp["overrides"].append(f"train.lr_steps=({int(s['steps'] * 5 / 6)},)")  # the debug recipes' 500 of 600
        sp["out"] = str(work / sp["name"].replace("/", "_"))
    return specs


# ----------------------------------------------------------------------------------------- summaries


def mean_sd(xs: list[float]) -> dict:
    xs = [x for x in xs if x == x]
    if not xs:
        return {"mean": float("nan"), "sd": float("nan"), "per_seed": []}
    return {"mean": statistics.fmean(xs), "sd": statistics.stdev(xs) if len(xs) > 1 else 0.0, "per_seed": xs}


def summarise(runs: list[dict], baselines: dict, s: dict) -> dict:
    by = {}
    for r in runs:
        by.setdefault(r["name"].rsplit("/", 1)[0], []).append(r)
    out: dict = {"runs": {}, "baselines": baselines, "targets": {}}
    for group, rs in sorted(by.items()):
        task = rs[0]["task"]
        keys = HEADLINES[task]
        out["runs"][group] = {k: mean_sd([r["metrics"]["spa"].get(k, float("nan")) for r in rs]) for k in keys}
        last = [r["history"][-1] for r in rs if r["history"]]
        out["runs"][group]["train_counters_last_log"] = {k: v for k, v in last[0].items() if k.startswith("mech/")} if last else {}
        out["runs"][group]["inference_counters"] = {k: v for k, v in rs[0]["metrics"]["spa"].items()
                                                    if k.startswith("mech_inference/")}
        out["runs"][group]["train_s"] = mean_sd([r["train_s"] for r in rs])
    g = {r["seed"]: r["metrics"] for r in runs if r["name"].startswith("vps/gvseg/")}
    if g:
        look = "look_" if all("look_spa" in m for m in g.values()) else ""  # results of older runs: plain only
        for prefix, key in ((look, "association_ablation_vpq6_thing"), ("", "association_ablation_plain_vpq6_thing")):
            out[key] = {c: mean_sd([m[prefix + c].get("vpq_6_thing", float("nan")) for m in g.values()])
                        for c in CUES}
            out[key]["switch_rate_across_clips"] = {c: mean_sd([m[prefix + c]["idsw"]["switch_rate_across_clips"]
                                                                for m in g.values() if "idsw" in m[prefix + c]])
                                                    for c in CUES}
            out[key]["switches_across_clips_of_transitions"] = {  # summed over seeds: how many events there were
                c: [sum(m[prefix + c]["idsw"][f"{k}_across_clips"] for m in g.values() if "idsw" in m[prefix + c])
                    for k in ("switches", "transitions")] for c in CUES}
            out[key]["spa_minus_appearance"] = mean_sd([m[prefix + "spa"]["vpq_6_thing"]
                                                        - m[prefix + "appearance"]["vpq_6_thing"] for m in g.values()])
            out[key]["val_set"] = "lookalike" if prefix else "plain"
            if all(prefix + "oracle" in m for m in g.values()):  # the headroom any association rule has
                out[key]["oracle"] = mean_sd([m[prefix + "oracle"]["vpq_6_thing"] for m in g.values()])
                out[key]["oracle_minus_appearance"] = mean_sd([m[prefix + "oracle"]["vpq_6_thing"]
                                                               - m[prefix + "appearance"]["vpq_6_thing"] for m in g.values()])
                out[key]["oracle_minus_spa"] = mean_sd([m[prefix + "oracle"]["vpq_6_thing"]
                                                        - m[prefix + "spa"]["vpq_6_thing"] for m in g.values()])
                out[key]["oracle_retention_vpq6_over_vpq1"] = mean_sd([m[prefix + "oracle"]["vpq_6_thing"]
                                                                       / m[prefix + "oracle"]["vpq_1_thing"]
                                                                       for m in g.values() if m[prefix + "oracle"]["vpq_1_thing"]])
    for variant in sorted({r["name"].split("/")[1] for r in runs if r["task"] == "vps"} - {"gvseg"}):
        a = {r["seed"]: r["metrics"]["spa"] for r in runs if r["name"].startswith("vps/gvseg/")}
        b = {r["seed"]: r["metrics"]["spa"] for r in runs if r["name"].startswith(f"vps/{variant}/")}
        seeds = sorted(set(a) & set(b))
        out[f"ablation_gvseg_minus_{variant}"] = {
            k: mean_sd([a[i][k] - b[i][k] for i in seeds]) for k in ("vpq_mean_1246", "vpq_6_thing", "vpq_6_stuff", "stq")}
    vps = out["runs"].get("vps/gvseg")
    if vps:
        v1, v6 = vps["vpq_1_thing"]["mean"], vps["vpq_6_thing"]["mean"]
        cf6 = baselines.get("vps", {}).get("copy_first", {}).get("vpq_6_thing", float("nan"))
        t = out["targets"]
        t["thing_vpq1_ge_40"] = {"value": v1, "met": v1 >= 40}
        plain = out.get("association_ablation_plain_vpq6_thing", {})
        t["thing_retention_vpq6_over_vpq1_ge_0.8"] = {
            "value": v6 / v1 if v1 else float("nan"), "met": bool(v1) and v6 / v1 >= 0.8,
            # the same masks with perfect association: what segmentation alone allows
            "with_oracle_association": plain.get("oracle_retention_vpq6_over_vpq1", {}).get("mean", float("nan"))}
        t["beats_copy_first_on_thing_vpq6"] = {"value": v6, "copy_first": cf6, "met": v6 > cf6}
        d = out["association_ablation_vpq6_thing"]["spa_minus_appearance"]["mean"]
        room = out["association_ablation_vpq6_thing"].get("oracle_minus_appearance", {}).get("mean", float("nan"))
        t["spa_ge_appearance_plus_3_thing_vpq6"] = {"value": d, "met": d >= 3, "oracle_minus_appearance": room}
    return out


# ------------------------------------------------------------------------------------------------ plot


def plot(runs: list[dict], summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(2, 2, figsize=(13, 9))
    for r in runs:
        h = r["history"]
        steps = [x["step"] for x in h]
        ax[0, 0].plot(steps, [x.get("loss", math.nan) for x in h], label=r["name"], lw=1, marker=".", ms=3)
        if r["task"] == "vps":  # thing queries and thing TCL anchors are VPS's (VIS: every query is a thing)
            ax[0, 1].plot(steps, [x.get("mech/tcl/thing_anchor_pos_frac", math.nan) for x in h], label=r["name"],
                          lw=1, marker=".", ms=3)
    gated = [x.get("mech/match/thing_on_thing_frac", math.nan) for r in runs if r["task"] == "vps" for x in r["history"]]
    ax[0, 0].set(title="training loss", xlabel="step", yscale="log")
    ax[0, 1].set(title="TCL: thing anchors with >= 1 positive (Eq. 10)", xlabel="step", ylim=(0, 1.05))
    # association (Table 4d): identity switches at clip boundaries, per cue, on both val sets
    for i, key in enumerate(("association_ablation_plain_vpq6_thing", "association_ablation_vpq6_thing")):
        counts = summary.get(key, {}).get("switches_across_clips_of_transitions", {})
        rates = [100 * counts[c][0] / counts[c][1] if counts.get(c, [0, 0])[1] else math.nan for c in CUES]
        ax[1, 0].bar([k + 0.4 * i for k in range(len(CUES))], rates, 0.4,
                     label=f"{summary[key]['val_set']} val" if key in summary else key)
    ax[1, 0].set(title="identity switches across clip boundaries (Eq. 6 cues; gated matching: thing GT on "
                       f"thing queries {min(gated, default=math.nan):.2f})",
                 xticks=[k + 0.2 for k in range(len(CUES))], xticklabels=CUES, ylabel="per 100 matched transitions")
    ax[1, 0].title.set_fontsize(9)
    ks = (1, 2, 4, 6)
    bars = {name: [summary["runs"][name][f"vpq_{k}_thing"]["mean"] if f"vpq_{k}_thing" in summary["runs"][name]
                   else math.nan for k in ks] for name in summary["runs"] if name.startswith("vps/")}
    oracle = [r["metrics"]["oracle"] for r in runs if r["name"].startswith("vps/gvseg/") and "oracle" in r["metrics"]]
    if oracle:  # vps/gvseg's own masks, perfectly associated
        bars["vps/gvseg, oracle association"] = [statistics.fmean(o[f"vpq_{k}_thing"] for o in oracle) for k in ks]
    for b, res in summary["baselines"].get("vps", {}).items():
        bars[f"baseline {b}"] = [res.get(f"vpq_{k}_thing", math.nan) for k in ks]
    width = 0.8 / max(len(bars), 1)
    for i, (name, vals) in enumerate(bars.items()):
        ax[1, 1].bar([k + i * width for k in range(len(ks))], vals, width, label=name)
    ax[1, 1].set(title="VPS thing VPQ^k (val)", xticks=[k + 0.4 for k in range(len(ks))],
                 xticklabels=[f"k={k}" for k in ks], ylabel="VPQ (%)")
    for a in ax.flat:
        a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes: check the script end to end")
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "data" / "learning"))
    p.add_argument("--replot", metavar="JSON", help="re-derive the summary and plot from a result file (no runs)")
    p.add_argument("--rescore", action="store_true",
                   help="score the saved weights of the last run again with the current recipes' inference "
                        "settings (no training; histories and training times are kept)")
    args = p.parse_args(argv)
    if args.replot:
        return replot(Path(args.replot))

    from common import machine
    from tqdm import tqdm

    from gvseg.baselines import TASK_BASELINES
    from gvseg.data.pipeline import build_records
    from gvseg.evaluation import evaluate_baseline

    s = sizes(args.smoke)
    tag = "smoke" if args.smoke else "cpu"
    work = Path(args.work) / tag
    t0 = time.time()
    data = {task: work / f"data_{task}" for task in RECIPES} | {"vps_look": work / "data_vps_look"}
    task_of = {"vps_look": "vps"}
    for name, root in data.items():  # write every dataset once, before the workers race for it
        cfg = config(task_of.get(name, name), data_overrides(task_of.get(name, name), root, s, name == "vps_look"))
        build_records(cfg.data, cfg.data.train_split)
    baselines = {}
    for name, root in data.items():
        task = task_of.get(name, name)
        cfg = config(task, data_overrides(task, root, s, name == "vps_look"))
        baselines[name] = {b: {k: v for k, v in evaluate_baseline(cfg, b, work / f"baseline_{name}_{b}").items()
                               if not k.startswith("mech")} for b in TASK_BASELINES[task]}
    specs = plan(s, data, work / "runs")
    out = Path(args.out)
    runs = []
    ctx = mp.get_context("spawn")  # fresh interpreters: one thread each, no inherited state
    with cf.ProcessPoolExecutor(max_workers=args.jobs, mp_context=ctx) as pool:
        fn = rescore_one if args.rescore else run_one
        futures = [pool.submit(fn, sp) for sp in specs]
        for f in tqdm(cf.as_completed(futures), total=len(futures), desc="runs", unit="run"):
            runs.append(f.result())
    wall = time.time() - t0
    if args.rescore:  # keep the training record of the run that made the weights
        prev = json.loads((out / f"learning_{tag}.json").read_text())
        before = {r["name"]: r for r in prev["runs_detail"]}
        runs = [{**before[r["name"]], "metrics": r["metrics"], "rescored": True} for r in runs]
        wall = prev.get("wall_s", float("nan"))  # the benchmark's own time: training and scoring
    runs.sort(key=lambda r: r["name"])
    summary = summarise(runs, baselines, s)
    out.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": "learning", "machine": machine(), "settings": {**s, "jobs": args.jobs,
              "recipes": RECIPES, "variants": VARIANTS, "rescored": args.rescore}, "wall_s": wall,
              **summary,
              "runs_detail": [{k: v for k, v in r.items() if k != "history"} | {"history": r["history"]} for r in runs]}
    (out / f"learning_{tag}.json").write_text(json.dumps(result, indent=1, default=float))
    plot(runs, summary, out / f"learning_{tag}.png")
    print(json.dumps({"wall_s": round(result["wall_s"]), "targets": summary["targets"],
                      **{g: {k: round(v["mean"], 3) for k, v in r.items() if isinstance(v, dict) and "mean" in v}
                         for g, r in summary["runs"].items()}}, indent=1, default=float))
    return 0


def replot(path: Path) -> int:
    """Summary and plot again from the runs a result file holds (e.g. after the summary code changed)."""
    result = json.loads(path.read_text())
    runs = result["runs_detail"]
    summary = summarise(runs, result["baselines"], result["settings"])
    result.update(summary)
    path.write_text(json.dumps(result, indent=1, default=float))
    plot(runs, summary, path.with_suffix(".png"))
    print(json.dumps(summary["targets"], indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
