"""Every official writer round-trips: predictions made from the GT itself, written by ``gvseg.writers`` and
scored by ``gvseg.metrics`` against the GT files, give a perfect score; files are flushed per frame."""

import json

import cv2
import numpy as np
import pytest

from gvseg.config import PostprocessConfig
from gvseg.data.formats import FORMATS, load_annotation, read_dataset, val_split
from gvseg.data.pipeline import label_space_for
from gvseg.data.synthetic import synth_dataset
from gvseg.structures import FramePrediction, Segment
from gvseg.video.stream import _rle
from gvseg.writers import (
    BurstWriter,
    OverlayVideoWriter,
    VideoInfo,
    VipsegWriter,
    VspwWriter,
    YtvisWriter,
    official_writer,
    video_info,
)

TASK = {k: f.task for k, f in FORMATS.items()}


def _synth(fmt, root):
    synth_dataset(fmt, root, videos=3, frames=4, height=32, width=48, seed=1, thing_classes=2, stuff_classes=2,
                  val_fraction=0.34, progress=False)
    split = "valid" if fmt == "ytvis" else val_split(fmt)  # YouTube-VIS: the reader aliases val/valid
    records, _ = read_dataset(fmt, root, split, progress=False)
    return records, split


def gt_prediction(record, t, space, task) -> FramePrediction:
    """Frame t's GT as a FramePrediction (what a perfect model would output)."""
    h, w = record.height, record.width
    ann = load_annotation(record, t)
    fp = FramePrediction(record.video_id, t, h, w, task)
    labels = space.to_contiguous(ann.category_ids) if len(ann.ids) else np.zeros(0, np.int64)
    crowd = ann.iscrowd if ann.iscrowd is not None else np.zeros(len(ann.ids), bool)
    if task == "vis":
        fp.segments = [Segment(int(i), int(c), 1.0, True, int(m.sum()), _rle(m))
                       for i, c, m in zip(ann.ids, labels, ann.masks) if m.any()]
        return fp
    id_map = np.zeros((h, w), np.int32)
    sem = np.full((h, w), -1, np.int32)
    for i, c, m in zip(ann.ids, labels, ann.masks):
        id_map[m], sem[m] = i, c
    fp.id_map, fp.semantic = id_map, sem
    if task == "vss":
        fp.id_map = None
    fp.segments = [Segment(int(i), int(c), 1.0, bool(space.isthing(c) and not k), int(m.sum()))
                   for i, c, k, m in zip(ann.ids, labels, crowd, ann.masks) if m.any()]
    return fp


def _write_gt(fmt, records, space, out, split):
    writer = official_writer(fmt, out, space, split=split)
    with writer:
        for r in records:
            writer.begin_video(video_info(r))
            for t in range(len(r)):
                writer.write(gt_prediction(r, t, space, TASK[fmt]))
            writer.end_video()
    return writer


@pytest.mark.parametrize("fmt", ["vipseg", "kitti-step", "vspw", "ytvis", "davis", "ytvos", "burst"])
def test_gt_predictions_score_perfectly(fmt, tmp_path):
    from gvseg import config
    from gvseg.evaluation import SCORERS

    root = tmp_path / "data"
    records, split = _synth(fmt, root)
    space = label_space_for(records)
    out = tmp_path / "pred"
    _write_gt(fmt, records, space, out, split)
    cfg = config.Config(data=config.DataConfig(format=fmt, root=str(root), val_split=split))
    res = SCORERS[FORMATS[fmt].scorer](cfg, out, records, False)
    key, best = {"vipseg": ("vpq_1", 100.0), "kitti-step": ("stq", 1.0), "vspw": ("miou", 1.0), "ytvis": ("AP", 1.0),
                 "davis": ("J&F-Mean", 1.0), "ytvos": ("J&F-Mean", 1.0), "burst": ("HOTA_all", 1.0)}[fmt]
    assert res[key] == pytest.approx(best), {k: v for k, v in res.items() if not isinstance(v, (dict, list))}
    if fmt == "vipseg":
        assert res["stq"] == pytest.approx(1.0)
    if fmt == "vspw":
        assert res["mvc8"] != res["mvc8"] or res["mvc8"] == pytest.approx(1.0)  # NaN when videos are short
    assert not list(out.rglob("*.partial"))


