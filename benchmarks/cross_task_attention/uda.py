"""Lopes et al. (WACV 2023) Table 6 in shape: multi-task unsupervised domain adaptation, S-D.

One command trains, from ``configs/lopes2023_synthetic_sd_uda.yaml`` scaled down further to
fit a CPU budget (``--steps``, ``--size``, the ``test_resnet`` encoder, narrow decoders):

* ``stl_semseg`` / ``stl_depth``: one single-task 3-ways network per task, trained on the
  source only: the Δm baseline, scored on the target;
* ``mtl_source``: the MTL baseline (``three_ways``), source only;
* ``mtl_uda``: the same with adversarial adaptation (``adaptation.enabled``);
* ``mteb_uda``: 3-ways + mTEB (``three_ways_mteb``) with adaptation ("Ours" of Table 6);
* ``mtl_uda_x10``: MTL-UDA with λ_adv = 0.05 (10 × the paper's), not in Table 6: whether a
  stronger adversarial term helps within the short schedule;

each for every seed of ``--seeds``. Source: the synthetic scenes in the ``default`` style;
target: other scenes (dataset seed 1) in the ``night`` style. Every run is scored on the
source test split (``metrics_test.json``) and on the target's labelled test split
(``metrics_target_test.json``); the target's labels are never read in training.

It writes ``--out-dir/UDA.md`` and ``uda.json``: per row the target metrics as mean ± std over
the seeds with Δm against STL source-only on the target (``densetasks report`` on split
``target_test``), the same on the source test split, and the domain gap of the source-only
runs (source test vs target test). Finished runs are skipped, so an interrupted benchmark
continues. See ``benchmarks/cross_task_attention/UDA.md``.
"""

import argparse
import json
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch

from densetasks.data.registry import create_dataset
from densetasks.engine import build
from densetasks.engine.config import load_config
from densetasks.engine.distributed import ProcessInfo
from densetasks.engine.inference import load_run
from densetasks.engine.loop import evaluate
from densetasks.engine.run import train
from densetasks.experiments.provenance import add_provenance_options, start_benchmark
from densetasks.experiments.report import (
    build_report,
    format_markdown_table,
    load_group,
    load_records,
)
from densetasks.experiments.run_record import read_events
from densetasks.experiments.verify import VERIFICATIONS, VerifyLog, verify_report_run
from densetasks.tasks.registry import label_kinds

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "lopes2023_synthetic_sd_uda.yaml"

ROWS: dict[str, list[str]] = {
    "stl_semseg": [
        "model.architecture=three_ways",
        "tasks={semseg: {}}",
        "balancer.weights={semseg: 50.0}",
        "adaptation.enabled=false",
    ],
    "stl_depth": [
        "model.architecture=three_ways",
        "tasks={depth: {loss: berhu, far: 20.0}}",
        "balancer.weights={depth: 1.0}",
        "adaptation.enabled=false",
    ],
    "mtl_source": ["model.architecture=three_ways", "adaptation.enabled=false"],
    "mtl_uda": ["model.architecture=three_ways", "adaptation.enabled=true"],
    "mteb_uda": ["model.architecture=three_ways_mteb", "adaptation.enabled=true"],
    "mtl_uda_x10": [
        "model.architecture=three_ways",
        "adaptation.enabled=true",
        "adaptation.lambda_adv=0.05",
    ],
}
"""Table rows -> overrides of the config; ``stl_*`` are the Δm baselines; ``mtl_uda_x10`` is
MTL-UDA with 10 × the paper's λ_adv (a sensitivity check of the short schedule)."""

BASELINES = ("stl_semseg", "stl_depth")


def scale_overrides(args: argparse.Namespace) -> list[str]:
    """The CPU scale of every run: encoder, decoder widths, image size, data, schedule."""
    size = f"[{args.size}, {args.size}]"
    data = f"n_train: {args.n_train}, n_val: {args.n_val}, n_test: {args.n_test}, size: {size}"
    return [
        f"model.encoder={args.encoder}",
        f"model.options={{decoder_widths: {args.widths}}}",
        f"data.options={{{data}}}",
        f"data.target.options={{{data}, style: night, seed: 1}}",
        f"data.crop_size={size}",
        f"data.batch_size={args.batch_size}",
        "data.workers=0",
        f"train.steps={args.steps}",
        f"train.milestones=[{int(args.steps * 0.75)}]",
        f"train.lr={args.lr}",
        f"train.encoder_lr={args.lr}",
        f"train.eval_every={args.steps}",
        f"train.checkpoint_every={args.steps}",
        f"train.log_every={max(1, args.steps // 10)}",
        "train.images_every=0",
        "train.device=cpu",
        f"adaptation.discriminator_width={args.discriminator_width}",
        f"adaptation.discriminator_lr={args.discriminator_lr}",
    ]


