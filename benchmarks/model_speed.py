"""GvSeg model speed, compared in the same run with Hugging Face Mask2Former (random weights, offline).

  (a) train step (forward + loss + backward + AdamW step), clips of 3 x 640 x 640, batch 4 clips, bf16
      autocast: frames/s and peak GPU memory. HF Mask2Former (R50, 100 queries, ``decoder_layers=10``, which
      HF counts with the initial prediction: 9 masked-attention layers) trains on the same 12 frames as images.
  (b) inference at 720p (720 x 1280): frames/s of the bare forward, and of ``predict_video`` end to end
      (post-processing + tracking + CPU hand-off) on a short video. HF: forward on the same frames.
  (c) shape-position descriptor of 100 masks at 720 x 1280 (GT resolution, the training-time call): ms,
      and as a share of one GvSeg inference frame.

Usage (GPU machine): ``python benchmarks/model_speed.py`` ; CPU check: ``python benchmarks/model_speed.py --smoke``
(toy sizes, debug model). Writes JSON to ``$OUT/model_speed.json`` when ``$OUT`` is set, else
``benchmarks/results/model_speed.json``, naming the device. Without ``transformers`` the HF rows are skipped
with a reason; nothing is ever downloaded (``HF_HUB_OFFLINE=1``).

Performance on a GPU: not measured yet. ``benchmarks/gpu_suite.py`` measures this and every other issue-#16 GPU
target in one prepared device run (its docstring has the command); quote only numbers from its JSONs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # gpu_suite

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gvseg.config import LossConfig, ModelConfig  # noqa: E402
from gvseg.losses.matcher import HungarianMatcher
from gvseg.model.gvseg import build_gvseg  # noqa: E402
from gvseg.recipes import unit_model_config
from gvseg.structures import Clip, Targets  # noqa: E402


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def peak_gib(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None


def timed(fn, dev: torch.device, warmup: int, iters: int) -> float:
    """Mean seconds per call after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(dev)
    return (time.perf_counter() - t0) / max(iters, 1)


