"""End-to-end prediction speed per task (``gvseg predict`` on a 720p video), with and without decode + writing.

For each task (vps, vss, vis, evs) on one synthetic look-alike video (instances of a class share texture and
cross paths; ``gvseg.data.synthetic``) encoded as an mp4 at 1280x720:

  * ``end_to_end_fps``: ``gvseg.predict.predict`` on the mp4 — OpenCV decode, resize to the test size,
    model, post-processing, association, and writing the official files + the overlay mp4;
  * ``model_fps``: ``video.stream.predict_video`` on the same frames already decoded and resized in memory, no
    writer: model + post-processing + association only. The gap is what decode + writing cost.
  * peak GPU memory of each, and the overlay mp4 of the VPS run copied next to the JSON
    (``predict_overlay_<task>.mp4``) so a person can look at the tracking.

The model is the paper's (R50, multi-scale deformable pixel decoder, 9 layers, 100 queries) with random
weights unless ``--checkpoint TASK=PATH`` gives a trained one (speed does not depend on the weights; the
overlay only shows real tracking with a trained checkpoint). Nothing is downloaded.

    python benchmarks/predict_fps.py                    # GPU machine: 720p, 60 frames per task
    python benchmarks/predict_fps.py --smoke            # CPU check: debug model, 64x112, 6 frames

Writes ``$OUT/predict_fps[_smoke].json`` when ``$OUT`` is set, else ``benchmarks/results/``, naming the machine.

Performance on a GPU: not measured yet. ``benchmarks/gpu_suite.py`` measures this and every other issue-#16 GPU
target in one prepared device run (its docstring has the command); quote only numbers from its JSONs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as _platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "platform"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gvseg import checkpoint as ckpt  # noqa: E402
from gvseg.config import Config, DataConfig, ModelConfig, SyntheticConfig, to_dict  # noqa: E402
from gvseg.model.gvseg import build_gvseg  # noqa: E402
from gvseg.recipes import unit_model_config

TASKS = ("vps", "vss", "vis", "evs")
FORMAT = {"vps": "vipseg", "vss": "vspw", "vis": "ytvis", "evs": "davis"}
CLASSES = {"vps": (124, 58), "vss": (124, 58), "vis": (40, 40), "evs": (1, 1)}


def machine(dev: torch.device) -> dict:
    return {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else
            f"cpu ({_platform.processor() or _platform.machine()}, {os.cpu_count()} cores)",
            "host": _platform.node(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": _platform.python_version()}


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def make_checkpoint(task: str, smoke: bool, directory: Path) -> Path:
    nc, nt = (4, 2) if smoke else CLASSES[task]
    if task == "evs":
        nc, nt = 1, 1
    model_cfg = unit_model_config(task, nc, nt) if smoke else ModelConfig(task=task, num_classes=nc,
                                                                            num_thing_classes=nt)
    if task == "vis":  # random weights score low: keep every query so the run does VIS's real work (RLEs, JSON)
        model_cfg.postprocess.track_min_score = 0.0
    data = DataConfig(format=FORMAT[task], synthetic=smoke, synth=SyntheticConfig(thing_classes=2, stuff_classes=2),
                      test_size=64 if smoke else 720, max_size=128 if smoke else 1333)
    cfg = Config(name=f"fps_{task}", model=model_cfg, data=data)
    torch.manual_seed(0)
    state = ckpt.build_state(model=build_gvseg(cfg.model), criterion=None, optimizer=None,
                             scheduler=None, step=0, epoch=0, config=to_dict(cfg))
    return ckpt.save(state, directory / task)


def lookalike_video(path: Path, frames: int, h: int, w: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Encode a look-alike synthetic video; returns (first-frame id map, decoded frames for model_fps)."""
    from gvseg.data.formats import categories_for
    from gvseg.data.synthetic import plan_video, render_frame, select_categories

    cats = select_categories(categories_for("vipseg"), 2, 2)
    plan = plan_video("lookalike", cats, frames=frames, height=h, width=w, seed=0, lookalike=True)
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    first = None
    for t in range(frames):
        img, ids = render_frame(plan, t)
        first = ids if first is None else first
        vw.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    vw.release()
    from gvseg.data.formats.video import iter_frames

    return first, list(iter_frames(path))


