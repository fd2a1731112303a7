"""Lopes, Vu & de Charette, WACV 2023 (cross-task attention): Tables 1, 3 and 4 in shape, on CPU.

::

    python benchmarks/cross_task_attention/run.py [--seeds 0 1 2] [--steps N] [--quick]

One command trains, from ``configs/lopes2023_synthetic_sd.yaml`` (S-D) and
``configs/lopes2023_synthetic_sdn.yaml`` (S-D-N), scaled down for the CPU (:data:`SCALE`):

* STL: one ``three_ways`` network per task (semseg, depth, normals), its loss alone (weight 1;
  one network serves both task sets, since S-D and S-D-N differ only in their other tasks);
* Table 1, on S-D and on S-D-N: MTL (``three_ways``: the 3-ways decoders without exchange),
  PAD-Net (``padnet``), 3-ways_PAD-Net (``three_ways_padnet``) and 3-ways + mTEB
  (``three_ways_mteb``, one block at scale 1), Δm against STL;
* Table 3 (S-D): mTEB at scale 1, at scale 4 and at scales {1, 2}, with the parameters the
  blocks add;
* Table 4 (S-D): mTEB fusion add / concat / prod and attention spatial / channel / both.

Every row is trained once per seed (``<run>,seed=<s>``) through
:func:`densetasks.experiments.sweep.run_sweep` (finished runs are skipped, an interrupted one
resumes) and reported as mean ± std over the seeds by
:mod:`densetasks.experiments.report` (seed groups, Δm per seed against the mean of the STL
seeds, "within the seeds' spread"), on the test split. The two claims of the paper that the
tables test are checked against the seeds' spread. Results go to ``--report-dir`` (default:
this folder): ``results.md`` and ``results.json``. See ``README.md`` beside this file.
"""

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from densetasks.cli.parsing import add_overrides_option
from densetasks.engine.build import build_model, build_tasks, open_dataset
from densetasks.engine.config import load_config, validate_config
from densetasks.experiments.provenance import add_provenance_options, start_benchmark
from densetasks.experiments.report import (
    Report,
    build_report,
    format_markdown_table,
    load_group,
    load_records,
    table_notes,
)
from densetasks.experiments.report_seeds import within_spread
from densetasks.experiments.sweep import PlannedRun, plan_runs, run_sweep, train_named_run
from densetasks.experiments.verify import VERIFICATIONS, VerifyLog, run_names, verify_report_run
from densetasks.models import create_model
from densetasks.models.architectures.three_ways import DECODER_WIDTHS

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = {
    "sd": ROOT / "configs" / "lopes2023_synthetic_sd.yaml",
    "sdn": ROOT / "configs" / "lopes2023_synthetic_sdn.yaml",
}
WIDTH_DIVISOR = 8
"""Every width of the paper's networks divided by 8: decoder [256, 256, 128, 128, 64] ->
[32, 32, 16, 16, 8], ASPP and PAD-Net features 256 -> 32 (so the mTEB's d is 16 at scale 1)."""
SCALE = {
    "model.encoder": "tiny",
    "data.options.size": [32, 32],
    "data.crop_size": [32, 32],
    "data.options.n_train": 256,
    "data.options.n_val": 64,
    "data.options.n_test": 64,
    "data.workers": 0,
}
"""Scaled down from the configs (ResNet-18, 64 px, 1024 scenes, 2000 steps) to fit the
benchmark's CPU budget: the tiny conv encoder (8-32 channels, output stride 16 as the paper),
32×32 scenes, 256 training scenes; steps from ``--steps``."""
DEFAULT_STEPS = 600
THREE_WAYS_OPTIONS = {
    "model.options.decoder_widths": [width // WIDTH_DIVISOR for width in DECODER_WIDTHS],
    "model.options.aspp_options": {"channels": 256 // WIDTH_DIVISOR},
}
ARCHITECTURES = {
    "mtl": ("three_ways", THREE_WAYS_OPTIONS),
    "padnet": ("padnet", {"model.options.channels": 256 // WIDTH_DIVISOR}),
    "3ways_padnet": ("three_ways_padnet", THREE_WAYS_OPTIONS),
    "mteb": ("three_ways_mteb", THREE_WAYS_OPTIONS),
}
"""Table 1's multi-task rows: run name -> (architecture, its scaled options)."""
LABELS = {
    "mtl": "MTL (3-ways, no exchange)",
    "padnet": "PAD-Net",
    "3ways_padnet": "3-ways_PAD-Net",
    "mteb": "3-ways + mTEB (ours)",
}
ABLATIONS = {
    "table3": {
        "scale 1 (default)": {},
        "scale 4": {"model.options.mteb_scales": [4]},
        "scales {1, 2}": {"model.options.mteb_scales": [1, 2]},
    },
    "table4": {
        "fusion add, attention spatial (default)": {},
        "fusion concat": {"model.options.fusion": "concat"},
        "fusion prod": {"model.options.fusion": "prod"},
        "attention channel": {"model.options.attention": "channel"},
        "attention both": {"model.options.attention": "both"},
    },
}
"""Tables 3 and 4 (S-D): row label -> options over the default mTEB (``sd_mteb``)."""
PAPER_DELTA_M = {
    "table1_sd": {"mtl": 3.76, "padnet": 6.85, "3ways_padnet": 17.60, "mteb": 21.04},
    "table1_sdn": {"mtl": 5.45, "padnet": 5.62, "3ways_padnet": 20.29, "mteb": 24.92},
}
"""Δm % of Table 1 on Synthia (Lopes et al.), for reference; their MTL uses the survey's
decoders, ours the 3-ways decoders."""
QUICK = {
    "data.options.n_train": 16,
    "data.options.n_val": 4,
    "data.options.n_test": 4,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT_STEPS}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED")
    parser.add_argument(
        "--ablation-seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="seeds of the Table 3 / 4 rows (default: --seeds); the default row is Table 1's",
    )
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 steps, 16 scenes")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    add_overrides_option(parser, "every run")
    add_provenance_options(parser)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "cross_task_attention")
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="default: this folder (with --quick WORK_DIR/report, never the committed results)",
    )
    args = parser.parse_args(argv)
    args.steps = args.steps or (4 if args.quick else DEFAULT_STEPS)
    args.ablation_seeds = args.ablation_seeds or args.seeds
    if args.report_dir is None:
        args.report_dir = args.work_dir / "report" if args.quick else Path(__file__).parent
    return args


def scale_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` strings of the benchmark's scale, before the user's own ``--set``."""
    scale = {**SCALE, **(QUICK if args.quick else {})}
    steps = args.steps
    scale |= {
        "train.steps": steps,
        "train.milestones": [steps * 3 // 4],  # lr × 0.1 at 75 % of training, as the paper
        "train.eval_every": steps,
        "train.checkpoint_every": steps,
        "train.log_every": max(1, steps // 6),
    }
    return [f"{key}={json.dumps(value)}" for key, value in scale.items()] + args.overrides


def stl_runs(tasks: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """One single-task ``three_ways`` network per task, trained on its loss alone."""
    return {
        f"stl_{task}": {
            "tasks": {task: options},
            "model.architecture": "three_ways",
            **THREE_WAYS_OPTIONS,
            "balancer.name": "equal",
            "balancer.weights": {},
        }
        for task, options in tasks.items()
    }


def table1_runs(prefix: str) -> dict[str, dict[str, Any]]:
    """Table 1's multi-task rows on one task set: ``<prefix>_<row>``."""
    return {
        f"{prefix}_{row}": {"model.architecture": architecture, **options}
        for row, (architecture, options) in ARCHITECTURES.items()
    }


def ablation_runs() -> dict[str, dict[str, Any]]:
    """Tables 3 and 4 (S-D): the mTEB variants that Table 1 does not train."""
    _, options = ARCHITECTURES["mteb"]
    return {
        ablation_name(changes): {"model.architecture": "three_ways_mteb", **options, **changes}
        for table in ABLATIONS.values()
        for changes in table.values()
        if changes
    }


def ablation_name(changes: Mapping[str, Any]) -> str:
    """``sd_mteb`` for the default, else ``sd_mteb_<option>-<value>`` (``mteb_scales-1-2``)."""
    parts = [f"{key.rsplit('.', 1)[-1]}-{_value_name(value)}" for key, value in changes.items()]
    return "_".join(["sd_mteb", *parts])


def _value_name(value: Any) -> str:
    return "-".join(map(str, value)) if isinstance(value, list) else str(value)


def seeded(runs: Mapping[str, dict[str, Any]], seeds: Sequence[int]) -> dict[str, dict[str, Any]]:
    return {
        f"{name},seed={seed}": {**overrides, "seed": seed}
        for name, overrides in runs.items()
        for seed in seeds
    }


def plan(args: argparse.Namespace, work_dir: Path) -> tuple[list[PlannedRun], dict[str, Any]]:
    """Every run of the benchmark under ``work_dir/runs`` (validated before anything trains)
    and the S-D-N base."""
    overrides = scale_overrides(args)
    bases = {name: load_config(path, overrides).to_dict() for name, path in CONFIGS.items()}
    runs_dir = work_dir / "runs"
    planned = plan_runs(
        bases["sd"],
        seeded(table1_runs("sd"), args.seeds) | seeded(ablation_runs(), args.ablation_seeds),
        runs_dir,
    )
    planned += plan_runs(
        bases["sdn"],
        seeded({**stl_runs(bases["sdn"]["tasks"]), **table1_runs("sdn")}, args.seeds),
        runs_dir,
    )
    return planned, bases["sdn"]


def seed_dirs(args: argparse.Namespace, name: str, seeds: Sequence[int]) -> list[Path]:
    return [args.work_dir / "runs" / f"{name},seed={seed}" for seed in seeds]


def table(
    args: argparse.Namespace,
    rows: Mapping[str, tuple[str, Sequence[int]]],
    tasks: Sequence[str],
) -> Report:
    """The report of ``rows`` (label -> run name, seeds) against the STL seeds of ``tasks``."""
    groups = [
        load_group(label, seed_dirs(args, name, seeds), "test")
        for label, (name, seeds) in rows.items()
    ]
    baselines = [path for task in tasks for path in seed_dirs(args, f"stl_{task}", args.seeds)]
    return build_report(groups, load_records(baselines, "test"), "test")


def exchange_parameters(config: dict[str, Any], widths: Sequence[int] | None = None) -> int:
    """Parameters of the exchange blocks (mTEB, or PAD-Net's distillation) of a run's model.

    ``widths`` rebuilds it with other decoder widths (the paper's) on the tiny encoder: the
    blocks depend only on the decoder widths and the tasks, not on the encoder.
    """
    model_config = config["model"]
    options = dict(model_config.get("options", {}))
    if widths is not None:
        options |= {"decoder_widths": list(widths), "aspp_options": {}}
    tasks = {task: 1 for task in config["tasks"]}  # the blocks do not depend on head widths
    model = create_model(model_config["architecture"], tasks, encoder="tiny", **options)
    blocks = getattr(model, "exchanges", None) or getattr(model, "distillation", None)
    return 0 if blocks is None else sum(p.numel() for p in blocks.parameters())


def _added(config: dict[str, Any]) -> str:
    """Table 3's "Param." cell: the exchange blocks here and at the paper's widths."""
    here, paper = exchange_parameters(config), exchange_parameters(config, DECODER_WIDTHS)
    return f"{here / 1e3:.1f} k (paper widths: {paper / 1e6:.2f} M)"


def total_parameters(config: dict[str, Any]) -> int:
    """Parameters of a run's model as trained (its tasks' real output channels)."""
    validated = validate_config(config, source="parameter count")
    tasks = build_tasks(validated, open_dataset(validated, "val"))
    return sum(p.numel() for p in build_model(validated, tasks).parameters())


def claim(report: Report, better: str, worse: str, text: str) -> dict[str, Any]:
    """``better`` above ``worse`` on Δm by more than the seeds' spread, or not."""
    runs = {run["name"]: run["delta_m_percent"] for run in report["runs"]}
    a, b = runs[better], runs[worse]
    spread_a, spread_b = (a["primary"], a.get("primary_std")), (b["primary"], b.get("primary_std"))
    difference = a["primary"] - b["primary"]
    if spread_a[1] is None or spread_b[1] is None:
        verdict = "one seed only: no spread to compare against"
    elif within_spread(spread_a, spread_b):
        verdict = "within the seeds' spread (not shown)"
    elif difference > 0:
        verdict = "holds (difference larger than the seeds' spread)"
    else:
        verdict = "reversed (the other way, by more than the seeds' spread)"
    return {
        "claim": text,
        "rows": [better, worse],
        "delta_m": [spread_a, spread_b],
        "difference": difference,
        "spread": None if spread_a[1] is None else spread_a[1] + spread_b[1],
        "verdict": verdict,
    }


def _pm(mean: float, std: float | None, digits: int, signed: bool = False) -> str:
    number = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return number + ("" if std is None else f" ± {std:.{digits}f}")


def paper_shape(report: Report, extra: Mapping[str, str] | None = None) -> str:
    """Rows = methods, columns = each task's primary metric and Δm (the paper's layout);
    ``extra`` adds a column (row name -> cell)."""
    tasks = list(report["baselines"])
    primary = report["primary"]
    higher = {task: report["higher_is_better"][task][primary[task]] for task in tasks}
    header = ["row", *(f"{t} {primary[t]} {'↑' if higher[t] else '↓'}" for t in tasks), "Δm % ↑"]
    baseline = report["baselines"]
    stl = [
        _pm(
            baseline[t]["metrics"][primary[t]],
            baseline[t].get("metrics_std", {}).get(primary[t]),
            3,
        )
        for t in tasks
    ]
    rows = [["STL (3-ways, one task per network)", *stl, "0"]]
    for run in report["runs"]:
        stds = run.get("metrics_std", {})
        cells = [
            _pm(run["metrics"][t][primary[t]], stds.get(t, {}).get(primary[t]), 3) for t in tasks
        ]
        delta = run["delta_m_percent"]
        rows.append([run["name"], *cells, _pm(delta["primary"], delta.get("primary_std"), 2, True)])
    if extra is not None:
        header.append("exchange-block parameters")
        rows = [[*row, extra.get(row[0], "—")] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(row) + " |" for row in rows)])


def markdown(results: dict[str, Any]) -> str:
    titles = {
        "table1_sd": "Table 1, S-D (semseg + depth)",
        "table1_sdn": "Table 1, S-D-N (semseg + depth + normals)",
        "table3": "Table 3, S-D: where the mTEB sits",
        "table4": "Table 4, S-D: fusion and attention",
    }
    lines = [
        "# Cross-task attention benchmark: results",
        "",
        f"Command: `{results['command']}`. Machine: {results['machine']}. "
        f"{results['trained_runs']} runs trained in {results['wall_seconds'] / 60:.1f} min wall, "
        f"{results['cpu_seconds'] / 60:.1f} CPU-min (the benchmark's process and its children, "
        "over every invocation of the command). "
        f"Seeds {results['seeds']} (Tables 3 / 4: {results['ablation_seeds']}); test split; "
        "mean ± sample std over the seeds; Δm over each task's primary metric against the STL "
        "networks (mean of their seeds). README.md says what is scaled down.",
        "",
        "## Claims",
        "",
        *(
            f"- {c['claim']}: Δm {_pm(*c['delta_m'][0], 2, True)} vs "
            f"{_pm(*c['delta_m'][1], 2, True)} "
            f"(difference {c['difference']:+.2f}"
            + ("" if c["spread"] is None else f", spread {c['spread']:.2f}")
            + f"): **{c['verdict']}**."
            for c in results["claims"]
        ),
    ]
    for key, title in titles.items():
        report = results["tables"][key]
        extra = results["parameters_added"] if key == "table3" else None
        lines += ["", f"## {title}", "", paper_shape(report, extra)]
        if key in PAPER_DELTA_M:
            paper = PAPER_DELTA_M[key]
            lines += [
                "",
                "The paper's Δm on Synthia (ResNet-101, 40k steps; their MTL with the survey's "
                "decoders): "
                + ", ".join(f"{LABELS[row]} +{value:.2f}" for row, value in paper.items())
                + ".",
            ]
        lines += [
            "",
            "<details><summary>every metric</summary>",
            "",
            format_markdown_table(report),
            "",
            *table_notes(report),
            "",
            "</details>",
        ]
    lines += ["", "## Parameters (benchmark scale)", "", "| run | parameters | exchange blocks |"]
    lines += ["|---|---:|---:|"]
    lines += [
        f"| {name} | {count['total']:,} | {count['exchange']:,} |"
        for name, count in results["parameters"].items()
    ]
    return "\n".join(lines) + "\n"


def add_timings(path: Path, spent: dict[str, float]) -> dict[str, float]:
    """Add this invocation's runs and seconds to the totals in ``path`` (kept across resumed
    invocations, so the results always report the whole experiment's cost)."""
    known = json.loads(path.read_text()) if path.is_file() else {}
    total = {key: known.get(key, 0) + value for key, value in spent.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(total, indent=2) + "\n")
    return total


def verify(args: argparse.Namespace, provenance: dict[str, Any]) -> int:
    """``--verify RUN`` (``sd_mtl,seed=0``): retrain that run and compare its Δm against the
    committed table's STL baselines with the committed one."""
    tables = json.loads((args.report_dir / "results.json").read_text())["tables"]
    holding = [report for report in tables.values() if args.verify in run_names(report)]
    if not holding:
        raise SystemExit(f"--verify: no run {args.verify!r} in the committed tables")

    def retrain(folder: Path) -> Path:
        planned, _ = plan(args, folder)
        missing = f"--verify: {args.verify!r} is not a run of these options"
        return train_named_run(planned, args.verify, missing)

    log = VerifyLog(args.report_dir / VERIFICATIONS, provenance)
    return verify_report_run(args.verify, holding[0], retrain, args.tolerance, log)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads() // args.jobs))
    provenance = start_benchmark(__file__, args, argv, [args.report_dir], args.work_dir)
    if args.verify:
        return verify(args, provenance)
    planned, sdn = plan(args, args.work_dir)
    configs = {run.name.split(",")[0]: run.config.to_dict() for run in planned}
    print(f"cross_task_attention: {len(planned)} runs into {args.work_dir / 'runs'}", flush=True)
    start, cpu_start = time.perf_counter(), os.times()
    trained = run_sweep(planned, jobs=args.jobs, split="test")
    wall = time.perf_counter() - start
    cpu_end = os.times()
    spent = add_timings(
        args.work_dir / "timings.json",
        {
            "trained_runs": len(trained),
            "wall_seconds": wall,
            "cpu_seconds": sum(cpu_end[:4]) - sum(cpu_start[:4]),
        },
    )

    seeds, ablation_seeds = args.seeds, args.ablation_seeds
    sd_tasks, sdn_tasks = ["semseg", "depth"], list(sdn["tasks"])
    tables = {
        f"table1_{prefix}": table(
            args, {LABELS[row]: (f"{prefix}_{row}", seeds) for row in ARCHITECTURES}, tasks
        )
        for prefix, tasks in (("sd", sd_tasks), ("sdn", sdn_tasks))
    }
    for key, rows in ABLATIONS.items():
        tables[key] = table(
            args,
            {
                label: (ablation_name(changes), ablation_seeds if changes else seeds)
                for label, changes in rows.items()
            },
            sd_tasks,
        )
    added = {
        label: _added(configs[ablation_name(changes)])
        for label, changes in ABLATIONS["table3"].items()
    }
    claims = [
        claim(
            tables[f"table1_{prefix}"],
            LABELS["mteb"],
            LABELS["mtl"],
            f"{name}: 3-ways + mTEB above MTL",
        )
        for prefix, name in (("sd", "S-D"), ("sdn", "S-D-N"))
    ]
    claims.append(
        claim(
            tables["table3"],
            "scale 1 (default)",
            "scale 4",
            "S-D: mTEB at scale 1 (late) above scale 4 (early)",
        )
    )
    results = {
        "provenance": provenance,
        "command": provenance["command"],
        "machine": f"{provenance['cpu_model']} ({provenance['cpu_capability']}), "
        f"{provenance['cpu_count']} CPUs, torch {provenance['torch']}, "
        f"{provenance['torch_threads']} thread(s)",
        "overrides": scale_overrides(args),
        "seeds": seeds,
        "ablation_seeds": ablation_seeds,
        **{key: round(value, 1) for key, value in spent.items()},
        "claims": claims,
        "parameters_added": added,
        "parameters": {
            name: {"total": total_parameters(config), "exchange": exchange_parameters(config)}
            for name, config in configs.items()
        },
        "tables": tables,
    }
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / "results.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    )
    (args.report_dir / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