def synthetic_clip(b: int, t: int, h: int, w: int, k: int, num_classes: int, dev: torch.device) -> Clip:
    g = torch.Generator().manual_seed(0)
    targets = []
    for _ in range(b):
        masks = torch.zeros(k, t, h, w, dtype=torch.bool)
        for j in range(k):  # k random rectangles
            y0, x0 = int(torch.randint(0, h // 2, (1,), generator=g)), int(torch.randint(0, w // 2, (1,), generator=g))
            masks[j, :, y0:y0 + h // 4, x0:x0 + w // 4] = True
        labels = torch.randint(0, num_classes, (k,), generator=g)
        targets.append(Targets(masks, labels, torch.arange(1, k + 1), labels < num_classes // 2).to(dev))
    frames = torch.randn(b, t, 3, h, w, generator=g).to(dev)
    return Clip(frames, torch.tensor([[h, w]] * b, device=dev), torch.arange(t).repeat(b, 1).to(dev),
                [f"v{i}" for i in range(b)], targets)


# ------------------------------------------------------------------------------------------------ GvSeg


def gvseg_train(cfg: ModelConfig, loss_cfg: LossConfig, clip: Clip, dev: torch.device, amp: bool,
                warmup: int, iters: int) -> dict:
    from gvseg.losses.criterion import SetCriterion

    model = build_gvseg(cfg, HungarianMatcher(loss_cfg)).to(dev).train()
    crit = SetCriterion(loss_cfg, cfg.num_classes).to(dev)
    crit.add_aux_weights(cfg.decoder.num_layers)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step():
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            out = model(clip)
            losses = crit(out, clip.targets, out["indices"])
            total = crit.total(losses)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()

    reset_peak(dev)
    sec = timed(step, dev, warmup, iters)
    b, t = clip.frames.shape[:2]
    return {"sec_per_step": sec, "frames_per_s": b * t / sec, "peak_mem_gib": peak_gib(dev),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def gvseg_infer(cfg: ModelConfig, h: int, w: int, dev: torch.device, amp: bool, warmup: int, iters: int,
                video_frames: int) -> tuple[dict, float]:
    from gvseg.video.stream import predict_video

    model = build_gvseg(cfg).to(dev).eval()
    t = cfg.association.clip_frames
    frames = torch.randn(1, t, 3, h, w, device=dev)
    clip = Clip(frames, torch.tensor([[h, w]], device=dev), torch.arange(t)[None].to(dev), ["v"])

    @torch.no_grad()
    def fwd():
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            model(clip)

    reset_peak(dev)
    sec = timed(fwd, dev, warmup, iters)
    res = {"forward_frames_per_s": t / sec, "forward_peak_mem_gib": peak_gib(dev)}
    rng = np.random.default_rng(0)
    video = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(video_frames)]
    for _ in predict_video(model, video[: 2 * t], cfg, device=dev, amp=amp, progress=False):
        pass  # warm-up
    sync(dev)
    t0 = time.perf_counter()
    n = sum(1 for _ in predict_video(model, video, cfg, device=dev, amp=amp, progress=False))
    sync(dev)
    res["predict_video_frames_per_s"] = n / (time.perf_counter() - t0)
    return res, sec / t


def descriptor_bench(cfg: ModelConfig, h: int, w: int, n: int, dev: torch.device, warmup: int, iters: int) -> dict:
    from gvseg.model.descriptor import compute_descriptor

    g = torch.Generator().manual_seed(0)
    cy, cx = torch.randint(0, h, (n,), generator=g), torch.randint(0, w, (n,), generator=g)
    ry, rx = torch.randint(8, h // 4, (n,), generator=g), torch.randint(8, w // 4, (n,), generator=g)
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    masks = (((ys - cy[:, None, None]) / ry[:, None, None]) ** 2
             + ((xs - cx[:, None, None]) / rx[:, None, None]) ** 2 <= 1).to(dev)  # n ellipses
    canvas = torch.tensor([[h, w]] * n, device=dev, dtype=torch.float32)
    sec = timed(lambda: compute_descriptor(masks, canvas, cfg.descriptor, cfg.decoder.dim), dev, warmup, iters)
    return {"num_masks": n, "size": [h, w], "ms": sec * 1e3}


# --------------------------------------------------------------------------------------------------- HF


def hf_model(smoke: bool, num_classes: int):
    """The peer, built as the GPU suite builds it (one definition: ``gpu_suite.hf_model``)."""
    from gpu_suite import hf_model as build

    return build(smoke, num_classes)[0]


def hf_train(smoke: bool, clip: Clip, num_classes: int, dev: torch.device, amp: bool, warmup: int, iters: int) -> dict:
    model = hf_model(smoke, num_classes).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    b, t = clip.frames.shape[:2]
    pixel_values = clip.frames.flatten(0, 1)  # images
    mask_labels = [tg.masks[:, f].float() for tg in clip.targets for f in range(t)]
    class_labels = [tg.labels for tg in clip.targets for _ in range(t)]

    def step():
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    reset_peak(dev)
    sec = timed(step, dev, warmup, iters)
    return {"sec_per_step": sec, "frames_per_s": b * t / sec, "peak_mem_gib": peak_gib(dev),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def hf_infer(smoke: bool, num_classes: int, h: int, w: int, t: int, dev: torch.device, amp: bool,
             warmup: int, iters: int) -> dict:
    model = hf_model(smoke, num_classes).to(dev).eval()
    x = torch.randn(t, 3, h, w, device=dev)

    @torch.no_grad()
    def fwd():
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            model(pixel_values=x)

    reset_peak(dev)
    sec = timed(fwd, dev, warmup, iters)
    return {"forward_frames_per_s": t / sec, "forward_peak_mem_gib": peak_gib(dev)}


def guarded(name: str, fn, results: dict) -> None:
    try:
        results[name] = fn()
    except Exception as e:  # a failing row must not lose the others
        results[name] = {"error": f"{type(e).__name__}: {e}"}
    print(f"{name}: {json.dumps(results[name])}", flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes, debug model")
    ap.add_argument("--iters", type=int, default=0)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)

    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    amp = dev.type == "cuda"
    if args.smoke:
        cfg = unit_model_config("vps")
        loss_cfg = LossConfig(num_points=256)
        train_shape, infer_hw, desc_hw, n_desc, k = (1, 3, 64, 64), (96, 160), (96, 160), 10, 3
        warmup, iters, video = 1, args.iters or 2, 6
    else:
        cfg = ModelConfig(task="vps")  # paper defaults: R50, msdeform pixel decoder, 9 layers, 100 queries
        loss_cfg = LossConfig()
        train_shape, infer_hw, desc_hw, n_desc, k = (4, 3, 640, 640), (720, 1280), (720, 1280), 100, 10
        warmup, iters, video = 3, args.iters or 10, 30

    results: dict = {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({_platform.processor() or 'unknown'})",
        "torch": torch.__version__, "smoke": args.smoke, "amp_bf16": amp,
        "train_clip": {"batch": train_shape[0], "frames": train_shape[1], "size": list(train_shape[2:])},
        "infer_size": list(infer_hw),
    }
    b, t, h, w = train_shape
    clip = synthetic_clip(b, t, h, w, k, cfg.num_classes, dev)
    guarded("gvseg_train", lambda: gvseg_train(cfg, loss_cfg, clip, dev, amp, warmup, iters), results)
    per_frame: dict = {}

    def infer():
        res, sec = gvseg_infer(cfg, *infer_hw, dev, amp, warmup, iters, video)
        per_frame["sec"] = sec
        return res

    guarded("gvseg_infer", infer, results)

    def desc():
        res = descriptor_bench(cfg, *desc_hw, n_desc, dev, warmup, iters)
        if "sec" in per_frame:
            res["share_of_infer_frame"] = res["ms"] / 1e3 / per_frame["sec"]
        return res

    guarded("descriptor", desc, results)

    try:
        import transformers  # noqa: F401

        results["transformers"] = transformers.__version__
        guarded("hf_mask2former_train", lambda: hf_train(args.smoke, clip, cfg.num_classes, dev, amp, warmup, iters), results)
        guarded("hf_mask2former_infer", lambda: hf_infer(args.smoke, cfg.num_classes, *infer_hw,
                                                         cfg.association.clip_frames, dev, amp, warmup, iters), results)
        for key, ours, theirs in (("train_speedup", "gvseg_train", "hf_mask2former_train"),
                                  ("infer_speedup", "gvseg_infer", "hf_mask2former_infer")):
            metric = "frames_per_s" if key == "train_speedup" else "forward_frames_per_s"
            if metric in results.get(ours, {}) and metric in results.get(theirs, {}):
                results[key] = results[ours][metric] / results[theirs][metric]
    except ImportError:
        results["hf_mask2former"] = {"skipped": "transformers is not installed"}
        print("hf_mask2former: skipped (transformers is not installed)")

    out_dir = Path(args.out or os.environ.get("OUT") or Path(__file__).resolve().parent / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "model_speed.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
