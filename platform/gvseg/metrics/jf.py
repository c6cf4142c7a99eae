"""Semi-supervised VOS metrics: region similarity J, boundary F and J&F (DAVIS 2017, YouTube-VOS).

Definitions follow the official `davisvideochallenge/davis2017-evaluation` code (`davis2017/metrics.py`,
`davis2017/utils.py`, `davis2017/evaluation.py`, `davis2017/results.py`) number for number, quirks included:

* J per frame = |gt ∩ pred| / |gt ∪ pred|, and 1 when the union is empty (`db_eval_iou`).
* F per frame = boundary F-measure (`db_eval_boundary` / `f_measure`): boundaries from `_seg2bmap` (1-px
  boundaries offset half a pixel towards the origin), tolerance `ceil(bound_th * ||(H, W)||)` px (or `bound_th`
  itself when it is >= 1), dilation by a skimage-style disk through `cv2.dilate`. Empty-boundary cases:
  no pred & no gt boundary -> P = R = 1; only gt -> P = 1, R = 0; only pred -> P = 0, R = 1; F = 0 when P + R = 0.
* Per object (`db_statistics`): Mean = nanmean, Recall = fraction of frames > 0.5, Decay = mean of the first
  minus mean of the last of 4 *overlapping* bins `round(linspace(1, n, 5) + 1e-10) - 1`, cast to uint8 (so the
  bin edges wrap modulo 256 for n > 256 frames, which the official code does; `fix_decay_overflow=True` is the
  corrected variant).
* DAVIS semi-supervised (`evaluation.py`): the first and last frames are excluded; the number of objects is the
  max id of the first GT frame after 255 -> 0 (void is background); object k's GT is `gt == k`;
  J&F-Mean = (mean over all objects of J-Mean + mean over all objects of F-Mean) / 2, objects pooled over all
  sequences. A missing prediction frame or a prediction id larger than the object count is an error here; the
  official code prints a message and calls `sys.exit()` (status 0) instead.
* YouTube-VOS (scored only by its server; this is for local validation): the same J and F per object over the
  annotated frames (GT PNGs present) strictly after the frame in which the object first appears (that frame is the
  given reference). No last-frame exclusion. Objects with no frame left to score are skipped. `split_seen_unseen`
  gives J/F seen/unseen and Overall = the mean of the four, the server's headline number.

Inputs (PNG masks are read with `np.asarray(PIL.Image.open(p))`, so a `P` PNG yields its palette indices):
  DAVIS GT: `<gt>/Annotations/<resolution>/<seq>/%05d.png` with `<gt>/ImageSets/<year>/<split>.txt`, or a plain
            `<gt>/<seq>/*.png` folder. Predictions: `<pred>/<seq>/<frame>.png` (same stem as the GT frame).
  YT-VOS GT: `<gt>/Annotations/<vid>/*.png` (+ optional `<gt>/meta.json` for categories). Predictions
            `<pred>/<vid>/<frame>.png` or `<pred>/Annotations/<vid>/<frame>.png`.

Array core (no I/O): `jaccard(gt, pred) -> [T]`, `boundary_f(gt, pred) -> [T]` on [T, H, W] (or [H, W]) masks,
`db_statistics(values) -> (mean, recall, decay)`. Empty inputs: T = 0 gives empty arrays; a dataset with no
objects gives NaN means.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

__all__ = [
    "jaccard",
    "boundary_f",
    "seg2bmap",
    "db_statistics",
    "evaluate",
    "evaluate_davis",
    "evaluate_youtube_vos",
    "split_seen_unseen",
    "read_index_png",
]


# ----------------------------------------------------------------------------------------------------------------
# Array core
# ----------------------------------------------------------------------------------------------------------------


def _as_bool_frames(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"masks must be [T, H, W] or [H, W], got shape {x.shape}")
    return x.astype(bool)


def jaccard(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Per-frame IoU of two binary mask stacks [T, H, W] -> [T] float64; 1.0 where both are empty (db_eval_iou)."""
    gt, pred = _as_bool_frames(gt), _as_bool_frames(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"annotation {gt.shape} and segmentation {pred.shape} shapes differ")
    inter = np.sum(gt & pred, axis=(-2, -1))  # [T]
    union = np.sum(gt | pred, axis=(-2, -1))  # [T]
    with np.errstate(divide="ignore", invalid="ignore"):
        j = inter / union
    j[np.isclose(union, 0)] = 1.0
    return j


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """Binary boundary map of masks [..., H, W] (davis2017 `_seg2bmap`, David Martin's thinning).

    A pixel is a boundary pixel when it differs from its east, south or south-east neighbour, so boundaries sit
    half a pixel towards the origin; the last row / column only compare along the border and the bottom-right
    pixel is never a boundary.
    """
    seg = np.asarray(seg).astype(bool)
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[..., :, :-1] = seg[..., :, 1:]
    s[..., :-1, :] = seg[..., 1:, :]
    se[..., :-1, :-1] = seg[..., 1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[..., -1, :] = seg[..., -1, :] ^ e[..., -1, :]
    b[..., :, -1] = seg[..., :, -1] ^ s[..., :, -1]
    b[..., -1, -1] = False
    return b


def _disk(radius: float) -> np.ndarray:
    """skimage.morphology.disk(radius) as uint8 (x^2 + y^2 <= r^2 on arange(-r, r + 1)); float radii kept as-is."""
    grid = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(grid, grid)
    return ((x**2 + y**2) <= radius**2).astype(np.uint8)


def _dilate_frames(masks: np.ndarray, kernel: np.ndarray, chunk: int = 64) -> np.ndarray:
    """cv2.dilate of every frame of [N, H, W] with one cv2 call per chunk.

    Frames are stacked vertically with `kernel.shape[0]` zero rows between them, so no dilation crosses from one
    frame into the next; zero rows cannot raise a max, so each frame sees the same result as a lone cv2.dilate.
    """
    n, h, w = masks.shape
    gap = kernel.shape[0]
    out = np.empty((n, h, w), dtype=np.uint8)
    for start in range(0, n, chunk):
        block = masks[start : start + chunk].astype(np.uint8)  # [n', H, W]
        padded = np.zeros((block.shape[0], h + gap, w), dtype=np.uint8)
        padded[:, :h] = block
        tiled = cv2.dilate(padded.reshape(-1, w), kernel)  # [n' * (H + gap), W]
        out[start : start + chunk] = tiled.reshape(block.shape[0], h + gap, w)[:, :h]
    return out


def boundary_pixels(shape: Sequence[int], bound_th: float = 0.008) -> float:
    """Tolerance in pixels: `bound_th` if >= 1, else ceil(bound_th * ||(H, W)||) (f_measure)."""
    return bound_th if bound_th >= 1 else float(np.ceil(bound_th * np.linalg.norm(tuple(shape))))


def boundary_f(gt: np.ndarray, pred: np.ndarray, bound_th: float = 0.008) -> np.ndarray:
    """Per-frame boundary F-measure of binary masks [T, H, W] -> [T] float64 (davis2017 `f_measure`)."""
    gt, pred = _as_bool_frames(gt), _as_bool_frames(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"annotation {gt.shape} and segmentation {pred.shape} shapes differ")
    t = gt.shape[0]
    if t == 0:
        return np.zeros(0)
    kernel = _disk(boundary_pixels(pred.shape[-2:], bound_th))
    fg_b = seg2bmap(pred)  # [T, H, W]
    gt_b = seg2bmap(gt)
    dil = _dilate_frames(np.concatenate([fg_b, gt_b]), kernel).astype(bool)  # [2T, H, W]
    fg_dil, gt_dil = dil[:t], dil[t:]
    n_fg = fg_b.sum(axis=(-2, -1))  # [T]
    n_gt = gt_b.sum(axis=(-2, -1))
    fg_match = (fg_b & gt_dil).sum(axis=(-2, -1))
    gt_match = (gt_b & fg_dil).sum(axis=(-2, -1))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = fg_match / n_fg.astype(np.float64)
        recall = gt_match / n_gt.astype(np.float64)
    # f_measure's four cases on empty boundaries
    precision = np.where(n_fg == 0, 1.0, np.where(n_gt == 0, 0.0, precision))
    recall = np.where(n_gt == 0, 1.0, np.where(n_fg == 0, 0.0, recall))
    denom = precision + recall
    with np.errstate(divide="ignore", invalid="ignore"):
        f = 2 * precision * recall / denom
    return np.where(denom == 0, 0.0, f)


def db_statistics(values: np.ndarray, *, fix_decay_overflow: bool = False) -> tuple[float, float, float]:
    """(Mean, Recall, Decay) of per-frame values [n] (davis2017 `utils.db_statistics`).

    Decay bins overlap: edges `round(linspace(1, n, 5) + 1e-10) - 1`, bin i = values[e_i : e_{i+1} + 1]. The
    official code casts the edges to uint8, so they wrap modulo 256 for n > 256 (Decay then is usually NaN);
    `fix_decay_overflow=True` keeps them as int64.
    """
    values = np.asarray(values, dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))
        edges = (np.round(np.linspace(1, len(values), 5) + 1e-10) - 1).astype(np.int64)
        if not fix_decay_overflow:
            edges = np.mod(edges, 256)  # astype(np.uint8) in the official code
        bins = [values[edges[i] : edges[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


# ----------------------------------------------------------------------------------------------------------------
# I/O
# ----------------------------------------------------------------------------------------------------------------


def read_index_png(path: Path) -> np.ndarray:
    """Read an indexed (`P`) or grayscale mask PNG as its raw values [H, W] (never through RGB)."""
    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: mask PNG not found") from None
    except OSError as err:
        raise ValueError(f"{path}: cannot read mask PNG ({err})") from err
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected an indexed (P) or grayscale mask PNG, got array of shape {arr.shape}")
    return arr


def _read_pred(pred_dir: Path, seq: str, stem: str, shape: tuple[int, int], valid_ids: np.ndarray,
               gt_desc: str) -> np.ndarray:
    """Read one prediction frame and check its size and ids; returns [H, W] with values in `valid_ids`."""
    path = pred_dir / seq / f"{stem}.png"
    if not path.is_file():
        # davis2017 results.py prints "<seq> frame <id> not found!" and calls sys.exit() here.
        raise FileNotFoundError(f"{path}: prediction frame missing for sequence {seq!r} frame {stem!r}")
    arr = read_index_png(path)
    if arr.shape != shape:
        raise ValueError(f"{path}: prediction is {arr.shape[0]}x{arr.shape[1]} but GT is {shape[0]}x{shape[1]}")
    present = np.unique(arr)
    unknown = present[~np.isin(present, valid_ids)]
    if unknown.size:
        # davis2017 evaluation.py: "In your PNG files there is an index higher than the number of objects in
        # the sequence!" and sys.exit().
        raise ValueError(f"{path}: prediction has object id(s) {unknown.tolist()} not in {gt_desc}")
    return arr


def _gt_frames(seq_dir: Path) -> list[Path]:
    frames = sorted(seq_dir.glob("*.png"))  # davis.py: np.sort(glob('*.png'))
    if not frames:
        raise FileNotFoundError(f"{seq_dir}: no GT PNG frames")
    return frames


def _read_gt(frames: list[Path]) -> np.ndarray:
    """[T, H, W] GT ids (PNG dtype, uint8 for P) with void 255 -> 0 (background in the semi-supervised task)."""
    masks = [read_index_png(p) for p in frames]
    for p, m in zip(frames, masks):
        if m.shape != masks[0].shape:
            raise ValueError(f"{p}: GT is {m.shape[0]}x{m.shape[1]} but {frames[0].name} is "
                             f"{masks[0].shape[0]}x{masks[0].shape[1]}")
    gt = np.stack(masks)
    gt[gt == 255] = 0
    return gt


def _davis_sequences(gt: Path, split: str, resolution: str, year: str, sequences: Iterable[str] | None):
    """-> (annotation root, sequence names) for a DAVIS root or a plain <gt>/<seq>/*.png folder."""
    ann_root = gt / "Annotations" / resolution
    if ann_root.is_dir():
        if sequences is None:
            split_file = gt / "ImageSets" / year / f"{split}.txt"
            if split_file.is_file():
                sequences = [s.strip() for s in split_file.read_text().splitlines() if s.strip()]
            else:
                sequences = sorted(p.name for p in ann_root.iterdir() if p.is_dir())
    else:
        ann_root = gt
        if sequences is None:
            sequences = sorted(p.name for p in gt.iterdir() if p.is_dir())
    sequences = list(sequences)
    for s in sequences:
        if not (ann_root / s).is_dir():
            raise FileNotFoundError(f"{ann_root / s}: GT sequence folder missing")
    return ann_root, sequences


# ----------------------------------------------------------------------------------------------------------------
# Per-sequence evaluation
# ----------------------------------------------------------------------------------------------------------------


def _davis_sequence(seq: str, ann_root: Path, pred_dir: Path, bound_th: float) -> dict[int, tuple]:
    """-> {object id: (J [n], F [n])} over frames 1..T-2 of one DAVIS sequence."""
    frames = _gt_frames(ann_root / seq)
    if len(frames) < 3:
        raise ValueError(f"{ann_root / seq}: {len(frames)} GT frames; semi-supervised J&F needs >= 3 "
                         "(first and last are excluded)")
    gt = _read_gt(frames)  # [T, H, W]
    num_objects = int(gt[0].max())
    gt = gt[1:-1]
    valid = np.arange(num_objects + 1)
    desc = f"0..{num_objects} (the first GT frame {frames[0]} has {num_objects} objects)"
    pred = np.stack([_read_pred(pred_dir, seq, p.stem, gt.shape[1:], valid, desc) for p in frames[1:-1]])
    out = {}
    for k in range(1, num_objects + 1):
        g, p = gt == k, pred == k  # [T-2, H, W]
        out[k] = (jaccard(g, p), boundary_f(g, p, bound_th))
    return out


def _ytvos_video(vid: str, ann_root: Path, pred_dir: Path, bound_th: float) -> dict[int, tuple]:
    """-> {object id: (J [n], F [n])} over the annotated frames after each object's first appearance."""
    frames = _gt_frames(ann_root / vid)
    gt = _read_gt(frames)  # [T, H, W]
    ids = [int(i) for i in np.unique(gt) if i != 0]
    if not ids:
        return {}
    present = np.stack([(gt == k).any(axis=(1, 2)) for k in ids])  # [K, T]
    first = present.argmax(axis=1)  # [K] first frame each object appears in (the given reference)
    start = int(first.min()) + 1
    valid = np.array([0, *ids])
    desc = f"the GT of video {vid!r} (ids {ids})"
    pred = np.zeros_like(gt)
    for t in range(start, len(frames)):
        pred[t] = _read_pred(pred_dir, vid, frames[t].stem, gt.shape[1:], valid, desc)
    out = {}
    for k, f0 in zip(ids, first):
        if f0 + 1 >= len(frames):
            continue  # appears only in the last annotated frame: nothing left to score
        g, p = gt[f0 + 1 :] == k, pred[f0 + 1 :] == k
        out[k] = (jaccard(g, p), boundary_f(g, p, bound_th))
    return out


def _map(fn, items: list[str], workers: int, progress: bool, desc: str) -> list:
    if workers and workers > 1 and len(items) > 1:
        with ProcessPoolExecutor(max_workers=workers) as ex:
            return list(tqdm(ex.map(fn, items), total=len(items), disable=not progress, desc=desc))
    return [fn(s) for s in tqdm(items, disable=not progress, desc=desc)]


def _summarise(per_object: dict[str, tuple], fix_decay_overflow: bool) -> dict:
    rows, jm, jr, jd, fm, fr, fd = {}, [], [], [], [], [], []
    for name, (j, f) in per_object.items():
        j_stats = db_statistics(j, fix_decay_overflow=fix_decay_overflow)
        f_stats = db_statistics(f, fix_decay_overflow=fix_decay_overflow)
        for lst, v in zip((jm, jr, jd, fm, fr, fd), (*j_stats, *f_stats)):
            lst.append(v)
        rows[name] = {"J-Mean": j_stats[0], "F-Mean": f_stats[0]}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)  # no objects -> NaN
        res = {
            "J&F-Mean": float((np.mean(jm) + np.mean(fm)) / 2.0),
            "J-Mean": float(np.mean(jm)),
            "J-Recall": float(np.mean(jr)),
            "J-Decay": float(np.mean(jd)),
            "F-Mean": float(np.mean(fm)),
            "F-Recall": float(np.mean(fr)),
            "F-Decay": float(np.mean(fd)),
        }
    res["num_objects"] = len(per_object)
    res["per_object"] = rows
    return res


# ----------------------------------------------------------------------------------------------------------------
# Public entry points
# ----------------------------------------------------------------------------------------------------------------


def evaluate_davis(gt: str | Path, pred: str | Path, *, progress: bool = True, workers: int = 0,
                   split: str = "val", resolution: str = "480p", year: str = "2017",
                   sequences: Iterable[str] | None = None, bound_th: float = 0.008,
                   fix_decay_overflow: bool = False) -> dict:
    """DAVIS-2017 semi-supervised J&F. Returns the official global table (J&F-Mean, J-/F-Mean, Recall, Decay),
    `num_objects` and `per_object` {"<seq>_<k>": {"J-Mean", "F-Mean"}} (the official per-sequence table)."""
    gt, pred = Path(gt), Path(pred)
    ann_root, seqs = _davis_sequences(gt, split, resolution, year, sequences)
    fn = partial(_davis_sequence, ann_root=ann_root, pred_dir=pred, bound_th=bound_th)
    results = _map(fn, seqs, workers, progress, "J&F (DAVIS)")
    per_object = {f"{seq}_{k}": jf for seq, res in zip(seqs, results) for k, jf in res.items()}
    return _summarise(per_object, fix_decay_overflow)


def split_seen_unseen(per_object: Mapping[str, Mapping[str, float]], categories: Mapping[str, str],
                      seen_categories: Iterable[str]) -> dict:
    """YouTube-VOS seen/unseen table from per-object means.

    per_object: {"<vid>_<k>": {"J-Mean", "F-Mean"}}; categories: {"<vid>_<k>": category name};
    seen_categories: the training categories. Returns J-seen, F-seen, J-unseen, F-unseen and
    Overall = mean of the four (NaN parts when a split has no objects).
    """
    seen = set(seen_categories)
    split = {"seen": [], "unseen": []}
    for name, row in per_object.items():
        if name not in categories:
            raise KeyError(f"object {name!r} has no category (meta.json)")
        split["seen" if categories[name] in seen else "unseen"].append(row)
    out = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        for part, rows in split.items():
            out[f"J-{part}"] = float(np.mean([r["J-Mean"] for r in rows]))
            out[f"F-{part}"] = float(np.mean([r["F-Mean"] for r in rows]))
            out[f"num_{part}"] = len(rows)
        out["Overall"] = float(np.mean([out["J-seen"], out["F-seen"], out["J-unseen"], out["F-unseen"]]))
    return out


def evaluate_youtube_vos(gt: str | Path, pred: str | Path, *, progress: bool = True, workers: int = 0,
                         sequences: Iterable[str] | None = None, bound_th: float = 0.008,
                         seen_categories: Iterable[str] | None = None, fix_decay_overflow: bool = False) -> dict:
    """YouTube-VOS J&F for local validation (the official numbers come from the server). With
    `seen_categories` (needs `<gt>/meta.json`) the result adds J/F seen/unseen and Overall."""
    gt, pred = Path(gt), Path(pred)
    ann_root = gt / "Annotations" if (gt / "Annotations").is_dir() else gt
    if (pred / "Annotations").is_dir():
        pred = pred / "Annotations"
    vids = list(sequences) if sequences is not None else sorted(p.name for p in ann_root.iterdir() if p.is_dir())
    fn = partial(_ytvos_video, ann_root=ann_root, pred_dir=pred, bound_th=bound_th)
    results = _map(fn, vids, workers, progress, "J&F (YouTube-VOS)")
    per_object = {f"{v}_{k}": jf for v, res in zip(vids, results) for k, jf in res.items()}
    out = _summarise(per_object, fix_decay_overflow)
    if seen_categories is not None:
        meta_path = gt / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: needed for the seen/unseen split")
        meta = json.loads(meta_path.read_text())["videos"]
        cats = {f"{v}_{int(k)}": o.get("category", "")
                for v, entry in meta.items() for k, o in entry["objects"].items()}
        out.update(split_seen_unseen(out["per_object"], cats, seen_categories))
    return out


def evaluate(gt: str | Path, pred: str | Path, *, progress: bool = True, workers: int = 0,
             dataset: str | None = None, **opts) -> dict:
    """J&F for a DAVIS or YouTube-VOS GT folder (see the module docstring for layouts).

    dataset: "davis" | "youtube_vos" | None (auto: `meta.json` in `gt` means YouTube-VOS, else DAVIS).
    Other options go to `evaluate_davis` / `evaluate_youtube_vos`.
    """
    gt = Path(gt)
    if not gt.is_dir():
        raise FileNotFoundError(f"{gt}: GT folder not found")
    if not Path(pred).is_dir():
        raise FileNotFoundError(f"{pred}: prediction folder not found")
    if dataset is None:
        dataset = "youtube_vos" if (gt / "meta.json").is_file() else "davis"
    if dataset == "davis":
        return evaluate_davis(gt, pred, progress=progress, workers=workers, **opts)
    if dataset in ("youtube_vos", "ytvos"):
        return evaluate_youtube_vos(gt, pred, progress=progress, workers=workers, **opts)
    raise ValueError(f"unknown dataset {dataset!r}; expected 'davis' or 'youtube_vos'")

