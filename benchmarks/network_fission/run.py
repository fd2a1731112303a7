"""Hickson et al., network fission (supplementary), Tables 4, 5 and 2 in shape on the synthetic
scenes, and the cost of each split point.

::

    python benchmarks/network_fission/run.py [--seeds 0 1 2] [--steps 150] [--quick]

Trains, from ``configs/hickson_synthetic_normals_depth.yaml`` at the CPU scale of
:data:`CPU_SCALE` (every run the same scale and optimiser), once per seed:

* single-task fission networks for normals, depth and semantics, the baselines of Δm;
* Table 4: normals + depth at each split point (early, early_mid, mid, late), without loss
  balancing (1 : 1) and with the paper's (λ_normals = 10 vs depth 1);
* Table 5: semantics + depth, the same, balanced λ_semantics = 2 vs depth 1;
* Table 2: normals + semantics, mid fission, no loss balancing, auxiliary losses off
  (α1 = α2 = 0), α1 only (0.6, 0) and both (0.6, 0.5);
* a check of Table 5: late and mid semantics + depth with the semantics loss weighted 0,
  scored on depth against the balanced runs (``semantics_off``);
* then, once the normals baselines exist, the paper's protocol for Tables 4 and 5: balanced
  early_mid and mid fission fine-tuned from the first seed's normals network
  (``model.init_from``; supplementary Sec. 5), beside the same rows from scratch.

Every run is planned and validated first and trained through ``densetasks.experiments.sweep``
(finished runs are skipped, an interrupted one resumes); each table is a ``densetasks report``
with seeds grouped (mean ± std, ``≈`` where rows are within the seeds' spread) in
``--report-dir/table{2,4,5}/`` and ``--report-dir/semantics_off/``. Then :mod:`cost`
measures parameters, FLOPs, the FLOPs of one more task and batch-1 CPU latency (eager vs
ONNX Runtime fp32 vs fp16) per split point for the mobile model
(``configs/hickson_mobile_large.yaml``) and the ResNet-50 server model.
``results.md`` / ``results.json`` hold the compact tables, the claim checks and the timings.
"""

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch
from cost import SPLITS, markdown, measure_cost, speedups

