"""``densetasks demo``: the whole story on a fresh machine, CPU only, in minutes.

1. render a small synthetic dataset (train / val / test) into the folder format, once, so
   training reads files instead of ray casting every scene again at every step;
2. train one single-task network per task (``single_task``) and one multi-task network
   (``hard_sharing`` with learned uncertainty weights, Kendall et al., CVPR 2018) on
   semseg, depth, normals;
3. evaluate each on the test split and print the report table with Δm
   (``DIR/report/report.{md,html,json}``).

The training budget is given in minutes and turned into steps with a throughput measured on
a 2-core CPU (``DemoScale.steps_per_minute``). On a machine that is already busy the demo
trains on one thread (:func:`training_threads`): torch's threads spin while they wait for
each other when the cores are oversubscribed (``benchmarks/demo.md``). The full demo uses
timm's small ``test_resnet`` encoder with a multi-scale (stride 4) head and no bottleneck at
64 px, the most learning per CPU second we measured; ``--quick`` runs 4 steps at 32 px with
the tiny encoder, to prove the pipeline in seconds.
"""

import argparse
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from densetasks.data.folder import write_folder_dataset
from densetasks.data.synthetic import SyntheticScenes
from densetasks.engine.config import validate_config
from densetasks.engine.run import train
from densetasks.errors import ConfigError
from densetasks.experiments.report import format_text_table, write_report
from densetasks.experiments.run_record import load_run_record
from densetasks.tasks.registry import label_kinds

DEMO_TASKS = ("semseg", "depth", "normals")
SPLIT_SEEDS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class DemoScale:
    """How big the demo is: data, network and training length."""

    size: tuple[int, int]
    images: dict[str, int]
    encoder: str
    head: str
    batch_size: int
    steps_per_minute: float
    """Training steps of one run per minute on a 2-core CPU (measured; see docs/cli.md)."""
    min_steps: int
    evaluations: int
    """Validation passes per run (the points of the report's validation curves)."""


