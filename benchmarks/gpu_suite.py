"""Every GPU target of issue #16 in one prepared run (one H200, one call, <= 8 minutes), one JSON per measurement.

The one command for the device machine (run from the repository root; nothing is downloaded, weights are random)::

    PYTHONUNBUFFERED=1 PYTHONPATH=platform HF_HUB_OFFLINE=1 timeout 560 python3 benchmarks/gpu_suite.py --out $OUT

(give the device call ``timeout_s=590``). With the Ray wheels carried (``bash ../shared/tools/gpu-wheels.sh .whl``,
``carry=[".whl"]``) prefix it with the install line of ``specs/stack.md`` and ``export PYTHONPATH=/tmp/site:$PWD/platform``
so that measurement 6 runs instead of being skipped. CPU check (tiny sizes, debug model, a few minutes on 2 cores)::

    PYTHONPATH=platform python benchmarks/gpu_suite.py --smoke --out /tmp/gpu_smoke [--no-peer]

Measurements (bf16 autocast on CUDA, variants interleaved round by round, ``--warmup`` untimed rounds then
``--repeats`` timed ones, every time taken between two ``torch.cuda.synchronize`` calls; medians reported, raw
seconds kept). Each writes ``<name>.json`` into ``--out``; ``summary.json`` collects the headline numbers and the
target checks, so the folder holds at most 8 files (the device tool returns 8):

  1. ``train_step``: ``gvseg.engine.train_step`` (forward + loss + backward + grad clip + AdamW) on 4 clips of
     3 x 640 x 640, key clip only (``gvseg``) and the full recipe with the reference clip + TCL (``gvseg_tcl``),
     vs HF ``Mask2FormerForUniversalSegmentation`` (ResNet-50, 100 queries, ``decoder_layers=10`` = 9
     masked-attention layers, random weights) training on the same 12 frames as images. frames/s and peak GPU
     memory. Targets: ``gvseg`` >= 1.3x HF frames/s, peak memory <= HF's.
  2. ``inference``: bare forward of one 3-frame clip at 720 x 1280 vs HF on the same 3 frames (target >= 1.5x);
     ``predict_video``: ``gvseg.predict.run_sources`` on a 720p video held in memory (association + the
     official VIPSeg writer: id PNGs + pred.json, into a temp dir), and ``video.stream.predict_video`` alone, no
     writer (target >= 40 frames/s end to end).
  3. ``descriptor``: ``compute_descriptor`` of 100 and 300 bool masks at 720 x 1280 (target <= 1 ms), the same
     100 as one code map (``compute_descriptor_coded``, the clip pipeline's targets), and the model's
     quarter-resolution call (100 masks at 180 x 320, ``downsample=1``) for reference.
  4. ``long_video``: GPU memory (allocated, peak, reserved) and host RSS sampled while streaming up to
     ``--long-frames`` (1000) synthetic 720p frames, generated on the fly, through ``run_sources`` with the
     official writer, the paper model at full size. Flat = the values at the last sample within a tolerance of
     those at frame 100. If the run would pass its time cap it stops early and says at which frame.
  5. ``compile``: ``torch.compile`` of ``model.decoder`` and ``model.pixel_decoder`` (inference forward, 720p
     clip): compile time (first call) and eager vs compiled speed-up. Runs in a child process killed after
     ``--compile-timeout-s`` so that it cannot eat the budget.
  6. ``data_feed``: Ray Data (``gvseg.runtime.ray_data``) clips/s with the VIPSeg training transform at
     640 x 640 crops (key + reference clip), against the clips/s that the train steps of (1) consume. Skipped,
     with the reason recorded, where ``ray`` is not importable (the GPU image has none).

Every measurement runs in its own try/except (an error is recorded with its traceback, the others go on). A
global budget (``--budget-s``, 420 s by default) skips what would start too late, with the reason. Every JSON
names the machine (GPU, driver, torch, CUDA, cuDNN, CPU, library versions), the settings and every raw timing.
The suite imports no ray, mlflow or pycocotools outside measurement 6; ``--no-peer`` (or ``GVSEG_NO_PEER=1``)
skips the HF rows as if ``transformers`` were missing.

Performance on a GPU: none of these numbers has been measured yet; they come from the first lent H200 run of
this script. Do not quote a GPU figure that is not in a JSON this script wrote.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import importlib.util
import json
import os
import platform as _platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

MiB, GiB = 2**20, 2**30
NAMES = ("train_step", "inference", "descriptor", "long_video", "compile", "data_feed")


# ------------------------------------------------------------------------------------------------ machine


def _driver() -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=False)
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except OSError:
        return None


def has_module(mod: str) -> bool:
    """Importable? (False also where an import hook refuses it.)"""
    try:
        return importlib.util.find_spec(mod) is not None
    except (ImportError, ValueError):
        return False


def _version(mod: str) -> str | None:
    if not has_module(mod):
        return None
    try:
        return getattr(__import__(mod), "__version__", "?")
    except Exception as e:  # a broken install is worth recording, not crashing over
        return f"import failed: {type(e).__name__}"


def machine(dev: torch.device) -> dict:
    """The machine every JSON names: GPU, driver, torch/CUDA/cuDNN, CPU, library versions, date."""
    cpu = _platform.processor() or _platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    out = {"device": str(dev), "gpu": None, "driver": None, "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "cpu": cpu, "cpu_count": os.cpu_count(), "host": _platform.node(), "python": _platform.python_version(),
           "numpy": np.__version__, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
           "loadavg_1m": round(os.getloadavg()[0], 2)}
    for mod in ("timm", "transformers", "cv2", "ray"):
        out[mod] = _version(mod) if mod != "ray" else (has_module("ray"))
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        out.update(gpu=torch.cuda.get_device_name(dev), driver=_driver(), capability=f"{p.major}.{p.minor}",
                   gpu_memory_gib=round(p.total_memory / GiB, 2), multiprocessors=p.multi_processor_count,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, cudnn_benchmark=torch.backends.cudnn.benchmark)
    return out


# ------------------------------------------------------------------------------------------------ timing


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed_call(fn: Callable[[], object], dev: torch.device) -> float:
    """Seconds of one call, between two device synchronisations."""
    sync(dev)
    t0 = time.perf_counter()
    fn()
    sync(dev)
    return time.perf_counter() - t0


def interleaved(fns: dict[str, Callable[[], object]], dev: torch.device, warmup: int, repeats: int,
                deadline: float | None = None, on_call: Callable[[str, float], None] | None = None) -> dict:
    """Round-robin timing: each round runs every variant once, in turn. Returns {name: [seconds, ...]} of the
    timed rounds (fewer than ``repeats`` only if ``deadline`` passed: the caller records it)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync(dev)
    raw: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            dt = timed_call(fn, dev)
            raw[k].append(dt)
            if on_call is not None:
                on_call(k, dt)
        if deadline is not None and time.monotonic() > deadline and len(raw[next(iter(fns))]) >= 1:
            break
    return raw


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def spread(xs: list[float]) -> dict:
    if not xs:
        return {}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def mem_now(dev: torch.device) -> dict:
    """GPU allocated / peak / reserved (GiB) and host RSS / high-water mark (MiB)."""
    host = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                host["rss_mib" if line.startswith("VmRSS") else "rss_peak_mib"] = int(line.split()[1]) / 1024
    if dev.type == "cuda":
        host.update(gpu_alloc_gib=torch.cuda.memory_allocated(dev) / GiB,
                    gpu_peak_gib=torch.cuda.max_memory_allocated(dev) / GiB,
                    gpu_reserved_gib=torch.cuda.memory_reserved(dev) / GiB)
    return host


