"""VSPW video semantic segmentation metrics: mIoU and mVC_n, as the official VSPW code defines them.

Official definitions (VSPW_baseline ``utils.py`` Evaluator, ``test.py`` (what it prints), ``VC_perclip.py``;
see specs/metrics.md):

* **mIoU.** GT raw values 1..124 are classes 0..123; raw 0 ("others") and 255 ("void") are ignored
  (``l[l==0]=255; l=l-1``). One confusion matrix accumulates over the whole split; the mean runs over the
  classes *present in GT* (row sum > 0).
* **mVC_n.** Only videos with more than n frames; windows start at ``i in range(T - n)`` (so the last possible
  window is skipped). In a window, the consistent pixels are those whose **raw** GT value (0 and 255
  included) is identical over all n frames; acc = |pred constant over the window AND consistent| /
  |consistent| (NaN when no pixel is consistent). mVC_n = nanmean over all windows pooled across videos.
* **The other numbers ``test.py`` prints** (``Acc, Acc_class, mIoU, fwIoU, video mIOU, video fwIOU``), all from
  the same confusion matrix: ``pixel_acc`` = trace / valid pixels (``Pixel_Accuracy``); ``class_acc`` = nanmean
  over classes of diag / GT row sum (``Pixel_Accuracy_Class``: classes absent from GT are 0/0 = NaN and drop
  out); ``fwiou`` = Σ over GT-present classes of (row sum / total) · IoU (``Frequency_Weighted_...``);
  ``video_miou`` / ``video_fwiou`` = the per-video mIoU / fwIoU (one confusion matrix per video) summed and
  divided by the number of videos. Quirks kept: a video with no valid GT pixel has mIoU NaN, which makes
  ``video_miou`` NaN (``np.nansum([]) / 0``), and fwIoU 0 (no class has freq > 0), which still counts in
  the division. Unassigned (255) predictions are misses in every number (the official argmax never emits one).

Inputs of :func:`evaluate`:
  gt    VSPW root with ``data/<video>/mask/<frame>.png`` (8-bit ``L`` or ``P``; frame names need not start
        at 1) and optionally ``<split>.txt`` listing the videos (else every folder under ``data/``).
  pred  ``<pred>/<video>/<frame>.png`` with the same names as the GT masks, values 0..123; 255 means
        "unassigned" (DVIS++ ``vss_eval.py`` writes it) and counts as a miss for the GT class.
A prediction value outside 0..123 (other than 255) on a valid GT pixel is a ``ValueError`` naming the file
(the official code crashes or silently miscounts). Missing prediction files, shape mismatches and
non-8-bit single-channel PNGs are clear errors too.

Output: ``{"miou", "mvc8", "mvc16", "pixel_acc", "class_acc", "fwiou", "video_miou", "video_fwiou",
"per_class_iou": {class: iou for GT-present classes},
"num_videos", "num_frames", "vc_windows": {n: count}}``. An empty split raises; a split where no video is
longer than n gives ``mvc<n> = nan`` (the official ``np.nanmean([])``).

Speed: each video is one pass over its frames with each PNG read once; per frame the work is one 2-D
histogram of (GT, pred) value pairs (mIoU) and a few uint8 ops on per-pixel run lengths (mVC for every n at
once), so memory is O(H*W) per worker, and videos run in parallel worker processes.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

NUM_CLASSES = 124  # VSPW: raw 1..124 -> 0..123
UNASSIGNED = 255  # prediction value meaning "no class" (counts against the GT class, no pred column)
VC_SPANS = (8, 16)


# --------------------------------------------------------------------------------------------- reading
def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel 8-bit label PNG (``L`` values or ``P`` palette indices) as uint8 [H, W].

    Gray 8-bit PNGs go through cv2 (fastest); palette PNGs through PIL so that we get the *indices*
    (cv2 would expand the palette to BGR). Anything else (RGB, 16-bit, ...) is an error naming the file.
    """
    path = Path(path)
    try:
        buf = path.read_bytes()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    if buf[:8] != b"\x89PNG\r\n\x1a\n" or len(buf) < 26:
        raise ValueError(f"{path}: not a PNG file")
    bit_depth, color_type = buf[24], buf[25]  # IHDR fields
    if color_type == 0 and bit_depth == 8:
        arr = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is not None and arr.ndim == 2:  # (a tRNS chunk would make cv2 add alpha: PIL below)
            return arr
    try:
        img = Image.open(io.BytesIO(buf))
        img.load()
    except Exception as e:  # truncated / corrupt file
        raise ValueError(f"{path}: could not decode PNG ({e})") from None
    if img.mode not in ("L", "P"):
        raise ValueError(f"{path}: expected an 8-bit single-channel (L or P) PNG, got mode {img.mode}")
    return np.asarray(img, dtype=np.uint8)


