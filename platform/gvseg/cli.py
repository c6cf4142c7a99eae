"""The ``gvseg`` command line.

    gvseg config RECIPE [--set k=v ...]        print the resolved config (what MLflow will log)
    gvseg data synth --format F --out DIR ...  write a synthetic dataset in a real on-disk format
    gvseg eval --metric M --gt G --pred P      score predictions with the official metric definitions
    gvseg train RECIPE [--set k=v ...]         train (+ eval + MLflow) on embedded Ray, a cluster, or --local
    gvseg tune SWEEP [--set k=v ...] [--resume]  hyper-parameter sweep on Ray Tune (sweeps/*.py), MLflow parent+children
    gvseg predict INPUT --checkpoint C --task T --out DIR   run a checkpoint on videos (overlays, result files)
    gvseg submit RECIPE --address http://HEAD:8265 [--wait]   run it on a Ray cluster as a Ray job
    gvseg jobs list|status|logs|stop [JOB_ID]   manage that cluster's jobs

RECIPE is ``path/to/recipe.py[:function]`` (default function ``full``). Bad configs and bad inputs print
one line naming the key or file and exit 2; they never dump a traceback.

All argument parsing lives here: the handlers (``cmd_*``) turn the parsed arguments into calls of plain
functions (``gvseg.runtime.ray_tune.run_sweep``, ``gvseg.runtime.jobs.submit``, ...), imported inside the
handler, so ``gvseg --help`` and a config error never load ray, mlflow or torch.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import get_args

from gvseg.config import ConfigError, DataFormat, apply_overrides, flatten

EXIT_USAGE = 2


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe as path/to/file.py[:function], e.g. tasks/vps_vipseg.py:debug")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value by dotted key, e.g. --set train.lr=1e-4 (repeatable)")


def _resolve_config(args: argparse.Namespace):
    from gvseg.recipes import load_recipe

    return apply_overrides(load_recipe(args.recipe), args.sets)


def cmd_config(args: argparse.Namespace) -> int:
    cfg = _resolve_config(args)
    if args.flat:
        for k, v in flatten(cfg).items():
            print(f"{k} = {v!r}")
    else:
        from gvseg.config import to_dict

        print(json.dumps(to_dict(cfg), indent=2))
    return 0


def cmd_data_synth(args: argparse.Namespace) -> int:
    from gvseg.data.synthetic import synth_dataset

    h, w = _parse_size(args.size)
    synth_dataset(
        args.format, Path(args.out), videos=args.videos, frames=args.frames, height=h, width=w,
        seed=args.seed, lookalike=args.lookalike, corrupt=args.corrupt,
    )
    print(f"wrote a synthetic {args.format} dataset to {args.out}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    if args.checkpoint:
        return _eval_checkpoint(args)
    if not (args.metric and args.gt and args.pred):
        raise ConfigError("gvseg eval: give --metric, --gt and --pred, or --checkpoint")
    from gvseg.metrics.evaluate import describe, format_table, run_metric

    options = dict(_parse_option(o) for o in args.option)
    try:
        results = run_metric(args.metric, args.gt, args.pred, out=args.out, progress=not args.quiet, **options)
    except TypeError as e:
        if "unexpected keyword" not in str(e):
            raise
        raise ConfigError(f"--option: metric {args.metric!r} does not take it ({e})") from None
    print(format_table(results))
    print(describe(results))
    if args.out:
        print(f"results written to {args.out}")
    return 0


def _eval_checkpoint(args: argparse.Namespace) -> int:
    """Evaluate a training checkpoint on its recipe's val split (the config travels inside it)."""
    import dataclasses

    from gvseg import checkpoint
    from gvseg.config import Config, from_dict
    from gvseg.evaluation import evaluate_checkpoint
    from gvseg.runtime.ray_train import resolve_paths  # absolute paths + the MLflow tracking URI; no Ray

    cfg = apply_overrides(from_dict(Config, checkpoint.load(args.checkpoint)["config"]), args.sets)
    if args.eval_dir:
        cfg = dataclasses.replace(cfg, runtime=dataclasses.replace(cfg.runtime, storage_path=args.eval_dir))
    metrics = evaluate_checkpoint(resolve_paths(cfg), args.checkpoint)
    print(_results_table(metrics))
    from gvseg.metrics.evaluate import describe

    print(describe(metrics))
    if args.out:
        Path(args.out).write_text(json.dumps(metrics, indent=2))
        print(f"results written to {args.out}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import dataclasses

    cfg = _resolve_config(args)
    rt = cfg.runtime
    if args.local:
        rt = dataclasses.replace(rt, local=True)
    if args.workers is not None:
        rt = dataclasses.replace(rt, num_workers=args.workers)
    if args.gpus_per_worker is not None:
        rt = dataclasses.replace(rt, use_gpu=args.gpus_per_worker > 0, gpus_per_worker=args.gpus_per_worker)
    if args.address is not None:
        rt = dataclasses.replace(rt, address=args.address)
    cfg = dataclasses.replace(cfg, runtime=rt)

    from gvseg.runtime.ray_train import run_train

    metrics = run_train(cfg, recipe=args.recipe)
    print(_results_table(metrics))
    from gvseg.runtime.mlflow_log import redact, resolve_tracking_uri

    uri = resolve_tracking_uri(cfg)
    if uri.startswith("sqlite:"):
        print(f"\nSee the run:  mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000")
    else:
        print(f"\nSee the run at {redact({'uri': uri})['uri']}")  # never echo user:password@
    return 0


def _results_table(metrics: dict) -> str:
    """The model's metrics, one per line; with ground-truth baselines (``baseline/<name>/<metric>``) in the
    metrics, a column per baseline beside the model, so the number can be read against what perfect
    segmentation without association and a motion-free copy of the first frame score."""
    names = sorted({k.split("/")[1] for k in metrics if k.startswith("baseline/")})
    rows = [(k, v) for k, v in metrics.items() if isinstance(v, (int, float)) and not k.startswith(("baseline/", "mech"))]
    width = max((len(k) for k, _ in rows), default=6)
    fmt = lambda v: f"{v:>12.4f}" if v == v else f"{'n/a':>12}"  # NaN: undefined
    lines = [f"{'metric':<{width}}  {'model':>12}" + "".join(f"  {n:>12}" for n in names),
             f"{'-' * width}  {'-' * 12}" + "  ------------" * len(names)]
    for k, v in rows:
        base = [metrics.get(f"baseline/{n}/{k}") for n in names]
        lines.append(f"{k:<{width}}  {fmt(v)}" + "".join(f"  {fmt(b) if b is not None else ' ' * 12}" for b in base))
    if any(v != v for _, v in rows):
        lines.append("(n/a: undefined on this data, e.g. VPQ at spans longer than the videos)")
    if names:
        lines.append("baselines from the ground truth (gvseg.baselines): redrawn_ids = perfect masks, ids re-drawn "
                     "every clip (no association); copy_first = each object's first mask held (no motion)")
    n_mech = sum(k.startswith("mech") for k in metrics)
    if n_mech:
        lines.append(f"({n_mech} mechanism counters, mech_inference/*, are in MLflow and the metrics file)")
    return "\n".join(lines)


def add_predict_parser(sub) -> None:
    """Register ``gvseg predict`` on an argparse subparsers object."""
    from gvseg.predict import FORMATS, TASKS  # light at import; torch/OpenCV load when predicting

    p = sub.add_parser(
        "predict", help="run a checkpoint on videos; write overlays and benchmark result files",
        description="Run a trained checkpoint on INPUT (a video file, a folder of frames or of videos, or a dataset "
                    "split FORMAT:ROOT:SPLIT such as davis:datasets/DAVIS:val), streaming frame by frame, and write "
                    "the benchmark's result files (official), overlay PNGs (png) and an overlay mp4 (mp4) to --out. "
                    "A corrupt video stops with an error after everything decoded was written.")
    p.add_argument("input", help="video file (mp4/avi/...), frame folder, folder of videos, or FORMAT:ROOT:SPLIT")
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt or a checkpoint folder (step_*)")
    p.add_argument("--task", required=True, choices=TASKS, help="what to predict")
    p.add_argument("--exemplars", default=None, metavar="FILE",
                   help='EVS hints: JSON {"objects": [{"id": 1, "frame": 0, "point": [x, y]} or "box": [x, y, w, h]]}, '
                        "a palette PNG of first-frame masks, or a folder of them")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--format", dest="formats", action="append", choices=FORMATS, default=None,
                   help="official = benchmark files under OUT/official, png = overlay PNGs under OUT/overlay, "
                        "mp4 = overlay video under OUT/mp4 (repeatable; default: all three)")
    p.add_argument("--clip", type=int, default=3, help="frames per clip (default 3)")
    p.add_argument("--overlap", type=int, default=1, help="frames shared by consecutive clips (default 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--ray", action="store_true", help="batch prediction with Ray Data, sharded by video")
    p.add_argument("--workers", type=int, default=2, help="Ray workers for --ray (default 2)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray worker for --ray")
    p.add_argument("--address", default=None, help="Ray address for --ray (default: embedded local Ray)")
    p.add_argument("--tta", action="store_true",
                   help="VSS: vote the class maps of 4 scales x 2 flips per pixel (paper 003, Eq. 8; 8 forwards a clip)")
    p.add_argument("--aggregate-with", default=None, metavar="CHECKPOINT",
                   help="VSS: a second checkpoint; per video, write the model whose class maps are more consistent "
                        "under optical-flow warping (paper 003, Eq. 5-7)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_predict)


def cmd_predict(args) -> int:
    from gvseg.predict import FORMATS, predict

    formats = tuple(args.formats or FORMATS)
    if args.ray:
        from gvseg.config import ConfigError
        from gvseg.runtime.ray_predict import predict_ray

        if args.aggregate_with:  # it runs two models over each whole video: one process holds both
            raise ConfigError("--aggregate-with runs without --ray (two models over each whole video in one process)")
        summary = predict_ray(args.input, args.checkpoint, args.task, exemplars=args.exemplars, out_dir=args.out,
                              formats=formats, clip=args.clip, overlap=args.overlap, num_workers=args.workers,
                              gpus_per_worker=args.gpus_per_worker, address=args.address, tta=args.tta)
    else:
        summary = predict(args.input, args.checkpoint, args.task, exemplars=args.exemplars, out_dir=args.out,
                          formats=formats, clip=args.clip, overlap=args.overlap, device=args.device,
                          progress=not args.quiet, tta=args.tta, aggregate_with=args.aggregate_with)
    if "aggregate" in summary:
        picks = [c["chosen"] for c in summary["aggregate"].values()]
        print(f"aggregate: {picks.count(0)} video(s) from --checkpoint, {picks.count(1)} from --aggregate-with")
    print(f"predicted {summary['frames']} frames of {summary['videos']} video(s) at {summary['fps']:.2f} frames/s "
          f"(decode + model + writing); outputs in {summary['out_dir']}")
    return 0


def add_tune_parser(sub) -> None:
    """``gvseg tune SWEEP.py[:fn] [--set k=v ...] [--address A] [--max-concurrent K] [--resume]``."""
    p = sub.add_parser(
        "tune", help="run a hyper-parameter sweep on Ray Tune (each trial trains + evaluates)",
        description="Run the Sweep returned by SWEEP.py[:fn] (default fn: sweep; e.g. sweeps/tcl_tau_queue.py:debug) "
                    "on Ray Tune: every trial is a full training run with evaluation; FIFO or ASHA on the sweep's "
                    "metric. MLflow gets one parent run (search space, results table, plot) with a nested child "
                    "run per trial. --resume continues the latest run of this sweep without retraining finished "
                    "trials.")
    p.add_argument("sweep", help="sweep as path/to/file.py[:function], e.g. sweeps/tcl_tau_queue.py:debug")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override the base config by dotted key, e.g. --set train.max_iters=50 (repeatable); "
                        "swept keys keep their trial values")
    p.add_argument("--address", default=None, help="Ray address: 'auto' or ray://HEAD:10001 (default: embedded)")
    p.add_argument("--max-concurrent", type=int, default=None, metavar="K",
                   help="run at most K trials at once (default: the sweep's, else as many as resources allow)")
    p.add_argument("--workers", type=int, default=None,
                   help="Ray Train workers per trial; 1 trains inside the trial process (runtime.num_workers)")
    p.add_argument("--scheduler", choices=["fifo", "asha"], default=None, help="override the sweep's scheduler")
    p.add_argument("--storage-path", default=None, help="where sweeps live (default: runtime.storage_path, ./runs)")
    p.add_argument("--resume", action="store_true",
                   help="continue the latest <storage>/<sweep name>-* run (Tuner.restore) instead of starting anew")
    p.set_defaults(fn=cmd_tune)


