"""Round trip for every format: a hand-built SyntheticVideo -> writer -> real on-disk layout -> reader.

The video: 3 frames of 32x48, a stuff region (formats with stuff), a void band, and two thing instances of
different classes, the second entering at frame 1. Track ids may be renamed by a format's encoding (VIPSeg
raw values, rgb2id, KITTI class/instance), so the check is: one read segment per written segment, equal
mask and category in every frame, and the written->read id map consistent over the video and one-to-one.
"""

from __future__ import annotations

import numpy as np
import pytest

from gvseg.data import formats
from gvseg.data.formats import vipseg
from gvseg.structures import Category, SyntheticVideo

H, W, T = 32, 48, 3


def tiny_video(video_id: str, stuff: Category | None, things: tuple[Category, Category],
               ids: tuple[int, int, int] = (1, 7, 9)) -> SyntheticVideo:
    """ids = (stuff segment, thing A, thing B). Thing B enters at frame 1."""
    yy, xx = np.mgrid[:H, :W]
    frames, id_maps = [], []
    for t in range(T):
        m = np.zeros((H, W), np.int64)
        if stuff is not None:
            m[H // 2:] = ids[0]  # bottom half stuff
        m[H // 2 - 2:H // 2] = 0  # a void band
        m[(yy - 10) ** 2 + (xx - 8 - 4 * t) ** 2 < 25] = ids[1]  # thing A moves right
        if t >= 1:
            m[20:28, 30 + 2 * t:40 + 2 * t] = ids[2]  # thing B enters mid-video
        rgb = np.stack([(m * 37) % 256, (xx * 5) % 256, (yy * 7) % 256], -1).astype(np.uint8)
        frames.append(rgb)
        id_maps.append(m)
    seg_cat = {ids[1]: things[0].id, ids[2]: things[1].id}
    cats = list(things)
    if stuff is not None:
        seg_cat[ids[0]] = stuff.id
        cats = [stuff, *things]
    return SyntheticVideo(video_id, frames, id_maps, seg_cat, cats)


def check_round_trip(video: SyntheticVideo, record, *, frames: list[int] | None = None,
                     ignore_void: bool = False) -> dict[int, int]:
    """Every written segment comes back with the same mask and category; returns written -> read ids."""
    assert (record.height, record.width) == (H, W)
    assert len(record) == len(video.frames)
    assert record.frame_paths == sorted(record.frame_paths)
    mapping: dict[int, int] = {}
    for t in frames if frames is not None else range(len(record)):
        ann = formats.load_annotation(record, t)
        assert ann is not None, f"frame {t} not annotated"
        id_map = video.id_maps[t]
        written = sorted(set(np.unique(id_map).tolist()) - {0})
        assert len(ann.ids) == len(written) == ann.masks.shape[0] == len(ann.category_ids)
        assert ann.masks.shape[1:] == (H, W) and ann.masks.dtype == bool
        for s in written:
            hit = [k for k in range(len(ann.ids)) if np.array_equal(ann.masks[k], id_map == s)]
            assert len(hit) == 1, f"frame {t}: segment {s} not found exactly once"
            k = hit[0]
            assert ann.category_ids[k] == video.segment_category[s]
            assert mapping.setdefault(s, int(ann.ids[k])) == int(ann.ids[k]), "track id changed over time"
        if ignore_void:
            assert ann.ignore is not None and np.array_equal(ann.ignore, id_map == 0)
        frame = formats.load_frame(record, t)
        assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
        assert np.abs(frame.astype(int) - video.frames[t]).mean() < 20  # JPEG is lossy; PNG is exact
    assert len(set(mapping.values())) == len(mapping), "two written segments share a read id"
    return mapping


def vipseg_video(vid="3_synthA"):
    cats = formats.categories_for("vipseg")
    return tiny_video(vid, cats[0], (cats[60], cats[48]))  # wall, person, car


# ------------------------------------------------------------------------------------------------ VIPSeg


def test_vipseg_categories():
    cats = formats.categories_for("vipseg")
    assert [c.id for c in cats] == list(range(124))
    assert sum(c.isthing for c in cats) == 58
    assert cats[60].name == "person" and cats[60].isthing and not cats[0].isthing


@pytest.mark.parametrize("form", ["rgb", "raw"])
def test_vipseg_round_trip(tmp_path, form):
    video = vipseg_video()
    formats.write_synthetic("vipseg", tmp_path, [video], "train")
    records, errors = formats.read_dataset("vipseg", tmp_path, "train", form=form)
    assert errors == [] and len(records) == 1
    rec = records[0]
    assert rec.meta["form"] == form
    mapping = check_round_trip(video, rec, ignore_void=True)
    if form == "raw":  # stuff = class + 1, things = (class + 1) * 100 + instance
        assert mapping == {1: 1, 7: 6100, 9: 4900}


def test_vipseg_frame_names_listed_not_computed(tmp_path):
    formats.write_synthetic("vipseg", tmp_path, [vipseg_video()], "train")
    rec = formats.read_dataset("vipseg", tmp_path, "train")[0][0]
    numbers = [int(n) for n in rec.frame_names]
    assert numbers[0] > 1 and numbers[1] - numbers[0] > 1  # neither from 1 nor consecutive
    assert all(len(n) == 8 for n in rec.frame_names)


def test_vipseg_rgb_colours_follow_idgenerator(tmp_path):
    video = vipseg_video()
    formats.write_synthetic("vipseg", tmp_path, [video], "train")
    rec = formats.read_dataset("vipseg", tmp_path, "train", form="rgb")[0][0]
    ann = formats.load_annotation(rec, 1)  # frame 1: both things are in
    cats = formats.categories_for("vipseg")
    by_cat = dict(zip(ann.category_ids.tolist(), ann.ids.tolist()))
    wall = cats[0].color
    assert by_cat[0] == wall[0] + 256 * wall[1] + 65536 * wall[2]  # stuff: the category colour exactly
    person = cats[60].color
    assert by_cat[60] == person[0] + 256 * person[1] + 65536 * person[2]  # first of its colour: base colour
    car = np.array(cats[48].color)  # shares (140,140,140) with stuff Playground_slide: always perturbed
    car_rgb = np.array([by_cat[48] % 256, by_cat[48] // 256 % 256, by_cat[48] // 65536])
    assert not np.array_equal(car_rgb, car) and np.abs(car_rgb - car).max() <= 30


def test_vipseg_stray_200_is_void(tmp_path):
    formats.write_synthetic("vipseg", tmp_path, [vipseg_video()], "train")
    rec = formats.read_dataset("vipseg", tmp_path, "train", form="raw")[0][0]
    raw = np.array(__import__("PIL.Image").Image.open(rec.annotations[0][1]))
    assert (raw == 200).sum() == 1  # the writer plants the documented stray value
    ann = formats.load_annotation(rec, 0)
    assert ann.ignore[raw == 200].all() and 200 not in ann.ids


def test_vipseg_test_split_without_masks_reads_unannotated(tmp_path):
    formats.write_synthetic("vipseg", tmp_path, [vipseg_video()], "test")
    import shutil

    shutil.rmtree(tmp_path / "panomasks")
    shutil.rmtree(tmp_path / "panomasksRGB")
    (tmp_path / "panoptic_gt_VIPSeg_test.json").unlink()
    rec = formats.read_dataset("vipseg", tmp_path, "test")[0][0]
    assert len(rec) == T and all(formats.load_annotation(rec, t) is None for t in range(T))


def test_vipseg_writer_rejects_two_stuff_segments_of_one_class():
    v = vipseg_video()
    v.id_maps[0][0, 0] = 5
    v.segment_category[5] = 0  # a second "wall" segment
    with pytest.raises(ValueError, match="two stuff segments"):
        vipseg.raw_values(v)


# -------------------------------------------------------------------------------------------------- VSPW


def test_vspw_round_trip(tmp_path):
    video = vipseg_video()
    formats.write_synthetic("vspw", tmp_path, [video], "train")
    records, errors = formats.read_dataset("vspw", tmp_path, "train")
    assert errors == [] and len(records) == 1
    mapping = check_round_trip(video, records[0], ignore_void=True)
    assert mapping == {1: 0, 7: 60, 9: 48}  # semantic: track id = category id (label − 1)
    raw = np.array(__import__("PIL.Image").Image.open(records[0].annotations[0]))
    assert {0, 255} <= set(np.unique(raw).tolist())  # both ignore values occur
    assert int(records[0].frame_names[0]) > 1


def test_vspw_accepts_palette_masks(tmp_path):
    from PIL import Image

    video = vipseg_video()
    formats.write_synthetic("vspw", tmp_path, [video], "train")
    rec = formats.read_dataset("vspw", tmp_path, "train")[0][0]
    for p in rec.annotations:  # re-save as P with the same indices and a scrambled palette
        idx = np.array(Image.open(p))
        im = Image.frombytes("P", (W, H), idx.astype(np.uint8).tobytes())
        im.putpalette(list(np.random.default_rng(0).integers(0, 256, 768)))
        im.save(p)
    check_round_trip(video, rec, ignore_void=True)


# ------------------------------------------------------------------------------------------ YTVIS / OVIS


@pytest.mark.parametrize("fmt", ["ytvis", "ovis"])
def test_vis_round_trip(tmp_path, fmt):
    cats = {c.name.lower(): c for c in formats.categories_for(fmt)}
    video = tiny_video("ab12cd34ef", None, (cats["person"], cats["cat"]))
    formats.write_synthetic(fmt, tmp_path, [video], "train")
    records, errors = formats.read_dataset(fmt, tmp_path, "train")
    assert errors == [] and records[0].video_id == "ab12cd34ef"
    check_round_trip(video, records[0])
    expect = "img_0000001" if fmt == "ovis" else "00000"
    assert records[0].frame_names[0] == expect


def test_ytvis_categories_2021():
    cats = formats.categories_for("ytvis")
    assert [c.id for c in cats] == list(range(1, 41)) and all(c.isthing for c in cats)
    names = {c.name for c in cats}
    assert {"flying_disc", "squirrel", "whale", "bird"} <= names and not {"hand", "ape", "owl"} & names
    assert len(formats.categories_for("ovis")) == 25


def test_ytvis_list_and_string_rle_and_nulls(tmp_path):
    import json

    video = tiny_video("v1", None, tuple(formats.categories_for("ytvis")[:2]))
    formats.write_synthetic("ytvis", tmp_path, [video], "train")
    data = json.loads((tmp_path / "train.json").read_text())
    kinds = {type(s["counts"]).__name__ for a in data["annotations"] for s in a["segmentations"] if s}
    assert kinds == {"list", "str"}
    assert data["annotations"][1]["segmentations"][0] is None  # thing B is absent in frame 0


def test_ytvis_polygons_and_crowd(tmp_path):
    import json

    video = tiny_video("v1", None, tuple(formats.categories_for("ytvis")[:2]))
    formats.write_synthetic("ytvis", tmp_path, [video], "train")
    js = tmp_path / "train.json"
    data = json.loads(js.read_text())
    poly = [[2.0, 2.0, 12.0, 2.0, 12.0, 8.0, 2.0, 8.0]]  # a 10x6 rectangle
    data["annotations"][0]["segmentations"][2] = poly
    data["annotations"][0]["iscrowd"] = 1
    js.write_text(json.dumps(data))
    rec = formats.read_dataset("ytvis", tmp_path, "train")[0][0]
    ann = formats.load_annotation(rec, 2)
    k = list(ann.ids).index(data["annotations"][0]["id"])
    assert ann.iscrowd[k] and ann.masks[k, 3:8, 3:12].all() and not ann.masks[k, 20:].any()


def test_ytvis_valid_json_without_annotations_is_unannotated(tmp_path):
    import json

    video = tiny_video("v1", None, tuple(formats.categories_for("ytvis")[:2]))
    formats.write_synthetic("ytvis", tmp_path, [video], "valid")
    data = json.loads((tmp_path / "valid.json").read_text())
    del data["annotations"]
    (tmp_path / "valid.json").write_text(json.dumps(data))
    rec = formats.read_dataset("ytvis", tmp_path, "val")[0][0]  # "val" finds "valid"
    assert len(rec) == T and all(formats.load_annotation(rec, t) is None for t in range(T))


# ------------------------------------------------------------------------------------------- YT-VOS / DAVIS


def object_video():
    obj = formats.categories_for("ytvos")[0]
    return tiny_video("vos1", None, (obj, obj))


@pytest.mark.parametrize("fmt", ["ytvos", "davis"])
def test_vos_round_trip_and_mid_video_exemplar(tmp_path, fmt):
    video = object_video()
    formats.write_synthetic(fmt, tmp_path, [video], "train")
    records, errors = formats.read_dataset(fmt, tmp_path, "train")
    assert errors == []
    rec = records[0]
    mapping = check_round_trip(video, rec)
    assert sorted(mapping.values()) == [1, 2]  # palette indices
    from PIL import Image

    im = Image.open(rec.annotations[0])
    assert im.mode == "P" and im.getpalette()[:12] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0]  # VOC
    ex = {e.track_id: e for e in formats.load_exemplars(rec)}
    assert ex[mapping[7]].frame == 0 and ex[mapping[9]].frame == 1  # B enters at frame 1
    assert np.array_equal(ex[mapping[9]].mask, video.id_maps[1] == 9)
    assert all(e.mask is None for e in rec.exemplars)  # the record keeps only handles


def test_ytvos_valid_split_has_only_first_appearance_masks(tmp_path):
    video = object_video()
    formats.write_synthetic("ytvos", tmp_path, [video], "valid")
    ann_dir = tmp_path / "valid" / "Annotations" / "vos1"
    pngs = sorted(ann_dir.glob("*.png"))
    pngs[2].unlink()  # keep frame 0 (A appears) and frame 1 (B appears), as in the release
    rec = formats.read_dataset("ytvos", tmp_path, "valid")[0][0]
    assert all(formats.load_annotation(rec, t) is None for t in range(T))
    ex = {e.track_id: e for e in formats.load_exemplars(rec)}
    assert (ex[1].frame, ex[2].frame) == (0, 1)
    assert np.array_equal(ex[2].mask, video.id_maps[1] == 9)


def test_ytvos_frame_names_not_from_zero(tmp_path):
    formats.write_synthetic("ytvos", tmp_path, [object_video()], "train")
    rec = formats.read_dataset("ytvos", tmp_path, "train")[0][0]
    assert int(rec.frame_names[0]) > 0 and all(len(n) == 5 for n in rec.frame_names)


# -------------------------------------------------------------------------------------------------- BURST


def test_burst_round_trip_and_exemplars(tmp_path):
    video = object_video()
    formats.write_synthetic("burst", tmp_path, [video], "val")
    records, errors = formats.read_dataset("burst", tmp_path, "val")
    assert errors == []
    rec = records[0]
    mapping = check_round_trip(video, rec)
    assert mapping == {7: 7, 9: 9}  # track ids survive as ints
    ex = formats.load_exemplars(rec)
    assert sorted({e.kind for e in ex}) == ["box", "mask", "point"]
    for e in ex:
        m = video.id_maps[e.frame] == e.track_id
        assert e.frame == (0 if e.track_id == 7 else 1)
        if e.kind == "point":
            assert m[int(e.point[1]), int(e.point[0])]
        elif e.kind == "box":
            ys, xs = np.nonzero(m)
            assert e.box == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
        else:
            assert np.array_equal(e.mask, m)


def test_burst_point_as_list(tmp_path):
    import json

    formats.write_synthetic("burst", tmp_path, [object_video()], "val")
    js = tmp_path / "annotations" / "val" / "first_frame_annotations.json"
    data = json.loads(js.read_text())
    for frame in data["sequences"][0]["segmentations"]:
        for obj in frame.values():
            obj["point"] = [obj["point"]["x"], obj["point"]["y"]]
    js.write_text(json.dumps(data))
    rec = formats.read_dataset("burst", tmp_path, "val")[0][0]
    pts = [e for e in rec.exemplars if e.kind == "point"]
    assert len(pts) == 2 and all(isinstance(p.point[0], float) for p in pts)


def test_burst_train_exemplars_derived_from_first_masks(tmp_path):
    formats.write_synthetic("burst", tmp_path, [object_video()], "train")
    assert not (tmp_path / "annotations" / "train" / "first_frame_annotations.json").exists()
    rec = formats.read_dataset("burst", tmp_path, "train")[0][0]
    kinds = sorted((e.track_id, e.kind, e.frame) for e in rec.exemplars)
    assert kinds == [(7, "box", 0), (7, "mask", 0), (9, "box", 1), (9, "mask", 1)]


# ---------------------------------------------------------------------------------------------- KITTI-STEP


def test_kitti_step_round_trip(tmp_path):
    cats = formats.categories_for("kitti-step")
    assert [c.id for c in cats if c.isthing] == [11, 13] and len(cats) == 19
    video = tiny_video("seq", cats[0], (cats[11], cats[13]))
    formats.write_synthetic("kitti-step", tmp_path, [video], "train")
    records, errors = formats.read_dataset("kitti-step", tmp_path, "train")
    assert errors == [] and records[0].video_id == "0000"
    mapping = check_round_trip(video, records[0], ignore_void=True)
    assert mapping[1] == 0 * 65536  # stuff: one segment per class, instance 0
    assert {mapping[7] // 65536, mapping[9] // 65536} == {11, 13}
    assert min(mapping[7], mapping[9]) % 65536 > 255  # instance ids above 255 (G channel used)
    pan = np.array(__import__("PIL.Image").Image.open(records[0].annotations[1]))
    assert pan[..., 1].max() >= 1


def test_kitti_step_crowd_pixels(tmp_path):
    from PIL import Image

    cats = formats.categories_for("kitti-step")
    formats.write_synthetic("kitti-step", tmp_path, [tiny_video("seq", cats[0], (cats[11], cats[13]))], "train")
    rec = formats.read_dataset("kitti-step", tmp_path, "train")[0][0]
    pan = np.array(Image.open(rec.annotations[0]))
    pan[0:2, 0:4] = (11, 0, 0)  # person without instance id = crowd
    Image.fromarray(pan).save(rec.annotations[0])
    ann = formats.load_annotation(rec, 0)
    k = list(ann.ids).index(11 * 65536)
    assert ann.iscrowd[k] and ann.masks[k].sum() == 8


# ---------------------------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("fmt", ["vipseg", "ytvis", "kitti-step", "davis"])
def test_frame_without_objects_reads_as_empty_annotation(tmp_path, fmt):
    cats = formats.categories_for(fmt)
    things = [c for c in cats if c.isthing][:2]
    video = tiny_video("e1", None, (things[0], things[-1]))
    video.id_maps[2][:] = 0  # nothing labelled in the last frame
    formats.write_synthetic(fmt, tmp_path, [video], "train")
    rec = formats.read_dataset(fmt, tmp_path, "train")[0][0]
    ann = formats.load_annotation(rec, 2)
    assert ann is not None and len(ann.ids) == 0 and ann.masks.shape == (0, H, W)


def test_empty_split_reads_as_nothing(tmp_path):
    (tmp_path / "train.txt").write_text("")
    assert formats.read_dataset("vipseg", tmp_path, "train") == ([], [])
