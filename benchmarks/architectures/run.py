"""Every registered multi-task architecture against single-task networks, on the synthetic
scenes, with what each costs.

::

    python benchmarks/architectures/run.py [--group tiny|vit] [--seeds 0 1 2] [--steps N]
        [--quick] [--jobs N] [--work-dir DIR] [--report-dir DIR] [--set KEY=VALUE ...]
        [--allow-dirty]
    python benchmarks/architectures/run.py [--group tiny|vit] --verify RUN [--tolerance T]

One command trains, through :func:`densetasks.experiments.sweep.run_sweep` (finished runs are
skipped, an interrupted one resumes), on two task sets of the synthetic scenes, S-D-N
(semseg, depth, normals) and S-D-N-E (+ edges), each row once per seed:

* STL: one ``single_task`` network per task (its loss alone; one set serves both task sets);
* every multi-task architecture (:data:`ROWS`) at a common CPU scale (:data:`BASE`: the tiny
  encoder, 32×32 scenes, every decoder width divided by 8, Adam, equal loss weights).

It reports per task set, on the test split, each row's primary metrics and Δm against the
STL networks (mean ± sample std over the seeds), its parameters, FLOPs and CPU latency to
predict every task once at the benchmark's size (``cost.py``), and verdicts: a row's Δm is
*beyond the spread* of STL when ``|Δm| > std(Δm) + s_STL`` (``s_STL``: the std over the STL
seeds of their own Δm against their mean), and beyond hard sharing's when the two rows are
not within each other's spread (``|Δm_a − Δm_b| > std_a + std_b``). Results go to
``--report-dir`` (default: this folder): ``results.md`` and ``results.json``, with the
provenance record of :func:`densetasks.experiments.provenance.start_benchmark` (one commit's
clean tree, versions, CPU, threads, command). ``--verify RUN`` (``sdn_mtan,seed=1``) retrains
one committed run and compares its Δm with the committed one. The paper-scale cost table
(parameters and FLOPs at 448×576 with each paper's backbone) is ``cost.py``'s own command.

``--group vit`` trains the architectures that need a plain ViT (InvPT) as a separate group
(:data:`GROUPS`): the same scenes, task sets, seeds, steps and optimizer, but every network of
the group, its STL networks and hard sharing included, on timm's ``test_vit`` from scratch, so
that its Δm is measured against single-task networks on the same encoder. It writes
``results_vit.md`` / ``results_vit.json`` (work dir ``runs/architectures_vit``) and leaves the
tiny-encoder results alone.
"""

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cost

from densetasks.cli.parsing import add_overrides_option
from densetasks.data.folder import write_folder_dataset
from densetasks.data.registry import create_dataset
from densetasks.data.synthetic.dataset import SYNTHETIC_CLASSES
from densetasks.engine.config import load_config
from densetasks.experiments.provenance import add_provenance_options, start_benchmark
from densetasks.experiments.report import build_report, load_group, load_records
from densetasks.experiments.report_seeds import mean_std, within_spread
from densetasks.experiments.sweep import PlannedRun, plan_runs, run_sweep, train_named_run
from densetasks.experiments.verify import VERIFICATIONS, VerifyLog, run_names, verify_report_run
from densetasks.metrics.delta_m import delta_m
from densetasks.models import create_model
from densetasks.tasks.registry import label_kinds

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 32
"""256-channel ASPPs, heads and PAD-Net features divided by 8."""
DECODER = [32, 32, 16, 16, 8]
"""The 3-ways decoder widths [256, 256, 128, 128, 64] divided by 8."""
COMPOSITE_DECODER = [64, 32, 32, 16, 8]
"""CompositeTasking's decoder widths [512, 256, 256, 128, 64] divided by 8."""
HEADS = {"bottleneck_options": {"channels": WIDTH}, "head_options": {"channels": WIDTH}}
ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "hard sharing": ("hard_sharing", HEADS),
    "cross-stitch": ("cross_stitch", HEADS),
    "NDDR-CNN": ("nddr_cnn", HEADS),
    "MTAN": ("mtan", HEADS),
    "PAD-Net": ("padnet", {"channels": WIDTH}),
    "MTI-Net": ("mti_net", {}),
    "3-ways": ("three_ways", {"decoder_widths": DECODER, "aspp_options": {"channels": WIDTH}}),
    "3-ways + mTEB": (
        "three_ways_mteb",
        {"decoder_widths": DECODER, "aspp_options": {"channels": WIDTH}},
    ),
    "fission mid": ("fission", {"split": "mid", "decoder_channels": WIDTH}),
    "CompositeTasking (S)": (
        "composite_tasking",
        {"decoder_widths": COMPOSITE_DECODER, "eval_rules": []},
    ),
}
"""Row -> (architecture, its options at the benchmark's scale) on the tiny encoder. InvPT needs
a plain ViT: :data:`VIT_ROWS`. Not here yet: TaskPrompter."""
VIT_ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "hard sharing": ("hard_sharing", HEADS),
    "InvPT": ("invpt", {"embed_channels": 64, "prediction_channels": 8, "heads": 2}),
}
"""Row -> (architecture, options) on ``test_vit``: hard sharing as in :data:`ROWS`, InvPT with
its decoder width 512 + 64 divided by 8 and the paper's 2 heads."""


