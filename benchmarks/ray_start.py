"""Embedded Ray start-up with and without its dashboard (``runtime.dashboard``, gvseg.runtime.ray_init).

    python benchmarks/ray_start.py            # 3 interleaved rounds, ~1.5 min on 2 cores
    python benchmarks/ray_start.py --smoke    # 1 round

Each start runs in a fresh child process: ``init_embedded(2, dashboard=...)``, then the wall time until Ray
answers, and the resident memory (RSS, and PSS: shared pages shared out) of the driver and every process it
started, sampled 3 s after start-up. Writes ``benchmarks/results/ray_start_cpu.json`` (machine named).

Result (2026-12-03, 2-core box, medians of 3): start 4.7 -> 6.0 s, RSS 0.97 -> 1.96 GB, PSS 0.64 -> 0.85 GB
without -> with the dashboard, which Ray Train's placement-group cleaner needs (its state API).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHILD = """
import json, sys, time
sys.path.insert(0, {platform!r})
import psutil, ray
from gvseg.runtime.ray_init import init_embedded
t0 = time.time()
init_embedded(2, dashboard={dashboard}, log_to_driver=False)
ray.get(ray.remote(lambda: 1).remote())
start = time.time() - t0
time.sleep(3)
me = psutil.Process()
rss = pss = 0
for p in [me, *me.children(recursive=True)]:
    try:
        m = p.memory_full_info()
        rss, pss = rss + m.rss, pss + m.pss
    except psutil.Error:
        pass
ray.shutdown()
print(json.dumps({{"start_s": start, "rss_mb": rss / 1e6, "pss_mb": pss / 1e6}}))
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import machine

    rounds = 1 if args.smoke else args.rounds
    runs: dict[str, list[dict]] = {"no_dashboard": [], "dashboard": []}
    for _ in range(rounds):  # interleaved: machine noise hits both
        for name, dash in (("no_dashboard", False), ("dashboard", True)):
            code = CHILD.format(platform=str(ROOT / "platform"), dashboard=dash)
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
            if out.returncode:
                raise SystemExit(f"ray start ({name}) failed: {out.stderr[-2000:]}")
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    summary = {name: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for name, rs in runs.items()}
    result = {"benchmark": "ray_start", "machine": machine(), "rounds": rounds, "median": summary, "runs": runs}
    if not args.smoke:
        (ROOT / "benchmarks" / "results" / "ray_start_cpu.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