def exemplar_png(first_ids: np.ndarray, path: Path) -> Path:
    from PIL import Image

    from gvseg.data.formats._common import voc_palette

    uniq = [i for i in np.unique(first_ids) if i != 0][:8]
    lab = np.zeros(first_ids.shape, np.uint8)
    for k, i in enumerate(uniq, 1):
        lab[first_ids == i] = k
    im = Image.fromarray(lab, mode="P")
    im.putpalette(voc_palette())
    im.save(path)
    return path


def model_only_fps(checkpoint: Path, task: str, frames: list[np.ndarray], exemplars, dev: torch.device,
                   clip: int, overlap: int) -> float:
    from gvseg.data.transforms import test_params
    from gvseg.predict import configure, load_model
    from gvseg.video.stream import predict_video

    model, cfg = load_model(checkpoint, dev)
    cfg, task = configure(cfg, task, formats=("official",), clip=clip, overlap=overlap)
    h, w = frames[0].shape[:2]
    size = test_params(h, w, cfg.data.test_size, cfg.data.max_size).size
    small = [cv2.resize(f, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for f in frames]
    for _ in predict_video(model, small[: clip * 2], cfg.model, task, exemplars, out_size=(h, w), device=dev,
                           progress=False):
        pass  # warm-up (cudnn autotune, allocator)
    sync(dev)
    start = time.perf_counter()
    n = sum(1 for _ in predict_video(model, small, cfg.model, task, exemplars, out_size=(h, w), device=dev,
                                     progress=False))
    sync(dev)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="CPU check: debug model, toy video")
    ap.add_argument("--frames", type=int, default=None, help="video length (default 60; smoke 6)")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--clip", type=int, default=3)
    ap.add_argument("--overlap", type=int, default=1)
    ap.add_argument("--checkpoint", action="append", default=[], metavar="TASK=PATH",
                    help="a trained checkpoint for a task (default: random weights)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2) if not args.smoke else 1)
    dev = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    h, w = (64, 112) if args.smoke else (720, 1280)
    n = args.frames or (6 if args.smoke else 60)
    given = dict(c.split("=", 1) for c in args.checkpoint)
    out_root = Path(os.environ["OUT"]) if os.environ.get("OUT") else Path(__file__).resolve().parent / "results"
    out_root.mkdir(parents=True, exist_ok=True)
    suffix = "_smoke" if args.smoke else ""

    from gvseg.predict import predict, read_exemplars
    from gvseg.writers import VideoInfo

    results = {"benchmark": "predict_fps", "machine": machine(dev), "video": {"height": h, "width": w, "frames": n,
               "kind": "synthetic look-alike (gvseg.data.synthetic, lookalike=True), mp4v"},
               "clip": args.clip, "overlap": args.overlap, "tasks": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video = tmp / "lookalike.mp4"
        first_ids, frames = lookalike_video(video, n, h, w)
        ex_png = exemplar_png(first_ids, tmp / "00000.png")
        for task in args.tasks.split(","):
            path = Path(given[task]) if task in given else make_checkpoint(task, args.smoke, tmp / "ckpt")
            exemplars = str(ex_png) if task == "evs" else None
            ex_list = read_exemplars(ex_png, VideoInfo("lookalike", h, w)) if task == "evs" else None
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            # warm-up on 2 clips' worth of frames is inside model_only_fps; the end-to-end run is timed whole
            model_fps = model_only_fps(path, task, frames, ex_list, dev, args.clip, args.overlap)
            model_mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            out = tmp / f"out_{task}"
            summary = predict(video, path, task, exemplars=exemplars, out_dir=out, formats=("official", "mp4"),
                              clip=args.clip, overlap=args.overlap, device=dev, progress=False)
            e2e_mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None
            results["tasks"][task] = {
                "end_to_end_fps": summary["fps"], "model_fps": model_fps, "frames": summary["frames"],
                "official_format": summary["official_format"], "peak_gpu_gib_model": model_mem,
                "peak_gpu_gib_end_to_end": e2e_mem, "trained_checkpoint": task in given,
            }
            overlay = out / "mp4" / "lookalike.mp4"
            if overlay.is_file():
                shutil.copy(overlay, out_root / f"predict_overlay_{task}{suffix}.mp4")
            print(f"{task}: end-to-end {summary['fps']:.2f} frames/s (decode + model + writing), "
                  f"model only {model_fps:.2f} frames/s", flush=True)
    path = out_root / f"predict_fps{suffix}.json"
    path.write_text(json.dumps(results, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
