"""What each backbone costs, side by side, for hard sharing with NYUD-v2's four tasks at
NYUD-v2's test size (448×576).

The network: ``hard_sharing`` on the encoder at output stride 32 (no bottleneck; the
``multiscale`` FPN-style head per task, 128 channels, which reads every level of the pyramid),
tasks semseg (40 classes), depth, normals and edges. Per encoder, in a fresh process each:

* parameters (encoder, whole network);
* FLOPs of one forward pass at batch 1, 448×576 (``torch.utils.flop_counter.FlopCounterMode``:
  2 per multiply-add of convolutions and matrix products; softmax, norms and resizes are not
  counted);
* peak resident memory of one training step at batch 1 (forward, backward, AdamW step with
  its state created), measured: the process's high-water mark (``VmHWM``) is reset just before
  the step (``/proc/self/clear_refs``) and read after it; reported with the resident memory
  just before the step (weights, framework);
* CPU latency of one forward pass at batch 1 (eval, no grad): ``--rounds`` rounds of one
  ResNet-50 pass then one pass of the encoder's network, after one warm-up pass each, the
  median of each and their ratio — taken under the same machine load, the ratio is the number
  to compare on a shared machine. The large networks (``LARGE``) are measured in one round.

``--grad-checkpointing`` measures the training step with activation checkpointing in the
encoder (``train.grad_checkpointing``) instead, and no latency (an evaluation pass does not
checkpoint); it writes ``cost_checkpointing.json`` / ``.md``.

Run from the repository root of a clean checkout of one commit (``start_benchmark`` refuses a
dirty tree; ``docs/benchmarks.md``): ``OMP_NUM_THREADS=1 python benchmarks/backbones/cost.py``.
Writes ``benchmarks/backbones/cost.json`` and ``cost.md`` (with the provenance record: commit,
versions, CPU, threads, command; and the load average before and after). It only measures, so
it has no ``--verify``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from densetasks.experiments.provenance import (
    add_provenance_options,
    provenance_line,
    start_benchmark,
)
from densetasks.models import create_model
from densetasks.tasks.registry import create_task

HERE = Path(__file__).resolve().parent

ENCODERS = (
    "resnet50",
    "hrnet_w18",
    "hrnet_w48",
    "convnext_tiny",
    "convnext_base",
    "swin_tiny_patch4_window7_224",
    "swin_base_patch4_window7_224",
    "swin_large_patch4_window7_224",
    "vit_small_patch16_224",
    "vit_base_patch16_224",
    "vit_large_patch16_224",
)
LARGE = ("hrnet_w48", "swin_large_patch4_window7_224", "vit_large_patch16_224")
"""Measured once (one latency round): each pass takes seconds on the CPU."""
REFERENCE = "resnet50"
SIZE = (448, 576)
TASKS = {"semseg": {"num_classes": 40}, "depth": {}, "normals": {}, "edges": {}}


def network(encoder: str) -> torch.nn.Module:
    channels = {name: create_task(name, **options).channels for name, options in TASKS.items()}
    return create_model(
        "hard_sharing",
        channels,
        encoder=encoder,
        output_stride=32,
        bottleneck="none",
        head="multiscale",
    )


def _status(field: str) -> int:
    """A ``/proc/self/status`` memory field, in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def training_step_memory(model: torch.nn.Module) -> dict[str, float]:
    """Resident memory before one training step and the peak during it, GiB."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    image = torch.rand(1, 3, *SIZE)
    model.train()
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    outputs = model(image)
    sum(output.float().square().mean() for output in outputs.values()).backward()
    optimizer.step()
    peak = _status("VmHWM")
    optimizer.zero_grad(set_to_none=True)
    del optimizer, outputs
    return {"resident_before_gib": before / 2**30, "peak_gib": peak / 2**30}


def forward_flops(model: torch.nn.Module) -> float:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.rand(1, 3, *SIZE))
    return counter.get_total_flops()


def _forward_seconds(model: torch.nn.Module, image: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        model(image)
    return time.perf_counter() - start


def latency(model: torch.nn.Module, rounds: int) -> dict[str, Any]:
    """Median forward seconds of ``model`` and of the ResNet-50 network, interleaved."""
    reference = network(REFERENCE).eval()
    model.eval()
    image = torch.rand(1, 3, *SIZE)
    for net in (reference, model):
        _forward_seconds(net, image)
    ours, theirs = [], []
    for _ in range(rounds):
        theirs.append(_forward_seconds(reference, image))
        ours.append(_forward_seconds(model, image))
    return {
        "rounds": rounds,
        "seconds": statistics.median(ours),
        "reference_seconds": statistics.median(theirs),
        "vs_resnet50": statistics.median(ours) / statistics.median(theirs),
        "seconds_all": ours,
        "reference_seconds_all": theirs,
    }


def measure(encoder: str, rounds: int, checkpointing: bool) -> dict[str, Any]:
    """Every number of one encoder (run in its own process)."""
    torch.manual_seed(0)
    model = network(encoder)
    if checkpointing:
        model.encoder.set_grad_checkpointing(True)
    row: dict[str, Any] = {
        "encoder": encoder,
        "encoder_parameters_m": sum(p.numel() for p in model.encoder_parameters()) / 1e6,
        "parameters_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "feature_info": [[spec.channels, spec.stride] for spec in model.encoder.feature_info],
    }
    row["memory"] = training_step_memory(model)
    row["gflops"] = forward_flops(model) / 1e9
    if not checkpointing:
        row["latency"] = latency(model, 1 if encoder in LARGE else rounds)
    return row


def markdown(rows: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        "# Backbone cost: hard sharing, NYUD-v2's four tasks, 448×576, batch 1, CPU",
        "",
        provenance_line(meta["provenance"]).strip(),
        "",
        f"Load average (1, 5, 15 min) before / after: {meta['load_before']} / "
        f"{meta['load_after']}. Large networks (one latency round): {', '.join(LARGE)}.",
        "",
        "| encoder | encoder params (M) | total params (M) | GFLOPs (forward) | "
        "step peak RSS (GiB) | RSS before step (GiB) | forward ms | × ResNet-50 (same rounds) "
        "| rounds |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lat = row.get("latency")
        timing = (
            f"{1000 * lat['seconds']:.0f} | {lat['vs_resnet50']:.2f} | {lat['rounds']}"
            if lat
            else "– | – | –"
        )
        lines.append(
            f"| {row['encoder']} | {row['encoder_parameters_m']:.1f} | {row['parameters_m']:.1f} "
            f"| {row['gflops']:.0f} | {row['memory']['peak_gib']:.2f} "
            f"| {row['memory']['resident_before_gib']:.2f} | {timing} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds (small models)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument(
        "--grad-checkpointing", action="store_true", help="the training step with checkpointing"
    )
    parser.add_argument("--one", help=argparse.SUPPRESS)  # the child process: one encoder
    add_provenance_options(parser, verify=False)
    args = parser.parse_args(argv)
    if args.one:  # the parent checked the checkout
        print(json.dumps(measure(args.one, args.rounds, args.grad_checkpointing)))
        return
    name = "cost_checkpointing" if args.grad_checkpointing else "cost"
    outputs = [args.out / f"{name}.json", args.out / f"{name}.md"]
    provenance = start_benchmark(__file__, args, argv, outputs)
    load_before = os.getloadavg()
    rows = []
    for encoder in args.encoders:
        child = [sys.executable, __file__, "--one", encoder, "--rounds", str(args.rounds)]
        child += ["--grad-checkpointing"] if args.grad_checkpointing else []
        result = subprocess.run(child, check=True, capture_output=True, text=True)
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"{encoder}: done", flush=True)
    meta = {
        "provenance": provenance,
        "load_before": [round(value, 1) for value in load_before],
        "load_after": [round(value, 1) for value in os.getloadavg()],
        "size": list(SIZE),
        "tasks": TASKS,
        "grad_checkpointing": args.grad_checkpointing,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