def cmd_tune(args: argparse.Namespace) -> int:
    import dataclasses

    from gvseg.recipes import load_sweep

    sweep = load_sweep(args.sweep)
    if args.scheduler:
        sweep = dataclasses.replace(sweep, scheduler=args.scheduler)
    sets = list(args.sets) + ([f"runtime.num_workers={args.workers}"] if args.workers is not None else [])

    from gvseg.runtime.ray_tune import run_sweep  # ray, mlflow and torch load here, not for --help

    rows = run_sweep(sweep, address=args.address, max_concurrent=args.max_concurrent, resume=args.resume,
                     storage_path=args.storage_path, overrides=sets, source=args.sweep)
    return 0 if rows and all(r["status"] != "INCOMPLETE" for r in rows) else 1


def _add_jobs_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=None,
                   help="the head's dashboard, e.g. http://127.0.0.1:8265 (default: $RAY_API_SERVER_ADDRESS)")


def add_submit_parser(sub) -> None:
    p = sub.add_parser(
        "submit", help="run a recipe on a Ray cluster as a Ray job",
        description="Submit `gvseg train RECIPE` (or `gvseg tune` with --tune) to a Ray cluster's head as a Ray "
                    "job. The runtime env ships this checkout (without data, venvs, outputs, .git) and the pinned "
                    "requirements. The Ray auth token is read from RAY_AUTH_TOKEN or ~/.ray/auth_token.")
    p.add_argument("recipe", help="recipe as path/to/file.py[:function], inside this checkout")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override passed to the job, e.g. --set runtime.storage_path=s3://b/runs")
    _add_jobs_address(p)
    p.add_argument("--runtime-env", default=None, metavar="YAML",
                   help="runtime env file, e.g. cluster/runtime_env.yaml (default: this checkout + pyproject pins)")
    p.add_argument("--wait", action="store_true", help="stream the job's logs and exit non-zero unless it succeeds")
    p.add_argument("--timeout", type=float, default=0, metavar="S",
                   help="with --wait: give up waiting after S seconds, exit 1 with the job's status (0 = no limit)")
    p.add_argument("--tune", action="store_true", help="run `gvseg tune` instead of `gvseg train`")
    p.add_argument("--extra", default="", metavar="ARGS", help="extra arguments appended to the job's command")
    p.add_argument("--job-id", default=None, help="submission id to use (default: generated by Ray)")
    p.add_argument("--no-pip", action="store_true",
                   help="do not ship the pinned requirements (the cluster image already has them)")
    p.set_defaults(fn=cmd_submit)


