"""The learning benchmark's identity-switch count (benchmarks/learning.py) on ground-truth predictions."""

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

import learning  # noqa: E402

from gvseg.baselines import frame_prediction, redrawn_ids  # noqa: E402
from gvseg.data.formats import load_annotation  # noqa: E402
from gvseg.data.pipeline import build_records, label_space_for  # noqa: E402
from gvseg.evaluation import evaluate_predictions  # noqa: E402

CLIP = 3


@pytest.fixture(scope="module")
def vps(tmp_path_factory):
    root = tmp_path_factory.mktemp("vps")
    cfg = learning.config("vps", learning.data_overrides("vps", root, learning.sizes(smoke=True)))
    records = build_records(cfg.data, cfg.data.val_split)
    return cfg, root, label_space_for(records)


def switches(vps, tmp_path, predict):
    cfg, root, space = vps
    evaluate_predictions(cfg, tmp_path, lambda v, rec: predict(rec, space), progress=False)
    return learning.identity_switches(root, tmp_path, CLIP)


def test_ground_truth_ids_never_switch(vps, tmp_path):
    def truth(rec, space):
        return (frame_prediction(rec, t, load_annotation(rec, t), space, "vps") for t in range(len(rec)))

    n = switches(vps, tmp_path, truth)
    assert n["matched_thing_frames"] == n["gt_thing_frames"] > 0
    assert n["transitions_within_clip"] > 0 and n["transitions_across_clips"] > 0
    assert n["switches_within_clip"] == n["switches_across_clips"] == 0


def test_ids_redrawn_every_clip_switch_at_every_clip_boundary_only(vps, tmp_path):
    n = switches(vps, tmp_path, lambda rec, space: redrawn_ids(rec, space, "vps", CLIP))
    assert n["switches_within_clip"] == 0
    assert n["switches_across_clips"] == n["transitions_across_clips"] > 0
    assert n["switch_rate_across_clips"] == 1.0


def test_oracle_association_restores_ids_redrawn_every_clip(vps, tmp_path):
    # the masks are the ground truth's, the ids re-drawn at every clip: the oracle gives them back their GT
    # identities, so thing VPQ_6 is what VPQ_1 is (100) although the redrawn ids alone score less
    cfg, root, space = vps
    pred = tmp_path / "pred"
    evaluate_predictions(cfg, pred, lambda v, rec: redrawn_ids(rec, space, "vps", CLIP), progress=False)
    m = learning.oracle_association(root, pred, tmp_path / "oracle")
    assert m["vpq_6_thing"] == pytest.approx(100.0) and m["vpq_1_thing"] == pytest.approx(100.0)