def train_row(name: str, seed: int, args: argparse.Namespace) -> dict[str, float]:
    """Train one run (skipped when its target metrics exist); its wall and CPU seconds, also
    kept in ``RUN_DIR/cost.json`` so that a continued benchmark still adds up every run."""
    torch.set_num_threads(1)
    run_dir = args.runs_dir / f"{name},seed={seed}"
    if (run_dir / "metrics_target_test.json").is_file():
        return {}
    overrides = [*scale_overrides(args), *ROWS[name], f"seed={seed}"]
    config = load_config(CONFIG, overrides)
    wall, cpu = time.perf_counter(), _cpu_seconds()
    train(config, run_dir)
    cost = {"wall_s": time.perf_counter() - wall, "cpu_s": _cpu_seconds() - cpu}
    (run_dir / "cost.json").write_text(json.dumps(cost))
    return cost


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def build_tables(args: argparse.Namespace) -> dict[str, dict]:
    """``densetasks report`` data on the target and on the source test split."""
    runs = {name: [args.runs_dir / f"{name},seed={seed}" for seed in args.seeds] for name in ROWS}
    baselines = [run for name in BASELINES for run in runs[name]]
    reports = {}
    for split in ("target_test", "test"):
        groups = [
            load_group(name, dirs, split) for name, dirs in runs.items() if name not in BASELINES
        ]
        reports[split] = build_report(groups, load_records(baselines, split), split)
    return reports


def adaptation_losses(args: argparse.Namespace) -> list[dict]:
    """Per adapting run: the first and the last logged adversarial (λ-weighted, on the
    network), discriminator (summed over tasks and scales; 4 · 2 ln 2 at chance) and total
    task losses, from the run's ``events.jsonl``."""
    rows = []
    for name, overrides in ROWS.items():
        if "adaptation.enabled=true" not in overrides:
            continue
        for seed in args.seeds:
            events = read_events(args.runs_dir / f"{name},seed={seed}" / "events.jsonl")
            train = [event for event in events if event.get("type") == "train"]
            for position, event in (("first", train[0]), ("last", train[-1])):
                losses = event["losses"]
                rows.append(
                    {
                        "run": name,
                        "seed": seed,
                        "logged": position,
                        "step": event["step"],
                        "adversarial": losses["adversarial"],
                        "discriminator": losses["discriminator"],
                        "total": event["total"],
                    }
                )
    return rows


SOURCE_ONLY = ("stl_semseg", "stl_depth", "mtl_source")
"""Runs that never saw a target image: their drop on the target is the domain gap."""


def same_scenes_in_night(run_dir: Path) -> dict[str, dict[str, float]]:
    """Metrics of a run's best checkpoint on the source test scenes rendered in ``night``:
    the gap of appearance alone (the target's own test split holds other scenes)."""
    run = load_run(run_dir)
    options = {**run.config.data.options, "style": "night"}
    dataset = create_dataset("synthetic", run.config.data.test_split, label_kinds(), **options)
    dataset.transform = run.transform
    kinds = build.run_label_kinds(run.tasks, run.model)
    loader = build.eval_loader(run.config, dataset, kinds, ProcessInfo())
    evaluation = evaluate(run.model, run.tasks, loader, run.device)
    return {name: metric.compute() for name, metric in evaluation.metrics.items()}


def domain_gap(args: argparse.Namespace) -> list[dict]:
    """Source-only runs' primary metrics: source test (default), the same scenes in night,
    the target test split (other scenes, night)."""
    rows = []
    for name in SOURCE_ONLY:
        for seed in args.seeds:
            run_dir = args.runs_dir / f"{name},seed={seed}"
            source = json.loads((run_dir / "metrics_test.json").read_text())
            target = json.loads((run_dir / "metrics_target_test.json").read_text())
            night = same_scenes_in_night(run_dir)
            for task, metric in source["primary"].items():
                rows.append(
                    {
                        "run": name,
                        "seed": seed,
                        "task": task,
                        "metric": metric,
                        "source": source["metrics"][task][metric],
                        "same_scenes_night": night[task][metric],
                        "target": target["metrics"][task][metric],
                    }
                )
    return rows