from densetasks.cli.parsing import add_overrides_option
from densetasks.engine.config import load_config
from densetasks.experiments.provenance import add_provenance_options, start_benchmark
from densetasks.experiments.report import format_text_table, write_report
from densetasks.experiments.report_seeds import within_spread
from densetasks.experiments.sweep import (
    add_seed_axis,
    combination_name,
    expand_grid,
    plan_runs,
    run_sweep,
    train_named_run,
)
from densetasks.experiments.verify import VERIFICATIONS, VerifyLog, run_names, verify_report_run

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "hickson_synthetic_normals_depth.yaml"
MOBILE_CONFIG = ROOT / "configs" / "hickson_mobile_large.yaml"
CPU_SCALE = {
    "model.encoder": "tiny",
    "model.options.decoder_channels": 16,
    "data.options.size": [32, 32],
    "data.crop_size": [32, 32],
    "data.options.n_val": 32,
    "data.options.n_test": 64,
    "train.lr": 3e-3,
}
"""What the committed run changes in the config, for 66 runs in the CPU budget: the tiny
encoder, a 16-wide decoder (eASPP keeps 256), 32×32 scenes, and Adam lr 3e-3 instead of the
paper's 1e-3 (from scratch in 150 steps, 1e-3 barely leaves the initial losses)."""
QUICK = {
    "data.options.n_train": 16,
    "data.options.n_val": 4,
    "data.options.n_test": 4,
}
"""``--quick`` adds these (and 4 steps, two seeds, 64 px latency): checks the pipeline only."""
SECOND_TASK_WEIGHT = {"table4": ("normals", 10.0), "table5": ("semseg", 2.0)}
"""The task trained with depth in each table and its balanced weight (depth 1): λ_normals = 10
(supplementary Table 4), λ_semantics = 2 (Table 5)."""
AUX = {"off": [0.0, 0.0], "a1": [0.6, 0.0], "both": [0.6, 0.5]}
"""Table 2's auxiliary losses (supplementary Sec. 3: α1 = 0.6, α2 = 0.5)."""
BALANCE = ("unbalanced", "balanced")
INIT_SPLITS = ("early_mid", "mid")
"""The split points the paper fine-tunes from a normals-only network (early and late train
from scratch there too)."""
INIT = "balanced, normals init"
LATENCY_MODELS = {
    "MobileNetV3-L": {
        "model.encoder": "mobilenetv3_large_100",
        "model.options.decoder_channels": 64,
    },
    "MobileNetV3-S": {
        "model.encoder": "mobilenetv3_small_100",
        "model.options.decoder_channels": 64,
    },
    "ResNet-50": {"model.encoder": "resnet50", "model.options.decoder_channels": 256},
}
"""The mobile configs (``hickson_mobile_large`` as it is, and ``hickson_mobile_small``'s
encoder), and the same tasks on the paper's server network."""
MOBILE = ("MobileNetV3-L", "MobileNetV3-S")
SEMANTICS_OFF_SPLITS = ("late", "mid")
"""The check of Table 5's late-fission depth gain: semantics + depth with the semantics loss
weighted 0 (the fused head keeps its channels, trained by depth alone), beside the same split
points balanced: does depth gain from the semantic supervision or from the head's width?"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="base config")
    parser.add_argument("--steps", type=int, default=150, help="training steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED")
    parser.add_argument("--latency-size", type=int, default=224, help="square input (px)")
    parser.add_argument("--repeats", type=int, default=10, help="interleaved latency repeats")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    parser.add_argument("--quick", action="store_true", help="smoke test: 4 steps, 2 seeds")
    add_overrides_option(parser, "every run")
    add_provenance_options(parser)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "network_fission")
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="default: this folder (with --quick: WORK_DIR/report)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.latency_size, args.repeats = 4, [0, 1], 64, 2
    if args.report_dir is None:
        args.report_dir = args.work_dir / "report" if args.quick else Path(__file__).parent
    return args


def scale_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` strings of the CPU scale and the steps, before the user's own ``--set``."""
    scale = {**CPU_SCALE, **(QUICK if args.quick else {})}
    steps = {
        "train.steps": args.steps,
        "train.eval_every": args.steps,
        "train.checkpoint_every": args.steps,
        "train.log_every": max(1, args.steps // 5),
    }
    return [f"{key}={json.dumps(value)}" for key, value in {**scale, **steps}.items()]


def experiment_runs(task_options: dict[str, dict]) -> dict[str, dict[str, Any]]:
    """Run name -> overrides: baselines, Tables 4 and 5 (pair × split × balance), Table 2."""

    def tasks(*names: str, weights: tuple[float, ...], **extra: Any) -> dict[str, Any]:
        return {
            "tasks": {name: task_options.get(name, {}) for name in names},
            "balancer.weights": dict(zip(names, weights, strict=True)),
            **extra,
        }

    runs = {f"stl_{t}": tasks(t, weights=(1.0,)) for t in ("normals", "semseg", "depth")}
    for first, weight in SECOND_TASK_WEIGHT.values():
        for balance, value in zip(BALANCE, (1.0, weight), strict=True):
            for split in SPLITS:
                runs[f"{first}+depth_{split}_{balance}"] = tasks(
                    first, "depth", weights=(value, 1.0), **{"model.options.split": split}
                )
    for name, weights in AUX.items():
        runs[f"normals+semseg_mid_aux={name}"] = tasks(
            "normals", "semseg", weights=(1.0, 1.0), **{"model.options.aux_weights": weights}
        )
    for split in SEMANTICS_OFF_SPLITS:
        runs[f"semseg+depth_{split}_semseg=0"] = tasks(
            "semseg", "depth", weights=(0.0, 1.0), **{"model.options.split": split}
        )
    return runs


def init_runs(
    task_options: dict[str, dict], runs_dir: Path, seeds: list[int]
) -> dict[str, dict[str, Any]]:
    """The second stage, per seed: balanced early_mid / mid runs of Tables 4 and 5 started
    from one normals network, the first seed's single-task run (the first stage trains it).
    The paper fine-tunes from one normals network; and a report row must be runs that
    differ only by their seed, so every seed starts from the same weights."""
    runs = {}
    for first, weight in SECOND_TASK_WEIGHT.values():
        for split in INIT_SPLITS:
            for seed in seeds:
                runs[f"{first}+depth_{split}_init=normals,seed={seed}"] = {
                    "tasks": {name: task_options.get(name, {}) for name in (first, "depth")},
                    "balancer.weights": {first: weight, "depth": 1.0},
                    "model.options.split": split,
                    "model.init_from": str(runs_dir / f"stl_normals,seed={seeds[0]}"),
                    "seed": seed,
                }
    return runs


def seeded(runs: dict[str, dict[str, Any]], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Every run once per seed, named ``<name>,seed=<s>`` (the sweep's seed axis)."""
    combos = expand_grid(add_seed_axis({}, seeds))
    return {
        f"{name},{combination_name(combo)}": {**overrides, **combo}
        for name, overrides in runs.items()
        for combo in combos
    }


def table_rows() -> dict[str, tuple[list[str], dict[str, str]]]:
    """Table -> (its baseline tasks, {row label: run name})."""
    tables = {}
    for table, (first, _) in SECOND_TASK_WEIGHT.items():
        rows = {
            f"{split} {balance}": f"{first}+depth_{split}_{balance}"
            for balance in BALANCE
            for split in SPLITS
        }
        rows.update(
            {f"{split} {INIT}": f"{first}+depth_{split}_init=normals" for split in INIT_SPLITS}
        )
        tables[table] = ([first, "depth"], rows)
    tables["table2"] = (
        ["normals", "semseg"],
        {f"mid aux {name}": f"normals+semseg_mid_aux={name}" for name in AUX},
    )
    tables["semantics_off"] = (
        ["depth"],
        {
            f"{split} {label}": f"semseg+depth_{split}_{name}"
            for split in SEMANTICS_OFF_SPLITS
            for label, name in (("balanced", "balanced"), ("semantics weight 0", "semseg=0"))
        },
    )
    return tables


def summary(report: dict[str, Any]) -> dict[str, Any]:
    """Per row: primary metrics and Δm (primary, all) as (mean, std)."""
    rows = {}
    for run in report["runs"]:
        std = run.get("metrics_std", {})
        rows[run["name"]] = {
            "primary": {
                task: (run["metrics"][task][name], std.get(task, {}).get(name))
                for task, name in report["primary"].items()
                if task in run["metrics"]
            },
            "delta_m": {
                key: (run["delta_m_percent"][key], run["delta_m_percent"].get(f"{key}_std"))
                for key in ("primary", "all")
            },
        }
    baselines = {
        task: (
            entry["metrics"][report["primary"][task]],
            entry.get("metrics_std", {}).get(report["primary"][task]),
        )
        for task, entry in report["baselines"].items()
    }
    return {"rows": rows, "baselines": baselines, "primary": report["primary"]}


def claim(rows: dict[str, Any], balance: str, key: str, fine_tuned: bool = False) -> dict[str, Any]:
    """Is the best of mid / early_mid at least the best of early / late (Δm ``key``)?
    ``fine_tuned``: mid / early_mid as the paper trains them, from the normals network."""

    def best(splits: tuple[str, ...], label: str) -> tuple[str, tuple[float, float]]:
        name = max(splits, key=lambda s: rows[f"{s} {label}"]["delta_m"][key][0])
        return name, rows[f"{name} {label}"]["delta_m"][key]

    (proposed, a) = best(INIT_SPLITS, INIT if fine_tuned else balance)
    (other, b) = best(("early", "late"), balance)
    return {
        "balance": f"{balance}, mid / early_mid from the normals network"
        if fine_tuned
        else balance,
        "delta_m": key,
        "best_of_mid_early_mid": [proposed, *a],
        "best_of_early_late": [other, *b],
        "holds": a[0] >= b[0],
        "within_spread": within_spread(a, b),
    }


def init_effect(rows: dict[str, Any]) -> dict[str, Any]:
    """Per fine-tuned split point: Δm (primary) from scratch and from the normals network."""
    effect = {}
    for split in INIT_SPLITS:
        scratch = rows[f"{split} balanced"]["delta_m"]["primary"]
        tuned = rows[f"{split} {INIT}"]["delta_m"]["primary"]
        effect[split] = {
            "scratch": list(scratch),
            "normals_init": list(tuned),
            "helps": tuned[0] > scratch[0],
            "within_spread": within_spread(tuned, scratch),
        }
    return effect


def _cell(mean: float, std: float | None, signed: bool = False) -> str:
    text = f"{mean:+.2f}" if signed else f"{mean:.2f}"
    return text if std is None else f"{text} ± {std:.2f}"


def _verdict(ok: bool, within_spread: bool, yes: str, no: str) -> str:
    """``yes`` or ``no``, and whether the compared rows are within the seeds' spread."""
    return (yes if ok else no) + (" (within the seeds' spread)" if within_spread else "")


def table_markdown(title: str, result: dict[str, Any]) -> list[str]:
    primary = result["primary"]
    tasks = list(result["baselines"])
    lines = [
        f"## {title}",
        "",
        "| row | " + " | ".join(f"{t} {primary[t]}" for t in tasks) + " | Δm % (primary) | "
        "Δm % (all metrics) |",
        "|---|" + "---|" * (len(tasks) + 2),
        "| single-task | "
        + " | ".join(_cell(*result["baselines"][t]) for t in tasks)
        + " | 0 | 0 |",
    ]
    for name, row in result["rows"].items():
        metrics = " | ".join(_cell(*row["primary"][t]) for t in tasks)
        deltas = " | ".join(_cell(*row["delta_m"][k], signed=True) for k in ("primary", "all"))
        lines.append(f"| {name} | {metrics} | {deltas} |")
    for check in result.get("claims", []):
        a, b = check["best_of_mid_early_mid"], check["best_of_early_late"]
        lines.append(
            f"\n{check['balance']}, Δm {check['delta_m']}: best of mid / early_mid = {a[0]} "
            f"{_cell(a[1], a[2], signed=True)} vs best of early / late = {b[0]} "
            f"{_cell(b[1], b[2], signed=True)}: mid / early-mid ≥ early and late "
            f"{_verdict(check['holds'], check['within_spread'], 'holds', 'does not hold')}."
        )
    for split, effect in result.get("normals_init", {}).items():
        lines.append(
            f"\n{split}, balanced: from scratch {_cell(*effect['scratch'], signed=True)} vs "
            f"from the normals network {_cell(*effect['normals_init'], signed=True)}: the "
            f"normals initialisation "
            f"{_verdict(effect['helps'], effect['within_spread'], 'helps', 'does not help')}."
        )
    return [*lines, ""]


def cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (``--jobs`` > 1 trains in
    child processes, which ``time.process_time`` does not count)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def verify(args: argparse.Namespace, base: dict[str, Any], provenance: dict[str, Any]) -> int:
    """``--verify RUN`` (``semseg+depth_late_balanced,seed=0``): retrain that run of the first
    stage and compare its Δm against the committed table's baselines with the committed one."""
    reports = {
        table: json.loads((args.report_dir / table / "report.json").read_text())
        for table in table_rows()
    }
    tables = [table for table, report in reports.items() if args.verify in run_names(report)]
    if not tables:
        raise SystemExit(f"--verify: no run {args.verify!r} in the committed tables")

    def retrain(folder: Path) -> Path:
        planned = plan_runs(base, seeded(experiment_runs(base["tasks"]), args.seeds), folder)
        missing = f"--verify: {args.verify!r} is fine-tuned from another run"
        return train_named_run(planned, args.verify, missing)

    log = VerifyLog(args.report_dir / VERIFICATIONS, provenance)
    return verify_report_run(args.verify, reports[tables[0]], retrain, args.tolerance, log)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads() // args.jobs))
    provenance = start_benchmark(__file__, args, argv, [args.report_dir], args.work_dir)
    overrides = [*scale_overrides(args), *args.overrides]
    base = load_config(args.config, overrides).to_dict()
    if args.verify:
        return verify(args, base, provenance)
    runs = seeded(experiment_runs(base["tasks"]), args.seeds)
    planned = plan_runs(base, runs, args.work_dir / "runs")
    print(
        f"network_fission: {len(planned)} runs into {args.work_dir / 'runs'}, then the "
        "fine-tuned ones",
        flush=True,
    )
    wall, cpu = time.perf_counter(), cpu_seconds()
    trained = run_sweep(planned, jobs=args.jobs, split="test")
    runs_dir = args.work_dir / "runs"
    fine_tuned = plan_runs(base, init_runs(base["tasks"], runs_dir, args.seeds), runs_dir)
    trained += run_sweep(fine_tuned, jobs=args.jobs, split="test")
    timing = {
        "training_wall_s": round(time.perf_counter() - wall, 1),
        "training_cpu_s": round(cpu_seconds() - cpu, 1),
    }

    def dirs(name: str) -> list[Path]:
        return [args.work_dir / "runs" / f"{name},seed={seed}" for seed in args.seeds]

    results: dict[str, Any] = {"tables": {}}
    for table, (baseline_tasks, rows) in table_rows().items():
        baselines = [path for task in baseline_tasks for path in dirs(f"stl_{task}")]
        groups = {label: dirs(name) for label, name in rows.items()}
        report = write_report([], baselines, args.report_dir / table, "test", groups=groups)
        print(format_text_table(report), flush=True)
        result = summary(report)
        if table in SECOND_TASK_WEIGHT:
            result["claims"] = [
                claim(result["rows"], balance, key)
                for balance in BALANCE
                for key in ("primary", "all")
            ] + [claim(result["rows"], "balanced", key, True) for key in ("primary", "all")]
            result["normals_init"] = init_effect(result["rows"])
        results["tables"][table] = result

    wall, cpu = time.perf_counter(), cpu_seconds()
    cost = measure_cost(
        MOBILE_CONFIG, LATENCY_MODELS, args.work_dir / "cost", args.latency_size, args.repeats
    )
    timing.update(
        cost_wall_s=round(time.perf_counter() - wall, 1),
        cost_cpu_s=round(cpu_seconds() - cpu, 1),
    )
    ratios = speedups(cost["latency_ms"])
    mobile_mid = {name: ratios[f"{name} mid"]["onnxruntime fp32"] for name in MOBILE}
    results.update(
        provenance=provenance,
        command=provenance["command"],
        overrides=overrides,
        seeds=args.seeds,
        trained_runs=len(trained),
        timing=timing,
        cost=cost,
        mobile_onnxruntime_goal_1_5x={name: ratio >= 1.5 for name, ratio in mobile_mid.items()},
    )
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    titles = {
        "table4": "Table 4 in shape: normals + depth (balanced: λ_normals 10, depth 1)",
        "table5": "Table 5 in shape: semantics + depth (balanced: λ_semantics 2, depth 1)",
        "table2": "Table 2 in shape: normals + semantics, mid fission, no loss balancing",
        "semantics_off": "Check: semantics + depth with the semantics loss weighted 0 "
        "(depth only, against single-task depth)",
    }
    lines = [
        "# Network fission on synthetic scenes: results",
        "",
        f"Command: `{results['command']}`. Test split, mean ± std over seeds "
        f"{', '.join(map(str, args.seeds))}; Δm against the single-task fission networks. "
        f"Timing: {json.dumps(timing)}. Full reports: `table4/`, `table5/`, `table2/`.",
        "",
    ]
    for table, title in titles.items():
        lines += table_markdown(title, results["tables"][table])
    lines += markdown(cost, list(LATENCY_MODELS))
    lines += [
        "",
        "Goal ONNX Runtime ≥ 1.5× faster than eager for the mobile models (mid, fp32): "
        + "; ".join(
            f"{name} {ratio:.2f}× — {'met' if ratio >= 1.5 else 'not met'}"
            for name, ratio in mobile_mid.items()
        )
        + ".",
        "",
    ]
    (args.report_dir / "results.md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
