"""Panoptic-video files: VIPSeg (COCO-panoptic-video) and KITTI-STEP, read and written byte-exact.

VIPSeg ground truth (``create_panoptic_video_labels.py`` of the VIPSeg-Dataset repo)::

    <root>/panomasksRGB/<video>/<stem>.png      RGB, segment id = R + 256*G + 65536*B, 0 = void
    <root>/panoptic_gt_VIPSeg_<split>.json      {"videos": [{"video_id", "images": [{"id", "file_name", ...}]}],
                                                 "annotations": [{"video_id", "annotations": [{"image_id",
                                                   "file_name", "segments_info": [{"id", "category_id",
                                                   "iscrowd", "area"}]}]}],
                                                 "categories": [{"id", "name", "isthing", "color"}]}

VIPSeg predictions (what ``eval_vpq_vspw.py`` / ``eval_stq_vspw.py`` read)::

    <pred>/pan_pred/<video>/<stem>.png  (same encoding)   <pred>/pred.json  ({"annotations": [...]} as above)

KITTI-STEP (deeplab2 ``build_step_data.py``): ``<seq>/<frame>.png`` RGB with R = semantic trainId (255 void)
and instance = G*256 + B. Predictions use the same encoding and the same relative paths.

Frames of a video are paired the way the official scripts pair them: the GT PNG name is
``videos[v].images[i].file_name``, its segments are ``annotations[v].annotations[i]`` and the prediction is
``pan_pred/<video>/<same file_name>`` with segments ``pred annotations[v].annotations[i]`` (by position, never
by ``image_id``). Every malformed input raises ``ValueError``/``FileNotFoundError`` naming the file.

Layers: this is the bottom of ``gvseg.metrics``' panoptic scorers and imports none of them. Besides the files it
holds what VPQ (``vpq``) and STQ (``stq``) both count with: the array view of a video's ``segments_info``
(``SegmentTable``, ``segment_table``, ``compact``), the per-frame joint histogram (``pair_counts``) and the
ordered process-pool map over videos (``map_videos``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

VOID = 0
ID_LIMIT = 1 << 24  # three 8-bit channels


# ---------------------------------------------------------------------------------------- id encoding


def rgb2id(rgb: np.ndarray) -> np.ndarray:
    """[..., 3] uint8 RGB -> [...] uint32 id = R + 256*G + 65536*B (panopticapi ``rgb2id``)."""
    rgb = np.asarray(rgb)
    if rgb.shape[-1] < 3:
        raise ValueError(f"rgb2id: expected [..., 3] colours, got shape {rgb.shape}")
    rgb = rgb[..., :3].astype(np.uint32)
    return rgb[..., 0] | (rgb[..., 1] << 8) | (rgb[..., 2] << 16)


def id2rgb(ids: np.ndarray) -> np.ndarray:
    """[...] integer ids in [0, 2^24) -> [..., 3] uint8 RGB (panopticapi ``id2rgb``)."""
    ids = np.asarray(ids)
    if ids.size and (ids.min() < 0 or ids.max() >= ID_LIMIT):
        raise ValueError(f"id2rgb: ids must lie in [0, {ID_LIMIT}), got [{ids.min()}, {ids.max()}]")
    ids = ids.astype(np.uint32)
    return np.stack([ids & 255, (ids >> 8) & 255, (ids >> 16) & 255], axis=-1).astype(np.uint8)


def read_id_png(path: str | os.PathLike) -> np.ndarray:
    """Read an RGB(A) 8-bit PNG -> [H, W] uint32 ids R + 256*G + 65536*B. Alpha, if any, is ignored
    (the official scripts take channels 0..2 of ``np.array(Image.open(p))``)."""
    img = cv2.imread(os.fspath(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: panoptic PNG not found")
        raise ValueError(f"{path}: cannot be decoded as an image")
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"{path}: expected an 8-bit RGB panoptic PNG, got dtype {img.dtype} shape {img.shape}")
    # cv2 gives BGR(A); RGBA viewed as little-endian uint32 is R | G<<8 | B<<16 | A<<24.
    rgba = cv2.cvtColor(img, cv2.COLOR_BGR2RGBA if img.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return rgba.view(np.uint32)[..., 0] & np.uint32(ID_LIMIT - 1)


def write_id_png(path: str | os.PathLike, ids: np.ndarray) -> None:
    """Write [H, W] ids as an RGB PNG (PIL, like the official conversion script); creates parent dirs."""
    ids = np.asarray(ids)
    if ids.ndim != 2:
        raise ValueError(f"{path}: ids must be [H, W], got shape {ids.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(id2rgb(ids)).save(path)


# ---------------------------------------------------------------------------------------- KITTI-STEP


def read_kitti_step_png(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """KITTI-STEP panoptic PNG -> (semantic [H, W] int32 = R, instance [H, W] int32 = G*256 + B)."""
    ids = read_id_png(path)
    return kitti_step_split(ids)


def kitti_step_split(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """rgb2id codes of a KITTI-STEP PNG -> (semantic = R, instance = G*256 + B), both int32."""
    ids = ids.astype(np.int64)
    semantic = ids & 255
    instance = ((ids >> 8) & 255) * 256 + (ids >> 16)
    return semantic.astype(np.int32), instance.astype(np.int32)


def kitti_step_label(ids: np.ndarray, bit_shift: int = 16) -> np.ndarray:
    """rgb2id codes of a KITTI-STEP PNG -> deeplab2 numpy-STQ label (semantic << bit_shift) + instance, int64."""
    semantic, instance = kitti_step_split(ids)
    return (semantic.astype(np.int64) << bit_shift) + instance


def write_kitti_step_png(path: str | os.PathLike, semantic: np.ndarray, instance: np.ndarray) -> None:
    """Write a KITTI-STEP PNG: R = semantic (0..255), G = instance // 256, B = instance % 256."""
    semantic, instance = np.asarray(semantic), np.asarray(instance)
    if semantic.shape != instance.shape or semantic.ndim != 2:
        raise ValueError(f"{path}: semantic {semantic.shape} and instance {instance.shape} must be equal [H, W]")
    if semantic.min(initial=0) < 0 or semantic.max(initial=0) > 255:
        raise ValueError(f"{path}: semantic ids must lie in 0..255")
    if instance.min(initial=0) < 0 or instance.max(initial=0) > 65535:
        raise ValueError(f"{path}: instance ids must lie in 0..65535")
    rgb = np.stack([semantic, instance // 256, instance % 256], axis=-1).astype(np.uint8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)


# ---------------------------------------------------------------------------------------- VIPSeg JSON


@dataclass
class PanopticVideo:
    """One video of a split: the GT (or prediction) PNG paths and the per-frame ``segments_info`` lists."""

    video_id: str
    file_names: list[str]  # <stem>.png, in GT order
    gt_paths: list[str]
    gt_segments: list[list[dict]]
    pred_paths: list[str]
    pred_segments: list[list[dict]]


@dataclass
class PanopticSplit:
    """A GT JSON + PNG root, optionally paired with a prediction directory."""

    categories: list[dict]
    videos: list[PanopticVideo]
    gt_json: str
    pred_json: str | None


def load_json(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: JSON file not found")
    try:
        with open(path) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    except UnicodeDecodeError as e:  # a ValueError whose message would not name the file
        raise ValueError(f"{path}: not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start}") from None


def find_gt_json(root: Path) -> Path:
    """The GT JSON in a VIPSeg root: ``panoptic_gt*.json``, or the only ``*.json`` there."""
    cands = sorted(root.glob("panoptic_gt*.json")) or sorted(root.glob("*.json"))
    if len(cands) != 1:
        raise ValueError(
            f"{root}: expected exactly one GT JSON (panoptic_gt*.json), found {[c.name for c in cands]}; "
            "pass gt_json= explicitly"
        )
    return cands[0]


def resolve_vipseg_gt(gt: str | os.PathLike, gt_json: str | None = None, gt_png_dir: str | None = None):
    """``gt`` is a VIPSeg root (holding ``panomasksRGB/`` and the JSON) or the JSON file itself."""
    gt = Path(gt)
    if gt.is_file():
        json_path, root = gt, gt.parent
    else:
        if not gt.is_dir():
            raise FileNotFoundError(f"{gt}: ground-truth directory not found")
        root = gt
        json_path = Path(gt_json) if gt_json else find_gt_json(gt)
    png_dir = Path(gt_png_dir) if gt_png_dir else root / "panomasksRGB"
    if not png_dir.is_dir():
        raise FileNotFoundError(f"{png_dir}: GT panomasksRGB directory not found")
    return json_path, png_dir


def load_vipseg(
    gt: str | os.PathLike,
    pred: str | os.PathLike | None = None,
    *,
    gt_json: str | None = None,
    gt_png_dir: str | None = None,
    pred_json: str | None = None,
) -> PanopticSplit:
    """Pair GT and prediction frames exactly as ``eval_vpq_vspw.py`` / ``eval_stq_vspw.py`` do.

    GT frames are ``videos[v].images`` zipped by position with ``annotations[v].annotations``; prediction
    frames are ``pred.json`` ``annotations[v].annotations`` by position, PNGs at
    ``<pred>/pan_pred/<video>/<GT file_name>``. Videos are taken in GT ``videos`` order.
    """
    json_path, png_dir = resolve_vipseg_gt(gt, gt_json, gt_png_dir)
    gt_data = load_json(json_path)
    for key in ("videos", "annotations", "categories"):
        if key not in gt_data:
            raise ValueError(f"{json_path}: GT JSON has no '{key}' list")
    gt_ann = {a["video_id"]: a["annotations"] for a in gt_data["annotations"]}

    pred_ann: dict[str, list] = {}
    pred_json_path: Path | None = None
    if pred is not None:
        pred = Path(pred)
        pred_json_path = Path(pred_json) if pred_json else pred / "pred.json"
        pred_data = load_json(pred_json_path)
        if "annotations" not in pred_data:
            raise ValueError(f"{pred_json_path}: prediction JSON has no 'annotations' list")
        pred_ann = {a["video_id"]: a["annotations"] for a in pred_data["annotations"]}

    videos = []
    for v in gt_data["videos"]:
        vid = v["video_id"]
        if vid not in gt_ann:
            raise ValueError(f"{json_path}: video {vid!r} is listed in 'videos' but has no annotations")
        images, anns = v["images"], gt_ann[vid]
        # The official scripts zip() these and silently drop the excess; a mismatch is a broken GT file.
        if len(images) != len(anns):
            raise ValueError(f"{json_path}: video {vid!r} has {len(images)} images but {len(anns)} annotations")
        names = [im["file_name"] for im in images]
        gt_paths = [str(png_dir / vid / n) for n in names]
        pred_paths: list[str] = []
        pred_segments: list[list[dict]] = []
        if pred is not None:
            if vid not in pred_ann:
                raise ValueError(f"{pred_json_path}: no prediction for video {vid!r}")
            panns = pred_ann[vid]
            # eval_vpq_vspw.py: assert len(gt_js) == len(pred_js)
            if len(panns) != len(anns):
                raise ValueError(
                    f"{pred_json_path}: video {vid!r} has {len(panns)} predicted frames but the GT has {len(anns)}"
                )
            pred_paths = [str(pred / "pan_pred" / vid / n) for n in names]
            pred_segments = [a.get("segments_info", []) for a in panns]
        videos.append(
            PanopticVideo(
                video_id=vid,
                file_names=names,
                gt_paths=gt_paths,
                gt_segments=[a.get("segments_info", []) for a in anns],
                pred_paths=pred_paths,
                pred_segments=pred_segments,
            )
        )
    # the official scripts key categories by id in a dict: duplicates keep the first position, last value
    categories = list({c["id"]: c for c in gt_data["categories"]}.values())
    return PanopticSplit(
        categories=categories,
        videos=videos,
        gt_json=str(json_path),
        pred_json=str(pred_json_path) if pred_json_path else None,
    )


def segments_from_ids(ids: np.ndarray, categories: Mapping[int, int], iscrowd: Mapping[int, int] | None = None):
    """``segments_info`` for one frame: one entry per non-void id present, area from the pixels.

    ``categories`` maps segment id -> category_id. Ids absent from it are an error."""
    uniq, counts = np.unique(np.asarray(ids), return_counts=True)
    out = []
    for i, c in zip(uniq.tolist(), counts.tolist()):
        if i == VOID:
            continue
        if i not in categories:
            raise ValueError(f"segment id {i} has no category")
        out.append({"id": i, "category_id": int(categories[i]), "iscrowd": int((iscrowd or {}).get(i, 0)),
                    "area": int(c)})
    return out


def write_vipseg(
    root: str | os.PathLike,
    videos: Mapping[str, tuple[Sequence[str], Sequence[np.ndarray], Sequence[list[dict]]]],
    categories: list[dict] | None = None,
    *,
    kind: str = "gt",
    json_name: str | None = None,
) -> Path:
    """Write a VIPSeg split (``kind="gt"``) or a prediction directory (``kind="pred"``).

    ``videos`` maps video_id -> (stems, id frames [H, W] each, segments_info per frame). GT goes to
    ``root/panomasksRGB/<video>/<stem>.png`` + ``root/<json_name or panoptic_gt_VIPSeg_val.json>``;
    predictions go to ``root/pan_pred/<video>/<stem>.png`` + ``root/pred.json``. Returns the JSON path.
    """
    if kind not in ("gt", "pred"):
        raise ValueError(f"kind must be 'gt' or 'pred', got {kind!r}")
    root = Path(root)
    png_root = root / ("panomasksRGB" if kind == "gt" else "pan_pred")
    vids, anns = [], []
    for vid, (stems, frames, segments) in videos.items():
        if not (len(stems) == len(frames) == len(segments)):
            raise ValueError(f"video {vid!r}: {len(stems)} stems, {len(frames)} frames, {len(segments)} segment lists")
        images, frame_anns = [], []
        for stem, ids, segs in zip(stems, frames, segments):
            write_id_png(png_root / vid / f"{stem}.png", ids)
            h, w = np.asarray(ids).shape
            images.append({"id": stem, "width": int(w), "height": int(h), "file_name": f"{stem}.png"})
            frame_anns.append({"image_id": stem, "file_name": f"{stem}.png", "segments_info": list(segs)})
        vids.append({"video_id": vid, "images": images})
        anns.append({"video_id": vid, "annotations": frame_anns})
    data: dict = {"annotations": anns}
    if kind == "gt":
        data = {"videos": vids, "annotations": anns, "categories": list(categories or [])}
    json_path = root / (json_name or ("panoptic_gt_VIPSeg_val.json" if kind == "gt" else "pred.json"))
    root.mkdir(parents=True, exist_ok=True)
    with open(json_path, "w") as f:
        json.dump(data, f)
    return json_path


# ---------------------------------------------------------------------------------------- KITTI-STEP split


@dataclass
class KittiStepSequence:
    seq_id: str
    gt_paths: list[str]
    pred_paths: list[str]


def load_kitti_step(gt: str | os.PathLike, pred: str | os.PathLike, *, split: str = "val") -> list[KittiStepSequence]:
    """Pair KITTI-STEP GT and prediction PNGs by relative path ``<seq>/<frame>.png``.

    ``gt`` is either a folder of sequence folders or the dataset root holding ``panoptic_maps/<split>/``;
    ``pred`` likewise (``<pred>/<seq>/<frame>.png`` or ``<pred>/panoptic_maps/<split>/...``). Every GT frame
    needs a prediction; extra predicted frames are ignored (the benchmark scores annotated frames only)."""

    def seq_root(p: Path) -> Path:
        if (p / "panoptic_maps" / split).is_dir():
            return p / "panoptic_maps" / split
        return p

    gt_root, pred_root = seq_root(Path(gt)), seq_root(Path(pred))
    if not gt_root.is_dir():
        raise FileNotFoundError(f"{gt_root}: KITTI-STEP ground-truth directory not found")
    if not pred_root.is_dir():
        raise FileNotFoundError(f"{pred_root}: KITTI-STEP prediction directory not found")
    seqs = []
    for seq_dir in sorted(p for p in gt_root.iterdir() if p.is_dir()):
        names = sorted(p.name for p in seq_dir.glob("*.png"))
        if not names:
            continue
        pred_paths = [pred_root / seq_dir.name / n for n in names]
        for p in pred_paths:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: prediction missing for GT frame {seq_dir / p.name}")
        seqs.append(KittiStepSequence(seq_dir.name, [str(seq_dir / n) for n in names], [str(p) for p in pred_paths]))
    if not seqs:
        raise ValueError(f"{gt_root}: no KITTI-STEP sequences (<seq>/<frame>.png) found")
    return seqs


def detect_format(gt: str | os.PathLike) -> str:
    """'vipseg' when ``gt`` is a JSON file or holds ``panomasksRGB/``; 'kitti-step' otherwise."""
    gt = Path(gt)
    if gt.is_file() and gt.suffix == ".json":
        return "vipseg"
    if (gt / "panomasksRGB").is_dir():
        return "vipseg"
    if (gt / "panoptic_maps").is_dir() or gt.is_dir():
        return "kitti-step"
    raise FileNotFoundError(f"{gt}: ground truth not found")


# ------------------------------------------------------------- VIPSeg segments as arrays, shared by VPQ and STQ
# VPQ reads a table's first listings, areas and crowd flags, STQ its last listings and first-appearance
# index; both index the per-frame intersection tables by the same compact ids, so the table lives below both.


@dataclass
class SegmentTable:
    """One side (GT or prediction) of a video's JSON, indexed [frame, compact segment].

    ``ids`` always contains VOID (0) so that the void row/column of the intersection table exists."""

    ids: np.ndarray  # [N] int64 sorted unique segment ids of the video (with 0)
    listed: np.ndarray  # [T, N] bool: listed in that frame's segments_info
    cat_first: np.ndarray  # [T, N] int64 category of the first listing in the frame (VPQ dict keeps first)
    cat_last: np.ndarray  # [T, N] int64 category of the last listing (STQ's mask writes, last wins)
    crowd: np.ndarray  # [T, N] bool iscrowd of the first listing
    area: np.ndarray  # [T, N] int64 JSON area, summed over duplicate listings (VPQ)
    order: np.ndarray  # [T, N] int64 position of the first listing in the frame's list (dict insertion)
    inst: np.ndarray  # [N] int64 first-appearance index over the whole video, stuff included (STQ), -1 never

    @property
    def num(self) -> int:
        return len(self.ids)

    @property
    def void_index(self) -> int:
        return int(np.searchsorted(self.ids, VOID))


def segment_table(segments: Sequence[Sequence[Mapping]], where: str = "", need_area: bool = False) -> SegmentTable:
    """Build a :class:`SegmentTable` from per-frame ``segments_info`` lists (``where`` names the JSON)."""
    video_order: dict[int, int] = {}  # eval_stq_vspw.py: index = order of first appearance in the video
    for f, segs in enumerate(segments):
        for s in segs:
            if "id" not in s or "category_id" not in s:
                raise ValueError(f"{where}: frame {f} has a segment without 'id'/'category_id': {s}")
            video_order.setdefault(int(s["id"]), len(video_order))
    ids = np.array(sorted(set(video_order) | {VOID}), dtype=np.int64)
    if ids[0] < 0 or ids[-1] >= (1 << 32):
        raise ValueError(f"{where}: segment ids must lie in [0, 2^32)")
    col = {int(i): k for k, i in enumerate(ids)}
    T, N = len(segments), len(ids)
    listed = np.zeros((T, N), bool)
    cat_first = np.full((T, N), -1, np.int64)
    cat_last = np.full((T, N), -1, np.int64)
    crowd = np.zeros((T, N), bool)
    area = np.zeros((T, N), np.int64)
    order = np.zeros((T, N), np.int64)
    for f, segs in enumerate(segments):
        for pos, s in enumerate(segs):
            k = col[int(s["id"])]
            if need_area and "area" not in s:
                raise ValueError(f"{where}: frame {f} segment {s['id']} has no 'area' (VPQ takes GT area from JSON)")
            if not listed[f, k]:
                listed[f, k] = True
                cat_first[f, k] = int(s["category_id"])
                crowd[f, k] = int(s.get("iscrowd", 0)) == 1
                order[f, k] = pos
            cat_last[f, k] = int(s["category_id"])
            area[f, k] += int(s.get("area", 0))
    inst = np.full(N, -1, np.int64)
    for i, o in video_order.items():
        inst[col[i]] = o
    return SegmentTable(ids, listed, cat_first, cat_last, crowd, area, order, inst)


def compact(ids_sorted: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Index of each value in ``ids_sorted``; values not there get ``len(ids_sorted)`` (the "other" bucket)."""
    idx = np.searchsorted(ids_sorted, values)
    idx_c = np.minimum(idx, len(ids_sorted) - 1)
    return np.where(ids_sorted[idx_c] == values, idx_c, len(ids_sorted))



# --------------------------------------------------------------------------------- counting, shared by VPQ and STQ


def pair_counts(gt_ids: np.ndarray, pred_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Joint histogram of one frame: (gt id [K], pred id [K], pixel count [K]), all int64.

    Replaces the official per-window ``np.unique(gt * 2^24 + pred)`` over stacked frames. Panoptic maps are
    large flat regions, so the row-major pixel stream is run-length encoded first (runs of equal (gt, pred))
    and only the run keys go through ``np.unique``: ~4x faster than sorting every pixel, same counts."""
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"gt {gt_ids.shape} and prediction {pred_ids.shape} differ in size")
    g = np.ascontiguousarray(gt_ids).ravel()
    p = np.ascontiguousarray(pred_ids).ravel()
    if g.size == 0:
        z = np.zeros(0, np.int64)
        return z, z.copy(), z.copy()
    change = g[1:] != g[:-1]
    change |= p[1:] != p[:-1]
    starts = np.concatenate(([0], np.flatnonzero(change) + 1))  # [R] run starts
    lengths = np.diff(starts, append=g.size)  # [R]
    key = (g[starts].astype(np.uint64) << np.uint64(32)) | p[starts].astype(np.uint64)
    u, inv = np.unique(key, return_inverse=True)
    n = np.bincount(inv.ravel(), weights=lengths, minlength=len(u))  # float64, exact below 2^53 pixels
    return (u >> np.uint64(32)).astype(np.int64), (u & np.uint64(0xFFFFFFFF)).astype(np.int64), n.astype(np.int64)


def _init_worker() -> None:
    import cv2

    cv2.setNumThreads(1)  # one process per core; no nested thread pools


def _pool_context():
    """A "forkserver" context whose server has the scorers imported: a worker forked from a process whose
    OpenCV thread pool has run (any cv2 call on 2+ threads: decoding, resizing) deadlocks in its first cv2
    call (``cv2.setNumThreads`` hung in ``pthread_cond_destroy`` in the test suite of 2026-12-03), and
    "spawn" would import numpy, cv2 and gvseg again in every worker of every pool. The server is started
    once per process and forks clean workers in milliseconds."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["gvseg.metrics.vipseg", "gvseg.metrics.stq"])  # names only: both sit above
    # The server is a fresh interpreter that ignores this process's sys.path: it would import whichever gvseg
    # the environment's install points at (an editable install of another checkout), not this one.
    root = str(Path(__file__).resolve().parents[2])  # the source root that holds this gvseg
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])
    return ctx


def map_videos(fn, items: Sequence, workers: int | None, progress: bool, desc: str):
    """Ordered map over videos: in-process when ``workers <= 1``, else a process pool (:func:`_pool_context`);
    yields results."""
    workers = min(os.cpu_count() or 1, len(items)) if workers is None else min(workers, len(items))
    bar = tqdm(total=len(items), desc=desc, disable=not progress)
    try:
        if workers <= 1:
            for it in items:
                yield fn(it)
                bar.update()
        else:
            with _pool_context().Pool(workers, initializer=_init_worker) as pool:
                for r in pool.imap(fn, items, chunksize=1):
                    yield r
                    bar.update()
    finally:
        bar.close()