def test_ytvis_category_ids_are_the_datasets(tmp_path):
    records, split = _synth("ytvis", tmp_path / "data")
    space = label_space_for(records)
    _write_gt("ytvis", records, space, tmp_path / "pred", split)
    results = json.loads((tmp_path / "pred" / "results.json").read_text())
    gt = json.loads(open(records[0].meta["json"]).read())
    assert {r["category_id"] for r in results} <= {c["id"] for c in gt["categories"]}
    assert all(len(r["segmentations"]) == len(records[0]) for r in results if r["video_id"] == gt["videos"][0]["id"])


def _vis_frame(t, segs):
    """segs: [(track, probs, mask_score, area)]: a square of ``area`` pixels at the top-left corner."""
    out = []
    for tid, probs, ms, area in segs:
        m = np.zeros((4, 4), bool)
        m.flat[:area] = True
        p = np.asarray(probs, np.float32)
        out.append(Segment(tid, int(p.argmax()), float(p.max()), True, area, _rle(m), p, ms))
    return FramePrediction("v", t, 4, 4, "vis", out, postprocess=PostprocessConfig(vis_topk=3))


def _ytvis_results(tmp_path, frames, **kw):
    from gvseg.data.transforms import LabelSpace
    from gvseg.structures import Category

    space = LabelSpace.from_categories([Category(1, "a", True), Category(2, "b", True), Category(5, "c", True)])
    w = YtvisWriter(tmp_path, space, **kw)
    w.begin_video(VideoInfo("v", 4, 4, meta={"json_video_id": 3}))
    for f in frames:
        w.write(f)
    w.close()
    assert not (tmp_path / ".spool").exists()
    return json.loads((tmp_path / "results.json").read_text())


def test_ytvis_writer_emits_the_videos_topk_track_class_pairs(tmp_path):
    """Track 7: mean probs (0.6, 0.3, 0.1) over its 3 frames, mask score (2 + 2 + 8) / 16 = 0.75 (pixel-weighted);
    track 9: frame 1 only, (0.1, 0.8, 0.1), mask score 1. Top-3 over tracks x classes: (9, b) 0.8, (7, a) 0.45,
    (7, b) 0.225: track 7 appears with two classes; (7, c) and track 9's other classes fall off."""
    frames = [_vis_frame(0, [(7, (0.8, 0.1, 0.1), 0.5, 4)]),
              _vis_frame(1, [(7, (0.4, 0.5, 0.1), 0.5, 4), (9, (0.1, 0.8, 0.1), 1.0, 6)]),
              _vis_frame(2, [(7, (0.6, 0.3, 0.1), 1.0, 8)])]
    res = _ytvis_results(tmp_path, frames)
    assert [(r["category_id"], round(r["score"], 4)) for r in res] == [(2, 0.8), (1, 0.45), (2, 0.225)]
    assert all(r["video_id"] == 3 for r in res)
    seg9, seg7 = res[0]["segmentations"], res[1]["segmentations"]
    assert seg9[0] is None and seg9[1] is not None and seg9[2] is None
    assert all(s is not None for s in seg7) and res[2]["segmentations"] == seg7


def test_ytvis_writer_topk_and_score_can_be_overridden(tmp_path):
    frames = [_vis_frame(0, [(7, (0.8, 0.1, 0.1), 0.5, 4), (9, (0.1, 0.7, 0.2), 1.0, 4)])]
    res = _ytvis_results(tmp_path, frames, topk=1, score="class")
    assert [(r["category_id"], round(r["score"], 4)) for r in res] == [(1, 0.8)]  # class only: 0.8 beats 0.7


def test_ytvis_writer_video_without_instances_writes_nothing(tmp_path):
    assert _ytvis_results(tmp_path, [_vis_frame(0, []), _vis_frame(1, [])]) == []