def free_gpu(dev: torch.device) -> None:
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


class StepMemory:
    """Peak GPU memory of one model measured while other models sit on the device too.

    ``state`` = bytes the model, its optimiser state and gradients hold between steps (allocated after vs before
    building and one step); each timed call adds its own transient peak (max allocated during the call minus
    allocated at its start). ``peak = state + max transient``: what the model alone would peak at.
    """

    def __init__(self, dev: torch.device):
        self.dev, self.state, self.transient, self._base = dev, 0, 0, 0
        self._start = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0

    def built(self) -> None:
        if self.dev.type == "cuda":
            sync(self.dev)
            self.state = torch.cuda.memory_allocated(self.dev) - self._start

    def wrap(self, fn: Callable[[], object]) -> Callable[[], object]:
        if self.dev.type != "cuda":
            return fn

        def run():
            before = torch.cuda.memory_allocated(self.dev)
            torch.cuda.reset_peak_memory_stats(self.dev)
            fn()
            torch.cuda.synchronize(self.dev)
            self.transient = max(self.transient, torch.cuda.max_memory_allocated(self.dev) - before)

        return run

    def report(self) -> dict:
        if self.dev.type != "cuda":
            return {"peak_gib": None, "note": "no CUDA: memory not measured"}
        return {"peak_gib": (self.state + self.transient) / GiB, "state_gib": self.state / GiB,
                "transient_peak_gib": self.transient / GiB}


# ------------------------------------------------------------------------------------------------ settings


def settings(args) -> dict:
    """Sizes and models of a run: the paper model on CUDA, the debug model at toy sizes with --smoke."""
    from gvseg.config import ModelConfig
    from gvseg.recipes import unit_model_config

    if args.smoke:
        model = unit_model_config("vps", 4, 2)
        return dict(model=model, model_name="unit_model_config('vps') (test_resnet, fpn, width 32)",
                    train=(1, 3, 64, 64), targets_per_clip=3, num_points=256, infer_hw=(48, 80),
                    predict_frames=6, desc_hw=(72, 128), desc_quarter_hw=(18, 32), long_frames=args.long_frames or 12,
                    long_sample_every=3, long_check_frame=6, long_cap_s=60.0, data_hw=(80, 112), data_crop=(64, 64),
                    data_videos=2, data_frames=6, data_clips_per_video=1, warmup=1, desc_repeats=3)
    return dict(model=ModelConfig(task="vps"),
                model_name="ModelConfig(task='vps'): ResNet-50 (random init), msdeform pixel decoder (6 layers), "
                           "9 decoder layers, 100 instance queries, 124 VIPSeg classes",
                train=(4, 3, 640, 640), targets_per_clip=10, num_points=12544, infer_hw=(720, 1280),
                predict_frames=60, desc_hw=(720, 1280), desc_quarter_hw=(180, 320), long_frames=args.long_frames or 1000,
                long_sample_every=50, long_check_frame=100, long_cap_s=150.0, data_hw=(720, 1280),
                data_crop=(640, 640), data_videos=16, data_frames=8, data_clips_per_video=2, warmup=2,
                desc_repeats=50)


def full_config(s: dict, args):
    from gvseg.config import Config, DataConfig, LossConfig, TrainConfig

    return Config(name="gpu_suite", model=s["model"], data=DataConfig(format="vipseg", test_size=s["infer_hw"][0],
                                                                      max_size=max(1333, s["infer_hw"][1])),
                  loss=LossConfig(num_points=s["num_points"]), train=TrainConfig(amp="bf16" if args.amp else "off"))


