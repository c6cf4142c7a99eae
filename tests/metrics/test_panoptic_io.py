"""Panoptic-video file formats (gvseg.metrics.panoptic_io): VIPSeg RGB ids + JSON, KITTI-STEP PNGs."""

import json

import numpy as np
import pytest
from PIL import Image

from gvseg.metrics import panoptic_io as pio

CATS = [{"id": 0, "name": "person", "isthing": 1}, {"id": 1, "name": "sky", "isthing": 0}]


def test_rgb2id_id2rgb_roundtrip_and_channel_order():
    ids = np.array([[0, 1, 256, 65536], [16777215, 1234567, 255, 65535]], np.int64)
    rgb = pio.id2rgb(ids)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 4, 3)
    assert rgb[0, 2].tolist() == [0, 1, 0] and rgb[0, 3].tolist() == [0, 0, 1]  # id = R + 256 G + 65536 B
    assert (pio.rgb2id(rgb) == ids).all()


def test_id2rgb_rejects_out_of_range():
    with pytest.raises(ValueError, match="2\\^24|16777216"):
        pio.id2rgb(np.array([1 << 24]))


def test_png_roundtrip_is_rgb(tmp_path):
    ids = np.random.default_rng(0).integers(0, 1 << 24, (5, 7))
    p = tmp_path / "a" / "00000001.png"
    pio.write_id_png(p, ids)
    assert Image.open(p).mode == "RGB"
    out = pio.read_id_png(p)
    assert out.dtype == np.uint32 and (out == ids).all()


def test_rgba_png_ignores_alpha(tmp_path):
    rgb = pio.id2rgb(np.array([[3, 70000]]))
    rgba = np.concatenate([rgb, np.full((1, 2, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "x.png")
    assert pio.read_id_png(tmp_path / "x.png").tolist() == [[3, 70000]]


def test_bad_pngs_name_the_file(tmp_path):
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "gray.png")
    with pytest.raises(ValueError, match="gray.png.*RGB"):
        pio.read_id_png(tmp_path / "gray.png")
    with pytest.raises(FileNotFoundError, match="nope.png"):
        pio.read_id_png(tmp_path / "nope.png")


def test_kitti_step_roundtrip_with_instance_ids_above_255(tmp_path):
    sem = np.array([[13, 13, 11, 255]])
    inst = np.array([[300, 65535, 1000, 0]])
    pio.write_kitti_step_png(tmp_path / "000000.png", sem, inst)
    rgb = np.array(Image.open(tmp_path / "000000.png"))
    assert rgb[0, 0].tolist() == [13, 1, 44]  # R = class, G = 300 // 256, B = 300 % 256
    s, i = pio.read_kitti_step_png(tmp_path / "000000.png")
    assert s.tolist() == sem.tolist() and i.tolist() == inst.tolist()
    lab = pio.kitti_step_label(pio.read_id_png(tmp_path / "000000.png"))
    assert lab.tolist() == ((sem << 16) + inst).tolist()


def test_write_and_load_vipseg_layout(tmp_path):
    f0 = np.array([[0, 5], [7, 7]], np.uint32)
    segs = [pio.segments_from_ids(f0, {5: 1, 7: 0})]
    jp = pio.write_vipseg(tmp_path / "gt", {"12_abc": (["00000392"], [f0], segs)}, CATS)
    assert jp.name == "panoptic_gt_VIPSeg_val.json"
    data = json.loads(jp.read_text())
    assert data["videos"][0]["images"][0] == {"id": "00000392", "width": 2, "height": 2, "file_name": "00000392.png"}
    ann = data["annotations"][0]["annotations"][0]
    assert ann["image_id"] == "00000392" and ann["segments_info"] == [
        {"id": 5, "category_id": 1, "iscrowd": 0, "area": 1},
        {"id": 7, "category_id": 0, "iscrowd": 0, "area": 2},
    ]
    assert (tmp_path / "gt" / "panomasksRGB" / "12_abc" / "00000392.png").is_file()
    pp = pio.write_vipseg(tmp_path / "pred", {"12_abc": (["00000392"], [f0], segs)}, kind="pred")
    assert pp.name == "pred.json" and (tmp_path / "pred" / "pan_pred" / "12_abc" / "00000392.png").is_file()
    split = pio.load_vipseg(tmp_path / "gt", tmp_path / "pred")
    v = split.videos[0]
    assert v.video_id == "12_abc" and v.file_names == ["00000392.png"]
    assert v.pred_paths[0].endswith("pred/pan_pred/12_abc/00000392.png") and v.pred_segments == segs
    assert pio.detect_format(tmp_path / "gt") == "vipseg" and pio.detect_format(jp) == "vipseg"
    assert pio.load_vipseg(jp).videos[0].gt_paths == v.gt_paths  # GT given as the JSON file


def test_prediction_frame_count_mismatch_names_pred_json(tmp_path):
    f = np.zeros((2, 2), np.uint32)
    pio.write_vipseg(tmp_path / "gt", {"v": (["0", "1"], [f, f], [[], []])}, CATS)
    pio.write_vipseg(tmp_path / "pred", {"v": (["0"], [f], [[]])}, kind="pred")
    with pytest.raises(ValueError, match="pred.json.*1 predicted frames but the GT has 2"):
        pio.load_vipseg(tmp_path / "gt", tmp_path / "pred")


def test_two_gt_jsons_need_an_explicit_choice(tmp_path):
    f = np.zeros((2, 2), np.uint32)
    pio.write_vipseg(tmp_path, {"v": (["0"], [f], [[]])}, CATS, json_name="panoptic_gt_VIPSeg_train.json")
    pio.write_vipseg(tmp_path, {"v": (["0"], [f], [[]])}, CATS, json_name="panoptic_gt_VIPSeg_val.json")
    with pytest.raises(ValueError, match="gt_json"):
        pio.load_vipseg(tmp_path)
    assert pio.load_vipseg(tmp_path, gt_json=str(tmp_path / "panoptic_gt_VIPSeg_val.json")).videos


def test_segments_from_ids_requires_categories():
    with pytest.raises(ValueError, match="segment id 9"):
        pio.segments_from_ids(np.array([[9]]), {})


def test_gt_images_and_annotations_must_pair_up(tmp_path):
    f = np.zeros((2, 2), np.uint32)
    jp = pio.write_vipseg(tmp_path, {"v": (["0", "1"], [f, f], [[], []])}, CATS)
    data = json.loads(jp.read_text())
    data["annotations"][0]["annotations"].pop()
    jp.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="panoptic_gt_VIPSeg_val.json: video 'v' has 2 images but 1 annotations"):
        pio.load_vipseg(tmp_path)


def test_detect_format_kitti_step(tmp_path):
    pio.write_kitti_step_png(tmp_path / "panoptic_maps" / "val" / "0002" / "000000.png", np.zeros((2, 2)), np.zeros((2, 2)))
    assert pio.detect_format(tmp_path) == "kitti-step"
    seqs = pio.load_kitti_step(tmp_path, tmp_path)
    assert [s.seq_id for s in seqs] == ["0002"] and seqs[0].gt_paths == seqs[0].pred_paths
