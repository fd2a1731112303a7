"""Reproduce the CamVid benchmark: two single-task baselines, one multi-task network, report.

::

    python benchmarks/camvid/run.py [--root DATA] [--out runs/camvid] [--jobs 1]

Trains ``configs/camvid_stl_semseg.yaml``, ``configs/camvid_stl_edges.yaml`` and
``configs/camvid_mtl.yaml`` with ``densetasks train`` (each run evaluates its best validation
checkpoint on the test split at the end, writing ``metrics_test.json``), then writes the
comparison with Δm (the two single-task runs as baselines) with ``densetasks report`` to
``--report`` (by default this folder: ``report.md``, ``report.html``, ``report.json``,
``plots/``, ``samples/``). ``results.json`` beside them holds the provenance (commit,
versions, CPU, command), the wall time of each run and each run's primary metrics at every
validation (the curve that chose its checkpoint).

``--jobs N`` trains N runs at once, each with ``cpus // N`` threads (at least one): on a
shared, busy machine this is what fits the three runs in the time budget. ``--verify RUN``
retrains one of them (``mtl``) in a temporary folder and compares it with ``report.json``.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from densetasks.experiments.provenance import add_provenance_options, start_benchmark
from densetasks.experiments.run_record import load_run_record
from densetasks.experiments.verify import VERIFICATIONS, VerifyLog, verify_report_run

REPO = Path(__file__).resolve().parents[2]
RUNS = ("stl_semseg", "stl_edges", "mtl")
BASELINES = ("stl_semseg", "stl_edges")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--root",
        type=Path,
        default=REPO.parent / "shared" / "data" / "camvid",
        help="CamVid folder in the SegNet layout (default: shared/data/camvid beside the repo)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "camvid", help="run folders")
    parser.add_argument(
        "--report",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="report folder (default: benchmarks/camvid)",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at the same time")
    add_provenance_options(parser)
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if not args.root.is_dir():
        parser.error(f"--root {args.root}: not a folder (expected CamVid in the SegNet layout)")
    return args


def train_command(name: str, root: Path, out: Path) -> list[str]:
    """``densetasks train`` of ``configs/camvid_<name>.yaml`` into ``out/<name>``."""
    return [
        "densetasks",
        "train",
        str(REPO / "configs" / f"camvid_{name}.yaml"),
        "--out",
        str(out / name),
        "--set",
        f"data.root={root.resolve()}",
    ]


def train_all(root: Path, out: Path, jobs: int, runs: tuple[str, ...] = RUNS) -> dict[str, float]:
    """Train ``runs``, ``jobs`` at a time; returns the wall seconds of each run."""
    environment = dict(os.environ)
    if jobs > 1:
        environment["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // jobs))
    out.mkdir(parents=True, exist_ok=True)
    waiting, running, seconds = list(runs), {}, {}
    while waiting or running:
        while waiting and len(running) < jobs:
            name = waiting.pop(0)
            log = (out / f"{name}.log").open("w")
            print(f"training {name} (log: {out / f'{name}.log'})", flush=True)
            process = subprocess.Popen(
                train_command(name, root, out),
                cwd=REPO,
                env=environment,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            running[name] = (process, time.perf_counter(), log)
        for name, (process, start, log) in list(running.items()):
            if process.poll() is None:
                continue
            log.close()
            del running[name]
            if process.returncode != 0:
                sys.exit(f"{name} failed (exit {process.returncode}); see {out / f'{name}.log'}")
            seconds[name] = round(time.perf_counter() - start, 1)
            print(f"{name} finished in {seconds[name] / 60:.1f} min", flush=True)
        time.sleep(1.0)
    return seconds


def verify(args: argparse.Namespace, provenance: dict) -> int:
    """``--verify RUN``: retrain one of :data:`RUNS` and compare it with ``report.json``."""
    if args.verify not in RUNS:
        raise SystemExit(f"--verify: one of {', '.join(RUNS)}, got {args.verify!r}")
    report = json.loads((args.report / "report.json").read_text())

    def retrain(folder: Path) -> Path:
        train_all(args.root, folder, 1, (args.verify,))
        return folder / args.verify

    log = VerifyLog(args.report / VERIFICATIONS, provenance)
    return verify_report_run(args.verify, report, retrain, args.tolerance, log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    provenance = start_benchmark(__file__, args, argv, [args.report], args.out)
    if args.verify:
        return verify(args, provenance)
    seconds = train_all(args.root, args.out, args.jobs)
    subprocess.run(
        [
            "densetasks",
            "report",
            str(args.out / "mtl"),
            "--baseline",
            *(str(args.out / name) for name in BASELINES),
            "--split",
            "test",
            "--out",
            str(args.report),
        ],
        cwd=REPO,
        check=True,
    )
    results = {
        "provenance": provenance,
        "jobs": args.jobs,
        "wall_seconds": seconds,
        "validation": {name: validation_curve(args.out / name) for name in RUNS},
    }
    (args.report / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def validation_curve(run_dir: Path) -> list[dict[str, object]]:
    """The run's primary metrics at every validation, from its event log."""
    record = load_run_record(run_dir, "test")
    return [
        {
            "step": event["step"],
            **{
                f"{task}.{name}": event["metrics"][task][name]
                for task, name in record.primary.items()
            },
        }
        for event in record.eval_events
        if event.get("split") == "val"
    ]


if __name__ == "__main__":
    sys.exit(main())
