"""A quality row per backbone family: does each family learn here? Δm of hard sharing against
the single-task networks on the *same* encoder, on the synthetic scenes, with seeds.

For each family's small member (:data:`FAMILIES`: the timm ``test_*`` networks, Swin-T's
layout shrunk through ``model.encoder_options``, HRNet-W18-small, which is larger; ``resnet``,
the reference CNN, only with ``--families``), trains ``quality.yaml`` (semseg + depth, hard
sharing, 48 px, 150 steps) and the two single-task baselines, once per seed, through
``densetasks.experiments.sweep``; then scores each family's best checkpoints on the test
split against its own baselines (``densetasks report`` with seed groups: mean ± std of Δm,
and of every metric). Finished runs are skipped, so an interrupted benchmark continues.

Run from the repository root of a clean checkout of one commit (``start_benchmark`` refuses a
dirty tree or a work folder another commit trained in; ``docs/benchmarks.md``):
``OMP_NUM_THREADS=1 python benchmarks/backbones/quality.py [--jobs 2]``. Writes
``benchmarks/backbones/quality.json``, ``quality.md`` and each family's report
(``quality/<family>/report.json|md``). ``--verify FAMILY/RUN`` (``vit/vit_mtl,seed=0``)
retrains one run in a temporary folder and compares its Δm with the committed report's.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the balancer benchmark's scenes

from benchmarks.balancers.run import render_once, seed_name
from densetasks.cli.parsing import add_overrides_option
from densetasks.engine.config import load_config
from densetasks.experiments.provenance import (
    add_provenance_options,
    start_benchmark,
)
from densetasks.experiments.report import write_report
from densetasks.experiments.sweep import PlannedRun, plan_runs, run_sweep, train_named_run
from densetasks.experiments.verify import (
    VERIFICATIONS,
    VerifyLog,
    verify_report_run,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
REPORTS = "quality"
"""Folder of ``--out`` with each family's report (``<family>/report.json``), which
``--verify`` compares a retrained run with."""
SWIN_TINY = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet": ("test_resnet", {}),
    "vit": ("test_vit", {}),
    "swin": ("swin_tiny_patch4_window7_224", SWIN_TINY),
    "convnext": ("test_convnext", {}),
    "efficientnet": ("test_efficientnet", {}),
    "hrnet": ("hrnet_w18_small", {}),
}


def plan_family(
    base: dict[str, Any], family: str, seeds: list[int], runs_dir: Path
) -> list[PlannedRun]:
    encoder, options = FAMILIES[family]
    model = {"model.encoder": encoder, "model.encoder_options": options}
    runs: dict[str, dict[str, Any]] = {}
    for seed in seeds:
        for task, task_options in base["tasks"].items():
            runs[seed_name(f"{family}_stl_{task}", seed)] = {
                **model,
                "tasks": {task: task_options},
                "model.architecture": "single_task",
                "seed": seed,
            }
        runs[seed_name(f"{family}_mtl", seed)] = {**model, "seed": seed}
    return plan_runs(base, runs, runs_dir / family)


def family_row(report: dict[str, Any], family: str) -> dict[str, Any]:
    (run,) = report["runs"]
    delta = run["delta_m_percent"]
    encoder, options = FAMILIES[family]
    return {
        "family": family,
        "encoder": encoder,
        "encoder_options": options,
        "delta_m": delta["primary"],
        "delta_m_std": delta.get("primary_std"),
        "delta_m_per_seed": delta.get("primary_per_seed"),
        "metrics": run["metrics"],
        "baselines": report["baselines"],
        "primary": report["primary"],
    }


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    prov = meta["provenance"]
    lines = [
        "# Backbone quality rows: hard sharing vs single-task on the same encoder",
        "",
        f"Command: `{prov['command']}`. {meta['size']}. Seeds {meta['seeds']}. Commit "
        f"`{prov['commit']}`{' (dirty)' if prov['dirty'] else ''}; torch {prov['torch']}, "
        f"timm {prov['timm']}; CPU {prov['cpu_model']} ({prov['cpu_capability']}), "
        f"{prov['torch_threads']} torch thread(s); wall time {meta['minutes']:.0f} min; load "
        f"average before / after {meta['load_before']} / {meta['load_after']}.",
        "",
        "| family | encoder | Δm % (mean ± std) | Δm per seed | semseg mIoU MTL / STL "
        "| depth RMSE MTL / STL |",
        "|---|---|---:|---|---:|---:|",
    ]
    for row in rows:
        spread = "" if row["delta_m_std"] is None else f" ± {row['delta_m_std']:.1f}"
        seeds = ", ".join(f"{value:+.1f}" for value in row["delta_m_per_seed"] or [])
        pairs = [
            f"{row['metrics'][task][metric]:.1f} / {row['baselines'][task]['metrics'][metric]:.1f}"
            for task, metric in row["primary"].items()
        ]
        lines.append(
            f"| {row['family']} | {row['encoder']} | {row['delta_m']:+.1f}{spread} | {seeds} "
            f"| {' | '.join(pairs)} |"
        )
    return "\n".join(lines) + "\n"


def base_config(args: argparse.Namespace, work_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The raw config and the base config that reads its scenes, rendered once under
    ``work_dir/data``."""
    raw = load_config(HERE / "quality.yaml", args.overrides).to_dict()
    reading = [
        f"{key}={json.dumps(value)}" for key, value in render_once(raw, work_dir / "data").items()
    ]
    return raw, load_config(HERE / "quality.yaml", [*args.overrides, *reading]).to_dict()


