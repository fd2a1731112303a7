"""What each fission split point costs: parameters, FLOPs, the FLOPs of one more task, and CPU
latency at batch 1 — eager PyTorch vs ONNX Runtime fp32 vs fp16 (Hickson et al., network
fission: the abstract's "~0.017 % more FLOPs" per added task for mid fission, and fp16 mobile
models, supplementary Sec. 1.2).

The models are the mobile config's (``configs/hickson_mobile_large.yaml``: semantics +
normals + scale-and-shift-invariant disparity, MobileNetV3-Large, decoder width 64) and the
same tasks with the paper's server network (ResNet-50, decoder width 256). Latency needs a run
directory to export (``densetasks.export.export_run`` reads a checkpoint), so each model is
trained for one step on a few 32×32 scenes first: the weights do not change the cost.
"""

import json
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from torch.utils.flop_counter import FlopCounterMode

from densetasks.engine.build import build_tasks, open_dataset
from densetasks.engine.config import load_config
from densetasks.engine.inference import load_run
from densetasks.engine.run import train
from densetasks.export import ExportGraph, check_export, export_run, read_sidecar
from densetasks.models import create_model

SPLITS = ("early", "early_mid", "mid", "late")
ADDED_TASK_CHANNELS = (1, 3, 13)
"""Channels of the hypothetical task added to measure its cost: depth-like, normals-like and a
13-class segmentation (NYUv2's 13 classes)."""
RUNTIMES = ("eager fp32", "onnxruntime fp32", "onnxruntime fp16")
EXPORT_RUN = [
    "data.options.n_train=2",
    "data.options.n_val=1",
    "data.options.n_test=1",
    "data.options.size=[32, 32]",
    "data.crop_size=[32, 32]",
    "data.batch_size=2",
    "train.steps=1",
    "train.eval_every=1",
    "train.checkpoint_every=1",
]
"""One training step on tiny scenes: only a checkpoint to export, not a trained model."""


def count(task_channels: Mapping[str, int], options: Mapping[str, Any], size: int) -> tuple:
    """(parameters, FLOPs at batch 1, eval mode; parameters only the last task reaches)."""
    model = create_model("fission", dict(task_channels), **options).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, size, size))
    last = list(task_channels)[-1]
    own = sum(p.numel() for m in model.task_modules(last) for p in m.parameters())
    with torch.no_grad(), FlopCounterMode(display=False) as encoder_counter:
        model.encoder(torch.zeros(1, 3, size, size))
    total = sum(p.numel() for p in model.parameters())
    return total, counter.get_total_flops(), own, encoder_counter.get_total_flops()


def flops_table(
    task_channels: Mapping[str, int], encoder: str, decoder_channels: int, size: int
) -> dict[str, dict[str, Any]]:
    """Per split point: parameters, FLOPs, the encoder's FLOPs and what one more task of
    :data:`ADDED_TASK_CHANNELS` channels adds (FLOPs and % of the base)."""
    options = {"encoder": encoder, "decoder_channels": decoder_channels}
    table = {}
    for split in SPLITS:
        params, flops, _, encoder_flops = count(task_channels, {**options, "split": split}, size)
        added = {}
        for channels in ADDED_TASK_CHANNELS:
            extra = {**task_channels, f"added_{channels}ch": channels}
            more_params, more_flops, own_added, _ = count(extra, {**options, "split": split}, size)
            added[str(channels)] = {
                "flops": more_flops - flops,
                "percent": 100.0 * (more_flops - flops) / flops,
                "parameters": more_params - params,
                "own_parameters": own_added,
            }
        table[split] = {
            "parameters": params,
            "flops": flops,
            "encoder_flops": encoder_flops,
            "added_task": added,
        }
    return table


def export_models(
    config: Path, models: Mapping[str, dict[str, Any]], out: Path, size: int
) -> dict[str, dict[str, Path]]:
    """Train one step and export fp32 and fp16 graphs at ``size`` for every model × split;
    ``{label: {precision: onnx path}}`` with label ``<model> <split>``."""
    exported = {}
    for name, overrides in models.items():
        for split in SPLITS:
            label = f"{name} {split}"
            run_dir = out / "runs" / f"{name}_{split}"
            extra = [f"{k}={json.dumps(v)}" for k, v in overrides.items()]
            if not (run_dir / "checkpoints" / "best.pt").is_file():
                run_config = load_config(
                    config, [*EXPORT_RUN, *extra, f"model.options.split={split}"]
                )
                train(run_config, run_dir)
            exported[label] = {}
            for precision in ("fp32", "fp16"):
                path = out / "onnx" / f"{name}_{split}_{precision}.onnx"
                export_run(run_dir, path, precision=precision, size=(size, size))
                exported[label][precision] = path
    return exported


def parity(paths: Mapping[str, Path]) -> dict[str, Any]:
    """``check_export`` (random images) of each graph: ok and the worst row."""
    result = {}
    for precision, path in paths.items():
        report = check_export(path, random_images=2, test_images=0)
        result[precision] = {
            "ok": report.ok,
            "rows": [
                {"output": r.output, "measure": r.measure, "value": r.value, "limit": r.limit}
                for r in report.rows
            ],
        }
    return result


