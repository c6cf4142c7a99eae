import numpy as np
import pytest

from gvseg.visualize import id_colors, overlay, side_by_side


def test_colors_are_stable_and_void_is_black():
    ids = np.array([[0, 7], [7, 9]])
    c = id_colors(ids)
    assert (c[0, 0] == 0).all() and (c[0, 1] == c[1, 0]).all() and not (c[0, 1] == c[1, 1]).all()


def test_overlay_keeps_background_pixels():
    frame = np.full((8, 8, 3), 50, np.uint8)
    ids = np.zeros((8, 8), np.int64)
    assert (overlay(frame, ids) == frame).all()


def test_side_by_side_shapes_and_enlarges_tiny_frames():
    frame = np.zeros((64, 96, 3), np.uint8)
    ids = np.zeros((64, 96), np.int64)
    ids[10:20, 10:20] = 3
    out = side_by_side(frame, ids, ids)
    assert out.shape == (256, 2 * 384, 3)
    assert side_by_side(np.zeros((300, 40, 3), np.uint8), np.zeros((300, 40), np.int64)).shape == (300, 40, 3)


# ------------------------------------------------------------------------------------------ sweep plots

GRID = {"loss.contrastive.tau": [0.1, 0.3], "loss.contrastive.queue_size": [4, 8]}


def _rows():
    """A 2x2 grid: a failed, an ASHA-stopped and two finished trials."""
    out, i = [], 0
    for tau in (0.1, 0.3):
        for q in (4, 8):
            status = ["FINISHED", "FAILED", "STOPPED", "FINISHED"][i]
            out.append({"trial": i, "name": f"t{i:02d}-tau={tau},queue_size={q}", "tau": tau, "queue_size": q,
                        "status": status, "vpq": None if i == 1 else 0.1 * i + 0.05})
            i += 1
    return out


def test_every_sweep_plot_kind_has_a_drawer():
    from typing import get_args, get_type_hints

    from gvseg.sweep import Sweep
    from gvseg.visualize import PLOTS

    assert set(PLOTS) == set(get_args(get_type_hints(Sweep)["plot"]))


@pytest.mark.parametrize("kind", ["heatmap", "bar", "line"])
def test_each_plot_kind_writes_a_drawn_matplotlib_png(kind, tmp_path):
    import cv2
    from PIL import Image

    from gvseg.config import Config
    from gvseg.sweep import Sweep
    from gvseg.visualize import sweep_plot

    path = sweep_plot(_rows(), Sweep(name="s", base=Config(), grid=GRID, metric="vpq", plot=kind), tmp_path)
    assert path == tmp_path / f"vpq_{kind}.png"  # the name the parent run's "plots" artifact keeps
    assert "matplotlib" in Image.open(path).info.get("Software", "").lower()
    image = cv2.imread(str(path))
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert len({tuple(p) for p in image.reshape(-1, 3)}) > 10  # bars, cells, text: not a blank canvas


def test_heatmap_falls_back_to_bars_without_a_two_key_grid(tmp_path, capsys):
    from gvseg.config import Config
    from gvseg.sweep import Sweep
    from gvseg.visualize import sweep_plot

    with_variants = Sweep(name="h", base=Config(), grid=GRID, variants={"a": {}}, metric="vpq", plot="heatmap")
    assert sweep_plot(_rows(), with_variants, tmp_path).name == "vpq_bar.png"
    one_key = Sweep(name="h", base=Config(), grid={"loss.contrastive.tau": [0.1]}, metric="vpq", plot="heatmap")
    assert sweep_plot(_rows()[:1], one_key, tmp_path).name == "vpq_bar.png"
    assert "a heatmap needs exactly two grid keys" in capsys.readouterr().out


def test_plots_draw_sweeps_where_no_trial_has_a_value(tmp_path):
    from gvseg.config import Config
    from gvseg.sweep import Sweep
    from gvseg.visualize import sweep_plot

    failed = [{**r, "status": "FAILED", "vpq": None} for r in _rows()]
    for kind in ("heatmap", "bar", "line"):  # an all-failed sweep still reports, with its plot
        assert sweep_plot(failed, Sweep(name="f", base=Config(), grid=GRID, metric="vpq", plot=kind),
                          tmp_path).stat().st_size > 0