def add_jobs_parser(sub) -> None:
    p = sub.add_parser("jobs", help="list, inspect, tail or stop Ray jobs on a cluster",
                       description="Manage the Ray jobs on a cluster (same client and token as `gvseg submit`).")
    p.add_argument("action", choices=["list", "status", "logs", "stop"])
    p.add_argument("job_id", nargs="?", default=None, help="submission id (not needed for list)")
    _add_jobs_address(p)
    p.add_argument("--follow", action="store_true", help="logs: keep streaming until the job ends")
    p.set_defaults(fn=cmd_jobs)


def cmd_submit(args: argparse.Namespace) -> int:
    import shlex

    from gvseg.runtime.jobs import JobError, submit  # ray loads when the head is contacted

    try:
        submit(args.recipe, args.sets, args.address, args.runtime_env, wait=args.wait, tune=args.tune,
               extra=shlex.split(args.extra or ""), submission_id=args.job_id, pip=not args.no_pip,
               timeout_s=args.timeout or None)
    except JobError as e:
        print(f"gvseg: error: {e}", file=sys.stderr)
        return 1
    return 0


def _fmt_time(ms: int | None) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


def cmd_jobs(args: argparse.Namespace) -> int:
    from gvseg.runtime import jobs  # ray loads when the head is contacted

    try:
        if args.action == "list":
            rows = jobs.list_jobs(args.address)
            print(f"{'JOB_ID':<30}  {'STATUS':<10}  {'STARTED':<19}  ENTRYPOINT")
            from gvseg.checkpoint import REDACTED, URI_CREDENTIALS

            for j in rows:  # entrypoints submitted before credentials moved to env_vars: shown redacted
                print(f"{j.submission_id or j.job_id:<30}  {j.status.value:<10}  {_fmt_time(j.start_time):<19}  "
                      f"{URI_CREDENTIALS.sub(REDACTED + '@', j.entrypoint or '')}")
            return 0
        if not args.job_id:
            raise jobs.JobError(f"gvseg jobs {args.action} needs a JOB_ID (see gvseg jobs list)")
        if args.action == "status":
            print(jobs.status(args.address, args.job_id))
        elif args.action == "logs":
            text = jobs.logs(args.address, args.job_id, follow=args.follow)
            print(text, end="")
        elif args.action == "stop":
            stopped = jobs.stop(args.address, args.job_id)
            print(f"{args.job_id}: {'stop requested' if stopped else 'already ended'}")
    except jobs.JobError as e:
        print(f"gvseg: error: {e}", file=sys.stderr)
        return 1
    return 0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(f"--size {text!r}: expected HxW, e.g. 64x96") from None
    return h, w


