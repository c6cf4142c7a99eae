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

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from gvseg.data.arrays import lookup, paint_runs
from gvseg.data.errors import DataError
from gvseg.structures import FrameAnnotation, SyntheticVideo, VideoRecord

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


_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_CV2_COLOR = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION  # PIL ignores EXIF orientation too


def _fast_read(path: str | Path, label: bool, rgb: bool = True) -> np.ndarray | None:
    """OpenCV decode of a *complete* file PIL would read the same way, or None (then PIL decodes it and
    names any fault: a missing, garbage or truncated file never takes this path). Frames: baseline RGB/grey
    JPEG or 8-bit RGB/grey PNG -> RGB. Labels: 8/16-bit grey or 8-bit RGB PNG (never palette PNGs: OpenCV
    would expand their colours). cv2 + cvtColor reads a 480x640 JPEG in 2.5 ms against PIL's 3.8 ms (its
    decode plus the ``tobytes`` copy behind ``np.asarray``), an RGB label PNG in 3.8 ms against 5.2 ms;
    the pixels are identical on every synthetic set (tests/data/test_pipeline_equivalence.py). ``rgb=False``
    leaves 3-channel results in OpenCV's BGR order (no swap: the clip pipeline reorders the channels in a pass
    it makes anyway)."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError:
        return None
    head, tail = data[:33].tobytes(), data[-12:].tobytes()
    if head[:8] == _PNG_SIG and tail == _PNG_END and head[12:16] == b"IHDR":
        depth, colour = head[24], head[25]
        if colour == 0 and (depth == 8 or (label and depth == 16)):  # grey
            want = 2
        elif colour == 2 and depth == 8:  # RGB
            want = 3
        else:
            return None
    elif not label and head[:2] == b"\xff\xd8" and tail[-2:] == b"\xff\xd9":
        try:
            with Image.open(path) as im:  # header only: the colour space PIL would use
                if im.mode not in ("RGB", "L"):
                    return None
        except Exception:
            return None
        want = 3
    else:
        return None
    arr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED if label or want == 2 else _CV2_COLOR)
    if arr is None or arr.ndim != want or (want == 3 and arr.shape[2] != 3):
        return None
    if arr.ndim == 2 and not label:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if arr.ndim == 2 or not rgb:
        return arr
    # in place: a second full-resolution array per frame is a fresh allocation (page faults) for a byte swap
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB, dst=arr)


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 [H, W, 3] RGB."""
    arr = _fast_read(path, label=False)
    if arr is not None:
        return arr
    with _decode(path) as im:
        return np.asarray(im.convert("RGB"))


def read_frame_native(path: str | Path) -> tuple[np.ndarray, bool]:
    """(uint8 [H, W, 3], bgr): the frame in the channel order its decoder gave, BGR when OpenCV decoded it.
    The same pixels as :func:`read_rgb` (``arr[..., ::-1]`` when ``bgr``) without its channel swap pass: the
    clip pipeline writes the channels planar and reorders them there (issue #17)."""
    arr = _fast_read(path, label=False, rgb=False)
    if arr is not None:
        return arr, True  # grey frames came through GRAY2RGB: all channels equal, any order
    with _decode(path) as im:
        return np.asarray(im.convert("RGB")), False


def read_label(path: str | Path) -> np.ndarray:
    """A label PNG as stored: ``P`` -> palette indices (never the RGB colours), ``L`` -> uint8,
    16-bit grey -> uint16/int32, ``RGB`` -> [H, W, 3] uint8."""
    return read_label_native(path, rgb=True)[0]


def read_label_native(path: str | Path, rgb: bool = False) -> tuple[np.ndarray, bool]:
    """(label, bgr): :func:`read_label`, with an RGB PNG left in OpenCV's BGR order (``bgr`` True) when OpenCV
    decoded it and ``rgb`` is False (decoders that pack the channels into ids reorder them in that pass)."""
    arr = _fast_read(path, label=True, rgb=rgb)
    if arr is not None:
        return arr, arr.ndim == 3 and not rgb
    with _decode(path) as im:
        return _pil_label(path, im), False


def _pil_label(path: str | Path, im: Image.Image) -> np.ndarray:
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


