"""CompositeTasking (Popovic et al., CVPR 2021) Tables 1 and 4 and Figure 5, in shape, on CPU.

::

    python benchmarks/composite_tasking/run.py [--out runs/composite_tasking] [--quick]
    python benchmarks/composite_tasking/run.py --cost-only [--set model.encoder=...]

Trains, from ``configs/popovic2021_synthetic.yaml`` on the synthetic scenes (five tasks:
semseg, parts, edges, saliency, normals):

* Table 1 rows: one STN per task under rule S (complete labels: the Δm baseline), MHN under
  S (every decoder on complete labels, palette rule ``all``), one STN per task under R1r
  (each supervised where the mosaic gives its task), MHN under R1r, the CTN under R1r; all
  evaluated under S (one pass per task) on the test split, Δm against the STNs under S.
* Table 4 rows: the CTN trained under R1r and under Rrnd, evaluated under S and under Rrnd.
* Figure 5: parameters, FLOPs (``torch.utils.flop_counter``) and CPU latency at batch 1 for
  the five tasks — the CTN (one pass for a composite request), the MHN (one pass, five
  decoders), five STNs — measured side by side (interleaved repeats, median).
* Pictures: an R1r mosaic and an Rrnd sheet of the CTN (image, palette, composite output).

Finished runs (``metrics_test.json`` present) are not trained again, so an interrupted
benchmark resumes. Results go to ``--report`` (default: this folder): ``results.md``,
``results.json``, ``pictures/``; the wall time of each run to ``OUT/timings.json``.
``--cost-only`` trains nothing and measures Figure 5 alone (untrained weights: parameters,
FLOPs and latency do not depend on them) at the size the ``--set`` options give, into
``results_cost_<size>px_<encoder>.json``. ``--verify RUN`` retrains one run (``mhn_S``) and
compares it with the committed tables.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from densetasks.cli.parsing import add_overrides_option
from densetasks.data.palettes import create_palette_rule, write_palette_png
from densetasks.data.registry import create_dataset
from densetasks.engine.config import RunConfig, load_config
from densetasks.engine.inference import Predictor
from densetasks.engine.run import train
from densetasks.experiments.provenance import add_provenance_options, start_benchmark
from densetasks.experiments.verify import VERIFICATIONS, VerifyLog, verify_row
from densetasks.metrics.delta_m import delta_m
from densetasks.models import create_model
from densetasks.pictures import contact_sheet
from densetasks.tasks.registry import label_kinds

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "popovic2021_synthetic.yaml"
QUICK = [
    "data.options.n_train=16",
    "data.options.n_val=4",
    "data.options.n_test=4",
    "data.options.size=[32,32]",
    "data.crop_size=[32,32]",
    "model.encoder=tiny",
    "train.steps=4",
    "train.milestones=[]",
    "train.eval_every=4",
    "train.checkpoint_every=4",
]
"""Overrides of ``--quick``: checks the pipeline in a minute, measures nothing."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=CONFIG, help="base config")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "composite_tasking")
    parser.add_argument("--report", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--quick", action="store_true", help="a few steps at 32 px")
    parser.add_argument("--repeats", type=int, default=20, help="latency repeats per model")
    parser.add_argument(
        "--cost-only",
        action="store_true",
        help="train nothing: Figure 5 (parameters, FLOPs, latency) at the --set scale only",
    )
    add_overrides_option(parser, "every run")
    add_provenance_options(parser)
    args = parser.parse_args(argv)
    if args.quick:
        args.overrides = [*QUICK, *args.overrides]
        args.repeats = 2
        if args.report == Path(__file__).resolve().parent:
            args.report = args.out / "report"
    return args


def plan(base: RunConfig) -> dict[str, dict[str, Any]]:
    """Run name -> config overrides (as a mapping of dotted keys)."""
    tasks = list(base.tasks)
    runs: dict[str, dict[str, Any]] = {}
    for task in tasks:
        single = {
            "tasks": {task: base.tasks[task]},
            "balancer.weights": {task: base.balancer.weights.get(task, 1.0)},
            "model.architecture": "composite_stn",
        }
        runs[f"stn_S_{task}"] = {**single, "model.options.train_rule": "S"}
        runs[f"stn_R1r_{task}"] = {
            **single,
            "model.options.train_rule": "R1r",
            "model.options.palette_tasks": tasks,
        }
    runs["mhn_S"] = {"model.architecture": "composite_mhn", "model.options.train_rule": "all"}
    runs["mhn_R1r"] = {"model.architecture": "composite_mhn", "model.options.train_rule": "R1r"}
    runs["ctn_R1r"] = {"model.options.train_rule": "R1r"}
    runs["ctn_Rrnd"] = {"model.options.train_rule": "Rrnd"}
    return runs


def config_for(args: argparse.Namespace, overrides: dict[str, Any]) -> RunConfig:
    extra = [f"{key}={json.dumps(value)}" for key, value in overrides.items()]
    return load_config(args.config, [*args.overrides, *extra])


def train_all(args: argparse.Namespace, runs: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Train every run not finished yet; wall seconds per run (those trained now)."""
    seconds = {}
    for name, overrides in runs.items():
        run_dir = args.out / name
        if (run_dir / "metrics_test.json").is_file():
            continue
        print(f"training {name}", flush=True)
        start = time.perf_counter()
        train(config_for(args, overrides), run_dir, resume=(run_dir / "checkpoints").is_dir())
        seconds[name] = round(time.perf_counter() - start, 1)
        print(f"{name}: {seconds[name] / 60:.1f} min", flush=True)
    return seconds


def metrics_of(run_dir: Path, rule: str | None = None) -> dict[str, Any]:
    payload = json.loads((run_dir / "metrics_test.json").read_text())
    metrics = payload["metrics"] if rule is None else payload["by_rule"][rule]
    higher, primary = payload["higher_is_better"], payload["primary"]
    return {"metrics": metrics, "higher": higher, "primary": primary}


def merged(run_dirs: list[Path], rule: str | None = None) -> dict[str, Any]:
    """One row from single-task runs: their tasks' metrics side by side."""
    row: dict[str, Any] = {"metrics": {}, "higher": {}, "primary": {}}
    for run_dir in run_dirs:
        part = metrics_of(run_dir, rule)
        for key in row:
            row[key].update(part[key])
    return row


def tables(args: argparse.Namespace, tasks: list[str]) -> dict[str, Any]:
    """Table 1 (evaluated under S) and Table 4 (S and Rrnd) with Δm against the STNs under S."""
    out = args.out
    baseline = merged([out / f"stn_S_{task}" for task in tasks])
    rows = {
        "STN (S)": baseline,
        "MHN (S)": metrics_of(out / "mhn_S"),
        "STN (R1r)": merged([out / f"stn_R1r_{task}" for task in tasks]),
        "MHN (R1r)": metrics_of(out / "mhn_R1r"),
        "CTN (R1r)": metrics_of(out / "ctn_R1r"),
    }
    table4 = {
        f"CTN ({trained}) on {rule or 'S'}": metrics_of(out / f"ctn_{trained}", rule)
        for trained in ("R1r", "Rrnd")
        for rule in (None, "Rrnd")
    }

    def summary(row: dict[str, Any]) -> dict[str, Any]:
        primary = baseline["primary"]
        values = {task: row["metrics"][task][primary[task]] for task in tasks}
        delta = delta_m(
            {task: row["metrics"][task] for task in tasks},
            baseline["metrics"],
            baseline["higher"],
            primary,
        )
        return {"primary": values, "delta_m_percent": delta}

    return {
        "primary_metrics": baseline["primary"],
        "table1": {name: summary(row) for name, row in rows.items()},
        "table4": {name: summary(row) for name, row in table4.items()},
    }


def cost(args: argparse.Namespace, base: RunConfig) -> dict[str, Any]:
    """Parameters, FLOPs and batch-1 CPU latency for the five tasks: CTN, MHN, five STNs."""
    tasks = {name: 3 for name in base.tasks}  # every decoder ends in the 3-channel space
    options = {k: v for k, v in base.model.options.items() if k == "decoder_widths"}
    encoder = base.model.encoder
    models = {
        "CTN": [create_model("composite_tasking", tasks, encoder=encoder, **options)],
        "MHN": [create_model("composite_mhn", tasks, encoder=encoder, **options)],
        "STN x5": [
            create_model("composite_stn", {task: 3}, encoder=encoder, **options) for task in tasks
        ],
    }
    size = tuple(base.data.options.get("size", (64, 64)))
    image = torch.rand(1, 3, *size)
    palette = create_palette_rule("R1r")({"image": image}, list(tasks), torch.Generator())

    def run(parts: list[torch.nn.Module]) -> None:
        for model in parts:  # a single-task network is asked for its one task everywhere
            model(image, palette if len(model.task_channels) > 1 else torch.zeros_like(palette))

    result: dict[str, Any] = {}
    for name, parts in models.items():
        for model in parts:
            model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            run(parts)
        result[name] = {
            "parameters": sum(p.numel() for model in parts for p in model.parameters()),
            "decoder_parameters": sum(
                p.numel() for model in parts for p in model.decoder_parameters()
            ),
            "gflops": counter.get_total_flops() / 1e9,
        }
    timings: dict[str, list[float]] = {name: [] for name in models}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, parts in models.items():  # interleaved: every model in every round
                start = time.perf_counter()
                run(parts)
                timings[name].append(time.perf_counter() - start)
    for name in models:
        result[name]["latency_ms"] = 1e3 * statistics.median(timings[name])
    reference = result["MHN"]["latency_ms"]
    for name in models:
        result[name]["latency_vs_mhn"] = result[name]["latency_ms"] / reference
    result["input"] = list(size)
    result["threads"] = torch.get_num_threads()
    return result


def pictures(args: argparse.Namespace, base: RunConfig) -> list[str]:
    """An R1r mosaic and an Rrnd sheet of the CTN on test images."""
    folder = args.report / "pictures"
    folder.mkdir(parents=True, exist_ok=True)
    test = create_dataset("synthetic", "test", label_kinds(), **base.data.options)
    written = []
    for trained, rule in (("R1r", "R1r"), ("Rrnd", "Rrnd")):
        predictor = Predictor.from_run_dir(args.out / f"ctn_{trained}")
        rows = []
        for index in range(3):
            image = test[index]["image"]
            palette = predictor.rule_palette(image, rule, seed=index)
            prediction = predictor(image, {"palette": palette})
            panels = [("image", _uint8(image)), ("palette", _palette_picture(palette))]
            panels.append(("composite", prediction.composite_picture(predictor.tasks)))
            rows.append(contact_sheet(panels))
            if index == 0:
                write_palette_png(folder / f"ctn_{trained}_{rule}_palette.png", palette)
        target = folder / f"ctn_{trained}_{rule}.png"
        Image.fromarray(np.concatenate(rows, axis=0)).save(target)
        written.append(str(target.relative_to(args.report)))
    return written


def _uint8(image: torch.Tensor) -> np.ndarray:
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


PALETTE_COLOURS = np.array(
    [[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48]], np.uint8
)


def _palette_picture(palette: torch.Tensor) -> np.ndarray:
    picture = np.zeros((*palette.shape, 3), dtype=np.uint8)
    for index, colour in enumerate(PALETTE_COLOURS):
        picture[palette.numpy() == index] = colour
    return picture


def markdown(results: dict[str, Any], tasks: list[str]) -> str:
    primary = results["tables"]["primary_metrics"]
    header = "| row | " + " | ".join(f"{t} {primary[t]}" for t in tasks) + " | Δm % |"
    rule = "|---" * (len(tasks) + 2) + "|"

    def lines(table: dict[str, Any]) -> list[str]:
        return [
            f"| {name} | "
            + " | ".join(f"{row['primary'][t]:.2f}" for t in tasks)
            + f" | {row['delta_m_percent']:+.2f} |"
            for name, row in table.items()
        ]

    return "\n".join(
        [
            "## Table 1 (evaluated under S, test split; Δm against the STNs under S)",
            "",
            header,
            rule,
            *lines(results["tables"]["table1"]),
            "",
            "## Table 4 (the CTN trained under R1r or Rrnd, evaluated under S or Rrnd)",
            "",
            header,
            rule,
            *lines(results["tables"]["table4"]),
            "",
            *cost_markdown(results["cost"]),
        ]
    )


def cost_markdown(cost: dict[str, Any]) -> list[str]:
    """Figure 5's table: parameters, FLOPs and latency of each model."""
    return [
        f"## Figure 5 (five tasks, batch 1, {cost['input'][0]}x{cost['input'][1]} px, "
        f"{cost['threads']} threads, median of interleaved repeats)",
        "",
        "| model | parameters (M) | decoder parameters (M) | GFLOPs | latency (ms) | "
        "latency / MHN |",
        "|---|---|---|---|---|---|",
        *(
            f"| {name} | {c['parameters'] / 1e6:.2f} | {c['decoder_parameters'] / 1e6:.2f} | "
            f"{c['gflops']:.3f} | {c['latency_ms']:.1f} | {c['latency_vs_mhn']:.2f} |"
            for name, c in cost.items()
            if isinstance(c, dict)
        ),
        "",
    ]


TABLE_ROWS = {
    "mhn_S": [("table1", "MHN (S)", None)],
    "mhn_R1r": [("table1", "MHN (R1r)", None)],
    "ctn_R1r": [("table4", "CTN (R1r) on S", None), ("table4", "CTN (R1r) on Rrnd", "Rrnd")],
    "ctn_Rrnd": [("table4", "CTN (Rrnd) on S", None), ("table4", "CTN (Rrnd) on Rrnd", "Rrnd")],
}
"""Multi-task run -> the table rows it makes (table, row, palette rule of the evaluation)."""


def single_task(run: str) -> tuple[str, str] | None:
    """``("STN (R1r)", "semseg")`` for ``stn_R1r_semseg``; None for a multi-task run."""
    parts = run.split("_", 2)
    return (f"STN ({parts[1]})", parts[2]) if parts[0] == "stn" and len(parts) == 3 else None


def committed_run(results: dict[str, Any], run: str) -> dict[str, float]:
    """What the committed tables hold for one run: a single-task network's primary metric
    (its row is every task's network side by side), or each row of a multi-task run."""
    if (single := single_task(run)) is not None:
        label, task = single
        return {f"{label} {task}": results["tables"]["table1"][label]["primary"][task]}
    if run not in TABLE_ROWS:
        raise SystemExit(f"--verify: {run!r} is not a run of the tables")
    numbers = {}
    for table, label, _ in TABLE_ROWS[run]:
        row = results["tables"][table][label]
        numbers.update({f"{label} {task}": value for task, value in row["primary"].items()})
        numbers[f"{label} Δm %"] = row["delta_m_percent"]
    return numbers


def rerun_run(results: dict[str, Any], run: str, run_dir: Path) -> dict[str, float]:
    """:func:`committed_run`'s numbers from a retrained run (Δm against the committed STNs)."""
    tables = results["tables"]
    primary = tables["primary_metrics"]
    if (single := single_task(run)) is not None:
        label, task = single
        return {f"{label} {task}": metrics_of(run_dir)["metrics"][task][primary[task]]}
    baseline = {
        task: {name: tables["table1"]["STN (S)"]["primary"][task]} for task, name in primary.items()
    }
    numbers = {}
    for _, label, rule in TABLE_ROWS[run]:
        row = metrics_of(run_dir, rule)
        values = {task: row["metrics"][task][name] for task, name in primary.items()}
        numbers.update({f"{label} {task}": value for task, value in values.items()})
        numbers[f"{label} Δm %"] = delta_m(
            {task: {primary[task]: value} for task, value in values.items()},
            baseline,
            row["higher"],
            primary,
        )
    return numbers


def verify(
    args: argparse.Namespace, runs: dict[str, dict[str, Any]], provenance: dict[str, Any]
) -> int:
    """``--verify RUN``: retrain one run of the tables, compare with the committed numbers."""
    results = json.loads((args.report / "results.json").read_text())
    if args.verify not in runs:
        raise SystemExit(f"--verify: no run {args.verify!r}; runs: {', '.join(runs)}")
    committed = committed_run(results, args.verify)

    def retrain(folder: Path) -> dict[str, float]:
        run_dir = folder / args.verify
        train(config_for(args, runs[args.verify]), run_dir)
        return rerun_run(results, args.verify, run_dir)

    log = VerifyLog(args.report / VERIFICATIONS, provenance)
    return verify_row(args.verify, committed, retrain, args.tolerance, log)


def cost_only(args: argparse.Namespace, base: RunConfig, provenance: dict[str, Any]) -> None:
    """Figure 5 alone, at the config's scale, into ``results_cost_<size>px_<encoder>.json``."""
    result = cost(args, base)
    name = f"results_cost_{result['input'][0]}px_{base.model.encoder}.json"
    payload = {"provenance": provenance, "command": provenance["command"], "cost": result}
    args.report.mkdir(parents=True, exist_ok=True)
    (args.report / name).write_text(json.dumps(payload, indent=2) + "\n")
    print("\n".join(cost_markdown(result)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work_dir = None if args.cost_only else args.out
    provenance = start_benchmark(__file__, args, argv, [args.report], work_dir)
    base = load_config(args.config, args.overrides)
    runs = plan(base)
    if args.verify:
        return verify(args, runs, provenance)
    if args.cost_only:
        cost_only(args, base, provenance)
        return 0
    seconds = train_all(args, runs)
    timings_file = args.out / "timings.json"
    known = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    timings_file.write_text(json.dumps({**known, **seconds}, indent=2))
    tasks = list(base.tasks)
    results = {
        "provenance": provenance,
        "command": provenance["command"],
        "tables": tables(args, tasks),
        "cost": cost(args, base),
        "wall_seconds": {**known, **seconds},
    }
    args.report.mkdir(parents=True, exist_ok=True)
    results["pictures"] = pictures(args, base)
    (args.report / "results.json").write_text(json.dumps(results, indent=2))
    (args.report / "results.md").write_text(markdown(results, tasks))
    print(markdown(results, tasks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
