"""``gvseg predict``: run a trained checkpoint on real videos and write what people and benchmarks read.

    predict(input, checkpoint, task, *, exemplars=None, out_dir, formats=("official", "png", "mp4"),
            clip=3, overlap=1, device="cpu", progress=True) -> dict (summary)

INPUT is one of
  * a video file (mp4/avi/mov/mkv/...; OpenCV decodes it, one frame at a time),
  * a folder of frames (``*.jpg|*.png``, sorted by name) — or a folder of such folders / of video files,
    each one video,
  * a dataset split ``FORMAT:ROOT:SPLIT`` (e.g. ``davis:datasets/DAVIS:val``), read by ``gvseg.data.formats``;
    its official writer and, for EVS, its exemplars are used.

It **streams**: frames are decoded lazily, resized to the checkpoint's test size, run in clips of ``clip``
frames sharing ``overlap`` (``video.stream.predict_video``: association across clips), and each frame's result
goes straight to the writers with its original frame (``gvseg.writers``). Host and device memory hold a
clip and a few frames, whatever the video length. A progress bar counts frames/s.

``formats``: ``official`` = the benchmark's result files for the task (VIPSeg pan_pred + pred.json or
KITTI-STEP PNGs for VPS, VSPW label PNGs for VSS, YouTube-VIS ``results.json`` for VIS, DAVIS / YouTube-VOS
palette PNGs or BURST JSON for EVS; the dataset's format for a split, else the checkpoint's, else the task's
default); ``png`` = per-frame overlay pictures ``overlay/<video>/<stem>.png``; ``mp4`` = overlay video
``<video>.mp4`` (stable per-track colours, class names, track ids).

EVS exemplars (``--exemplars FILE``; coordinates in original video pixels): a JSON
``{"objects": [{"id": 1, "frame": 0, "point": [x, y]} | {"id": 2, "frame": 0, "box": [x, y, w, h]}]}``, a
palette PNG of object indices (first-frame masks; or the frame whose name is the PNG's stem), or a folder of
such PNGs (each object's first appearance is its exemplar).

Options from paper 003 (VSS): ``tta`` votes the class maps of 4 scales x 2 flips per pixel (§2.4, Eq. 8;
``video.tta``); ``aggregate_with`` (a second checkpoint) runs both models over each video and writes the one
whose class maps are more consistent under optical-flow warping (§2.3, Eq. 5-7; ``video.aggregate``).

A corrupt or truncated video raises ``DataError`` naming the file and the frame where decoding stopped,
**after** every decoded frame was predicted and written and every file was closed (valid JSON included).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gvseg.config import Config, ConfigError
from gvseg.data.errors import DataError

if TYPE_CHECKING:  # the heavy imports (torch, OpenCV, the model) happen when predicting, not for `--help`
    import torch
    from tqdm import tqdm

    from gvseg.data.transforms import LabelSpace
    from gvseg.structures import Exemplar
    from gvseg.writers import VideoInfo, Writer

FORMATS = ("official", "png", "mp4")
TASKS = ("vis", "vss", "vps", "evs")
TTA_SCALES = (0.9, 1.0, 1.1, 1.2)  # paper 003, §2.4: four scales, each also mirrored (--tta)


@dataclass
class Source:
    """One video to predict: its description, a factory of its RGB frames (streamed), its EVS hints."""

    info: VideoInfo
    frames: Callable[[], Iterator[np.ndarray]]
    exemplars: list[Exemplar] | None = None
    length: int | None = None  # for the progress bar; None = unknown
    path: str = ""


# ---------------------------------------------------------------------------------------------- model


def load_model(checkpoint: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, Config]:
    """A checkpoint (file or ``step_*`` folder) -> (GvSeg in eval mode on ``device``, its Config)."""
    from gvseg import checkpoint as ckpt
    from gvseg.config import from_dict

    state = ckpt.load(checkpoint)
    if not isinstance(state.get("config"), dict) or "model" not in state:
        raise ValueError(f"{checkpoint}: checkpoint has no 'config' dict or no 'model' weights")
    cfg = from_dict(Config, state["config"])
    return ckpt.load_model(checkpoint, cfg.model, device, saved=state), cfg


def label_space(cfg: Config, categories=None) -> LabelSpace:
    """The checkpoint's label space: ``categories`` (a dataset's), else its data format's categories (the
    synthetic subset where it trained on one); a generic ``class k`` space if the class count disagrees."""
    from gvseg.data.formats import categories_for
    from gvseg.data.synthetic import select_categories
    from gvseg.data.transforms import LabelSpace

    if categories is None:
        categories = categories_for(cfg.data.format)
        if cfg.data.synthetic:
            categories = select_categories(categories, cfg.data.synth.thing_classes, cfg.data.synth.stuff_classes)
    space = LabelSpace.from_categories(categories)
    m = cfg.model
    if space.num_classes != m.num_classes or space.num_thing_classes != m.num_thing_classes:
        space = LabelSpace(tuple(range(m.num_classes)), tuple(f"class {i}" for i in range(m.num_classes)),
                           m.num_thing_classes)
    return space


# ---------------------------------------------------------------------------------------------- inputs


def _probe(path: Path) -> tuple[int, int, float, int | None]:
    """(height, width, fps, reported frame count or None) from the container, decoding one frame at most."""
    import cv2

    from gvseg.data.formats.video import _open

    cap = _open(path)
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0) or 10.0
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        if w <= 0 or h <= 0:
            ok, bgr = cap.read()
            if not ok:
                raise DataError(path, "no decodable frames (empty, truncated or corrupt video); decoding stopped "
                                      "at frame 0")
            h, w = bgr.shape[:2]
    finally:
        cap.release()
    return h, w, fps, (n if n > 0 else None)


def _video_file_source(path: Path) -> Source:
    from gvseg.data.formats.video import iter_frames
    from gvseg.writers import VideoInfo

    h, w, fps, n = _probe(path)
    return Source(VideoInfo(path.stem, h, w, None, fps), lambda: iter_frames(path), None, n, str(path))


def _frame_folder_source(folder: Path, frames: list[str]) -> Source:
    from gvseg.data.formats import _common as C
    from gvseg.writers import VideoInfo

    h, w = C.image_size(frames[0])

    def read() -> Iterator[np.ndarray]:
        for f in frames:
            yield C.read_rgb(f)

    return Source(VideoInfo(folder.name, h, w, [Path(f).stem for f in frames], 10.0), read, None, len(frames),
                  str(folder))


def _record_source(record, task: str, load_exemplars: bool) -> Source:
    from gvseg.data import formats
    from gvseg.writers import video_info

    def read() -> Iterator[np.ndarray]:
        if record.video_path:
            yield from formats.iter_frames(record.video_path)
        else:
            for t in range(len(record)):
                yield formats.load_frame(record, t)

    fps = float(record.meta.get("fps") or 10.0)
    ex = formats.load_exemplars(record) if (task == "evs" and load_exemplars) else None
    return Source(video_info(record, fps), read, ex, len(record), record.video_id)


def parse_split(text: str) -> tuple[str, str, str] | None:
    """``FORMAT:ROOT:SPLIT`` -> (format, root, split), or None if ``text`` is not of that form."""
    from gvseg.data.formats import FORMATS

    fmt, sep, rest = text.partition(":")
    if not sep or fmt not in FORMATS or ":" not in rest:
        return None
    root, split = rest.rsplit(":", 1)
    return fmt, root, split


def sources_for(input: str | Path, task: str, *, with_exemplars: bool = True) -> tuple[list[Source], str | None, Any]:
    """INPUT -> (sources, dataset format or None, dataset categories or None); see the module docstring."""
    from gvseg.data.formats import _common as C
    from gvseg.data.formats import read_dataset
    from gvseg.data.formats.video import VIDEO_EXTS

    spec = parse_split(str(input))
    if spec is not None:
        fmt, root, split = spec
        records, _ = read_dataset(fmt, root, split, progress=False)
        if not records:
            raise DataError(root, f"split {split!r} of format {fmt!r} has no videos")
        return [_record_source(r, task, with_exemplars) for r in records], fmt, records[0].categories
    path = Path(input)
    if path.is_file():
        if path.suffix.lower() not in VIDEO_EXTS:
            raise DataError(path, f"not a video file (extensions {', '.join(VIDEO_EXTS)}), a folder of frames, "
                                  "nor a dataset split FORMAT:ROOT:SPLIT")
        return [_video_file_source(path)], None, None
    if not path.is_dir():
        raise DataError(path, "input not found (expected a video file, a folder of frames, or FORMAT:ROOT:SPLIT)")
    images = [p for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in C.IMAGE_EXTS]
    if images:
        return [_frame_folder_source(path, C.list_frames(path))], None, None
    out = []
    for p in sorted(path.iterdir()):  # a folder of videos: video files and frame folders
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            out.append(_video_file_source(p))
        elif p.is_dir():
            frames = [q for q in p.iterdir() if q.is_file() and q.suffix.lower() in C.IMAGE_EXTS]
            if frames:
                out.append(_frame_folder_source(p, C.list_frames(p)))
    if not out:
        raise DataError(path, "no frames, video files or frame folders in this folder")
    for i, src in enumerate(out):
        src.info.meta.setdefault("id", i)  # a stable sequence id (BURST JSON) whatever worker writes it
    return out, None, None


def read_exemplars(path: str | Path, info: VideoInfo) -> list[Exemplar]:
    """EVS hints from a JSON of points/boxes, a palette PNG, or a folder of palette PNGs (module docstring)."""
    from gvseg.data.formats.ytvos import decode_palette
    from gvseg.structures import Exemplar

    path = Path(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(path, f"cannot read exemplar JSON ({e})") from e
        objs = data.get("objects") if isinstance(data, dict) else None
        if not isinstance(objs, list) or not objs:
            raise DataError(path, 'expected {"objects": [{"id", "frame", "point": [x, y] | "box": [x, y, w, h]}]}')
        out = []
        for i, o in enumerate(objs):
            where = f"objects[{i}]"
            if not isinstance(o, dict) or "id" not in o:
                raise DataError(path, f"{where}: needs an integer 'id'")
            tid, frame = int(o["id"]), int(o.get("frame", 0))
            if tid < 1:
                raise DataError(path, f"{where}: object id must be >= 1 (0 is background), got {tid}")
            if "point" in o:
                x, y = (float(v) for v in o["point"])
                _check_inside(path, where, x, y, info)
                out.append(Exemplar(tid, frame, "point", point=(x, y)))
            elif "box" in o:
                x, y, bw, bh = (float(v) for v in o["box"])
                if bw <= 0 or bh <= 0:
                    raise DataError(path, f"{where}: box {o['box']} must have positive width and height")
                _check_inside(path, where, x, y, info)
                out.append(Exemplar(tid, frame, "box", box=(x, y, bw, bh)))
            else:
                raise DataError(path, f"{where}: needs a 'point' [x, y] or a 'box' [x, y, w, h]")
        return out
    pngs = sorted(path.glob("*.png")) if path.is_dir() else [path]
    if not pngs or not pngs[0].is_file():
        raise DataError(path, "exemplars must be a .json file, a palette .png or a folder of .png masks")
    names = {n: t for t, n in enumerate(info.frame_names or [])}
    first: dict[int, tuple[int, np.ndarray]] = {}
    for p in pngs:
        t = names.get(p.stem, int(p.stem) if p.stem.isdigit() else 0)
        ids, lab = decode_palette(str(p), info.height, info.width)
        for k in ids.tolist():
            if k not in first or t < first[k][0]:
                first[k] = (t, lab == k)
    if not first:
        raise DataError(path, "no object (non-zero index) in the exemplar mask(s)")
    return [Exemplar(k, t, "mask", mask=m) for k, (t, m) in sorted(first.items())]


def _check_inside(path: Path, where: str, x: float, y: float, info: VideoInfo) -> None:
    if not (0 <= x < info.width and 0 <= y < info.height):
        raise DataError(path, f"{where}: ({x}, {y}) is outside the {info.width}x{info.height} video")


# ---------------------------------------------------------------------------------------------- streaming


def predict_source(model: torch.nn.Module, cfg: Config, task: str, src: Source, writers: Sequence[Writer], *,
                   device: torch.device | str = "cpu", bar: tqdm | None = None) -> int:
    """Stream one video through the model into ``writers``; returns the number of frames written.

    A decoding error ends the frame stream *without* losing frames: the clip in flight is finished, every
    decoded frame is written, the video is ended in every writer, and then the ``DataError`` is raised
    (``video.stream.stream_video``)."""
    from gvseg.data.transforms import test_params
    from gvseg.video.stream import stream_video
    from gvseg.writers import write_video

    h, w = src.info.height, src.info.width
    size = test_params(h, w, cfg.data.test_size, cfg.data.max_size).size
    pairs = stream_video(model, src.frames(), cfg.model, task, src.exemplars, size=size, out_size=(h, w),
                         video_id=src.info.video_id, source=src.path, device=device)
    return write_video(writers, src.info, pairs, on_frame=None if bar is None else lambda: bar.update(1))


def aggregate_source(models: Sequence[tuple[torch.nn.Module, Config]], task: str, src: Source,
                     writers: Sequence[Writer], *, device: torch.device | str = "cpu", bar: tqdm | None = None
                     ) -> tuple[int, dict[str, float]]:
    """Two-model aggregation (paper 003, §2.3, Eq. 5-7; ``video.aggregate.choose``): both models predict the
    whole video, and the one whose class maps agree best with themselves under optical-flow warping is
    written. Unlike ``predict_source`` it holds the video's class maps (per model) and frames, so memory
    grows with the video's length; a corrupt video raises before anything of it is written.
    Returns (frames written, {"chosen": 0 | 1, "score_a", "score_b"})."""
    from gvseg.data.transforms import test_params
    from gvseg.video.aggregate import choose
    from gvseg.video.stream import stream_video
    from gvseg.writers import write_video

    h, w = src.info.height, src.info.width
    runs = []
    for model, cfg in models:
        size = test_params(h, w, cfg.data.test_size, cfg.data.max_size).size
        runs.append([p for p, _ in stream_video(model, src.frames(), cfg.model, task, src.exemplars, size=size,
                                                out_size=(h, w), video_id=src.info.video_id, source=src.path,
                                                device=device)])
    frames = list(src.frames())  # decoded again: the flow of Eq. (5) needs the original frames
    k, sa, sb = choose(frames, [p.semantic for p in runs[0]], [p.semantic for p in runs[1]])
    n = write_video(writers, src.info, zip(runs[k], frames), on_frame=None if bar is None else lambda: bar.update(1))
    return n, {"chosen": k, "score_a": sa, "score_b": sb}


def predict(input: str | Path, checkpoint: str | Path, task: str | None = None, *,
            exemplars: str | Path | None = None, out_dir: str | Path, formats: Sequence[str] = FORMATS,
            clip: int = 3, overlap: int = 1, device: str | torch.device = "cpu", progress: bool = True,
            tta: bool = False, aggregate_with: str | Path | None = None) -> dict[str, Any]:
    """Predict every video of ``input`` (see the module docstring). Returns a summary
    ``{"videos", "frames", "seconds", "fps", "out_dir", "official_format"}`` (with ``aggregate_with``, also
    ``"aggregate"``: per video, which checkpoint was written and both consistency scores)."""
    model, cfg = load_model(checkpoint, device)
    cfg, task = configure(cfg, task, formats=formats, clip=clip, overlap=overlap, where=str(checkpoint), tta=tta)
    second = None
    if aggregate_with is not None:
        if task != "vss":
            raise ConfigError(f"--aggregate-with: two-model aggregation is for VSS (paper 003, §2.3), not task {task!r}")
        model_b, cfg_b = load_model(aggregate_with, device)
        second = (model_b, configure(cfg_b, task, formats=formats, clip=clip, overlap=overlap,
                                     where=str(aggregate_with), tta=tta)[0])
    sources, fmt, categories = sources_for(input, task, with_exemplars=exemplars is None)
    return run_sources(model, cfg, task, sources, out_dir=out_dir, formats=formats, dataset_format=fmt,
                       categories=categories, exemplars=exemplars, device=device, progress=progress, second=second)


def configure(cfg: Config, task: str | None, *, formats: Sequence[str], clip: int, overlap: int,
              where: str = "checkpoint", tta: bool = False) -> tuple[Config, str]:
    """Check the options and set the task, clip/overlap and TTA on the checkpoint's config."""
    task = task or cfg.model.task
    if task not in TASKS:
        raise ConfigError(f"--task {task!r}: expected one of {', '.join(TASKS)}")
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"--format {bad or list(formats)}: expected one or more of {', '.join(FORMATS)}")
    if task != cfg.model.task:
        warnings.warn(f"{where}: trained for task {cfg.model.task!r}, predicting {task!r}", stacklevel=3)
    if clip < 1 or not 0 <= overlap < clip:
        raise ConfigError(f"--clip {clip} --overlap {overlap}: need clip >= 1 and 0 <= overlap < clip")
    if tta and task != "vss":
        raise ConfigError(f"--tta: test-time augmentation is for VSS (paper 003, §2.4), not task {task!r}")
    pp = replace(cfg.model.postprocess, tta_scales=TTA_SCALES, tta_flip=True) if tta else cfg.model.postprocess
    cfg = replace(cfg, model=replace(cfg.model, task=task, postprocess=pp, association=replace(
        cfg.model.association, clip_frames=clip, clip_overlap=overlap)))
    return cfg, task


