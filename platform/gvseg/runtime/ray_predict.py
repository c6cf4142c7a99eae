"""``gvseg predict --ray``: batch prediction over a folder of videos or a dataset split with Ray Data.

    predict_ray(input, checkpoint, task, *, exemplars=None, out_dir, formats, clip=3, overlap=1,
                num_workers=2, gpus_per_worker=0.0, address=None, progress=True) -> summary dict

Sharded **by video**: the dataset holds one row per video index; ``map_batches`` runs a pool of
``num_workers`` actors (each with ``gpus_per_worker`` GPUs), each loading the checkpoint once and listing
the input once, and predicting one whole video per call (videos are never split: association is
sequential within a video) into ``out_dir/_shards/<index>/`` with ``gvseg.predict.run_sources``. The driver
then merges the shards in video order (``gvseg.predict.merge_outputs``): the files are exactly those a
sequential ``gvseg predict`` writes. Workers must see ``out_dir`` (local disk for embedded Ray; a shared
mount on a cluster). A video that fails to decode fails its task, and Ray Data reports the ``DataError``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np


class _VideoPredictor:
    """Ray Data actor: the model and the input listing, loaded once per worker."""

    def __init__(self, input: str, checkpoint: str, task: str, exemplars: str | None, out_dir: str,
                 formats: tuple[str, ...], clip: int, overlap: int, use_gpu: bool, tta: bool = False):
        import torch

        from gvseg.predict import configure, load_model, sources_for

        self.device = "cuda" if use_gpu and torch.cuda.is_available() else "cpu"
        model, cfg = load_model(checkpoint, self.device)
        self.cfg, self.task = configure(cfg, task, formats=formats, clip=clip, overlap=overlap, where=checkpoint,
                                        tta=tta)
        self.model = model
        self.sources, self.fmt, self.categories = sources_for(input, self.task, with_exemplars=exemplars is None)
        self.exemplars, self.out_dir, self.formats = exemplars, Path(out_dir), formats

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from gvseg.predict import run_sources

        frames, seconds = [], []
        for i in batch["index"].tolist():
            s = run_sources(self.model, self.cfg, self.task, [self.sources[i]], out_dir=shard_dir(self.out_dir, i),
                            formats=self.formats, dataset_format=self.fmt, categories=self.categories,
                            exemplars=self.exemplars, device=self.device, progress=False)
            frames.append(s["frames"])
            seconds.append(s["seconds"])
        return {"index": batch["index"], "frames": np.array(frames), "seconds": np.array(seconds)}


def shard_dir(out_dir: Path, index: int) -> Path:
    return Path(out_dir) / "_shards" / f"{index:06d}"


def predict_ray(input: str | Path, checkpoint: str | Path, task: str, *, exemplars: str | Path | None = None,
                out_dir: str | Path, formats: tuple[str, ...] = ("official", "png", "mp4"), clip: int = 3,
                overlap: int = 1, num_workers: int = 2, gpus_per_worker: float = 0.0, address: str | None = None,
                progress: bool = True, tta: bool = False) -> dict[str, Any]:
    import ray
    import ray.data

    from gvseg.predict import configure, load_model, merge_outputs, official_format, parse_split, sources_for
    from gvseg.runtime.ray_init import init_ray

    out_dir = Path(out_dir).resolve()
    spec = parse_split(str(input))  # workers may run elsewhere: hand them absolute paths
    input = f"{spec[0]}:{Path(spec[1]).resolve()}:{spec[2]}" if spec else str(Path(input).resolve())
    _, cfg = load_model(checkpoint)  # fail fast (bad checkpoint) before starting anything
    configure(cfg, task, formats=formats, clip=clip, overlap=overlap, where=str(checkpoint), tta=tta)  # bad options too
    sources, fmt, _ = sources_for(input, task, with_exemplars=exemplars is None)
    n = len(sources)
    init_ray(address, num_cpus=max(2, num_workers + 1))  # embedded: loopback only, no dashboard
    ray.data.DataContext.get_current().enable_progress_bars = progress
    workers = max(1, min(num_workers, n))
    start = time.perf_counter()
    ds = ray.data.from_items([{"index": i} for i in range(n)], override_num_blocks=n)
    ds = ds.map_batches(
        _VideoPredictor, batch_size=1, concurrency=workers, num_cpus=1,
        num_gpus=gpus_per_worker if gpus_per_worker > 0 else None,
        fn_constructor_kwargs=dict(input=str(input), checkpoint=str(Path(checkpoint).resolve()), task=task,
                                   exemplars=None if exemplars is None else str(Path(exemplars).resolve()),
                                   out_dir=str(out_dir), formats=tuple(formats), clip=clip, overlap=overlap,
                                   use_gpu=gpus_per_worker > 0, tta=tta))
    rows = ds.take_all()
    merge_outputs([shard_dir(out_dir, i) for i in range(n)], out_dir)
    if (out_dir / "_shards").is_dir():
        (out_dir / "_shards").rmdir()
    seconds = time.perf_counter() - start
    frames = int(sum(r["frames"] for r in rows))
    return {"videos": n, "frames": frames, "seconds": seconds, "fps": frames / max(seconds, 1e-9),
            "out_dir": str(out_dir), "official_format": official_format(cfg, task, fmt) if "official" in formats
            else None, "workers": workers}
