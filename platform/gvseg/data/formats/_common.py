"""Helpers shared by the format modules: listing frames, decoding images and label PNGs with clear errors,
header checks, and the per-video loop that implements ``on_error="fail" | "skip"``.

Everything that can go wrong with a file raises :class:`gvseg.data.errors.DataError` naming that file.
"""

from __future__ import annotations

import errno
import json
import os
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image
from tqdm import tqdm

from gvseg.data.errors import DataError
from gvseg.structures import Category, SyntheticVideo, VideoRecord

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
OnError = Literal["fail", "skip"]
Validate = Literal["none", "header", "full"]


# ------------------------------------------------------------------------------------------------ reading


def list_frames(folder: str | Path, exts: tuple[str, ...] = IMAGE_EXTS) -> list[str]:
    """Sorted image files in ``folder`` (frame names are listed, never computed). Empty -> DataError."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, f"frame folder {missing_reason(folder)}")
    files = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() not in exts:
            continue
        if not p.is_file():  # a frame that is a dangling link or a link loop is an error, never dropped
            if p.is_symlink():
                raise DataError(p, f"frame {missing_reason(p)}")
            continue  # a folder named like an image
        files.append(str(p))
    if not files:
        raise DataError(folder, "no frames (empty video)")
    check_unique(folder, [Path(f).stem for f in files], "frame names")
    return files


def optional_dir(folder: str | Path, what: str = "mask folder") -> bool:
    """Whether an optional folder (masks of a video) exists; a link loop or a dangling link there is a
    DataError, never read as "no masks"."""
    folder = Path(folder)
    if folder.is_dir():
        return True
    if folder.is_symlink() or folder.exists():
        raise DataError(folder, f"{what} {missing_reason(folder) if not folder.exists() else 'is not a folder'}")
    return False


def check_unique(where: str | Path, names: Iterable[str], what: str = "frame names") -> None:
    dupes = sorted(n for n, k in Counter(names).items() if k > 1)
    if dupes:
        raise DataError(where, f"duplicate {what}: {dupes[:5]}")


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the image header only (cheap: nothing is decoded)."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DataError(path, missing_reason(path) if os.path.islink(path) else "file is missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP or os.path.islink(path):
            raise DataError(path, missing_reason(path)) from None
        raise DataError(path, f"cannot read image header ({type(e).__name__}: {e})") from None
    except Exception as e:  # PIL raises UnidentifiedImageError / SyntaxError / OSError on garbage
        raise DataError(path, f"cannot read image header ({type(e).__name__}: {e})") from None
    return h, w


def _decode(path: str | Path) -> Image.Image:
    try:
        im = Image.open(path)
        im.load()  # forces the full decode: a truncated PNG/JPEG fails here, not later
    except FileNotFoundError:
        raise DataError(path, missing_reason(path) if os.path.islink(path) else "file is missing") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DataError(path, missing_reason(path)) from None
        raise DataError(path, f"corrupt or truncated image ({type(e).__name__}: {e})") from None
    except Exception as e:
        raise DataError(path, f"corrupt or truncated image ({type(e).__name__}: {e})") from None
    return im


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB."""
    with _decode(path) as im:
        return np.asarray(im.convert("RGB"))


def read_label(path: str | Path) -> np.ndarray:
    """A label PNG as stored: ``P`` -> palette indices (never the RGB colours), ``L`` -> uint8,
    16-bit grey -> uint16/int32, ``RGB`` -> [H, W, 3] uint8."""
    with _decode(path) as im:
        if im.mode in ("P", "L", "I;16", "I;16B", "I;16L", "I", "RGB"):
            return np.array(im)
        if im.mode in ("LA", "PA"):  # grey/index plus alpha: the first channel holds the label
            return np.array(im)[..., 0]
        if im.mode == "RGBA":
            return np.array(im)[..., :3]
        raise DataError(path, f"unsupported label PNG mode {im.mode!r}")


def check_shape(path: str | Path, arr: np.ndarray, height: int, width: int) -> None:
    if arr.shape[:2] != (height, width):
        raise DataError(path, f"mask is {arr.shape[0]}x{arr.shape[1]} but frame is {height}x{width}")


