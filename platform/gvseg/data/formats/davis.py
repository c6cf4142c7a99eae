"""DAVIS 2017 (semi-supervised VOS). datasets.md §5.

Layout read (``root`` = the DAVIS folder)::

    ImageSets/2017/<split>.txt              sequence names (train, val, test-dev, test-challenge)
    JPEGImages/480p/<seq>/<%05d>.jpg        frames, listed and sorted
    Annotations/480p/<seq>/<%05d>.png       palette PNGs (VOC colormap): index k = object k, 0 = background

``resolution`` picks "480p" or "Full-Resolution". Object indices are used as stored (never the RGB colours);
index 255 goes to ``ignore`` (the evaluator treats it as background). Frames without a PNG (test-dev beyond
the first frame) are unannotated (``None``). Exemplars: each object's first-appearance mask (normally frame
0; objects entering later are handled too), decoded lazily by ``formats.load_exemplars``.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from gvseg.data.errors import DataError
from gvseg.data.formats import _common as C
from gvseg.data.formats.ytvos import (
    OBJECT,
    decode_palette,
    first_appearances,
    indexed_palette,
    mask_files,
    object_index_maps,
)
from gvseg.structures import Exemplar, FrameAnnotation, SyntheticVideo, VideoRecord


def read_split(root: str | Path, split: str, on_error: C.OnError = "fail", *, validate: C.Validate = "header",
               progress: bool = False, resolution: str = "480p", year: str = "2017"
               ) -> tuple[list[VideoRecord], list[DataError]]:
    root = Path(root)
    seqs = C.read_lines(root / "ImageSets" / year / f"{split}.txt")
    build = lambda seq: _build(root, seq, resolution, validate)
    return C.run_videos(seqs, build, on_error, f"davis {split}", progress)


def _build(root: Path, seq: str, resolution: str, validate: C.Validate) -> VideoRecord:
    frames = C.list_frames(root / "JPEGImages" / resolution / seq)
    pngs = mask_files(root / "Annotations" / resolution / seq, frames)
    h, w = C.image_size(frames[0]) if validate == "none" else C.check_headers(seq, frames, pngs)
    first = first_appearances(pngs, h, w)
    exemplars = [Exemplar(track_id=o, frame=t, kind="mask", source=("png", pngs[t], o))
                 for o, t in sorted(first.items())]
    return VideoRecord(seq, "davis", frames, h, w, list(OBJECT), pngs, exemplars, meta={"seen_objects": sorted(first)})


def load_annotation(record: VideoRecord, t: int) -> FrameAnnotation:
    path = record.annotations[t]
    ids, lab = decode_palette(path, record.height, record.width)
    return indexed_palette(ids, lab)  # 255 = ignore, as before


def write(out_dir: str | Path, videos: list[SyntheticVideo], split: str, *, progress: bool = False,
          resolution: str = "480p") -> None:
    out = Path(out_dir)
    for v in tqdm(videos, desc=f"write davis {split}", disable=not progress):
        C.check_synthetic(v)
        _, maps = object_index_maps(v)
        for t, (frame, m) in enumerate(zip(v.frames, maps)):  # DAVIS numbers frames 00000, 00001, ...
            C.save_jpg(out / "JPEGImages" / resolution / v.video_id / f"{t:05d}.jpg", frame)
            C.save_png(out / "Annotations" / resolution / v.video_id / f"{t:05d}.png", m, "P", C.voc_palette())
    lst = out / "ImageSets" / "2017" / f"{split}.txt"
    lst.parent.mkdir(parents=True, exist_ok=True)
    lst.write_text("".join(f"{v.video_id}\n" for v in videos))


__all__ = ["read_split", "load_annotation", "write", "DataError"]
