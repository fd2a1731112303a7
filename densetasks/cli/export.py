"""``densetasks export``: a trained run as an ONNX graph plus its sidecar JSON.

The graph takes RGB images in ``[0, 1]`` (normalisation inside) and the model's conditioning
inputs, and returns every task's decoded prediction and the network's raw outputs
(:mod:`densetasks.export`, ``docs/export.md``). ``--check`` then compares it with the eager
model on random images and with ``densetasks predict`` on the run's test images, prints the
table and exits 1 when a comparison fails.
"""

import argparse
from pathlib import Path

from densetasks.cli.parsing import parse_size
from densetasks.export import (
    CHECKPOINTS,
    DEFAULT_OPSET,
    PRECISIONS,
    check_export,
    export_run,
    sidecar_path,
)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained run to ONNX (fp32 or fp16) with a sidecar JSON",
        description="Write the run's evaluation-mode model, with its output adapter and each "
        "task's decoding, as an ONNX graph (--out) and a sidecar JSON (--out + '.json') that "
        "lists the tasks, inputs, outputs, input size and normalisation.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a trained run directory")
    parser.add_argument("--out", required=True, type=Path, help="the .onnx file to write")
    parser.add_argument(
        "--precision",
        default="fp32",
        help=f"weights and activations of the network: {' or '.join(PRECISIONS)} (default fp32)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="input HxW, divisible by the encoder's output stride (default: the size "
        "densetasks predict runs at: the run's data.eval_size, else its test images' size)",
    )
    parser.add_argument(
        "--dynamic", action="store_true", help="a dynamic batch size (default: batch 1)"
    )
    parser.add_argument(
        "--checkpoint", default="best", help=f"{' or '.join(CHECKPOINTS)} (default best)"
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="run the graph under ONNX Runtime and compare it with the eager model on random "
        "images and with densetasks predict on test-split images at their size; exit 1 if a "
        "tolerance is exceeded",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sidecar = export_run(
        args.run_dir,
        args.out,
        precision=args.precision,
        size=args.size,
        dynamic=args.dynamic,
        checkpoint=args.checkpoint,
        opset=args.opset,
    )
    height, width = sidecar["input_size"]
    print(
        f"wrote {args.out} and {sidecar_path(args.out)} ({sidecar['precision']}, "
        f"{height}x{width} from {sidecar['input_size_from']}, step {sidecar['step']}, "
        f"tasks {', '.join(sidecar['tasks'])})"
    )
    if not args.check:
        return 0
    report = check_export(args.out)
    print(report.table())
    for note in report.notes:
        print(note)
    print(f"parity: {'ok' if report.ok else 'FAILED'}")
    return 0 if report.ok else 1
