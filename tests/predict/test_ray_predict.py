"""`gvseg predict --ray`: Ray Data shards videos over workers; the merged files equal a sequential run."""

import json

import numpy as np
import pytest
from predict_helpers import write_video

from gvseg.metrics.panoptic_io import read_id_png
from gvseg.predict import predict

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.ray_local(num_cpus=3)]  # ray_local: tests/conftest.py


def test_batch_prediction_matches_sequential(ray_local, make_checkpoint, tmp_path):
    from gvseg.runtime.ray_predict import predict_ray

    videos = tmp_path / "videos"
    videos.mkdir()
    for name, n in (("a", 4), ("b", 3), ("c", 5)):
        write_video(videos / f"{name}.mp4", n)
    ckpt = make_checkpoint("vps")
    seq = predict(videos, ckpt, "vps", out_dir=tmp_path / "seq", formats=("official", "mp4"), progress=False)
    par = predict_ray(videos, ckpt, "vps", out_dir=tmp_path / "par", formats=("official", "mp4"), num_workers=2,
                      progress=False)
    assert par["frames"] == seq["frames"] == 12 and par["videos"] == 3 and par["workers"] == 2
    assert not (tmp_path / "par" / "_shards").exists()
    a = json.loads((tmp_path / "seq" / "official" / "pred.json").read_text())
    b = json.loads((tmp_path / "par" / "official" / "pred.json").read_text())
    assert a == b  # same videos, same order, same segments
    for p in sorted((tmp_path / "seq" / "official" / "pan_pred").rglob("*.png")):
        q = tmp_path / "par" / p.relative_to(tmp_path / "seq")
        assert np.array_equal(read_id_png(p), read_id_png(q))
    assert sorted(x.name for x in (tmp_path / "par" / "mp4").iterdir()) == ["a.mp4", "b.mp4", "c.mp4"]
