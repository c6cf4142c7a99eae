"""Plain pipeline: sharding by video, epoch reshuffle, determinism, DataLoader wrapper, VIPSeg end to end."""

import numpy as np
import pytest
import torch

from gvseg.config import DataConfig, SyntheticConfig
from gvseg.data import formats
from gvseg.data.pipeline import ClipDataset, build_records, iterate_batches, label_space_for, shard_videos
from gvseg.data.transforms import collate
from gvseg.structures import Category, FrameAnnotation, VideoRecord

CATS = [Category(1, "thing", True), Category(2, "stuff", False)]
CFG = DataConfig(min_size=(16, 24), max_size=64, reference_frames=2)


def fake_record(i: int, frames: int = 6, every: int = 1) -> VideoRecord:
    """In-memory video: the handle is the frame index; frame t's value encodes (video, t)."""
    ann = [t if t % every == 0 else None for t in range(frames)]
    return VideoRecord(f"v{i}", "fake", [f"/x/v{i}/{t:05d}.jpg" for t in range(frames)], 16, 20, CATS, ann)


@pytest.fixture
def fake_formats(monkeypatch):
    def load_frame(rec, t):
        return np.full((16, 20, 3), int(rec.video_id[1:]) * 10 + t, np.uint8)

    def load_annotation(rec, t):
        if rec.annotations[t] is None:
            return None
        m = np.zeros((2, 16, 20), bool)
        m[0, 2:8, t:t + 5] = True
        m[1, 10:] = True
        return FrameAnnotation(np.array([7, 100]), np.array([1, 2]), m)

    monkeypatch.setattr(formats, "load_frame", load_frame)
    monkeypatch.setattr(formats, "load_frame_native", lambda rec, t: (load_frame(rec, t), False))
    monkeypatch.setattr(formats, "load_annotation", load_annotation)


