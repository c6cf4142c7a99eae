"""The per-video scoring pool starts after OpenCV's thread pool has run in the parent (any data loading or
prediction does that): a worker forked from such a process hung in its first cv2 call."""

import subprocess
import sys
from pathlib import Path

PLATFORM = Path(__file__).resolve().parents[2] / "platform"

SCRIPT = """
import sys
import cv2
import numpy as np
from gvseg.metrics import panoptic_io as pio

if __name__ == "__main__":
    cv2.setNumThreads(2)
    for _ in range(10):  # the thread pool's workers have run
        cv2.resize(np.zeros((1500, 1500, 3), np.uint8), (2500, 2500))
    print(list(pio.map_videos(abs, [-1, -2, -3, -4], 2, False, "x")))
"""


def test_scoring_pool_starts_after_cv2_threads(tmp_path):
    script = tmp_path / "score.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60,
                         env={"PYTHONPATH": str(PLATFORM), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[1, 2, 3, 4]"