def synthetic_clip(b: int, t: int, h: int, w: int, k: int, num_classes: int, num_things: int, dev: torch.device,
                   seed: int = 0, with_reference: bool = False):
    """B clips of random frames with K moving rectangles (things first), optionally a reference clip with the
    same track ids a few frames later (for TCL)."""
    from gvseg.structures import Clip, Targets

    g = torch.Generator().manual_seed(seed)
    y0 = torch.randint(0, h // 2, (b, k), generator=g)
    x0 = torch.randint(0, w // 2, (b, k), generator=g)
    labels = torch.randint(0, num_classes, (b, k), generator=g)

    def make(shift: int, start: int):
        targets = []
        for i in range(b):
            masks = torch.zeros(k, t, h, w, dtype=torch.bool)
            for j in range(k):
                for f in range(t):
                    dy, dx = (f + shift) * 2, (f + shift) * 3
                    yy, xx = int(min(y0[i, j] + dy, h - 2)), int(min(x0[i, j] + dx, w - 2))
                    masks[j, f, yy:yy + max(2, h // 4), xx:xx + max(2, w // 4)] = True
            targets.append(Targets(masks, labels[i], torch.arange(1, k + 1), labels[i] < num_things).to(dev))
        frames = torch.randn(b, t, 3, h, w, generator=g).to(dev)
        return Clip(frames, torch.tensor([[h, w]] * b, device=dev), (torch.arange(t) + start).repeat(b, 1).to(dev),
                    [f"v{i}" for i in range(b)], targets)

    clip = make(0, 0)
    if with_reference:
        clip.reference = make(5, 5)
    return clip


def peer_available(args) -> str | None:
    """None if the HF peer can run, else the reason it is skipped."""
    if args.no_peer:
        return "--no-peer / GVSEG_NO_PEER=1 was given"
    if not has_module("transformers"):
        return "transformers is not installed"
    return None


def hf_model(smoke: bool, num_classes: int):
    """HF Mask2Former, random weights, built offline. Full size: ResNet-50, 100 queries, decoder_layers=10 (HF
    counts the initial prediction: 9 masked-attention layers, as GvSeg's 9), 12544 training points."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, ResNetConfig

    if smoke:
        bb = ResNetConfig(depths=[1, 1, 1, 1], hidden_sizes=[16, 32, 64, 128], embedding_size=16, layer_type="basic",
                          out_features=["stage1", "stage2", "stage3", "stage4"])
        cfg = Mask2FormerConfig(backbone_config=bb, use_pretrained_backbone=False, num_queries=10, decoder_layers=4,
                                hidden_dim=32, mask_feature_size=32, feature_size=32, encoder_layers=1,
                                dim_feedforward=64, num_labels=num_classes, train_num_points=256)
    else:
        bb = ResNetConfig(depths=[3, 4, 6, 3], hidden_sizes=[256, 512, 1024, 2048], layer_type="bottleneck",
                          out_features=["stage1", "stage2", "stage3", "stage4"])
        cfg = Mask2FormerConfig(backbone_config=bb, use_pretrained_backbone=False, num_queries=100,
                                decoder_layers=10, num_labels=num_classes)
    model = Mask2FormerForUniversalSegmentation(cfg)
    layers = len(model.model.transformer_module.decoder.layers)
    desc = {"transformers": _version("transformers"), "backbone": "ResNet-50" if not smoke else "tiny ResNet",
            "num_queries": cfg.num_queries, "decoder_layers_config": cfg.decoder_layers,
            "masked_attention_layers": layers, "pixel_decoder_encoder_layers": cfg.encoder_layers,
            "train_num_points": cfg.train_num_points, "params_m": sum(p.numel() for p in model.parameters()) / 1e6}
    return model, desc


def hf_train_step(model, clip, lr: float, weight_decay: float, phases: dict | None = None):
    """One HF train step (forward with its loss, backward, AdamW) on the first clip's T frames as T images, as a
    callable. ``phases``: CPU seconds of the backward and the optimiser step are added under those keys."""
    import time

    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    t = clip.frames.shape[1]
    inputs = {"pixel_values": clip.frames[:1].flatten(0, 1),
              "mask_labels": [clip.targets[0].masks[:, f].float() for f in range(t)],
              "class_labels": [clip.targets[0].labels for _ in range(t)]}

    def step() -> None:
        loss = model(**inputs).loss
        opt.zero_grad(set_to_none=True)
        t0 = time.process_time()
        loss.backward()
        t1 = time.process_time()
        opt.step()
        if phases is not None:
            phases["backward"] += t1 - t0
            phases["optimizer"] += time.process_time() - t1

    return step


def autocast(dev: torch.device, amp: bool):
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp and dev.type == "cuda")


# ------------------------------------------------------------------------------------------------ 1. train


def m_train_step(ctx: dict) -> dict:
    from gvseg import engine

    args, s, dev = ctx["args"], ctx["s"], ctx["dev"]
    cfg = full_config(s, args)
    b, t, h, w = s["train"]
    mc = cfg.model
    clip = synthetic_clip(b, t, h, w, s["targets_per_clip"], mc.num_classes, mc.num_thing_classes, dev,
                          with_reference=True)
    key_only = synthetic_clip(b, t, h, w, s["targets_per_clip"], mc.num_classes, mc.num_thing_classes, dev)
    engine.seed_everything(0)
    fns, mems, info, losses = {}, {}, {}, {"gvseg": [], "gvseg_tcl": []}
    for name, c in (("gvseg", key_only), ("gvseg_tcl", clip)):
        mem = StepMemory(dev)
        parts = engine.build_parts(cfg, dev)
        res = engine.train_step(parts, c, cfg)  # one step so that optimiser state and grads exist
        mem.built()

        def step(parts=parts, c=c, name=name):
            r = engine.train_step(parts, c, cfg)
            losses[name].append(r.loss)

        fns[name], mems[name] = mem.wrap(step), mem
        info[name] = {"params_m": sum(p.numel() for p in parts.model.parameters()) / 1e6, "first_loss": res.loss,
                      "frames_per_step": b * t * (2 if c.reference is not None else 1)}
    peer = peer_available(args)
    if peer is None:
        try:  # a peer failure loses the peer rows only
            mem = StepMemory(dev)
            model, desc = hf_model(args.smoke, mc.num_classes)
            model = model.to(dev).train()
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
            pixel_values = key_only.frames.flatten(0, 1)
            mask_labels = [tg.masks[:, f].float() for tg in key_only.targets for f in range(t)]
            class_labels = [tg.labels for tg in key_only.targets for _ in range(t)]
            losses["hf"] = []

            def hf_step():
                with autocast(dev, args.amp):
                    loss = model(pixel_values=pixel_values, mask_labels=mask_labels, class_labels=class_labels).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses["hf"].append(float(loss.detach()))

            hf_step()
            mem.built()
            fns["hf"], mems["hf"], info["hf"] = mem.wrap(hf_step), mem, {**desc, "frames_per_step": b * t}
        except Exception as e:
            peer = f"HF peer failed: {type(e).__name__}: {e}"
            info["hf"] = {"error": peer, "traceback": traceback.format_exc()[-3000:]}
            losses.pop("hf", None)
            free_gpu(dev)

    raw = interleaved(fns, dev, s["warmup"], args.repeats, deadline=ctx["deadline"])
    result: dict = {}
    for k, xs in raw.items():
        sec = med(xs)
        result[k] = {"sec_per_step": sec, "frames_per_s": info[k]["frames_per_step"] / sec,
                     "clips_per_s": b / sec, **mems[k].report()}
    if "hf" in result:
        ours, theirs = result["gvseg"], result["hf"]
        result["speedup_vs_hf"] = ours["frames_per_s"] / theirs["frames_per_s"]
        result["target_speedup"] = 1.3
        result["meets_speed_target"] = result["speedup_vs_hf"] >= 1.3
        if ours["peak_gib"] is not None:
            result["memory_ratio_vs_hf"] = ours["peak_gib"] / theirs["peak_gib"]
            result["meets_memory_target"] = ours["peak_gib"] <= theirs["peak_gib"]
    ctx["train_clips_per_s"] = {k: result[k]["clips_per_s"] for k in ("gvseg", "gvseg_tcl")}
    return {"settings": {"clip": {"batch_clips": b, "frames": t, "height": h, "width": w},
                         "targets_per_clip": s["targets_per_clip"], "loss_points": s["num_points"],
                         "model": s["model_name"], "amp_bf16": args.amp and dev.type == "cuda",
                         "optimizer": "AdamW lr 1e-4 wd 0.05 (GvSeg: backbone x0.1, grad clip 0.01, engine.train_step)",
                         "variants": {"gvseg": f"engine.train_step, key clip only (what HF sees: the same {b * t} "
                                               "frames)",
                                      "gvseg_tcl": "engine.train_step with the reference clip: the full recipe "
                                                   "(reference forward + its set losses + TCL); frames_per_s counts "
                                                   "key + reference frames",
                                      "hf": f"Mask2FormerForUniversalSegmentation on the {b * t} frames as images"},
                         "memory": StepMemory.__doc__.strip().replace("\n    ", " "),
                         "warmup_rounds": s["warmup"], "repeats": args.repeats, "order": list(fns)},
            "peer": info.get("hf") or {"skipped": peer}, "models": info,
            "raw": {"sec_per_step": raw, "losses": losses}, "result": result}


# ------------------------------------------------------------------------------------------------ 2. inference


def synthetic_video(n: int, h: int, w: int, seed: int = 0):
    """A generator of n RGB uint8 frames: a fixed texture with a few moving coloured blocks (cheap per frame)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    blocks = [(int(rng.integers(0, h)), int(rng.integers(0, w)), rng.integers(0, 255, 3, dtype=np.uint8),
               int(rng.integers(-6, 7)), int(rng.integers(-6, 7))) for _ in range(6)]
    bh, bw = max(2, h // 6), max(2, w // 6)
    for i in range(n):
        f = base.copy()
        for y, x, c, vy, vx in blocks:
            yy, xx = (y + vy * i) % max(1, h - bh), (x + vx * i) % max(1, w - bw)
            f[yy:yy + bh, xx:xx + bw] = c
        yield f


def e2e_runner(model, cfg, dev: torch.device, frames_fn: Callable, n: int | None, out_dir: Path, h: int, w: int,
               name: str = "synthetic720p"):
    """``gvseg.predict.run_sources`` on one in-memory video, official writer only."""
    from gvseg.predict import Source, run_sources
    from gvseg.writers import VideoInfo

    src = Source(VideoInfo(name, h, w, None, 30.0), frames_fn, None, n, name)
    return run_sources(model, cfg, "vps", [src], out_dir=out_dir, formats=("official",), device=dev, progress=False)


def m_inference(ctx: dict) -> dict:
    from gvseg.engine import seed_everything
    from gvseg.model.gvseg import build_gvseg
    from gvseg.structures import Clip
    from gvseg.video.stream import predict_video

    args, s, dev = ctx["args"], ctx["s"], ctx["dev"]
    cfg = full_config(s, args)
    h, w = s["infer_hw"]
    t = cfg.model.association.clip_frames
    seed_everything(0)
    free_gpu(dev)
    mem_gvseg = StepMemory(dev)  # baseline before the weights: its peak includes them
    model = build_gvseg(cfg.model).to(dev).eval()
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(1, t, 3, h, w, generator=g).to(dev)
    clip = Clip(frames, torch.tensor([[h, w]], device=dev), torch.arange(t)[None].to(dev), ["v"])
    fns, mems = {}, {}

    @torch.no_grad()
    def ours():
        with autocast(dev, args.amp):
            model(clip)

    mems["gvseg"] = mem_gvseg
    mems["gvseg"].built()
    fns["gvseg"] = mems["gvseg"].wrap(ours)
    peer = peer_available(args)
    desc = {"skipped": peer}
    if peer is None:
        try:  # a peer failure loses the peer rows only
            mems["hf"] = StepMemory(dev)
            hf, desc = hf_model(args.smoke, cfg.model.num_classes)
            hf = hf.to(dev).eval()
            mems["hf"].built()
            x = frames[0]

            @torch.no_grad()
            def theirs():
                with autocast(dev, args.amp):
                    hf(pixel_values=x)

            theirs()  # fails here, not in the timed rounds
            fns["hf"] = mems["hf"].wrap(theirs)
        except Exception as e:
            peer = f"HF peer failed: {type(e).__name__}: {e}"
            desc = {"error": peer, "traceback": traceback.format_exc()[-3000:]}
            fns.pop("hf", None)
            mems.pop("hf", None)
            free_gpu(dev)

    raw_fwd = interleaved(fns, dev, s["warmup"], args.repeats, deadline=ctx["deadline"])
    result: dict = {"forward": {k: {"sec_per_clip": med(v), "frames_per_s": t / med(v), **mems[k].report()}
                                for k, v in raw_fwd.items()}}
    if "hf" in raw_fwd:
        result["forward"]["speedup_vs_hf"] = med(raw_fwd["hf"]) / med(raw_fwd["gvseg"])
        result["forward"]["target_speedup"] = 1.5
        result["forward"]["meets_target"] = result["forward"]["speedup_vs_hf"] >= 1.5
    fns.clear()
    mems.clear()
    hf = None  # noqa: F841 (frees the peer's weights before the end-to-end runs)
    free_gpu(dev)

    # end to end: frames decoded in memory (no video codec), association, official VIPSeg writer
    n = s["predict_frames"]
    video = list(synthetic_video(n, h, w, seed=2))
    tmp = Path(tempfile.mkdtemp(prefix="gvseg_gpu_suite_"))
    runs = {"e2e_writer": [], "predict_video": []}
    counts: dict = {}
    try:
        def e2e():
            summary = e2e_runner(model, cfg, dev, lambda: iter(video), n, tmp / "e2e", h, w)
            counts["e2e_writer"] = summary["frames"]

        def bare():
            counts["predict_video"] = sum(1 for _ in predict_video(model, video, cfg.model, "vps", device=dev,
                                                                  amp=args.amp, progress=False))

        # warm-up: one short run of each (cudnn autotune, allocator), then interleaved timed runs over the video
        for _ in predict_video(model, video[: 2 * t], cfg.model, "vps", device=dev, amp=args.amp, progress=False):
            pass
        e2e_runner(model, cfg, dev, lambda: iter(video[: 2 * t]), 2 * t, tmp / "warm", h, w)
        raw_e2e = interleaved({"e2e_writer": e2e, "predict_video": bare}, dev, 0, args.repeats,
                              deadline=ctx["deadline"])
        runs = raw_e2e
        written = sorted(p.relative_to(tmp / "e2e").as_posix() for p in (tmp / "e2e").rglob("*") if p.is_file())
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    fps = {k: counts[k] / med(v) for k, v in runs.items() if v}
    result["predict"] = {"frames": n, "frames_per_s": fps, "target_fps": 40.0,
                         "meets_target": fps.get("e2e_writer", 0.0) >= 40.0,
                         "official_files_written": len(written), "official_files_sample": written[:3]}
    return {"settings": {"size": [h, w], "clip_frames": t, "clip_overlap": cfg.model.association.clip_overlap,
                         "model": s["model_name"], "amp_bf16": args.amp and dev.type == "cuda",
                         "forward": "one clip of T frames, eval mode (pred_descriptors included); HF: the same T "
                                    "frames as a batch of images, bare forward, no post-processing",
                         "predict": {"e2e_writer": "gvseg.predict.run_sources: resize check, predict_video "
                                                   "(post-processing + association), official VIPSeg writer "
                                                   "(pan_pred PNGs + pred.json) in a temp dir; frames in memory, "
                                                   "no codec",
                                     "predict_video": "gvseg.video.stream.predict_video alone, no writer"},
                         "video": f"{n} synthetic frames (fixed texture + moving blocks), random weights",
                         "warmup_rounds": s["warmup"], "repeats": args.repeats},
            "peer": desc, "raw": {"forward_sec_per_clip": raw_fwd, "predict_sec_per_video": runs}, "result": result}


# ------------------------------------------------------------------------------------------------ 3. descriptor


def ellipses(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cy, cx = torch.rand(n, generator=g) * h, torch.rand(n, generator=g) * w
    ry, rx = 2 + torch.rand(n, generator=g) * h / 4, 2 + torch.rand(n, generator=g) * w / 4
    yy = torch.arange(h, dtype=torch.float32)[None, :, None]
    xx = torch.arange(w, dtype=torch.float32)[None, None, :]
    return ((yy - cy[:, None, None]) / ry[:, None, None]) ** 2 + ((xx - cx[:, None, None]) / rx[:, None, None]) ** 2 <= 1


def m_descriptor(ctx: dict) -> dict:
    from gvseg.model.descriptor import compute_descriptor, compute_descriptor_coded

    args, s, dev = ctx["args"], ctx["s"], ctx["dev"]
    dcfg, d = s["model"].descriptor, s["model"].decoder.dim
    h, w = s["desc_hw"]
    qh, qw = s["desc_quarter_hw"]
    fns = {}
    for n in (100, 300):
        m = ellipses(n, h, w, seed=n).to(dev)
        canvas = torch.tensor([[h, w]] * n, device=dev)
        fns[f"gt_{n}_masks"] = lambda m=m, canvas=canvas: compute_descriptor(m, canvas, dcfg, d)
    # the same 100 ellipses painted into one uint8 code map (void 255), as the clip pipeline hands targets over
    code = torch.full((h, w), 255, dtype=torch.uint8)
    for k, mk in enumerate(ellipses(100, h, w, seed=100)):
        code[mk] = k
    code, tube_codes, c100 = code.to(dev), torch.arange(100, dtype=torch.uint8, device=dev), canvas[:100]
    fns["gt_100_coded"] = lambda: compute_descriptor_coded([code], [tube_codes], c100, dcfg, d)
    q = ellipses(100, qh, qw, seed=7).to(dev)
    qc = torch.tensor([[qh, qw]] * 100, device=dev)
    fns["pred_quarter_100_masks"] = lambda: compute_descriptor(q, qc, dcfg, d, downsample=1)
    repeats = max(args.repeats, s["desc_repeats"])
    raw = interleaved(fns, dev, max(3, s["warmup"]), repeats, deadline=ctx["deadline"])
    result = {k: {"median_ms": med(v) * 1e3, "min_ms": min(v) * 1e3, "max_ms": max(v) * 1e3} for k, v in raw.items()}
    for k in ("gt_100_masks", "gt_300_masks", "gt_100_coded"):
        result[k]["target_ms"] = 1.0
        result[k]["meets_target"] = result[k]["median_ms"] <= 1.0
    return {"settings": {"size": [h, w], "quarter_size": [qh, qw], "masks": "random filled ellipses, bool",
                         "config": {k: getattr(dcfg, k) for k in ("angle_bins", "radius_bins", "num_points",
                                                                   "contour_stride")},
                         "d_model": d, "warmup_rounds": max(3, s["warmup"]), "repeats": repeats,
                         "timing": "each call between two synchronisations (the call has one host sync of its own: "
                                   "the nonzero listing contour pixels)"},
            "raw": {"sec_per_call": raw}, "result": result}


# ------------------------------------------------------------------------------------------------ 4. long video


def m_long_video(ctx: dict) -> dict:
    from gvseg.engine import seed_everything
    from gvseg.model.gvseg import build_gvseg

    args, s, dev = ctx["args"], ctx["s"], ctx["dev"]
    cfg = full_config(s, args)
    h, w = s["infer_hw"]
    n_max, every, check = s["long_frames"], s["long_sample_every"], s["long_check_frame"]
    cap = min(s["long_cap_s"], max(10.0, ctx["deadline"] - time.monotonic() - 30.0))
    seed_everything(0)
    model = build_gvseg(cfg.model).to(dev).eval()
    free_gpu(dev)
    samples: list[dict] = []
    state = {"stopped_at": None, "t0": 0.0}

    def frames():
        for i, f in enumerate(synthetic_video(n_max, h, w, seed=3)):
            if i % every == 0 and i > 0:
                sync(dev)
                samples.append({"frame": i, "elapsed_s": time.perf_counter() - state["t0"], **mem_now(dev)})
                print(f"  long_video: frame {i} {json.dumps({k: round(v, 3) for k, v in samples[-1].items()})}",
                      flush=True)
                if time.perf_counter() - state["t0"] > cap and i >= check:
                    state["stopped_at"] = i
                    return
            yield f

    tmp = Path(tempfile.mkdtemp(prefix="gvseg_gpu_long_"))
    try:
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        before = mem_now(dev)
        state["t0"] = time.perf_counter()
        summary = e2e_runner(model, cfg, dev, frames, n_max, tmp, h, w, name="long")
        sync(dev)
        after = {"frame": summary["frames"], "elapsed_s": time.perf_counter() - state["t0"], **mem_now(dev)}
        disk = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file())
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    samples.append(after)
    at_check = next((x for x in samples if x["frame"] >= check), samples[0])
    last = samples[-1]
    tol_gpu_gib, tol_rss_mib = 0.25, 256.0
    flat = {"rss_growth_mib": last.get("rss_mib", 0) - at_check.get("rss_mib", 0), "rss_tolerance_mib": tol_rss_mib}
    ok = flat["rss_growth_mib"] <= tol_rss_mib
    if dev.type == "cuda":
        flat.update(gpu_alloc_growth_gib=last["gpu_alloc_gib"] - at_check["gpu_alloc_gib"],
                    gpu_peak_growth_gib=last["gpu_peak_gib"] - at_check["gpu_peak_gib"],
                    gpu_tolerance_gib=tol_gpu_gib)
        ok = ok and flat["gpu_alloc_growth_gib"] <= tol_gpu_gib and flat["gpu_peak_growth_gib"] <= tol_gpu_gib
    flat["flat"] = ok
    return {"settings": {"size": [h, w], "frames_requested": n_max, "sample_every": every, "compare_frame": check,
                         "time_cap_s": cap, "model": s["model_name"], "amp_bf16": args.amp and dev.type == "cuda",
                         "video": "synthetic frames generated on the fly (fixed texture + moving blocks), never "
                                  "held as a whole; run_sources + official VIPSeg writer into a temp dir",
                         "clip_frames": cfg.model.association.clip_frames},
            "raw": {"before": before, "samples": samples},
            "result": {"frames_done": summary["frames"], "stopped_early_at_frame": state["stopped_at"],
                       "fps": summary["fps"], "at_compare_frame": at_check, "at_last": last,
                       "official_bytes_written": disk, **flat,
                       "note": None if state["stopped_at"] is None else
                       f"time cap {cap:.0f} s reached: memory measured over {summary['frames']} frames, not {n_max}"}}


# ------------------------------------------------------------------------------------------------ 5. compile


def compile_child(path: str, smoke: bool, amp: bool, repeats: int, warmup: int, backend: str) -> None:
    """Runs in its own process (killed at the timeout): writes ``path`` after each phase."""
    from gvseg.engine import seed_everything
    from gvseg.model.gvseg import build_gvseg
    from gvseg.structures import Clip

    class A:
        pass

    a = A()
    a.smoke, a.long_frames = smoke, 0
    s = settings(a)
    dev = torch.device("cuda" if torch.cuda.is_available() and not smoke else "cpu")
    if dev.type == "cpu":
        torch.set_num_threads(1)
    out: dict = {"phase": "start", "backend": backend}

    def dump():
        Path(path).write_text(json.dumps(out))

    seed_everything(0)
    model = build_gvseg(s["model"]).to(dev).eval()
    h, w = s["infer_hw"]
    t = s["model"].association.clip_frames
    frames = torch.randn(1, t, 3, h, w, generator=torch.Generator().manual_seed(1)).to(dev)
    clip = Clip(frames, torch.tensor([[h, w]], device=dev), torch.arange(t)[None].to(dev), ["v"])
    eager = {"decoder": model.decoder, "pixel_decoder": model.pixel_decoder}

    @torch.no_grad()
    def fwd():
        with autocast(dev, amp):
            return model(clip)

    def use(parts: dict) -> None:
        model.decoder, model.pixel_decoder = parts["decoder"], parts["pixel_decoder"]

    ref = fwd()
    for _ in range(warmup):
        fwd()
    out["eager_first_s"] = timed_call(fwd, dev)
    out["phase"] = "eager_done"
    dump()
    compiled = {k: torch.compile(m, backend=backend) for k, m in eager.items()}
    use(compiled)
    t0 = time.perf_counter()
    got = fwd()
    sync(dev)
    out["compile_first_call_s"] = time.perf_counter() - t0
    out["max_abs_diff_logits"] = float((got["pred_logits"].float() - ref["pred_logits"].float()).abs().max())
    out["phase"] = "compiled"
    dump()
    for _ in range(warmup):
        fwd()  # recompiles for guards that failed on the first call land here
    out["compile_warm_calls_s"] = timed_call(fwd, dev)
    variants = {"eager": lambda: (use(eager), fwd()), "compiled": lambda: (use(compiled), fwd())}
    raw = interleaved(variants, dev, 1, repeats)
    out["raw_sec_per_clip"] = raw
    out["eager_sec"], out["compiled_sec"] = med(raw["eager"]), med(raw["compiled"])
    out["speedup"] = out["eager_sec"] / out["compiled_sec"]
    with contextlib.suppress(Exception):
        import torch._dynamo.utils as du

        out["dynamo_counters"] = {k: {str(n)[:300]: c for n, c in v.items()} for k, v in du.counters.items()
                                  if v and k in ("stats", "graph_break", "recompiles", "frames")}
    out["phase"] = "done"
    dump()


def m_compile(ctx: dict) -> dict:
    args, s, dev = ctx["args"], ctx["s"], ctx["dev"]
    left = ctx["deadline"] - time.monotonic() - 20.0
    timeout = max(5.0, min(args.compile_timeout_s, left))
    fd, path = tempfile.mkstemp(suffix=".json", prefix="gvseg_compile_")
    os.close(fd)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--compile-child", path, "--repeats", str(args.repeats),
           "--compile-backend", args.compile_backend] + (["--smoke"] if args.smoke else []) + ([] if args.amp else ["--no-amp"])
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "platform"), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    timed_out = False
    try:
        log, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)  # the child's own process group (its compile workers too)
        log, _ = proc.communicate()
    wall = time.perf_counter() - t0
    try:
        child = json.loads(Path(path).read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        child = {}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)
    raw = child.pop("raw_sec_per_clip", {})
    result = {**child, "timed_out": timed_out and child.get("phase") != "done", "returncode": proc.returncode,
              "child_wall_s": wall}
    if timed_out and child.get("phase") == "done":
        result["note"] = f"child had written every result but had not exited after {timeout:.0f} s: killed"
    elif timed_out:
        result["note"] = f"child killed after {timeout:.0f} s in phase {child.get('phase')!r}"
    elif child.get("phase") != "done":
        result["error"] = f"child ended in phase {child.get('phase')!r} (rc {proc.returncode})"
    return {"settings": {"what": "torch.compile(model.decoder) and torch.compile(model.pixel_decoder), "
                                 "default dynamic (automatic after a shape change), inference forward of one clip (eval, pred_descriptors included)",
                         "size": list(s["infer_hw"]), "backend": args.compile_backend, "timeout_s": timeout,
                         "model": s["model_name"], "amp_bf16": args.amp and dev.type == "cuda",
                         "repeats": args.repeats,
                         "compile_time": "compile_first_call_s = first compiled call (tracing + codegen + run); "
                                         "compile_warm_calls_s = the next call after warm-up"},
            "raw": {"sec_per_clip": raw, "child_log_tail": (log or "")[-3000:]}, "result": result,
            "status": "error" if "error" in result else ("timeout" if result["timed_out"] else "ok")}


# ------------------------------------------------------------------------------------------------ 6. data feed


def m_data_feed(ctx: dict) -> dict:
    if not has_module("ray"):
        return {"status": "skipped", "reason": "ray is not importable on this machine (the GPU image has none; "
                                               "carry the wheels of shared/tools/gpu-wheels.sh to run it)"}
    args, s = ctx["args"], ctx["s"]
    for k, v in {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled",
                 "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}.items():
        os.environ.setdefault(k, v)
    import ray  # noqa: F401 (only here: the rest of the suite needs no ray)

    from gvseg.config import DataConfig
    from gvseg.data.pipeline import build_records
    from gvseg.data.synthetic import synth_dataset
    from gvseg.runtime.ray_data import build_dataset, iterate_shard

    h, w = s["data_hw"]
    cpus = max(1, (os.cpu_count() or 2) - (1 if args.smoke else 2))
    batch = s["train"][0]
    tmp = Path(tempfile.mkdtemp(prefix="gvseg_gpu_data_"))
    res: dict = {}
    try:
        t0 = time.perf_counter()
        synth_dataset("vipseg", tmp / "vipseg", videos=s["data_videos"], frames=s["data_frames"], height=h, width=w,
                      seed=0, val_fraction=0.0, thing_classes=8, stuff_classes=6, progress=False)
        res["synth_s"] = time.perf_counter() - t0
        cfg = DataConfig(format="vipseg", root=str(tmp / "vipseg"), clip_frames=3, reference_frames=3,
                         min_size=(s["data_crop"][0],), crop=tuple(s["data_crop"]),
                         clips_per_video=s["data_clips_per_video"])
        records = build_records(cfg, "train")
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        res["ray_init_s"] = time.perf_counter() - t0
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
            epochs = []
            for epoch in range(2):  # the first epoch includes Ray Data start-up; the second is warm
                ds = build_dataset(records, cfg, seed=epoch, epochs=1)
                t0 = time.perf_counter()
                clips, first, shapes = 0, None, set()
                for c in iterate_shard(ds, cfg, batch):
                    clips += c.shape[0]
                    shapes.add(tuple(c.shape))
                    if first is None:
                        first = time.perf_counter() - t0
                sec = time.perf_counter() - t0
                epochs.append({"clips": clips, "seconds": sec, "clips_per_s": clips / sec, "first_batch_s": first,
                               "batch_shapes": sorted(map(list, shapes))})
                print(f"  data_feed epoch {epoch}: {clips} clips in {sec:.2f} s", flush=True)
        finally:
            ray.shutdown()
    finally:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    feed = epochs[-1]["clips_per_s"]
    consume = ctx.get("train_clips_per_s") or {}
    result = {"ray_clips_per_s_warm": feed, "train_consumes_clips_per_s": consume,
              "feed_over_consumption": {k: feed / v for k, v in consume.items() if v},
              "keeps_up": {k: feed >= v for k, v in consume.items() if v}}
    if not consume:
        result["note"] = "train_step did not run or failed: no consumption figure to compare with"
    return {"settings": {"ray_cpus": cpus, "batch_clips": batch, "videos": s["data_videos"],
                         "frames_per_video": s["data_frames"], "frame_size": [h, w], "crop": list(s["data_crop"]),
                         "transform": "VIPSeg training transform (short side = crop, random crop, flip), key 3 + "
                                      "reference 3 frames, collated Clips on the host (no device copy)",
                         "clips_per_video": s["data_clips_per_video"],
                         "compare": "train_consumes = clips/s of measurement 1's gvseg (key only) and gvseg_tcl "
                                    "(the full recipe, which is what a training run consumes)"},
            "raw": {"epochs": epochs, **res}, "result": result}


# ------------------------------------------------------------------------------------------------ driver

# seconds a measurement needs at least (GPU, smoke) to be worth starting
NEEDS = {"train_step": (60, 20), "inference": (45, 15), "descriptor": (10, 5), "long_video": (45, 15),
         "compile": (40, 20), "data_feed": (60, 20)}
RUNNERS = {"train_step": m_train_step, "inference": m_inference, "descriptor": m_descriptor,
           "long_video": m_long_video, "compile": m_compile, "data_feed": m_data_feed}


def headline(name: str, rec: dict) -> dict:
    r = rec.get("result") or {}
    if name == "train_step":
        return {k: r.get(k) for k in ("speedup_vs_hf", "meets_speed_target", "memory_ratio_vs_hf",
                                      "meets_memory_target")} | {
            f"{v}_frames_per_s": (r.get(v) or {}).get("frames_per_s") for v in ("gvseg", "gvseg_tcl", "hf")} | {
            f"{v}_peak_gib": (r.get(v) or {}).get("peak_gib") for v in ("gvseg", "hf")}
    if name == "inference":
        f, p = r.get("forward") or {}, r.get("predict") or {}
        return {"forward_speedup_vs_hf": f.get("speedup_vs_hf"), "forward_meets_target": f.get("meets_target"),
                "gvseg_forward_frames_per_s": (f.get("gvseg") or {}).get("frames_per_s"),
                "hf_forward_frames_per_s": (f.get("hf") or {}).get("frames_per_s"),
                "predict_frames_per_s": p.get("frames_per_s"), "predict_meets_target": p.get("meets_target")}
    if name == "descriptor":
        return {k: {"median_ms": v.get("median_ms"), "meets_target": v.get("meets_target")} for k, v in r.items()}
    if name == "long_video":
        return {k: r.get(k) for k in ("frames_done", "flat", "gpu_alloc_growth_gib", "gpu_peak_growth_gib",
                                      "rss_growth_mib", "note")}
    if name == "compile":
        return {k: r.get(k) for k in ("speedup", "compile_first_call_s", "timed_out", "phase")}
    if name == "data_feed":
        return {k: r.get(k) for k in ("ray_clips_per_s_warm", "feed_over_consumption", "keeps_up")}
    return {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", help="folder for the JSONs (at most 8 files)")
    ap.add_argument("--smoke", action="store_true", help="CPU, toy sizes, debug model")
    ap.add_argument("--budget-s", type=float, default=None,
                    help="global time budget in s (default 420; smoke 1500); measurements that would start later skip")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed rounds after warm-up (default 5, the fewest for reported numbers; smoke 2)")
    ap.add_argument("--only", default="", help=f"comma list of measurements (default all: {','.join(NAMES)})")
    ap.add_argument("--no-peer", action="store_true", default=os.environ.get("GVSEG_NO_PEER", "") not in ("", "0"),
                    help="skip the HF Mask2Former rows (also GVSEG_NO_PEER=1)")
    ap.add_argument("--no-amp", dest="amp", action="store_false", help="fp32 instead of bf16 autocast")
    ap.add_argument("--long-frames", type=int, default=0, help="frames of the long video (default 1000; smoke 24)")
    ap.add_argument("--compile-timeout-s", type=float, default=150.0)
    ap.add_argument("--compile-backend", default=None,
                    help="torch.compile backend (default inductor; smoke aot_eager: no C++ codegen on a loaded CPU)")
    ap.add_argument("--compile-child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.budget_s = args.budget_s if args.budget_s is not None else (1500.0 if args.smoke else 420.0)
    args.repeats = args.repeats if args.repeats is not None else (2 if args.smoke else 5)
    args.compile_backend = args.compile_backend or ("aot_eager" if args.smoke else "inductor")
    if args.compile_child:
        compile_child(args.compile_child, args.smoke, args.amp, args.repeats, 1 if args.smoke else 2,
                      args.compile_backend)
        sys.stdout.flush()
        os._exit(0)  # skip interpreter teardown (compile worker pools, CUDA context): the parent waits on it
    if not args.out:
        ap.error("--out DIR is required")
    start = time.monotonic()
    deadline = start + args.budget_s
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mach = machine(dev)
    print(f"gpu_suite: {mach['gpu'] or 'CPU'} driver {mach['driver']} torch {mach['torch']} cuda {mach['cuda']} "
          f"smoke={args.smoke} budget={args.budget_s:.0f}s out={out}", flush=True)
    s = settings(args)
    ctx = {"args": args, "s": s, "dev": dev, "deadline": deadline}
    wanted = [n for n in NAMES if not args.only or n in args.only.split(",")]
    summary: dict = {"suite": "gpu_suite", "machine": mach, "smoke": args.smoke, "budget_s": args.budget_s,
                     "repeats": args.repeats, "amp_bf16": args.amp and dev.type == "cuda",
                     "peer": peer_available(args) or "HF Mask2Former",
                     "targets_meaningful": dev.type == "cuda" and not args.smoke,
                     "note": "the meets_* checks hold only for the full-size CUDA run; --smoke checks that the suite "
                             "runs, its numbers mean nothing", "measurements": {}}
    for name in NAMES:
        rec: dict = {"measurement": name, "machine": mach, "smoke": args.smoke}
        left = deadline - time.monotonic()
        need = NEEDS[name][1 if args.smoke else 0]
        t0 = time.perf_counter()
        if name not in wanted:
            rec.update(status="skipped", reason="not in --only")
        elif left < need:
            rec.update(status="skipped", reason=f"budget: {left:.0f} s left of {args.budget_s:.0f}, needs ~{need} s")
        else:
            print(f"[{time.monotonic() - start:6.1f}s] {name} ...", flush=True)
            try:
                rec.update(RUNNERS[name](ctx))
                rec.setdefault("status", "ok")
            except Exception as e:  # one failure must not lose the others
                rec.update(status="error", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
            finally:
                free_gpu(dev)
        rec["wall_s"] = time.perf_counter() - t0
        if dev.type == "cuda":
            rec["gpu_mem_after"] = mem_now(dev)
        (out / f"{name}.json").write_text(json.dumps(rec, indent=2, default=str) + "\n")
        summary["measurements"][name] = {"status": rec["status"], "wall_s": round(rec["wall_s"], 2),
                                         **({"reason": rec["reason"]} if "reason" in rec else {}),
                                         **({"error": rec["error"]} if "error" in rec else {}),
                                         **({"headline": headline(name, rec)} if rec["status"] in ("ok", "timeout")
                                            else {})}
        print(f"[{time.monotonic() - start:6.1f}s] {name}: {rec['status']} "
              f"{json.dumps(summary['measurements'][name], default=str)[:600]}", flush=True)
    summary["total_s"] = time.monotonic() - start
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"gpu_suite: done in {summary['total_s']:.1f} s; wrote {len(list(out.glob('*.json')))} JSONs to {out}",
          flush=True)
    for name, m in summary["measurements"].items():
        print(f"  {name:11s} {m['status']:8s} {json.dumps(m.get('headline') or m.get('reason') or m.get('error'), default=str)[:300]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