FULL = DemoScale(
    size=(64, 64),
    images={"train": 384, "val": 32, "test": 64},
    encoder="test_resnet",
    head="multiscale",
    batch_size=8,
    steps_per_minute=200.0,
    min_steps=20,
    evaluations=4,
)
QUICK = DemoScale(
    size=(32, 32),
    images={"train": 8, "val": 2, "test": 2},
    encoder="tiny",
    head="deeplab",
    batch_size=4,
    steps_per_minute=0.0,  # always min_steps
    min_steps=4,
    evaluations=1,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train single-task baselines and a multi-task network on synthetic data, "
        "then report Δm",
        description="Render a small synthetic dataset, train one single-task network per task "
        f"({', '.join(DEMO_TASKS)}) and one hard-sharing multi-task network with uncertainty "
        "weighting on the CPU, evaluate them on the test split and print the comparison with "
        "Δm. Everything is written under --out (data/, runs/, report/).",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("demo"), help="output folder (default demo)"
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=6.0,
        help="training time for all runs together, in minutes on a 2-core CPU (default 6)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="a few steps at 32 px: checks the pipeline in seconds"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
    threads = training_threads(load, cores, os.environ)
    default_threads = torch.get_num_threads()
    if threads is not None:
        print(
            f"densetasks demo: the machine is busy (load average {load:.1f} on {cores} cores): "
            f"training on {threads} thread, as OMP_NUM_THREADS={threads} would; set "
            "OMP_NUM_THREADS to choose"
        )
        torch.set_num_threads(threads)
    try:
        return _run_demo(args)
    finally:
        torch.set_num_threads(default_threads)


def training_threads(load: float, cores: int, environ: Mapping[str, str]) -> int | None:
    """Torch threads for the demo: 1 when the machine is busy (a 1-minute load average of at
    least its cores) and ``OMP_NUM_THREADS`` is not set; ``None`` keeps torch's default (one
    per core). Oversubscribed, torch's OpenMP threads spin waiting for each other: at a load
    average of about 19 on 2 cores the quick demo took 1:44 on two threads and 0:22 on one
    (``benchmarks/demo.md``). The metrics do not depend on it."""
    if "OMP_NUM_THREADS" in environ or load < cores:
        return None
    return 1


def _run_demo(args: argparse.Namespace) -> int:
    scale = QUICK if args.quick else FULL
    steps = demo_steps(scale, args.minutes, runs=len(DEMO_TASKS) + 1)
    out: Path = args.out
    if (out / "data").exists() or (out / "runs").exists():
        raise ConfigError(f"{out} already holds a demo; pass another --out or delete it")
    start = time.perf_counter()
    print(
        f"densetasks demo: {len(DEMO_TASKS)} single-task runs + 1 multi-task run, "
        f"{steps} steps each at {scale.size[0]}x{scale.size[1]} px, output in {out}"
    )
    data_root = out / "data"
    write_demo_dataset(data_root, scale)
    print(
        f"rendered {sum(scale.images.values())} synthetic scenes to {data_root} ({_elapsed(start)})"
    )
    plans = {f"stl_{task}": ("single_task", [task]) for task in DEMO_TASKS}
    plans["mtl_hard_sharing"] = ("hard_sharing", list(DEMO_TASKS))
    run_dirs = {}
    for number, (name, (architecture, tasks)) in enumerate(plans.items(), start=1):
        print(
            f"[{number}/{len(plans)}] {name}: {architecture} on {', '.join(tasks)} ...", flush=True
        )
        config = validate_config(
            demo_config(data_root, scale, architecture, tasks, steps), source=f"demo run {name}"
        )
        run_dirs[name] = train(config, out / "runs" / name)
        print(
            f"[{number}/{len(plans)}] {name}: done, test {_primary_summary(run_dirs[name])} "
            f"({_elapsed(start)})",
            flush=True,
        )
    baselines = [run_dirs[f"stl_{task}"] for task in DEMO_TASKS]
    report = write_report([run_dirs["mtl_hard_sharing"]], baselines, out / "report", split="test")
    print()
    print(format_text_table(report))
    print(f"\nreport: {out / 'report' / 'report.html'} (total {_elapsed(start)})")
    return 0


def demo_steps(scale: DemoScale, minutes: float, runs: int) -> int:
    """Training steps per run that fit ``minutes`` for all ``runs`` together."""
    if minutes <= 0:
        raise ConfigError(f"--minutes must be positive, got {minutes}")
    return max(scale.min_steps, int(minutes * scale.steps_per_minute / runs))


def write_demo_dataset(root: Path, scale: DemoScale) -> None:
    """Render the train / val / test scenes (disjoint seeds) into the folder format."""
    for split, count in scale.images.items():
        scenes = SyntheticScenes(
            n=count, size=scale.size, seed=SPLIT_SEEDS[split], tasks=DEMO_TASKS
        )
        samples = (scenes[i] for i in range(count))
        write_folder_dataset(samples, root, split, label_kinds(), scenes.task_options)


def demo_config(
    data_root: Path, scale: DemoScale, architecture: str, tasks: list[str], steps: int
) -> dict[str, Any]:
    """One run's raw config: Adam, poly schedule, a few evaluations, uncertainty weights."""
    return {
        "seed": 0,
        "tasks": {task: {} for task in tasks},
        "data": {
            "dataset": "folder",
            "root": str(data_root),
            "options": {"tasks": tasks},
            "flip": True,
            "batch_size": scale.batch_size,
        },
        "model": {
            "architecture": architecture,
            "encoder": scale.encoder,
            "bottleneck": "none",
            "head": scale.head,
        },
        "balancer": {"name": "uncertainty" if len(tasks) > 1 else "fixed"},
        "train": {
            "steps": steps,
            "optimizer": "adam",
            "lr": 1e-3,
            "weight_decay": 1e-4,
            "schedule": "poly",
            "eval_every": max(1, steps // scale.evaluations),
            "log_every": max(1, steps // 50),
            "checkpoint_every": steps,
            "device": "cpu",
        },
        "eval": {"num_images": 2},
    }


def _primary_summary(run_dir: Path) -> str:
    """``semseg miou 41.2, depth rmse 0.93`` from the run's test metrics."""
    record = load_run_record(run_dir, "test")
    return ", ".join(
        f"{task} {metric} {record.metrics[task][metric]:.4g}"
        for task, metric in record.primary.items()
    )


def _elapsed(start: float) -> str:
    seconds = time.perf_counter() - start
    return f"{int(seconds // 60)}:{int(seconds % 60):02d} elapsed"
