"""The video inference pipeline: a model's clip outputs -> per-frame predictions of a whole video.

  postprocess.py  one clip's outputs -> per-task results (instances, semantic, panoptic, EVS maps)
  associate.py    cross-clip association: SPA affinity for things (Eq. 6), class identity for stuff
  stream.py       ``predict_video``: streaming whole-video inference (clips with overlap, memory flat in length)
                  and ``stream_video``: original frames in, (prediction, original frame) pairs out, the one
                  loop ``gvseg predict`` and val evaluation share
  tta.py          test-time augmentation by per-pixel voting (paper 003, Eq. 8)
  aggregate.py    two-model aggregation by flow-warped temporal consistency (paper 003, Eq. 5-7)

It sits above ``model/`` and ``data/`` and below the drivers (``evaluation``, ``predict``); it never imports
``losses/``, ``engine`` or ``runtime/``.
"""
