"""`gvseg predict` on real video files with a debug checkpoint: outputs, EVS exemplars, truncated input."""

import json
import re

import cv2
import numpy as np
import pytest
from PIL import Image
from predict_helpers import moving_square, write_video

from gvseg.cli import main
from gvseg.data.errors import DataError
from gvseg.metrics.panoptic_io import read_id_png
from gvseg.predict import predict, read_exemplars
from gvseg.writers import VideoInfo


def _count_frames(path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_predict_mp4_writes_official_png_and_mp4(make_checkpoint, tmp_path):
    video = write_video(tmp_path / "street.mp4", 7)
    out = tmp_path / "out"
    summary = predict(video, make_checkpoint("vps"), "vps", out_dir=out, clip=3, overlap=1, progress=False)
    assert summary["frames"] == 7 and summary["videos"] == 1 and summary["official_format"] == "vipseg"
    pngs = sorted((out / "official" / "pan_pred" / "street").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{t:05d}" for t in range(7)]
    assert read_id_png(pngs[0]).shape == (48, 64)  # original resolution, not the model's 32 px
    pred = json.loads((out / "official" / "pred.json").read_text())
    assert [a["image_id"] for a in pred["annotations"][0]["annotations"]] == [p.stem for p in pngs]
    assert len(list((out / "overlay" / "street").glob("*.png"))) == 7
    assert _count_frames(out / "mp4" / "street.mp4") == 7


@pytest.mark.parametrize("task,official", [("vss", "street/00000.png"), ("vis", "results.json")])
def test_predict_other_tasks(make_checkpoint, tmp_path, task, official):
    video = write_video(tmp_path / "street.avi", 4, "MJPG")
    out = tmp_path / "out"
    predict(video, make_checkpoint(task), task, out_dir=out, formats=("official",), progress=False)
    assert (out / "official" / official).is_file()
    if task == "vis":
        for r in json.loads((out / "official" / "results.json").read_text()):
            assert len(r["segmentations"]) == 4 and r["category_id"] in (1, 2)  # YTVIS ids of the 2 classes


def test_predict_frame_folder_evs_with_point_json(make_checkpoint, tmp_path):
    frames = tmp_path / "clip"
    frames.mkdir()
    for t in range(5):
        Image.fromarray(moving_square(t)).save(frames / f"{10 + t:05d}.jpg")
    ex = tmp_path / "points.json"
    ex.write_text(json.dumps({"objects": [{"id": 1, "frame": 0, "point": [10, 20]},
                                          {"id": 2, "frame": 2, "box": [30, 5, 10, 10]}]}))
    out = tmp_path / "out"
    predict(frames, make_checkpoint("evs"), "evs", exemplars=ex, out_dir=out, formats=("official", "mp4"),
            progress=False)
    pngs = sorted((out / "official" / "clip").glob("*.png"))
    assert [p.stem for p in pngs] == [f"{10 + t:05d}" for t in range(5)]  # the folder's own frame names
    ids = [np.asarray(Image.open(p)) for p in pngs]
    assert Image.open(pngs[0]).mode == "P"
    assert set(np.unique(ids[0])) <= {0, 1} and set(np.unique(np.stack(ids))) <= {0, 1, 2}
    assert not (ids[0] == 2).any() and not (ids[1] == 2).any()  # object 2 enters at its hint's frame


def test_palette_png_exemplars(tmp_path):
    lab = np.zeros((48, 64), np.uint8)
    lab[5:10, 5:10], lab[20:30, 40:50] = 1, 3
    im = Image.fromarray(lab, mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0] * 128)
    im.save(tmp_path / "00002.png")
    ex = read_exemplars(tmp_path / "00002.png", VideoInfo("v", 48, 64))
    assert [(e.track_id, e.frame, e.kind, int(e.mask.sum())) for e in ex] == [(1, 2, "mask", 25), (3, 2, "mask", 100)]
    with pytest.raises(DataError, match="is 48x64|48x64"):
        read_exemplars(tmp_path / "00002.png", VideoInfo("v", 40, 64))


def test_bad_exemplar_json_names_the_file(tmp_path):
    p = tmp_path / "ex.json"
    p.write_text(json.dumps({"objects": [{"id": 1, "point": [500, 3]}]}))
    with pytest.raises(DataError, match=r"ex\.json: objects\[0\]: \(500.0, 3.0\) is outside the 64x48 video"):
        read_exemplars(p, VideoInfo("v", 48, 64))


def test_truncated_video_errors_after_writing_every_decoded_frame(make_checkpoint, tmp_path):
    video = write_video(tmp_path / "cut.avi", 12, "MJPG")
    video.write_bytes(video.read_bytes()[: int(video.stat().st_size * 0.8)])
    out = tmp_path / "out"
    with pytest.raises(DataError, match=r"cut\.avi: decoding stopped at frame (\d+) of 12.*predicted and written") as ei:
        predict(video, make_checkpoint("vps"), "vps", out_dir=out, clip=3, overlap=1, progress=False)
    decoded = int(re.search(r"frame (\d+)", ei.value.reason).group(1))
    assert 0 < decoded < 12
    # nothing lost: every decoded frame is on disk, and the JSON is complete and valid
    assert len(list((out / "official" / "pan_pred" / "cut").glob("*.png"))) == decoded
    pred = json.loads((out / "official" / "pred.json").read_text())
    assert len(pred["annotations"][0]["annotations"]) == decoded
    assert _count_frames(out / "mp4" / "cut.mp4") == decoded


@pytest.mark.filterwarnings("ignore:.*trained for task")
def test_cli_predict_and_its_errors(make_checkpoint, tmp_path, capsys):
    video = write_video(tmp_path / "v.mp4", 3)
    ckpt = make_checkpoint("vps")
    rc = main(["predict", str(video), "--checkpoint", str(ckpt), "--task", "vps", "--out", str(tmp_path / "o"),
               "--format", "official", "--clip", "2", "--overlap", "1", "--quiet"])
    assert rc == 0 and "predicted 3 frames" in capsys.readouterr().out
    assert not (tmp_path / "o" / "mp4").exists()
    rc = main(["predict", str(tmp_path / "missing.mp4"), "--checkpoint", str(ckpt), "--task", "vps",
               "--out", str(tmp_path / "o2"), "--quiet"])
    assert rc == 2 and "missing.mp4: input not found" in capsys.readouterr().err
    rc = main(["predict", str(video), "--checkpoint", str(ckpt), "--task", "evs", "--out", str(tmp_path / "o3"),
               "--quiet"])
    assert rc == 2 and "needs exemplars" in capsys.readouterr().err


def test_predict_dataset_split_uses_its_writer_and_exemplars(make_checkpoint, tmp_path):
    from gvseg.data.synthetic import synth_dataset
    from gvseg.metrics import jf

    root = tmp_path / "DAVIS"
    synth_dataset("davis", root, videos=2, frames=4, height=32, width=48, seed=0, progress=False)
    out = tmp_path / "out"
    s = predict(f"davis:{root}:val", make_checkpoint("evs"), "evs", out_dir=out, formats=("official",),
                progress=False)
    assert s["official_format"] == "davis" and s["videos"] == 1
    res = jf.evaluate_davis(root, out / "official", split="val", progress=False)  # the files score as they are
    assert 0.0 <= res["J&F-Mean"] <= 1.0
