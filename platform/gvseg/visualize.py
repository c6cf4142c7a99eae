"""Pictures people would rather look at than read: id maps in stable colours, side by side with GT, and
the plot of a sweep's results.

Id maps: NumPy/OpenCV. A track id always gets the same colour (a hash, not a palette index), so identity
switches are visible as colour changes across frames. Sweep plots (:func:`sweep_plot`: heatmap, bars or a
line, as ``Sweep.plot`` says): matplotlib, loaded when a plot is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from gvseg.sweep import Sweep, axis_columns, best_row

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def id_colors(ids: np.ndarray) -> np.ndarray:
    """[...] int ids -> [..., 3] uint8 RGB; 0 (void/background) is black; stable for a given id."""
    x = ids.astype(np.uint64) * np.uint64(2654435761) + np.uint64(0x9E3779B9)
    rgb = np.stack([(x >> np.uint64(s)) & np.uint64(255) for s in (0, 8, 16)], -1).astype(np.uint8)
    rgb = (rgb // 2 + 96).astype(np.uint8)  # bright enough on dark frames
    rgb[ids == 0] = 0
    return rgb


def overlay(frame: np.ndarray, ids: np.ndarray, alpha: float = 0.55, edges: bool = True) -> np.ndarray:
    """Blend coloured ids onto an RGB frame [H, W, 3]; segment borders drawn in white."""
    color = id_colors(ids)
    out = frame.astype(np.float32)
    fg = ids != 0
    out[fg] = (1 - alpha) * out[fg] + alpha * color[fg]
    if edges:
        k = np.ones((3, 3), np.uint8)
        border = cv2.dilate(ids.astype(np.float32), k) != cv2.erode(ids.astype(np.float32), k)
        out[border] = 255
    return out.clip(0, 255).astype(np.uint8)


def side_by_side(frame: np.ndarray, pred_ids: np.ndarray, gt_ids: np.ndarray | None = None,
                 labels: tuple[str, str] = ("prediction", "ground truth")) -> np.ndarray:
    """[H, W*k, 3]: the frame with predicted ids, and (if given) with GT ids, each captioned. Tiny frames
    (debug data) are enlarged with nearest-neighbour so a person can see the segments."""
    scale = max(1, -(-256 // frame.shape[0]))
    if scale > 1:
        up = lambda a: np.repeat(np.repeat(a, scale, 0), scale, 1)  # noqa: E731
        frame, pred_ids = up(frame), up(pred_ids)
        gt_ids = None if gt_ids is None else up(gt_ids)
    panels = [(overlay(frame, pred_ids), labels[0])]
    if gt_ids is not None:
        panels.append((overlay(frame, gt_ids), labels[1]))
    out = []
    for img, text in panels:
        img = np.ascontiguousarray(img)
        scale = max(0.3, img.shape[0] / 500)
        cv2.putText(img, text, (4, int(14 * scale) + 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale,
                    (255, 255, 255), 1, cv2.LINE_AA)
        out.append(img)
    return np.concatenate(out, axis=1)


# ------------------------------------------------------------------------------------------ sweep plots
# matplotlib's object API (``Figure``, never pyplot): no global figure state and no GUI backend, so a
# driver thread can draw while Ray or a notebook owns pyplot. Imported per call: predicting needs none of it.

_INK, _GRAY, _BAR, _BEST, _EMPTY = "#1e1e1e", "#aaaaaa", "#1f77b4", "#2ca02c", "#e1e1e1"


def _value(row: dict[str, Any], metric: str) -> float | None:
    v = row.get(metric)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def _title(sweep: Sweep) -> str:
    return f"{sweep.name}: {sweep.metric} ({sweep.mode})"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def heatmap_figure(rows: list[dict[str, Any]], sweep: Sweep) -> Figure:
    """The metric over the sweep's two grid axes (rows: the first key's values, columns: the second), the
    mean over seeds of FINISHED trials; cells without one show the trials' status in gray (an ASHA-stopped
    cell its last mid-run value, uncoloured: it is not a result)."""
    y_key, x_key = axis_columns([k for key in sweep.grid for k in key.split(",")]).values()
    order = lambda v: (str(type(v)), v)
    ys = sorted({r[y_key] for r in rows}, key=order)
    xs = sorted({r[x_key] for r in rows}, key=order)
    vals = np.full((len(ys), len(xs)), np.nan)  # [Y, X]
    notes = [["" for _ in xs] for _ in ys]
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            cell = [r for r in rows if r[y_key] == y and r[x_key] == x]
            scores = [v for r in cell if r["status"] == "FINISHED" and (v := _value(r, sweep.metric)) is not None]
            early = [v for r in cell if r["status"] == "STOPPED" and (v := _value(r, sweep.metric)) is not None]
            if scores:
                vals[i, j] = float(np.mean(scores))
            elif early:
                notes[i][j] = f"{np.mean(early):.3f} stopped"
            else:
                notes[i][j] = "/".join(sorted({r["status"].lower() for r in cell})) or "-"
    import matplotlib

    fig = _figure(1.9 + 1.4 * len(xs), 1.3 + 0.6 * len(ys))
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad=_EMPTY)
    finite = vals[np.isfinite(vals)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    image = ax.imshow(np.ma.masked_invalid(vals), cmap=cmap, vmin=lo, vmax=hi if hi > lo else lo + 1e-9,
                      aspect="auto")
    for i in range(len(ys)):
        for j in range(len(xs)):
            done = bool(np.isfinite(vals[i, j]))
            dark = done and (hi <= lo or (vals[i, j] - lo) / (hi - lo) < 0.6)  # white on viridis' dark end
            ax.text(j, i, f"{vals[i, j]:.3f}" if done else notes[i][j], ha="center", va="center", fontsize=9,
                    color="white" if dark else _INK)
    ax.set_xticks(range(len(xs)), [str(x) for x in xs])
    ax.set_yticks(range(len(ys)), [str(y) for y in ys])
    ax.set_xlabel(x_key)
    ax.set_ylabel(y_key)
    if finite.size:
        fig.colorbar(image, ax=ax, label=sweep.metric)
    ax.set_title(_title(sweep), fontsize=10, loc="left")
    return fig


def bar_figure(rows: list[dict[str, Any]], sweep: Sweep) -> Figure:
    """Horizontal bars, one per trial (label: its name, first at the top); the best FINISHED trial in green,
    unfinished ones in gray; trials without a value show their status."""
    best = best_row(rows, sweep.metric, sweep.mode)
    values = [_value(r, sweep.metric) for r in rows]
    fig = _figure(7.0, 1.0 + 0.32 * len(rows))
    ax = fig.add_subplot()
    colors = [_BEST if best is not None and r["name"] == best["name"] else _BAR if r["status"] == "FINISHED"
              else _GRAY for r in rows]
    ax.barh(range(len(rows)), [v if v is not None else 0.0 for v in values], color=colors, height=0.7)
    for i, (row, v) in enumerate(zip(rows, values)):
        suffix = "" if row["status"] == "FINISHED" else f" ({row['status'].lower()})"
        text = row["status"].lower() if v is None else f"{v:.3f}{suffix}"
        ax.annotate(text, (v or 0.0, i), xytext=(4 if (v or 0.0) >= 0 else -4, 0), textcoords="offset points",
                    ha="left" if (v or 0.0) >= 0 else "right", va="center", fontsize=8,
                    color=_GRAY if v is None else _INK)
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.axvline(0.0, color=_INK, linewidth=0.8)
    ax.margins(x=0.25)  # room for the value labels
    ax.set_xlabel(sweep.metric)
    ax.set_title(_title(sweep), fontsize=10, loc="left")
    return fig


def line_figure(rows: list[dict[str, Any]], sweep: Sweep) -> Figure:
    """The metric against trial order (e.g. increasing bins), trial names written vertically under the axis;
    trials without a value show their status."""
    values = [_value(r, sweep.metric) for r in rows]
    fig = _figure(1.5 + 0.9 * len(rows), 4.5)
    ax = fig.add_subplot()
    points = [(i, v) for i, v in enumerate(values) if v is not None]
    if points:
        ax.plot(*zip(*points), color=_BAR, marker="o", linewidth=2)
    for i, v in points:
        ax.annotate(f"{v:.3f}", (i, v), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=8)
    for i, (row, v) in enumerate(zip(rows, values)):
        if v is None:
            ax.annotate(row["status"].lower(), (i, 0.02), xycoords=("data", "axes fraction"), ha="center",
                        fontsize=8, color=_GRAY)
    ax.set_xticks(range(len(rows)), [r["name"] for r in rows], rotation=90, fontsize=8)
    ax.set_xlim(-0.5, len(rows) - 0.5)
    ax.set_ylabel(sweep.metric)
    ax.set_title(_title(sweep), fontsize=10, loc="left")
    return fig


# Sweep.plot -> how it is drawn
PLOTS: dict[str, Callable[[list[dict[str, Any]], Sweep], Figure]] = {
    "heatmap": heatmap_figure,
    "bar": bar_figure,
    "line": line_figure,
}


def sweep_plot(rows: list[dict[str, Any]], sweep: Sweep, out_dir: Path) -> Path:
    """The sweep's plot (``Sweep.plot``) as ``<out_dir>/<metric>_<kind>.png``. A heatmap needs exactly two
    grid axes and no variants (Table 4b's τ × N_Q); otherwise it falls back to bars."""
    kind = sweep.plot
    axes = [k for key in sweep.grid for k in key.split(",")]
    if kind == "heatmap" and not (len(sweep.grid) == 2 and len(axes) == 2 and not sweep.variants):
        print(f"gvseg: sweep {sweep.name}: a heatmap needs exactly two grid keys and no variants; drawing bars")
        kind = "bar"
    path = Path(out_dir) / f"{sweep.metric}_{kind}.png"
    PLOTS[kind](rows, sweep).savefig(path, facecolor="white")
    return path