def official_format(cfg: Config, task: str, dataset_format: str | None = None) -> str:
    """The dataset's format if it serves ``task``, else the checkpoint's, else the task's default."""
    from gvseg.data.formats import FORMATS, default_format

    for fmt in (dataset_format, cfg.data.format):
        if fmt in FORMATS and FORMATS[fmt].task == task:
            return fmt
    return default_format(task)


def run_sources(model: torch.nn.Module, cfg: Config, task: str, sources: Sequence[Source], *, out_dir: str | Path,
                formats: Sequence[str] = FORMATS, dataset_format: str | None = None, categories=None,
                exemplars: str | Path | None = None, device: str | torch.device = "cpu",
                progress: bool = True, second: tuple[torch.nn.Module, Config] | None = None) -> dict[str, Any]:
    """Stream ``sources`` through a loaded model into the requested writers under ``out_dir``; with
    ``second`` (another loaded model and its config), per video the more consistent of the two is written
    (``aggregate_source``)."""
    from tqdm.auto import tqdm

    from gvseg.writers import OverlayPngWriter, OverlayVideoWriter, official_writer

    fmt = official_format(cfg, task, dataset_format)
    space = label_space(cfg, categories)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    writers: list[Writer] = []
    if "official" in formats:
        writers.append(official_writer(fmt, out_dir / "official", space))
    if "png" in formats:
        writers.append(OverlayPngWriter(out_dir, space.names))
    if "mp4" in formats:
        writers.append(OverlayVideoWriter(out_dir / "mp4", space.names))
    total = None if any(s.length is None for s in sources) else sum(s.length for s in sources)
    bar = tqdm(total=total, desc=f"predict {task}", unit="frame", disable=not progress, dynamic_ncols=True)
    frames, start = 0, time.perf_counter()
    chosen: dict[str, dict[str, float]] = {}
    try:
        for src in sources:
            if task == "evs":
                if exemplars is not None:
                    src.exemplars = read_exemplars(exemplars, src.info)
                if not src.exemplars:
                    raise ConfigError(f"{src.path or src.info.video_id}: task 'evs' needs exemplars (--exemplars "
                                      "FILE: points/boxes JSON or first-frame palette PNGs)")
            if second is None:
                frames += predict_source(model, cfg, task, src, writers, device=device, bar=bar)
            else:
                n, choice = aggregate_source([(model, cfg), second], task, src, writers, device=device, bar=bar)
                frames += n
                chosen[src.info.video_id] = choice
    finally:
        for wr in writers:
            wr.close()
        bar.close()
    seconds = time.perf_counter() - start
    summary = {"videos": len(sources), "frames": frames, "seconds": seconds, "fps": frames / max(seconds, 1e-9),
               "out_dir": str(out_dir), "official_format": fmt if "official" in formats else None}
    return summary | ({"aggregate": chosen} if second is not None else {})


def merge_outputs(shards: Sequence[str | Path], out_dir: str | Path) -> None:
    """Merge per-video output folders (batch prediction) into ``out_dir``, in ``shards`` order: PNGs and
    mp4s are moved; ``pred.json`` annotations, ``results.json`` entries and ``burst_results.json``
    sequences are concatenated."""
    import os
    import shutil

    out_dir = Path(out_dir)
    merged: dict[Path, Any] = {}
    for shard in map(Path, shards):
        for f in sorted(p for p in shard.rglob("*") if p.is_file()):
            rel = f.relative_to(shard)
            dst = out_dir / rel
            if f.name in ("pred.json", "results.json", "burst_results.json"):
                data = json.loads(f.read_text())
                if dst not in merged:
                    merged[dst] = data
                elif isinstance(data, list):
                    merged[dst].extend(data)
                else:
                    key = "annotations" if "annotations" in data else "sequences"
                    merged[dst][key].extend(data[key])
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(f, dst)  # a rename on the same file system
        shutil.rmtree(shard, ignore_errors=True)
    for dst, data in merged.items():
        dst.parent.mkdir(parents=True, exist_ok=True)
        tmp = dst.with_name(dst.name + ".partial")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, dst)