def test_shards_are_disjoint_equal_and_reshuffled():
    shards = [shard_videos(10, seed=0, epoch=0, rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == 3 for s in shards)
    flat = np.concatenate(shards)
    assert len(set(flat.tolist())) == 9 and flat.max() < 10
    again = shard_videos(10, seed=0, epoch=0, rank=1, world_size=3)
    assert np.array_equal(again, shards[1])
    other = [shard_videos(10, seed=0, epoch=e, rank=0, world_size=1) for e in (1, 2)]
    assert not np.array_equal(other[0], other[1])
    with pytest.raises(ValueError, match="2 videos"):
        shard_videos(2, seed=0, epoch=0, rank=0, world_size=3)


def test_batches_of_each_rank_hold_disjoint_videos(fake_formats):
    recs = [fake_record(i) for i in range(8)]
    seen = []
    for r in range(2):
        vids = [v for c in iterate_batches(recs, CFG, batch_size=3, seed=1, epoch=0, rank=r, world_size=2)
                for v in c.video_ids]
        assert len(vids) == 4
        seen.append(set(vids))
    assert not seen[0] & seen[1]


def test_sample_independent_of_rank_layout(fake_formats):
    recs = [fake_record(i) for i in range(4)]
    one = {c.video_ids[0]: c for c in iterate_batches(recs, CFG, batch_size=1, seed=5, epoch=2)}
    for r in range(2):
        for c in iterate_batches(recs, CFG, batch_size=1, seed=5, epoch=2, rank=r, world_size=2):
            ref = one[c.video_ids[0]]
            assert torch.equal(c.frames, ref.frames) and torch.equal(c.frame_index, ref.frame_index)
            assert torch.equal(c.reference.frame_index, ref.reference.frame_index)


def test_batch_contents(fake_formats):
    recs = [fake_record(i, every=2) for i in range(3)]
    batches = list(iterate_batches(recs, CFG, batch_size=2, seed=0, epoch=0))
    assert [c.shape[0] for c in batches] == [2, 1]  # last batch kept, smaller
    c = batches[0]
    assert c.shape[1] == 3 and c.frames.shape[-1] % 32 == 0 and c.reference.shape[1] == 2
    assert (c.frame_index % 2 == 0).all()  # annotated frames only
    t = c.targets[0]
    assert t.ids.tolist() == [7, 100] and t.labels.tolist() == [0, 1] and t.isthing.tolist() == [True, False]


def test_eval_walks_every_frame_without_reference(fake_formats):
    recs = [fake_record(0, frames=4)]
    cs = list(iterate_batches(recs, CFG, batch_size=4, seed=0, epoch=0, train=False))
    assert cs[0].frame_index.tolist() == [[0, 1, 2], [3, 3, 3]] and cs[0].reference is None


def test_clip_dataset_matches_iterator(fake_formats):
    recs = [fake_record(i) for i in range(4)]
    cfg = DataConfig(min_size=(16,), max_size=64, reference_frames=0, clips_per_video=2)
    ds = ClipDataset(recs, cfg, seed=3)
    ds.set_epoch(1)
    dl = torch.utils.data.DataLoader(ds, batch_size=4, collate_fn=collate, num_workers=0)
    got = [c.frames for c in dl]
    ref = [c.frames for c in iterate_batches(recs, cfg, batch_size=4, seed=3, epoch=1)]
    assert len(got) == len(ref) == 2 and all(torch.equal(a, b) for a, b in zip(got, ref))


def test_vipseg_end_to_end(tmp_path):
    if "vipseg" not in formats.FORMATS:
        pytest.skip("VIPSeg reader not available yet")
    synth = SyntheticConfig(videos=3, frames=4, height=40, width=56, thing_classes=2, stuff_classes=2)
    cfg = DataConfig(format="vipseg", root=str(tmp_path / "vip"), synthetic=True, synth=synth,
                     min_size=(40,), max_size=100)
    recs = build_records(cfg, "train")  # generates the dataset first: the root is missing
    assert len(recs) == 2 and len(build_records(cfg, "val")) == 1
    (clip,) = list(iterate_batches(recs, cfg, batch_size=2, seed=0, epoch=0))
    assert clip.frames.shape == (2, 3, 3, 64, 64) and clip.reference.frames.shape == (2, 3, 3, 64, 64)
    space = label_space_for(recs)
    assert (space.num_classes, space.num_thing_classes) == (4, 2)  # the synthetic JSON lists what it uses
    vip = {c.id: c for c in formats.categories_for("vipseg")}
    for t in clip.targets:
        assert len(t.ids) > 0 and t.masks.any()
        # things first; isthing agrees with VIPSeg's category list
        assert (t.isthing == (t.labels < 2)).all()
        assert all(vip[space.category_ids[int(lab)]].isthing == bool(th) for lab, th in zip(t.labels, t.isthing))


@pytest.mark.parametrize("fmt", sorted(formats.FORMATS))
def test_every_format_end_to_end(tmp_path, fmt):
    """Generator -> the format's writer -> its reader -> train batch and eval batch."""
    from gvseg.data.synthetic import synth_dataset

    val_split = formats.val_split(fmt)  # the release's own name: "valid" for YouTube-VOS
    assert synth_dataset(fmt, tmp_path, videos=3, frames=3, height=32, width=40, seed=1, thing_classes=2,
                         stuff_classes=2, progress=False) == {"train": 2, val_split: 1}
    evs = fmt in ("ytvos", "davis", "burst")
    cfg = DataConfig(format=fmt, root=str(tmp_path), min_size=(32,), max_size=64, test_size=32,
                     exemplar_kinds=("mask", "point") if evs else ())
    train = next(iterate_batches(build_records(cfg, "train"), cfg, batch_size=2, seed=0, epoch=0))
    assert train.shape == (2, 3, 32, 64) and all(len(t.ids) > 0 for t in train.targets)
    assert (train.exemplars is not None) == evs and (train.reference.exemplars is not None) == evs
    val = next(iterate_batches(build_records(cfg, val_split), cfg, batch_size=1, seed=0, epoch=0, train=False))
    assert val.frame_index.tolist() == [[0, 1, 2]] and val.reference is None


# ------------------------------------------------------------------------------------------------- EVS


@pytest.fixture(scope="module")
def ytvos_records(tmp_path_factory):
    from gvseg.data.synthetic import synth_dataset

    root = tmp_path_factory.mktemp("ytvos")
    assert synth_dataset("ytvos", root, videos=4, frames=6, height=32, width=48, seed=2, progress=False) == \
        {"train": 3, "valid": 1}
    assert (root / "valid" / "meta.json").is_file() and not (root / "val").exists()  # YouTube-VOS layout
    cfg = DataConfig(format="ytvos", root=str(root), min_size=(32,), max_size=64, reference_frames=3,
                     exemplar_kinds=("mask", "point", "box"))
    assert len(build_records(cfg, "valid")) == 1  # the reader takes what the writer wrote
    return cfg, build_records(cfg, "train")


def _check_hints(s, where):
    """Hints of one clip: one per target, all from the clip's own first frame, each inside its object."""
    e = s.exemplars
    assert e is not None, where
    assert e.ids.tolist() == s.ids.tolist(), where  # targets = hinted objects only, same order
    assert (e.frame == 0).all(), where
    first = s.masks[:, 0]  # [K, h, w]
    for k, code in enumerate(e.kind.tolist()):
        if code == 2:  # mask
            assert np.array_equal(e.masks[k], first[k]), where
        elif code == 0:  # point: a pixel of the object in the first frame
            x, y = e.points[k]
            assert first[k, int(y), int(x)], where
        else:  # box: holds the whole first-frame mask
            ys, xs = np.nonzero(first[k])
            x0, y0, x1, y1 = e.boxes[k]
            assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), where