def gap_markdown(rows: list[dict]) -> str:
    """Mean ± std over seeds per (run, task): the three columns and the relative changes."""
    lines = [
        "| run | task.metric | source test (default) | same scenes, night | change "
        "| target test (night) | change |",
        "|---|---|---|---|---|---|---|",
    ]
    keys = sorted({(row["run"], row["task"], row["metric"]) for row in rows})
    for run, task, metric in keys:
        picked = [row for row in rows if (row["run"], row["task"]) == (run, task)]
        cells = []
        for column in ("source", "same_scenes_night", "target"):
            values = [row[column] for row in picked]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.3g} ± {spread:.2g}")
            if column != "source":
                changes = [100 * (row[column] - row["source"]) / row["source"] for row in picked]
                change_spread = statistics.stdev(changes) if len(changes) > 1 else 0.0
                cells.append(f"{statistics.mean(changes):+.1f} ± {change_spread:.1f} %")
        lines.append(f"| {run} | {task}.{metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument(
        "--lr", type=float, default=2e-3, help="both groups (the paper: 2e-4 / 3e-4 over 40k)"
    )
    parser.add_argument("--size", type=int, default=32, help="image side in pixels (>= 32)")
    parser.add_argument("--batch-size", type=int, default=4, help="source (and target) batch")
    parser.add_argument("--encoder", default="test_resnet")
    parser.add_argument("--widths", default="[32, 32, 16, 16, 8]", help="decoder_widths")
    parser.add_argument("--discriminator-width", type=int, default=16, help="ndf (the paper's 64)")
    parser.add_argument(
        "--discriminator-lr",
        type=float,
        default=1e-3,
        help="the paper's 1e-4 × 10, as --lr scales the network's",
    )
    parser.add_argument("--n-train", type=int, default=512)
    parser.add_argument("--n-val", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=128)
    parser.add_argument("--jobs", type=int, default=1, help="runs trained in parallel")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "cross_task_uda")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent)
    add_provenance_options(parser)
    return parser.parse_args(argv)


def verify(args: argparse.Namespace, provenance: dict) -> int:
    """``--verify RUN`` (``mtl_uda,seed=0``): retrain that run and compare its Δm on the target
    test split (against the committed STL source-only seeds) with the committed one."""
    report = json.loads((args.out_dir / "uda.json").read_text())["reports"]["target_test"]
    name, _, seed = args.verify.partition(",seed=")
    if name not in ROWS or not seed.isdigit():
        raise SystemExit(f"--verify NAME,seed=S with NAME one of {', '.join(ROWS)}")

    def retrain(folder: Path) -> Path:
        train_row(name, int(seed), argparse.Namespace(**{**vars(args), "runs_dir": folder}))
        return folder / args.verify

    log = VerifyLog(args.out_dir / VERIFICATIONS, provenance)
    return verify_report_run(args.verify, report, retrain, args.tolerance, log, "target_test")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    provenance = start_benchmark(__file__, args, argv, [args.out_dir], args.runs_dir)
    if args.verify:
        return verify(args, provenance)
    jobs = [(name, seed) for seed in args.seeds for name in ROWS]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        futures = {job: pool.submit(train_row, *job, args) for job in jobs}
    for future in futures.values():
        future.result()
    costs = {
        f"{name},seed={seed}": json.loads(
            (args.runs_dir / f"{name},seed={seed}" / "cost.json").read_text()
        )
        for name, seed in jobs
    }
    for run, cost in costs.items():
        print(f"{run}: {cost['wall_s']:.0f} s wall, {cost['cpu_s']:.0f} s CPU")
    reports = build_tables(args)
    gap = domain_gap(args)
    payload = {
        "provenance": provenance,
        "command": provenance["command"],
        "settings": {key: str(value) for key, value in vars(args).items()},
        "costs": costs,
        "total_cpu_s": sum(cost["cpu_s"] for cost in costs.values()),
        "reports": reports,
        "domain_gap": gap,
        "adaptation_losses": adaptation_losses(args),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "uda.json").write_text(json.dumps(payload, indent=2) + "\n")
    print("## target test (night)\n" + format_markdown_table(reports["target_test"]))
    print("\n## source test (default)\n" + format_markdown_table(reports["test"]))
    print("\n## domain gap\n" + gap_markdown(gap))
    return 0


if __name__ == "__main__":
    sys.exit(main())