class IndexedAnnotation(FrameAnnotation):
    """A :class:`FrameAnnotation` of non-overlapping objects kept as one index map (label-PNG formats).

    ``index`` [H, W] uint8/uint16: ``k + 1`` on object k's pixels, 0 where no object is, ``K + 1`` on
    ignored (void) pixels. ``masks`` [K, H, W] and ``ignore`` [H, W] are derived on first access (cached), so
    every consumer of a FrameAnnotation still works, while the clip pipeline resizes the one index map
    instead of K masks (``transforms.make_sample``: one gather per frame instead of K; 20% of the clip
    pipeline's time went to per-tube gathers, issue #17).

    ``present`` [K] bool, when the decoder knows it: which objects have at least one pixel in ``index``
    (label-map decoders list only the values they found, so all do; RLE objects may be empty). The clip
    pipeline then reads which objects a clip holds off it instead of a histogram of every map (issue #17).
    None: unknown (a histogram decides).

    A decoder may give the map undone instead of ``index``: ``source`` + ``source_lut`` (index =
    ``source_lut[source]``) or ``runs`` = (lengths, codes) of :func:`gvseg.data.arrays.runs` + ``shape``. Then
    ``index`` is made on first access, and :meth:`coded` (what the clip pipeline calls) maps the source
    straight through the composed table: one full-resolution pass per frame instead of two (issue #17).
    """

    def __init__(self, ids: np.ndarray, category_ids: np.ndarray, index: np.ndarray | None = None,
                 iscrowd: np.ndarray | None = None, has_ignore: bool = True, masks: np.ndarray | None = None,
                 present: np.ndarray | None = None, *, source: np.ndarray | None = None,
                 source_lut: np.ndarray | None = None, runs: tuple[np.ndarray, np.ndarray] | None = None,
                 shape: tuple[int, int] | None = None):
        if index is None and (source is None or source_lut is None) and (runs is None or shape is None):
            raise ValueError("IndexedAnnotation needs index, source + source_lut, or runs + shape")
        self.ids, self.category_ids, self._index = ids, category_ids, index
        self._source, self._source_lut, self._runs = source, source_lut, runs
        self.index_shape: tuple[int, int] = tuple(index.shape if index is not None else  # type: ignore[assignment]
                                                  source.shape if source is not None else shape)
        self.present = present
        self.iscrowd = iscrowd if iscrowd is not None else np.zeros(len(ids), bool)
        self.has_ignore = has_ignore  # False: the format has no void pixels (``ignore`` is None, as before)
        self._masks: np.ndarray | None = masks
        self._ignore: np.ndarray | None = None

    @property
    def index(self) -> np.ndarray:
        """[H, W] codes (see the class docstring), made from the source on first access."""
        if self._index is None:
            if self._runs is not None:
                self._index = paint_runs(self._runs[0], self._runs[1], self.index_shape)
            else:
                self._index = lookup(self._source_lut, self._source)
        return self._index

    def coded(self, lut: np.ndarray) -> np.ndarray:
        """``lut[index]`` (a new [H, W] array of ``lut``'s dtype) in one pass over the source."""
        if self._index is not None:
            return lookup(lut, self._index)
        if self._runs is not None:
            return paint_runs(self._runs[0], lut[self._runs[1]], self.index_shape)
        return lookup(lut[self._source_lut], self._source)

    @property
    def masks(self) -> np.ndarray:  # type: ignore[override]
        if self._masks is None:
            self._masks = self.index[None] == np.arange(1, len(self.ids) + 1, dtype=self.index.dtype)[:, None, None]
        return self._masks

    @property
    def ignore(self) -> np.ndarray | None:  # type: ignore[override]
        if not self.has_ignore:
            return None
        if self._ignore is None:
            self._ignore = self.index == len(self.ids) + 1
        return self._ignore

    def __repr__(self) -> str:
        return f"IndexedAnnotation(ids={self.ids.tolist()}, shape={self.index_shape})"


def indexed_if_disjoint(ids: np.ndarray, category_ids: np.ndarray, stack: np.ndarray,
                        iscrowd: np.ndarray | None = None, areas: np.ndarray | None = None) -> FrameAnnotation:
    """[H, W, K] 0/1 uint8 masks as ``pycocotools`` decodes them (Fortran order) -> an
    :class:`IndexedAnnotation` when no pixel is in two masks (then the clip pipeline resizes one map instead of
    K masks), else a plain FrameAnnotation with [K, H, W] bool masks (overlaps, allowed in YTVIS/OVIS/BURST,
    keep the per-mask path).

    The overlap count and the index map are built on the stack's own memory order ([K, W, H] C-contiguous),
    one uint8 pass per object, and only the index map is transposed back: no [K, H, W] bool copy, no
    full-resolution per-object masks (they follow from the index map when a consumer asks; issue #17).
    ``areas`` [K] (pixels per object, e.g. ``pycocotools.mask.area`` of the RLEs) gives the index map's
    ``present`` flags."""
    k = len(ids)
    planes = stack.transpose(2, 1, 0)  # [K, W, H] view, C-contiguous for a Fortran stack
    if 0 < k < 255 and int(planes.sum(0, dtype=np.uint8).max()) <= 1:  # uint8 cannot wrap: K < 255
        index_t = np.zeros(planes.shape[1:], np.uint8)  # [W, H]
        for j in range(k):
            index_t += planes[j] * np.uint8(j + 1)  # disjoint: each pixel gets at most one code
        return IndexedAnnotation(ids, category_ids, cv2.transpose(index_t), iscrowd, has_ignore=False,
                                 present=None if areas is None else np.asarray(areas) > 0)
    masks = np.ascontiguousarray(stack.transpose(2, 0, 1), dtype=bool)  # [K, H, W]
    return FrameAnnotation(ids=ids, category_ids=category_ids, masks=masks, iscrowd=iscrowd)