def _parse_option(text: str) -> tuple[str, object]:
    from gvseg.config import _parse_literal

    if "=" not in text:
        raise ConfigError(f"--option {text!r}: expected NAME=VALUE")
    k, v = text.split("=", 1)
    return k.strip(), _parse_literal(v.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gvseg",
        description="gvseg: train, sweep, evaluate and run GvSeg (VIS, VSS, VPS, EVS) on Ray with MLflow.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("config", help="print a recipe's resolved config",
                       description="Load RECIPE, apply --set overrides, and print the config tree.")
    _add_recipe_args(p)
    p.add_argument("--flat", action="store_true", help="print dotted key = value lines (MLflow params)")
    p.set_defaults(fn=cmd_config)

    p = sub.add_parser("data", help="dataset tools", description="Dataset tools.")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    s = data_sub.add_parser(
        "synth", help="write a synthetic dataset in a real format",
        description="Write a complete synthetic dataset tree (train/val) byte-exact in a real dataset format: "
                    "textured stuff, moving/occluding thing instances, optional look-alikes.")
    s.add_argument("--format", required=True, choices=get_args(DataFormat))  # = formats.FORMATS (a test)
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument("--videos", type=int, default=8)
    s.add_argument("--frames", type=int, default=8)
    s.add_argument("--size", default="64x96", help="HxW")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--lookalike", action="store_true",
                   help="instances of one class share texture and cross paths: only shape/position separate them")
    s.add_argument("--corrupt", action="store_true", help="also write malformed variants for bad-input tests")
    s.set_defaults(fn=cmd_data_synth)

    p = sub.add_parser(
        "eval", help="score predictions with a benchmark metric",
        description="Score predictions in a benchmark's official format. Metrics: vpq, stq (VIPSeg/KITTI-STEP "
                    "panoptic PNG + JSON), miou (VSPW mIoU/mVC), ytvis (AP/AR from results.json), jf (DAVIS/YT-VOS), "
                    "hota (BURST).")
    p.add_argument("--metric", choices=["vpq", "stq", "miou", "ytvis", "jf", "hota"])
    p.add_argument("--gt", help="ground-truth directory or JSON")
    p.add_argument("--pred", help="prediction directory or JSON")
    p.add_argument("--checkpoint", help="instead: evaluate a training checkpoint on its recipe's val split")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="with --checkpoint: override its config, e.g. --set data.root=/data/VIPSeg")
    p.add_argument("--eval-dir", default=None, help="with --checkpoint: where predictions are written")
    p.add_argument("--out", default=None, help="write results JSON here")
    p.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                   help="metric option, e.g. --option dataset=kitti-step (repeatable)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_eval)

    p = sub.add_parser(
        "train", help="train a recipe (then evaluate and log to MLflow)",
        description="Train RECIPE with Ray Train (embedded local Ray by default), evaluate on the val split, and "
                    "track everything in MLflow (embedded sqlite store by default). Re-running with the same run "
                    "name resumes.")
    _add_recipe_args(p)
    p.add_argument("--address", default=None, help="Ray address: 'auto' or ray://HEAD:10001 (default: embedded)")
    p.add_argument("--workers", type=int, default=None, help="Ray Train workers (runtime.num_workers)")
    p.add_argument("--gpus-per-worker", type=float, default=None, help="GPUs per worker (enables CUDA/NCCL)")
    p.add_argument("--local", action="store_true", help="one process, no Ray")
    p.set_defaults(fn=cmd_train)

    add_tune_parser(sub)
    add_predict_parser(sub)
    add_submit_parser(sub)
    add_jobs_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except ConfigError as e:
        print(f"gvseg: config error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (FileNotFoundError, ValueError) as e:  # DataError is a ValueError naming the file
        print(f"gvseg: error: {e}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