@dataclass(frozen=True)
class Group:
    """Rows trained and judged together against STL networks on one encoder."""

    encoder: str
    rows: dict[str, tuple[str, dict[str, Any]]]
    report: str
    """File name stem of the results (``.md`` and ``.json``) in the report folder."""
    title: str


GROUPS = {
    "tiny": Group("tiny", ROWS, "results", "Architectures benchmark: results"),
    "vit": Group(
        "test_vit",
        VIT_ROWS,
        "results_vit",
        "Architectures benchmark on a plain ViT (timm's test_vit): results",
    ),
}
"""``--group`` -> its encoder, rows and results. Every group's STL networks use its encoder."""
OUTPUT_STRIDE = {"mti_net": 32, "composite_tasking": 32}
"""Output stride per architecture where it is not the common 16: MTI-Net's four scales at
strides 4-32 (as on HRNet), CompositeTasking's paper stride."""
TASK_SETS = {
    "sdn": ["semseg", "depth", "normals"],
    "sdne": ["semseg", "depth", "normals", "edges"],
}
TITLES = {"sdn": "S-D-N (semseg, depth, normals)", "sdne": "S-D-N-E (+ edges)"}
SCENES = {"n_train": 256, "n_val": 32, "n_test": 64, "size": [32, 32]}
"""The synthetic splits every run trains and is scored on (``data.dataset: synthetic`` with
these options), rendered once into the folder format: rendering a scene costs more than a
training step of the small networks here."""
BASE: dict[str, Any] = {
    "seed": 0,
    "tasks": {},
    "data": {
        "dataset": "folder",
        "root": None,
        "crop_size": [32, 32],
        "scale_range": [1.0, 1.25],
        "flip": True,
        "batch_size": 8,
        "workers": 0,
    },
    "model": {"encoder": "tiny", "pretrained": False, "output_stride": 16},
    "balancer": {"name": "equal"},
    "train": {
        "optimizer": "adam",
        "lr": 1.0e-3,
        "weight_decay": 1.0e-4,
        "schedule": "poly",
        "images_every": 0,
    },
    "eval": {"best": "mean_relative", "num_images": 0},
}
"""The common setting of every row: the tiny conv encoder (8-32 channels) from scratch, the
:data:`SCENES` (``data.root`` set to their folder), batch 8, Adam lr 1e-3 with poly decay,
equal loss weights; evaluated once, at the last step."""
DEFAULT_STEPS = 300
QUICK_SCENES = {"n_train": 16, "n_val": 4, "n_test": 4, "size": [32, 32]}
SEMSEG_CLASSES = len(SYNTHETIC_CLASSES)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--group",
        choices=sorted(GROUPS),
        default="tiny",
        help="tiny: every architecture on the tiny encoder (results.md); vit: STL, hard "
        "sharing and InvPT on test_vit (results_vit.md)",
    )
    parser.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT_STEPS}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED")
    parser.add_argument("--quick", action="store_true", help="smoke test: 2 steps, 16 scenes")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once")
    add_overrides_option(parser, "every run")
    add_provenance_options(parser)
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="default: runs/architectures (runs/architectures_vit with --group vit)",
    )
    parser.add_argument(
        "--report-dir",
        type=Path,
        default=None,
        help="default: this folder (with --quick WORK_DIR/report, never the committed results)",
    )
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.quick else DEFAULT_STEPS)
    if args.work_dir is None:
        suffix = "" if args.group == "tiny" else f"_{args.group}"
        args.work_dir = ROOT / "runs" / f"architectures{suffix}"
    if args.report_dir is None:
        args.report_dir = args.work_dir / "report" if args.quick else Path(__file__).parent
    return args