def test_evs_hints_in_key_and_reference_clips(ytvos_records):
    from gvseg.data.pipeline import label_space_for, load_sample, sample_rng

    cfg, records = ytvos_records
    space = label_space_for(records)
    shared = 0
    for v, rec in enumerate(records):
        for k in range(3):
            s = load_sample(rec, cfg, space, sample_rng(0, 0, v, k))
            assert s.reference is not None
            _check_hints(s, f"{rec.video_id} key {k}")
            _check_hints(s.reference, f"{rec.video_id} reference {k}")
            shared += len(np.intersect1d(s.ids, s.reference.ids))  # same track ids: TCL pairs them
    assert shared > 0
    clip = next(iterate_batches(records, cfg, batch_size=2, seed=0, epoch=0))
    for c in (clip, clip.reference):
        assert c.exemplars is not None and len(c.exemplars) == 2
        for e, t in zip(c.exemplars, c.targets):
            assert torch.equal(e.ids, t.ids)


def test_evs_targets_only_hold_hinted_objects(ytvos_records):
    """An object that enters after a clip's first frame is in the GT tubes but not among the targets."""
    from gvseg.data.formats import load_annotation
    from gvseg.data.pipeline import label_space_for, load_sample, sample_rng

    cfg, records = ytvos_records
    space = label_space_for(records)
    dropped = 0
    for v, rec in enumerate(records):
        for k in range(4):
            s = load_sample(rec, cfg, space, sample_rng(1, 0, v, k))
            for clip in (s, s.reference):
                in_clip = set()
                for t in clip.frame_index.tolist():
                    in_clip |= set(load_annotation(rec, t).ids.tolist())
                assert set(clip.ids.tolist()) <= in_clip
                dropped += len(in_clip - set(clip.ids.tolist()))
    assert dropped > 0  # the synthetic videos have objects entering mid-video: some were dropped


def test_synthetic_set_is_regenerated_when_its_settings_change_but_user_data_is_not(tmp_path):
    synth = SyntheticConfig(videos=3, frames=3, height=32, width=40, thing_classes=2, stuff_classes=2)
    cfg = DataConfig(format="vipseg", root=str(tmp_path / "s"), synthetic=True, synth=synth)
    assert len(build_records(cfg, "train")) == 2
    more = DataConfig(format="vipseg", root=cfg.root, synthetic=True,
                      synth=SyntheticConfig(videos=5, frames=3, height=32, width=40, thing_classes=2, stuff_classes=2))
    with pytest.warns(UserWarning, match="other settings"):
        assert len(build_records(more, "train")) == 4
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("my data")
    with pytest.raises(ValueError, match="no .gvseg_synth.json stamp"):  # not a synthetic set: refused, left as it is
        build_records(DataConfig(format="vipseg", root=str(user), synthetic=True, synth=synth), "train")
    assert (user / "notes.txt").read_text() == "my data" and len(list(user.iterdir())) == 1


def test_a_model_sized_for_another_label_space_is_a_one_line_error():
    from gvseg.data.pipeline import check_label_space
    from gvseg.data.transforms import LabelSpace

    space = LabelSpace((1, 2, 3), ("a", "b", "c"), 1)
    check_label_space(space, 3, 1, "data/x")  # matches: nothing said
    with pytest.raises(ValueError, match=r"^data/x: the dataset has 3 classes \(1 things\) but the model has "
                                         r"model.num_classes=124, model.num_thing_classes=58") as e:
        check_label_space(space, 124, 58, "data/x")
    assert "\n" not in str(e.value)
