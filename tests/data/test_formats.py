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