def list_videos(gt_root: str | os.PathLike, split: str | None = "val") -> list[str]:
    """Videos of a VSPW split: ``<gt_root>/<split>.txt`` if it exists, else every folder in ``data/``."""
    gt_root = Path(gt_root)
    listing = gt_root / f"{split}.txt" if split else None
    if listing is not None and listing.is_file():
        return [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    data = gt_root / "data"
    if not data.is_dir():
        raise FileNotFoundError(f"{gt_root}: neither {split}.txt nor a data/ folder (VSPW layout)")
    return sorted(p.name for p in data.iterdir() if p.is_dir())


# --------------------------------------------------------------------------------------------- mIoU
def _pair_histogram(gt_raw: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """[256, 256] int64 counts of (raw GT value, pred value) pairs. Pred values outside 0..255 count as 254
    (an invalid class), so they raise in :func:`confusion_update` iff they sit on a valid GT pixel."""
    if gt_raw.shape != pred.shape:
        raise ValueError(f"GT shape {gt_raw.shape} != prediction shape {pred.shape}")
    if gt_raw.dtype != np.uint8:
        if gt_raw.size and (gt_raw.min() < 0 or gt_raw.max() > 255):
            raise ValueError("GT values must be raw 8-bit labels 0..255")
        gt_raw = gt_raw.astype(np.uint8)
    if pred.dtype != np.uint8:
        pred = np.where((pred < 0) | (pred > 255), 254, pred).astype(np.uint8)
    if gt_raw.size == 0:
        return np.zeros((256, 256), np.int64)
    # cv2 wants 2-D images; float32 counts are exact below 2**24 pixels per call.
    g = np.ascontiguousarray(gt_raw).reshape(1, -1) if gt_raw.ndim != 2 else np.ascontiguousarray(gt_raw)
    p = np.ascontiguousarray(pred).reshape(g.shape)
    if g.size < 2**24:
        hist = cv2.calcHist([g, p], [0, 1], None, [256, 256], [0, 256, 0, 256])
        return hist.astype(np.int64)
    code = (g.astype(np.int64) << 8) | p
    return np.bincount(code.ravel(), minlength=65536).reshape(256, 256)


def confusion_update(cm: np.ndarray, gt_raw: np.ndarray, pred: np.ndarray, *, where: str = "") -> np.ndarray:
    """Add one frame (or a stack) to the confusion matrix, in place, and return it.

    cm:     [124, 125] int64; rows = GT class (raw - 1), cols 0..123 = predicted class, col 124 = unassigned.
    gt_raw: [...] raw VSPW mask values (0 and 255 are ignored, 1..124 -> class 0..123; ``utils.py``).
    pred:   [...] same shape, values 0..123 or 255 on valid pixels.
    """
    hist = _pair_histogram(gt_raw, pred)
    valid = hist[1 : NUM_CLASSES + 1]  # [124, 256] rows of raw GT 1..124
    bad = valid[:, NUM_CLASSES:UNASSIGNED]  # pred 124..254 on a valid pixel
    if bad.any():
        vals = np.nonzero(bad.sum(0))[0] + NUM_CLASSES
        raise ValueError(
            f"{where or 'prediction'}: predicted values {vals.tolist()} on valid GT pixels; "
            f"expected 0..{NUM_CLASSES - 1} (or {UNASSIGNED} for unassigned)"
        )
    cm[:, :NUM_CLASSES] += valid[:, :NUM_CLASSES]
    cm[:, NUM_CLASSES] += valid[:, UNASSIGNED]
    return cm


def miou_from_confusion(cm: np.ndarray) -> tuple[float, np.ndarray]:
    """mIoU over classes present in GT (``utils.py`` ``Mean_Intersection_over_Union``).

    Returns (miou, iou [124] with NaN for classes absent from GT). NaN miou when no valid GT pixel.
    """
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm[:, :NUM_CLASSES]).astype(np.float64)
    gt_area = cm.sum(1)  # includes the unassigned column: those pixels are misses
    pred_area = cm[:, :NUM_CLASSES].sum(0)
    present = gt_area > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = tp / (gt_area + pred_area - tp)
    iou = np.where(present, iou, np.nan)
    miou = float(np.nansum(iou) / present.sum()) if present.any() else float("nan")
    return miou, iou


def accuracy_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """``utils.py`` Evaluator's other scores of one confusion matrix [124, 125] (column 124 = unassigned):
    {"pixel_acc": Pixel_Accuracy, "class_acc": Pixel_Accuracy_Class, "fwiou": Frequency_Weighted_IoU}.

    No valid GT pixel: pixel_acc and class_acc NaN, fwiou 0 (the official sum over an empty selection).
    """
    cm = np.asarray(cm, dtype=np.int64)
    tp = np.diag(cm[:, :NUM_CLASSES]).astype(np.float64)
    gt_area = cm.sum(1).astype(np.float64)  # unassigned pixels are misses
    pred_area = cm[:, :NUM_CLASSES].sum(0)
    total = gt_area.sum()
    present = gt_area > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = tp / gt_area  # [124], 0/0 = NaN for classes absent from GT
        iou = tp / (gt_area + pred_area - tp)
        freq = gt_area / total
    return {
        "pixel_acc": float(tp.sum() / total) if total else float("nan"),
        "class_acc": float(np.nanmean(recall)) if present.any() else float("nan"),
        "fwiou": float((freq[present] * iou[present]).sum()),
    }


# --------------------------------------------------------------------------------------------- mVC
def _as_u8_frame(a: np.ndarray, what: str) -> np.ndarray:
    """One label frame as a contiguous 2-D uint8 array (cv2 needs it); values must be 8-bit labels."""
    a = np.asarray(a)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2:
        raise ValueError(f"{what}: expected one [H, W] frame, got shape {a.shape}")
    if a.dtype != np.uint8:
        if a.size and (a.min() < 0 or a.max() > 255):
            raise ValueError(f"{what}: values must be 8-bit labels 0..255")
        a = a.astype(np.uint8)
    return np.ascontiguousarray(a)


class ConsistencyCounter:
    """Streaming mVC for one video: feed frames in order, get per-window (|both|, |consistent|) counts.

    Per pixel we keep the number of frames since the raw GT value last changed (``since_gt``) and since the
    (GT, pred) pair last changed (``since_both``), saturating at 255. The window of n frames *ending* at
    frame t is GT-consistent at a pixel iff since_gt >= n - 1, and also prediction-constant iff
    since_both >= n - 1: VC_perclip.py's "frame i equals frames i+1..i+n-1" test, for every n in one pass,
    with O(H*W) memory. The updates are saturating uint8 cv2 ops (add, compare, and).
    """

    def __init__(self, spans: Sequence[int] = VC_SPANS):
        if any(n < 1 or n > 256 for n in spans):
            raise ValueError(f"VC spans must be in 1..256, got {list(spans)}")
        self.spans = tuple(spans)
        self.t = 0
        self.prev_gt = self.prev_pred = self.since_gt = self.since_both = None
        self.counts: dict[int, list[tuple[int, int]]] = {n: [] for n in self.spans}  # one per window end

    def update(self, gt_raw: np.ndarray, pred: np.ndarray) -> None:
        gt_raw, pred = _as_u8_frame(gt_raw, "GT"), _as_u8_frame(pred, "prediction")
        if gt_raw.shape != pred.shape:
            raise ValueError(f"GT shape {gt_raw.shape} != prediction shape {pred.shape}")
        if self.prev_gt is None:
            self.since_gt = np.zeros(gt_raw.shape, np.uint8)
            self.since_both = np.zeros(gt_raw.shape, np.uint8)
        else:
            if gt_raw.shape != self.prev_gt.shape:
                raise ValueError(f"frame {self.t} is {gt_raw.shape}, earlier frames are {self.prev_gt.shape}")
            keep_gt = cv2.compare(gt_raw, self.prev_gt, cv2.CMP_EQ)  # [H, W] 255 = unchanged, 0 = changed
            keep_both = cv2.bitwise_and(keep_gt, cv2.compare(pred, self.prev_pred, cv2.CMP_EQ))
            for since, keep in ((self.since_gt, keep_gt), (self.since_both, keep_both)):
                cv2.add(since, 1, dst=since)  # saturates at 255
                cv2.bitwise_and(since, keep, dst=since)  # reset to 0 where the value changed
        self.prev_gt, self.prev_pred = gt_raw, pred
        for n in self.spans:
            if self.t >= n - 1:  # a window of n frames ends here
                cons = int(np.count_nonzero(self.since_gt >= n - 1))
                both = int(np.count_nonzero(self.since_both >= n - 1))
                self.counts[n].append((both, cons))
        self.t += 1

    def window_accs(self, n: int) -> np.ndarray:
        """[max(T - n, 0)] float64 acc per window start i in range(T - n); NaN where nothing is consistent."""
        c = np.asarray(self.counts[n], dtype=np.int64).reshape(-1, 2)[: max(self.t - n, 0)]
        with np.errstate(divide="ignore", invalid="ignore"):
            return c[:, 0] / c[:, 1]  # 0/0 -> NaN, as in VC_perclip.py


def video_consistency(gt_raw: np.ndarray, pred: np.ndarray, n: int) -> np.ndarray:
    """Per-window VC accs of one video (VC_perclip.py ``get_common``).

    gt_raw: [T, H, W] raw GT values (nothing ignored); pred: [T, H, W].
    Returns [max(T - n, 0)] float64 (empty when T <= n; the official script skips such videos).
    """
    gt_raw, pred = np.asarray(gt_raw), np.asarray(pred)
    if gt_raw.shape != pred.shape or gt_raw.ndim != 3:
        raise ValueError(f"expected GT and prediction [T, H, W] of equal shape, got {gt_raw.shape}, {pred.shape}")
    counter = ConsistencyCounter((n,))
    for g, p in zip(gt_raw, pred):
        counter.update(g, p)
    return counter.window_accs(n)


# --------------------------------------------------------------------------------------------- driver
def _evaluate_video(args: tuple[str, str, str, tuple[int, ...]]) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    """One pass over one video: (confusion [124, 125], {n: window accs}, number of frames)."""
    gt_root, pred_root, video, spans = args
    mask_dir = Path(gt_root) / "data" / video / "mask"
    if not mask_dir.is_dir():
        raise FileNotFoundError(f"{mask_dir}: GT mask folder of video {video!r} not found")
    frames = sorted(p.name for p in mask_dir.iterdir() if p.suffix == ".png")  # VC_perclip.py sorts
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64)
    counter = ConsistencyCounter(spans)
    for name in frames:
        gt_path, pred_path = mask_dir / name, Path(pred_root) / video / name
        gt = read_label_png(gt_path)
        if not pred_path.is_file():
            raise FileNotFoundError(f"{pred_path}: missing prediction for GT frame {gt_path}")
        pred = read_label_png(pred_path)
        if pred.shape != gt.shape:
            raise ValueError(f"{pred_path}: prediction is {pred.shape[0]}x{pred.shape[1]} but GT is "
                             f"{gt.shape[0]}x{gt.shape[1]}")
        confusion_update(cm, gt, pred, where=str(pred_path))
        counter.update(gt, pred)
    # Videos with T <= n give no window (VC_perclip.py: ``if len(images) <= clip_num: continue``).
    return cm, {n: counter.window_accs(n) for n in spans}, len(frames)