def index_dtype(num_objects: int) -> type:
    """Smallest unsigned dtype holding codes 0..K+1 of an index map."""
    return np.uint8 if num_objects + 1 < 256 else np.uint16 if num_objects + 1 < 65536 else np.uint32


def index_lut(size: int, ids: np.ndarray, ignore_values: tuple[int, ...] = ()) -> np.ndarray:
    """[size] lookup table raw value -> index-map code: ``ids[k]`` -> k + 1, ``ignore_values`` -> K + 1,
    anything else -> 0 (for small value ranges; 24-bit maps go through ``arrays.runs``)."""
    lut = np.zeros(size, index_dtype(len(ids)))
    lut[np.asarray(ids, np.int64)] = np.arange(1, len(ids) + 1)
    for v in ignore_values:
        lut[v] = len(ids) + 1
    return lut


def present_u8(values: np.ndarray) -> np.ndarray:
    """[256] int64 pixel counts of a uint8 array (cv2.calcHist: 2.2 ms for 3x800x1088 vs 8.4 ms bincount)."""
    v = values.reshape(-1, values.shape[-1]) if values.ndim >= 2 else values.reshape(1, -1)
    if not v.flags.c_contiguous:
        v = np.ascontiguousarray(v)
    return cv2.calcHist([v], [0], None, [256], [0, 256]).reshape(-1).astype(np.int64)


def present_values(values: np.ndarray, size: int) -> np.ndarray:
    """Sorted distinct values of a small-range integer array (< ``size``): a histogram, which beats
    ``np.unique``'s hash/sort by ~10x on a 480x640 label map. A C-contiguous uint8 map of few runs (label maps
    are piecewise constant) is read off its runs instead: one comparison pass and the run starts, 0.11 ms
    against cv2.calcHist's 0.40 ms a 480x640 map (issue #17); a noisy map takes the histogram."""
    if values.dtype == np.uint8:
        flat = values.reshape(-1) if values.flags.c_contiguous else None
        if flat is not None and flat.size > 1:
            change = flat[1:] != flat[:-1]
            if np.count_nonzero(change) < flat.size // 16:  # runs (>= 16 pixels on average) beat the histogram
                seen = np.zeros(256, bool)
                seen[flat[0]] = True
                seen[flat[1:][change]] = True
                return np.flatnonzero(seen).astype(np.int64)
        return np.flatnonzero(present_u8(values)).astype(np.int64)
    return np.flatnonzero(np.bincount(values.reshape(-1), minlength=size)).astype(np.int64)


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


def rle_object(rle: dict, height: int, width: int, where: str) -> dict:
    """COCO RLE (compressed string or uncompressed list counts) -> the compressed RLE ``pycocotools`` decodes,
    with its size and counts checked (DataError naming ``where``)."""
    from pycocotools import mask as mask_util

    size = rle.get("size", [height, width])
    if list(size) != [height, width]:
        raise DataError(where, f"RLE size {list(size)} but frame is {height}x{width}")
    counts = rle["counts"]
    if isinstance(counts, list):  # uncompressed, column-major (YTVIS): frPyObjects compresses it
        if sum(counts) != height * width:
            raise DataError(where, f"RLE counts sum to {sum(counts)}, not {height}*{width}")
        return mask_util.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    if isinstance(counts, str):
        return {"size": [height, width], "counts": counts.encode()}
    return rle


def decode_stack(rles: list[dict], height: int, width: int, where: str) -> np.ndarray:
    """Compressed RLEs (:func:`rle_object`) -> [H, W, K] 0/1 uint8 in Fortran order, one ``pycocotools`` call
    for the whole frame (what the clip benchmark's lower bound does); K = 0 gives [H, W, 0]."""
    from pycocotools import mask as mask_util

    if not rles:
        return np.zeros((height, width, 0), np.uint8, order="F")
    try:
        return mask_util.decode(rles)
    except Exception as e:
        raise DataError(where, f"cannot decode RLE ({type(e).__name__}: {e})") from None


def rle_areas(rles: list[dict]) -> np.ndarray:
    """[K] int64 pixels of each compressed RLE (:func:`rle_object`), counted on the runs (no decode)."""
    from pycocotools import mask as mask_util

    return np.asarray(mask_util.area(rles), np.int64).reshape(-1) if rles else np.zeros(0, np.int64)


def decode_rle(rle: dict, height: int, width: int, where: str) -> np.ndarray:
    """COCO RLE (compressed string or uncompressed list counts) -> [H, W] bool."""
    return decode_stack([rle_object(rle, height, width, where)], height, width, where)[..., 0].astype(bool)