def render_scenes(root: Path, scenes: Mapping[str, Any]) -> Path:
    """The train / val / test splits of ``data.dataset: synthetic`` with ``scenes`` and the
    four tasks, written once into the folder format at ``root`` (images as 8-bit PNG)."""
    if (root / "dataset.json").is_file():
        return root
    kinds = label_kinds()
    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for split in ("train", "val", "test"):
        dataset = create_dataset("synthetic", split, kinds, tasks=TASK_SETS["sdne"], **scenes)
        samples = (dataset[index] for index in range(len(dataset)))
        write_folder_dataset(samples, partial, split, kinds, dataset.task_options)
    partial.rename(root)
    return root


def base_config(args: argparse.Namespace, work_dir: Path) -> dict[str, Any]:
    """:data:`BASE` on the scenes rendered under ``work_dir``, with the steps (evaluation and
    checkpoint at the last) and the user's ``--set`` applied, validated through a config load."""
    steps = args.steps
    root = render_scenes(work_dir / "scenes", QUICK_SCENES if args.quick else SCENES)
    scale = {
        "data.root": str(root),
        "train.steps": steps,
        "train.eval_every": steps,
        "train.checkpoint_every": steps,
        "train.log_every": max(1, steps // 6),
    }
    overrides = [f"{key}={json.dumps(value)}" for key, value in scale.items()] + args.overrides
    path = work_dir / "base.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**BASE, "tasks": {"semseg": {}}}))  # YAML reads JSON
    return load_config(path, overrides).to_dict()


def model_overrides(architecture: str, options: Mapping[str, Any], encoder: str) -> dict[str, Any]:
    return {
        "model.encoder": encoder,
        "model.architecture": architecture,
        "model.options": dict(options),
        "model.output_stride": OUTPUT_STRIDE.get(architecture, 16),
    }


def planned_runs(args: argparse.Namespace, work_dir: Path) -> list[PlannedRun]:
    """Every run of the ``--group`` (validated before anything trains) under ``work_dir``: STL
    per task, each row per task set, all on the group's encoder."""
    group = GROUPS[args.group]
    base = base_config(args, work_dir)
    runs: dict[str, dict[str, Any]] = {}
    for task in TASK_SETS["sdne"]:
        runs[f"stl_{task}"] = {
            "tasks": {task: {}},
            **model_overrides("single_task", HEADS, group.encoder),
        }
    for prefix, tasks in TASK_SETS.items():
        for row, (architecture, options) in group.rows.items():
            runs[f"{prefix}_{run_id(row)}"] = {
                "tasks": {task: {} for task in tasks},
                **model_overrides(architecture, options, group.encoder),
            }
    seeded = {
        f"{name},seed={seed}": {**overrides, "seed": seed}
        for name, overrides in runs.items()
        for seed in args.seeds
    }
    return plan_runs(base, seeded, work_dir / "runs")


def run_id(row: str) -> str:
    """``cross-stitch`` -> ``cross_stitch``, ``3-ways + mTEB`` -> ``3_ways_mteb``."""
    kept = "".join(c if c.isalnum() else "_" for c in row.lower())
    return "_".join(part for part in kept.split("_") if part)


def seed_dirs(args: argparse.Namespace, name: str) -> list[Path]:
    return [args.work_dir / "runs" / f"{name},seed={seed}" for seed in args.seeds]


def stl_spread(args: argparse.Namespace, tasks: Sequence[str], report: dict) -> float | None:
    """The std over the STL seeds of their own Δm against the STL mean (primary metrics):
    how far a network that is STL lands from STL by chance."""
    if len(args.seeds) < 2:
        return None
    records = {task: load_records(seed_dirs(args, f"stl_{task}"), "test") for task in tasks}
    primary, higher = report["primary"], report["higher_is_better"]
    means = {task: report["baselines"][task]["metrics"] for task in tasks}
    values = [
        delta_m(
            {task: records[task][index].metrics[task] for task in tasks},
            means,
            higher,
            primary,
        )
        for index in range(len(args.seeds))
    ]
    return mean_std(values)[1]


def verdicts(report: dict, stl_std: float | None) -> dict[str, dict[str, str]]:
    """Per row: Δm against STL and against hard sharing, beyond the spread or not."""
    runs = {run["name"]: run["delta_m_percent"] for run in report["runs"]}
    hard = runs["hard sharing"]
    result = {}
    for name, delta in runs.items():
        mean, std = delta["primary"], delta.get("primary_std")
        if std is None or stl_std is None:
            versus_stl = "one seed: no spread"
        elif abs(mean) > std + stl_std:
            versus_stl = "above STL" if mean > 0 else "below STL"
        else:
            versus_stl = "within the spread of STL"
        if name == "hard sharing":
            versus_hard = "—"
        elif std is None:
            versus_hard = "one seed: no spread"
        elif within_spread((mean, std), (hard["primary"], hard["primary_std"])):
            versus_hard = "within the spread"
        else:
            versus_hard = "above" if mean > hard["primary"] else "below"
        result[name] = {"stl": versus_stl, "hard_sharing": versus_hard}
    return result


def costs(group: Group, tasks: Sequence[str], size: tuple[int, int]) -> dict[str, dict[str, float]]:
    """Per row of ``group`` (and STL: one network per task): parameters, FLOPs, latency at
    ``size``."""
    channels = {"semseg": SEMSEG_CLASSES, "depth": 1, "normals": 3, "edges": 1}
    table = {}
    torch.manual_seed(0)
    stl = [
        create_model(
            "single_task",
            {task: channels[task]},
            encoder=group.encoder,
            output_stride=16,
            **HEADS,
        )
        for task in tasks
    ]
    table["STL (one network per task)"] = {
        "parameters": sum(cost.parameters(model) for model in stl),
        "flops": sum(cost.flops(model, size) for model in stl),
        "latency_ms": sum(cost.latency_ms(model, size) for model in stl),
    }
    for row, (architecture, options) in group.rows.items():
        model = create_model(
            architecture,
            {task: channels[task] for task in tasks},
            encoder=group.encoder,
            output_stride=OUTPUT_STRIDE.get(architecture, 16),
            **options,
        )
        table[row] = {
            "parameters": cost.parameters(model),
            "flops": cost.flops(model, size),
            "latency_ms": cost.latency_ms(model, size),
        }
    return table


def _pm(mean: float | None, std: float | None, digits: int, signed: bool = False) -> str:
    if mean is None:
        return "—"
    number = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    return number + ("" if std is None else f" ± {std:.{digits}f}")


def table_markdown(
    report: dict, verdict: dict, cost_table: dict, stl_std: float | None
) -> list[str]:
    tasks = list(report["baselines"])
    primary = report["primary"]
    higher = {task: report["higher_is_better"][task][primary[task]] for task in tasks}
    header = [
        "row",
        *(f"{t} {primary[t]} {'↑' if higher[t] else '↓'}" for t in tasks),
        "Δm % ↑",
        "vs STL",
        "vs hard sharing",
        "parameters",
        "MFLOPs",
        "latency ms",
    ]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    baseline = report["baselines"]
    stl_cost = cost_table["STL (one network per task)"]
    stl_cells = [
        _pm(
            baseline[t]["metrics"][primary[t]],
            baseline[t].get("metrics_std", {}).get(primary[t]),
            3,
        )
        for t in tasks
    ]
    lines.append(
        "| STL (one network per task) | "
        + " | ".join([*stl_cells, _pm(0.0, stl_std, 2, True), "—", "—"])
        + f" | {stl_cost['parameters']:,} | {stl_cost['flops'] / 1e6:.1f} | "
        f"{stl_cost['latency_ms']:.1f} |"
    )
    for run in report["runs"]:
        stds = run.get("metrics_std", {})
        cells = [
            _pm(run["metrics"][t][primary[t]], stds.get(t, {}).get(primary[t]), 3) for t in tasks
        ]
        delta = run["delta_m_percent"]
        row_cost = cost_table[run["name"]]
        lines.append(
            f"| {run['name']} | "
            + " | ".join(
                [
                    *cells,
                    _pm(delta["primary"], delta.get("primary_std"), 2, True),
                    verdict[run["name"]]["stl"],
                    verdict[run["name"]]["hard_sharing"],
                ]
            )
            + f" | {row_cost['parameters']:,} | {row_cost['flops'] / 1e6:.1f} | "
            f"{row_cost['latency_ms']:.1f} |"
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    p = results["provenance"]
    state = "clean tree" if not p["dirty"] else "DIRTY: " + "; ".join(p["dirty_reasons"])
    lines = [
        f"# {GROUPS[results['group']].title}",
        "",
        f"Command: `{p['command']}`. Commit {p['commit']} ({state}); Python {p['python']}, "
        f"torch {p['torch']}, timm {p['timm']}, NumPy {p['numpy']}; {p['cpu_model']}, "
        f"{p['cpu_count']} CPUs (capability {p['cpu_capability']}), {p['torch_threads']} torch "
        f"thread(s); {p['date']}; load average (1 min) at the start "
        f"{results['load_average_start'][0]:.1f}, at the end {results['load_average_end'][0]:.1f} "
        f"(the machine is shared). {results['trained_runs']} runs trained in "
        f"{results['wall_seconds'] / 60:.1f} min wall (over every invocation of the command). "
        f"Seeds {results['seeds']}; {results['steps']} steps; test split; mean ± sample std over "
        "the seeds; Δm over each task's primary metric against the STL networks (mean of their "
        f"seeds). Every row, STL included, on the {results['encoder']} encoder. STL's Δm cell "
        "is the std over its seeds of their own Δm (s_STL). Costs: "
        "predicting every task once (CompositeTasking: one pass per task) at 32×32, batch 1, "
        "one thread, median latency of 30 runs on the shared machine. README.md says what is "
        "scaled down; the paper-scale costs are in paper_scale.md (`cost.py`).",
    ]
    for key, title in TITLES.items():
        lines += ["", f"## {title}", ""]
        lines += table_markdown(
            results["tables"][key],
            results["verdicts"][key],
            results["costs"][key],
            results["stl_spread"][key],
        )
    return "\n".join(lines) + "\n"


def add_timings(path: Path, spent: dict[str, float]) -> dict[str, float]:
    """This invocation's runs and seconds added to the totals kept in ``path``."""
    known = json.loads(path.read_text()) if path.is_file() else {}
    total = {key: known.get(key, 0) + value for key, value in spent.items()}
    path.write_text(json.dumps(total, indent=2) + "\n")
    return total


def verify(args: argparse.Namespace, provenance: dict[str, Any]) -> int:
    """``--verify RUN`` (``sdn_mtan,seed=1``): retrain that run (scenes rendered again) in a
    temporary folder and compare its Δm against the committed table's STL means with the
    committed one."""
    committed = args.report_dir / f"{GROUPS[args.group].report}.json"
    tables = json.loads(committed.read_text())["tables"]
    holding = [report for report in tables.values() if args.verify in run_names(report)]
    if not holding:
        names = [name for report in tables.values() for name in run_names(report)]
        raise SystemExit(f"--verify: no run {args.verify!r}; the results hold {', '.join(names)}")

    def retrain(folder: Path) -> Path:
        missing = f"--verify: {args.verify!r} is not a run of these options"
        return train_named_run(planned_runs(args, folder), args.verify, missing)

    log = VerifyLog(args.report_dir / VERIFICATIONS, provenance)
    return verify_report_run(args.verify, holding[0], retrain, args.tolerance, log)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads() // args.jobs))
    provenance = start_benchmark(__file__, args, argv, [args.report_dir], args.work_dir)
    if args.verify:
        return verify(args, provenance)
    group = GROUPS[args.group]
    load_start = os.getloadavg()
    planned = planned_runs(args, args.work_dir)
    print(f"architectures: {len(planned)} runs into {args.work_dir / 'runs'}", flush=True)
    start = time.perf_counter()
    trained = run_sweep(planned, jobs=args.jobs, split="test")
    spent = add_timings(
        args.work_dir / "timings.json",
        {"trained_runs": len(trained), "wall_seconds": time.perf_counter() - start},
    )
    tables, verdict, spreads, cost_tables = {}, {}, {}, {}
    for key, tasks in TASK_SETS.items():
        groups = [
            load_group(row, seed_dirs(args, f"{key}_{run_id(row)}"), "test") for row in group.rows
        ]
        baselines = [path for task in tasks for path in seed_dirs(args, f"stl_{task}")]
        tables[key] = build_report(groups, load_records(baselines, "test"), "test")
        spreads[key] = stl_spread(args, tasks, tables[key])
        verdict[key] = verdicts(tables[key], spreads[key])
        cost_tables[key] = costs(group, tasks, tuple(BASE["data"]["crop_size"]))
    results = {
        "provenance": provenance,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "seeds": args.seeds,
        "steps": args.steps,
        "group": args.group,
        "base": BASE,
        "encoder": group.encoder,
        "rows": {row: {"architecture": a, "options": o} for row, (a, o) in group.rows.items()},
        **{key: round(value, 1) for key, value in spent.items()},
        "tables": tables,
        "verdicts": verdict,
        "stl_spread": spreads,
        "costs": cost_tables,
    }
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / f"{group.report}.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    )
    (args.report_dir / f"{group.report}.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