def verify(args: argparse.Namespace, provenance: dict[str, Any]) -> int:
    """``--verify FAMILY/RUN`` (``vit/vit_mtl,seed=0``): retrain that run and compare its Δm
    against the committed report's baselines with the committed one."""
    family, _, run = args.verify.partition("/")
    if family not in FAMILIES or not run:
        raise SystemExit(
            f"--verify FAMILY/RUN with FAMILY one of {', '.join(FAMILIES)}, got {args.verify!r}"
        )
    report = json.loads((args.out / REPORTS / family / "report.json").read_text())

    def retrain(folder: Path) -> Path:
        _, base = base_config(args, folder)
        planned = plan_family(base, family, args.seeds, folder / "runs")
        missing = f"{run!r} is not a run of {family} with these options"
        return train_named_run(planned, run, missing)

    log = VerifyLog(args.out / VERIFICATIONS, provenance)
    return verify_report_run(run, report, retrain, args.tolerance, log)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES)[1:])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "backbones")
    parser.add_argument("--out", type=Path, default=HERE)
    add_overrides_option(parser, "every run")
    add_provenance_options(parser)
    args = parser.parse_args(argv)
    outputs = [args.out / name for name in ("quality.json", "quality.md", REPORTS)]
    provenance = start_benchmark(__file__, args, argv, outputs, args.work_dir)
    if args.verify:
        return verify(args, provenance)
    started, load_before = time.time(), os.getloadavg()
    raw, base = base_config(args, args.work_dir)
    rows = []
    for family in args.families:
        planned = plan_family(base, family, args.seeds, args.work_dir / "runs")
        print(f"{family}: {len(planned)} runs", flush=True)
        run_sweep(planned, jobs=args.jobs, split="test")
        by_name = {run.name: run.run_dir for run in planned}
        baselines = [
            by_name[seed_name(f"{family}_stl_{task}", seed)]
            for task in base["tasks"]
            for seed in args.seeds
        ]
        group = {family: [by_name[seed_name(f"{family}_mtl", seed)] for seed in args.seeds]}
        report = write_report([], baselines, args.out / REPORTS / family, "test", group)
        rows.append(family_row(report, family))
    data = base["data"]
    meta = {
        "provenance": provenance,
        "seeds": args.seeds,
        "size": f"{base['train']['steps']} steps, batch {data['batch_size']}, "
        f"{raw['data']['options']['size'][0]} px, semseg + depth, {raw['data']['options']}",
        "minutes": (time.time() - started) / 60,
        "load_before": [round(value, 1) for value in load_before],
        "load_after": [round(value, 1) for value in os.getloadavg()],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (args.out / "quality.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