def test_palette_pngs_are_mode_p_with_object_indices(tmp_path):
    from PIL import Image

    records, split = _synth("davis", tmp_path / "data")
    space = label_space_for(records)
    _write_gt("davis", records, space, tmp_path / "pred", split)
    r = records[0]
    im = Image.open(tmp_path / "pred" / r.video_id / f"{r.frame_names[0]}.png")
    assert im.mode == "P" and im.getpalette()[:6] == [0, 0, 0, 128, 0, 0]
    ann = load_annotation(r, 0)
    assert set(np.unique(np.asarray(im)).tolist()) - {0} == set(ann.ids.tolist())


def test_json_is_on_disk_after_every_frame_and_valid_after_close(tmp_path):
    """A crash mid-video loses nothing: each frame's entry is already in the flushed .partial file."""
    from gvseg.data.transforms import LabelSpace
    from gvseg.structures import Category

    space = LabelSpace.from_categories([Category(0, "a", True), Category(1, "b", False)])
    w = VipsegWriter(tmp_path, space)
    w.begin_video(VideoInfo("v", 4, 5))
    for t in range(3):
        fp = FramePrediction("v", t, 4, 5, "vps", [Segment(7, 0, 0.9, True, 20)], np.full((4, 5), 7, np.int32),
                             np.zeros((4, 5), np.int32))
        w.write(fp)
        text = (tmp_path / "pred.json.partial").read_text()
        assert text.count('"image_id"') == t + 1 and (tmp_path / "pan_pred" / "v" / f"{t:05d}.png").is_file()
    w.close()
    data = json.loads((tmp_path / "pred.json").read_text())
    assert len(data["annotations"][0]["annotations"]) == 3
    assert data["annotations"][0]["annotations"][0]["segments_info"][0]["category_id"] == 0


def test_burst_omits_empty_masks_and_empty_video(tmp_path):
    w = BurstWriter(tmp_path)
    w.begin_video(VideoInfo("empty", 4, 4))
    w.end_video()
    w.begin_video(VideoInfo("v", 4, 4))
    ids = np.zeros((4, 4), np.int32)
    ids[:2] = 3
    w.write(FramePrediction("v", 0, 4, 4, "evs", [Segment(3, 0, 0.5, True, 8), Segment(5, 0, 0.5, True, 0)], ids))
    w.close()
    seqs = json.loads((tmp_path / "burst_results.json").read_text())["sequences"]
    assert seqs[0]["segmentations"] == [] and seqs[0]["annotated_image_paths"] == []
    assert list(seqs[1]["segmentations"][0]) == ["3"] and seqs[1]["segmentations"][0]["3"]["score"] == 0.5


def test_vspw_writer_rejects_wrong_size(tmp_path):
    from gvseg.data.transforms import LabelSpace
    from gvseg.structures import Category

    w = VspwWriter(tmp_path, LabelSpace.from_categories([Category(0, "a", False)]))
    w.begin_video(VideoInfo("v", 4, 4))
    with pytest.raises(ValueError, match="5x4 but the video is 4x4"):
        w.write(FramePrediction("v", 0, 5, 4, "vss", semantic=np.zeros((5, 4), np.int32)))


def test_overlay_mp4_has_every_frame_in_the_track_colour(tmp_path):
    from gvseg.visualize import id_colors

    h, w, n = 64, 96, 5
    writer = OverlayVideoWriter(tmp_path, names=["car"])
    writer.begin_video(VideoInfo("clip", h, w, fps=5))
    for t in range(n):
        ids = np.zeros((h, w), np.int32)
        ids[10:50, 10 + 5 * t:50 + 5 * t] = 42
        writer.write(FramePrediction("clip", t, h, w, "vps", [Segment(42, 0, 0.9, True, 1600)], ids),
                     np.zeros((h, w, 3), np.uint8))
    writer.close()
    cap = cv2.VideoCapture(str(tmp_path / "clip.mp4"))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert len(frames) == n
    expected = 0.55 * id_colors(np.array([42]))[0].astype(float)  # alpha-blended onto black
    patch = frames[0][14:20, 14:20].reshape(-1, 3).mean(0)  # inside the mask, away from border and caption
    assert np.abs(patch - expected).max() < 25
    assert frames[0][60:, :5].mean() < 10  # background stays dark