def runners(paths: Mapping[str, Path], threads: int, size: int) -> dict[str, Callable]:
    """One callable per runtime, each running the same graph (normalisation, network,
    decoding) on the same fixed ``[1, 3, size, size]`` image."""
    sidecar = read_sidecar(paths["fp32"])
    run = load_run(sidecar["run_dir"], device="cpu")
    norm = sidecar["normalisation"]
    graph = ExportGraph(run.model, run.tasks, norm["mean"], norm["std"]).eval()
    image = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))

    def eager() -> None:
        with torch.no_grad():
            graph(image)

    def session(path: Path) -> Callable[[], None]:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        ort = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        feed = {"image": image.numpy().astype(np.float32)}
        return lambda: ort.run(None, feed)

    return {
        "eager fp32": eager,
        "onnxruntime fp32": session(paths["fp32"]),
        "onnxruntime fp16": session(paths["fp16"]),
    }


def latencies(
    exported: Mapping[str, Mapping[str, Path]], repeats: int, threads: int, size: int
) -> dict[str, dict[str, float]]:
    """Median milliseconds per call, batch 1: every model × runtime once per round, rounds
    interleaved (so drifts in the machine's load hit every entry alike), after one warm-up."""
    calls = {
        (label, runtime): call
        for label, paths in exported.items()
        for runtime, call in runners(paths, threads, size).items()
    }
    for call in calls.values():
        call()
    times: dict[tuple[str, str], list[float]] = {key: [] for key in calls}
    for _ in range(repeats):
        for key, call in calls.items():
            start = time.perf_counter()
            call()
            times[key].append(time.perf_counter() - start)
    result: dict[str, dict[str, float]] = {}
    for (label, runtime), values in times.items():
        result.setdefault(label, {})[runtime] = 1e3 * statistics.median(values)
    return result


def measure_cost(
    config: Path,
    models: Mapping[str, dict[str, Any]],
    out: Path,
    size: int,
    repeats: int,
    parity_split: str = "mid",
) -> dict[str, Any]:
    """FLOP tables, exported graphs' parity (``parity_split`` only) and latencies."""
    base = load_config(config)
    tasks = build_tasks(base, open_dataset(base, base.data.val_split))
    channels = {name: task.channels for name, task in tasks.items()}
    threads = torch.get_num_threads()
    flops = {
        name: flops_table(
            channels,
            overrides["model.encoder"],
            overrides["model.options.decoder_channels"],
            size,
        )
        for name, overrides in models.items()
    }
    exported = export_models(config, models, out, size)
    checks = {
        label: parity(paths)
        for label, paths in exported.items()
        if label.rsplit(" ", 1)[1] == parity_split
    }
    return {
        "config": str(config),
        "task_channels": channels,
        "input": [size, size],
        "threads": threads,
        "repeats": repeats,
        "models": {name: dict(overrides) for name, overrides in models.items()},
        "flops": flops,
        "parity": checks,
        "latency_ms": latencies(exported, repeats, threads, size),
    }


def speedups(latency: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """eager / ONNX Runtime latency per model (> 1: ONNX Runtime is faster)."""
    return {
        label: {
            runtime: times["eager fp32"] / times[runtime]
            for runtime in RUNTIMES
            if runtime != "eager fp32"
        }
        for label, times in latency.items()
    }


def markdown(cost: Mapping[str, Any], labels: Sequence[str]) -> list[str]:
    """The cost section of results.md: FLOPs per split and latency per runtime."""
    size = f"{cost['input'][0]}×{cost['input'][1]}"
    lines = [
        f"## Cost per split point ({size}, batch 1, eval mode)",
        "",
        "Tasks: "
        + ", ".join(f"{t} ({c} ch)" for t, c in cost["task_channels"].items())
        + ". FLOPs as `torch.utils.flop_counter` counts them (2 per multiply-add). The last "
        "columns: what one more task of 1, 3 or 13 channels adds, in % of the base FLOPs.",
        "",
        "| model | split | params (M) | GFLOPs | encoder GFLOPs | "
        + " | ".join(f"+{c}-ch task" for c in ADDED_TASK_CHANNELS)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(ADDED_TASK_CHANNELS),
    ]
    for name in labels:
        for split, row in cost["flops"][name].items():
            added = " | ".join(
                f"{row['added_task'][str(c)]['flops'] / 1e6:.1f} M "
                f"({row['added_task'][str(c)]['percent']:.3f} %)"
                for c in ADDED_TASK_CHANNELS
            )
            lines.append(
                f"| {name} | {split} | {row['parameters'] / 1e6:.2f} | {row['flops'] / 1e9:.2f} | "
                f"{row['encoder_flops'] / 1e9:.2f} | {added} |"
            )
    ratio = speedups(cost["latency_ms"])
    lines += [
        "",
        f"## CPU latency ({size}, batch 1, {cost['threads']} thread(s), median of "
        f"{cost['repeats']} interleaved repeats)",
        "",
        "Each graph: normalisation, network and decoding (`densetasks export`); eager is the "
        "same `ExportGraph` in PyTorch. Speed-up = eager / ONNX Runtime.",
        "",
        "| model | split | eager fp32 (ms) | ORT fp32 (ms) | ORT fp16 (ms) | speed-up fp32 | "
        "speed-up fp16 |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, times in cost["latency_ms"].items():
        name, split = label.rsplit(" ", 1)
        lines.append(
            f"| {name} | {split} | "
            + " | ".join(f"{times[r]:.1f}" for r in RUNTIMES)
            + "".join(f" | {ratio[label][r]:.2f}×" for r in RUNTIMES[1:])
            + " |"
        )
    lines += ["", "Export parity (`check_export`, 2 random images):", ""]
    for label, checks in cost["parity"].items():
        for precision, check in checks.items():
            worst = ", ".join(
                f"{r['output']} {r['measure']} {r['value']:.3g} (limit {r['limit']:g})"
                for r in check["rows"]
            )
            verdict = "ok" if check["ok"] else "FAIL"
            lines.append(f"- {label} {precision}: {verdict} — {worst}")
    return lines
