"""Plain video input: mp4/avi files decoded with OpenCV, folders of frames, and truncated files."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from gvseg.data import formats
from gvseg.data.errors import DataError
from gvseg.data.formats import video

H, W = 32, 48


def _write(path, n: int, fourcc: str) -> list[np.ndarray]:
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10, (W, H))
    assert w.isOpened()
    frames = [np.full((H, W, 3), (20 * t, 100, 200 - 10 * t), np.uint8) for t in range(n)]
    for f in frames:
        w.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    w.release()
    return frames


def test_mp4_frame_count_and_size(tmp_path):
    p = tmp_path / "clip.mp4"
    frames = _write(p, 7, "mp4v")
    rec = formats.read_video(p)
    assert (len(rec), rec.height, rec.width, rec.format) == (7, H, W, "video")
    assert rec.video_path == str(p) and rec.frame_names == [f"{t:06d}" for t in range(7)]
    got = list(video.iter_frames(p))
    assert len(got) == 7 and got[0].shape == (H, W, 3) and got[0].dtype == np.uint8
    assert np.abs(got[3].astype(int) - frames[3]).mean() < 12  # lossy codec, colours (RGB order) kept
    assert np.abs(formats.load_frame(rec, 5).astype(int) - frames[5]).mean() < 12
    assert formats.load_annotation(rec, 0) is None


def test_iter_frames_start(tmp_path):
    p = tmp_path / "clip.mp4"
    _write(p, 6, "mp4v")
    assert len(list(video.iter_frames(p, start=4))) == 2


def test_iter_frames_is_lazy(tmp_path):
    p = tmp_path / "clip.mp4"
    _write(p, 6, "mp4v")
    it = video.iter_frames(p)
    first = next(it)  # streaming: one frame decoded, the rest not held
    assert first.shape == (H, W, 3)
    it.close()


def test_one_frame_video_is_valid(tmp_path):
    p = tmp_path / "one.mp4"
    _write(p, 1, "mp4v")
    assert len(formats.read_video(p)) == 1 and len(list(video.iter_frames(p))) == 1


def test_truncated_mp4_raises_naming_file(tmp_path):
    p = tmp_path / "cut.mp4"
    _write(p, 8, "mp4v")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])  # the index (moov) goes: nothing decodes
    with pytest.raises(DataError, match="stopped at frame 0") as ei:
        formats.read_video(p)
    assert ei.value.path == str(p)
    with pytest.raises(DataError):
        list(video.iter_frames(p))


def test_truncated_avi_yields_decoded_frames_then_raises(tmp_path):
    p = tmp_path / "cut.avi"
    _write(p, 12, "MJPG")
    p.write_bytes(p.read_bytes()[: int(p.stat().st_size * 0.8)])
    got = []
    with pytest.raises(DataError, match=r"decoding stopped at frame (\d+) of 12") as ei:
        for f in video.iter_frames(p):
            got.append(f)
    stopped = int(re.search(r"frame (\d+)", ei.value.reason).group(1))
    assert 0 < len(got) == stopped < 12  # every decodable frame came out before the error
    with pytest.raises(DataError, match="stopped at frame"):
        formats.read_video(p)


def test_frame_folder(tmp_path):
    from PIL import Image

    for n in (30, 7, 12):  # listed and sorted, not computed
        Image.fromarray(np.full((H, W, 3), n, np.uint8)).save(tmp_path / f"{n:05d}.png")
    rec = formats.read_video(tmp_path)
    assert rec.frame_names == ["00007", "00012", "00030"] and not rec.video_path
    assert formats.load_frame(rec, 0)[0, 0, 0] == 7
    assert [f[0, 0, 0] for f in video.iter_frames(tmp_path)] == [7, 12, 30]


def test_empty_folder_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="empty video"):
        formats.read_video(tmp_path)
    with pytest.raises(DataError, match="missing"):
        formats.read_video(tmp_path / "nope.mp4")


def test_not_a_video(tmp_path):
    p = tmp_path / "junk.mp4"
    p.write_bytes(b"\x00" * 100)
    with pytest.raises(DataError, match="junk.mp4"):
        formats.read_video(p)