def masks_from_ids(id_map: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """[H, W] int map and [K] ids -> [K, H, W] bool (vectorised; K = 0 gives an empty stack)."""
    return id_map[None] == np.asarray(ids).reshape(-1, 1, 1)


def check_headers(where: str | Path, frame_paths: list[str], label_paths: Iterable[str | None] = ()) -> tuple[int, int]:
    """All frames and masks open and share the first frame's size. Returns (height, width)."""
    h, w = image_size(frame_paths[0])
    for p in frame_paths[1:]:
        if image_size(p) != (h, w):
            hh, ww = image_size(p)
            raise DataError(p, f"frame is {hh}x{ww} but the first frame of the video is {h}x{w}")
    for p in label_paths:
        if p is None:
            continue
        hh, ww = image_size(p)
        if (hh, ww) != (h, w):
            raise DataError(p, f"mask is {hh}x{ww} but frame is {h}x{w}")
    return h, w


def missing_reason(path: str | Path) -> str:
    """Why ``path`` cannot be used: "is a symlink loop", "is a broken symlink (-> target)", "is missing"."""
    path = Path(path)
    if path.is_symlink():
        try:
            path.resolve(strict=True)
        except RuntimeError:  # Python 3.11: "Symlink loop from ..."
            return "is a symlink loop"
        except OSError as e:
            if e.errno == errno.ELOOP:
                return "is a symlink loop"
            return f"is a broken symlink (-> {os.readlink(path)})"
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is under a symlink loop"
        return "is missing"
    return "is not a regular file" if not path.is_dir() else "is a folder, not a file"


def check_root(root: str | Path) -> None:
    """A dataset root that is a symlink loop, a broken link or a file: one DataError naming it."""
    root = Path(root)
    if root.is_dir() or not (root.is_symlink() or root.exists()):
        return  # a plain missing root: each reader names the file it looked for
    raise DataError(root, f"dataset root {missing_reason(root) if not root.exists() else 'is not a folder'}")


_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number"}


def _type_name(t: Any) -> str:
    ts = t if isinstance(t, tuple) else (t,)
    return " or ".join(_TYPE_NAMES.get(x, x.__name__) for x in ts)


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def load_json(path: str | Path, kind: type | tuple | None = None) -> Any:
    """The parsed JSON of ``path``; ``kind`` (e.g. ``dict``) checks the top level's type."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "file is missing" if not path.is_symlink() else missing_reason(path))
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(path, f"invalid JSON ({e})") from None
    except UnicodeDecodeError as e:  # a ValueError that would otherwise print without the file
        raise DataError(path, f"not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start}") from None
    except OSError as e:
        raise DataError(path, f"cannot read ({e.strerror or e})") from None
    if kind is not None:
        expect(data, kind, path, "top level")
    return data


def expect(value: Any, kind: type | tuple, path: str | Path, where: str) -> Any:
    """``value`` if it is of JSON type ``kind``, else a DataError naming the file, the place and both types
    (a bool is not an integer here, as in JSON)."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
    if int in kinds and float not in kinds and isinstance(value, float) and value.is_integer():
        ok = True
    if not ok:
        raise DataError(path, f"{where} must be {_type_name(kind)}, got {_json_type(value)} {_short(value)}")
    return value


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def field(obj: Any, key: str, path: str | Path, where: str, kind: type | tuple | None = None) -> Any:
    """obj[key] or a DataError naming the JSON file, the place in it and the missing field; ``kind``
    also checks its type."""
    if not isinstance(obj, dict):
        raise DataError(path, f"{where} must be an object, got {_json_type(obj)} {_short(obj)}")
    if key not in obj:
        raise DataError(path, f"{where}: missing field {key!r}")
    if kind is not None:
        expect(obj[key], kind, path, f"{where}: field {key!r}")
    return obj[key]


def int_field(obj: Any, key: str, path: str | Path, where: str) -> int:
    """obj[key] as an int (an integer, or a string of digits as some converters write): DataError otherwise."""
    v = field(obj, key, path, where)
    if isinstance(v, str) and v.strip().lstrip("+-").isdigit():
        return int(v)
    return int(expect(v, int, path, f"{where}: field {key!r}"))


def check_unique_ids(path: str | Path, ids: Iterable[Any], what: str) -> None:
    """Duplicate ids in a JSON list (videos, image ids): a DataError naming the file and the first ones."""
    dupes = sorted({str(n) for n, k in Counter(ids).items() if k > 1})
    if dupes:
        raise DataError(path, f"duplicate {what}: {dupes[:5]}")


def read_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "split list is missing" if not path.is_symlink() else f"split list {missing_reason(path)}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start}") from None
    ids = [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    check_unique(path, ids, "video ids")  # a repeated line would train (and score) that video twice
    return ids


def run_videos(items: list[Any], build: Callable[[Any], VideoRecord], on_error: OnError, desc: str,
               progress: bool) -> tuple[list[VideoRecord], list[DataError]]:
    """Build one record per item; a DataError fails the split ("fail") or skips that video ("skip")."""
    if on_error not in ("fail", "skip"):
        raise ValueError(f"on_error must be 'fail' or 'skip', got {on_error!r}")
    records, errors = [], []
    for item in tqdm(items, desc=desc, disable=not progress):
        try:
            records.append(build(item))
        except DataError as e:
            if on_error == "fail":
                raise
            errors.append(e)
    return records, errors


def category_table(categories: list[Category]) -> dict[int, Category]:
    return {c.id: c for c in categories}


# ------------------------------------------------------------------------------------------------ writing


def frame_numbers(video_id: str, count: int, step: int) -> list[int]:
    """Deterministic frame numbers that neither start at 0/1 nor are consecutive when step > 1 (as in
    VIPSeg/VSPW/YT-VOS), so readers that compute names instead of listing them fail the tests."""
    start = 3 + zlib.crc32(video_id.encode()) % 40
    return [start + step * t for t in range(count)]


def save_jpg(path: str | Path, rgb: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(path, quality=95)


def save_png(path: str | Path, arr: np.ndarray, mode: str, palette: list[int] | None = None) -> None:
    """``mode``: "L" (8-bit grey), "P" (indices + palette), "RGB", "I;16" (16-bit grey)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(arr, dtype=np.uint16 if mode == "I;16" else np.uint8)
    if mode == "P":
        im = Image.frombytes("P", (arr.shape[1], arr.shape[0]), arr.tobytes())
        im.putpalette(palette or voc_palette())
    else:
        im = Image.fromarray(arr)  # [H, W] uint8 -> L, [H, W, 3] -> RGB, [H, W] uint16 -> I;16
        if im.mode != mode:
            raise ValueError(f"{path}: array {arr.shape} {arr.dtype} does not make a {mode} PNG")
    im.save(path)


def save_json(path: str | Path, obj: Any) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def voc_palette(n: int = 256) -> list[int]:
    """The Pascal-VOC colormap (0,0,0), (128,0,0), (0,128,0), (128,128,0), ... used by DAVIS / YT-VOS PNGs:
    colour bits are spread from the index bits (davis2017-evaluation, the VOC devkit)."""
    idx = np.arange(n)
    pal = np.zeros((n, 3), np.int64)
    for shift in range(8):  # 8 bit-planes, vectorised over all indices
        for c in range(3):
            pal[:, c] |= ((idx >> (3 * shift + c)) & 1) << (7 - shift)
    return pal.reshape(-1).tolist()


def check_synthetic(video: SyntheticVideo) -> None:
    """Writer-side checks on an in-memory video (programming errors, so plain ValueError)."""
    if not video.frames:
        raise ValueError(f"{video.video_id}: no frames to write")
    if len(video.frames) != len(video.id_maps):
        raise ValueError(f"{video.video_id}: {len(video.frames)} frames but {len(video.id_maps)} id maps")
    h, w = video.frames[0].shape[:2]
    cats = {c.id for c in video.categories}
    for t, (f, m) in enumerate(zip(video.frames, video.id_maps)):
        if f.shape != (h, w, 3) or m.shape != (h, w):
            raise ValueError(f"{video.video_id}: frame {t} is {f.shape} / id map {m.shape}, expected ({h}, {w})")
    present = set(np.unique(np.concatenate([m.reshape(-1) for m in video.id_maps])).tolist()) - {0}
    missing = present - set(video.segment_category)
    if missing:
        raise ValueError(f"{video.video_id}: segment ids {sorted(missing)} have no category")
    bad = {s: c for s, c in video.segment_category.items() if c not in cats}
    if bad:
        raise ValueError(f"{video.video_id}: segments with unknown category ids {bad}")


def present_segments(video: SyntheticVideo) -> list[int]:
    """Sorted segment ids that occur in at least one frame."""
    return sorted(set(np.unique(np.concatenate([m.reshape(-1) for m in video.id_maps])).tolist()) - {0})


def decode_exemplar_source(source: tuple, record: VideoRecord) -> np.ndarray:
    """[H, W] bool mask from an Exemplar.source handle: ("png", path, object_id) or ("rle", rle dict)."""
    if source[0] == "png":
        lab = read_label(source[1])
        check_shape(source[1], lab, record.height, record.width)
        return lab == source[2]
    if source[0] == "rle":
        return decode_rle(source[1], record.height, record.width, "exemplar of " + record.video_id)
    raise ValueError(f"unknown exemplar source {source[0]!r}")


def decode_rle(rle: dict, height: int, width: int, where: str) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> [H, W] bool."""
    from pycocotools import mask as mask_util

    size = rle.get("size", [height, width])
    if list(size) != [height, width]:
        raise DataError(where, f"RLE size {list(size)} but frame is {height}x{width}")
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed, column-major (YTVIS): frPyObjects compresses it
        if sum(counts) != height * width:
            raise DataError(where, f"RLE counts sum to {sum(counts)}, not {height}*{width}")
        rle = mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    elif isinstance(counts, str):
        rle = {"size": [height, width], "counts": counts.encode()}
    try:
        return mask_util.decode(rle).astype(bool)
    except Exception as e:
        raise DataError(where, f"cannot decode RLE ({type(e).__name__}: {e})") from None