def _init_worker() -> None:
    cv2.setNumThreads(1)  # parallelism is across videos


def evaluate(
    gt: str | os.PathLike,
    pred: str | os.PathLike,
    *,
    split: str | None = "val",
    videos: Iterable[str] | None = None,
    spans: Sequence[int] = VC_SPANS,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """mIoU and mVC_n of a VSPW split (see the module docstring for formats and definitions).

    workers: processes over videos (default: all CPUs); 0 or 1 runs in this process.
    """
    videos = list(videos) if videos is not None else list_videos(gt, split)
    if not videos:
        raise ValueError(f"{gt}: no videos to evaluate (split={split!r})")
    spans = tuple(int(n) for n in spans)
    jobs = [(str(gt), str(pred), v, spans) for v in videos]
    workers = (os.cpu_count() or 1) if workers is None else workers
    workers = min(workers, len(jobs))

    cm = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), np.int64)
    accs: dict[int, list[np.ndarray]] = {n: [] for n in spans}
    num_frames = 0
    video_miou, video_fwiou = [], []  # test.py: per-video Evaluator, averaged over the split's videos
    bar = tqdm(total=len(jobs), desc="VSPW mIoU/mVC", unit="video", disable=not progress)
    if workers <= 1:
        results: Iterable = map(_evaluate_video, jobs)
        pool = None
    else:
        # spawn: safe even when the caller holds CUDA / threaded torch state.
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker)
        results = pool.map(_evaluate_video, jobs, chunksize=1)  # yields in video order
    try:
        for video_cm, video_accs, t in results:  # pooled in split order, like VC_perclip.py
            cm += video_cm
            video_miou.append(miou_from_confusion(video_cm)[0])
            video_fwiou.append(accuracy_from_confusion(video_cm)["fwiou"])
            for n in spans:
                accs[n].append(video_accs[n])
            num_frames += t
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    miou, iou = miou_from_confusion(cm)
    out: dict = {"miou": miou}
    vc_windows = {}
    for n in spans:
        windows = np.concatenate(accs[n]) if accs[n] else np.zeros(0)
        vc_windows[n] = int(windows.size)
        valid = windows[~np.isnan(windows)]
        out[f"mvc{n}"] = float(np.nanmean(windows)) if valid.size else float("nan")  # VC_perclip.py
    out.update(accuracy_from_confusion(cm))
    out["video_miou"] = float(sum(video_miou) / len(videos))  # NaN if any video has no valid GT pixel
    out["video_fwiou"] = float(sum(video_fwiou) / len(videos))
    out["per_class_iou"] = {int(c): float(iou[c]) for c in np.nonzero(~np.isnan(iou))[0]}
    out["num_videos"] = len(videos)
    out["num_frames"] = num_frames
    out["vc_windows"] = vc_windows
    return out
