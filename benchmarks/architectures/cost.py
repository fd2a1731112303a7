"""What each architecture costs: parameters, FLOPs and CPU latency to predict every task once.

"Every task once" follows the architecture's evaluation plan: one forward pass for most, one
pass per task (a uniform Task Palette, rule S) for CompositeTasking. FLOPs are
``torch.utils.flop_counter`` counts (2 per multiply-add) at batch 1 in evaluation mode; the
paper-scale table counts them on the ``meta`` device, so no activation is computed.

The paper-scale table builds each architecture with its paper's backbone at 448×576 (NYUD's
crop in the survey of Vandenhende et al. and MTI-Net): ResNet-50 at output stride 8 for the
survey's cross-stitch, NDDR-CNN, MTAN and single-task networks (the survey's DeepLab head:
ASPP with its projection), ResNet-101 for Kendall et al.'s
hard sharing (stride 8) and the 3-ways networks and PAD-Net of Lopes et al. (stride 16),
ResNet-50 at stride 16 for network fission, ResNet-34 for CompositeTasking, and timm's
HRNet-W18 / W48 (its four branches, :class:`HRNetBranches`) for MTI-Net. Random initial
weights: the counts do not depend on them.

::

    python benchmarks/architectures/cost.py [--report-dir DIR] [--allow-dirty]

writes that table to ``paper_scale.md`` and ``paper_scale.json`` (default: this folder) with
the provenance record of :func:`densetasks.experiments.provenance.start_benchmark`.
"""

import argparse
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode

from densetasks.experiments.provenance import (
    add_provenance_options,
    provenance_line,
    start_benchmark,
)
from densetasks.models import Architecture, Encoder, FeatureSpec, create_model
from densetasks.models.architectures.mti_net import MTINet

PAPER_SIZE = (448, 576)
"""NYUD-v2 training crop of the survey's and MTI-Net's tables (height, width)."""
PAPER_TASK_SETS = {
    "S-D": {"semseg": 40, "depth": 1},
    "S-D-N-E": {"semseg": 40, "depth": 1, "normals": 3, "edges": 1},
}
"""Task -> output channels of the two task sets of the table (NYUD-v2's 40 classes)."""

PAPER_MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "single task (one per task)": (
        "single_task",
        {"encoder": "resnet50", "output_stride": 8, "bottleneck_options": {"project": True}},
    ),
    "hard sharing": ("hard_sharing", {"encoder": "resnet101", "output_stride": 8}),
    "cross-stitch": ("cross_stitch", {"encoder": "resnet50", "output_stride": 8}),
    "NDDR-CNN": ("nddr_cnn", {"encoder": "resnet50", "output_stride": 8}),
    "MTAN": ("mtan", {"encoder": "resnet50", "output_stride": 8}),
    "PAD-Net": ("padnet", {"encoder": "resnet101", "output_stride": 16}),
    "3-ways": ("three_ways", {"encoder": "resnet101", "output_stride": 16}),
    "3-ways + mTEB": ("three_ways_mteb", {"encoder": "resnet101", "output_stride": 16}),
    "fission mid": ("fission", {"encoder": "resnet50", "output_stride": 16, "split": "mid"}),
    "CompositeTasking (S)": (
        "composite_tasking",
        {"encoder": "resnet34", "output_stride": 32, "eval_rules": []},
    ),
}
"""Row -> (architecture, create_model keywords): each paper's backbone and output stride."""

HRNETS = {"MTI-Net (HRNet-18)": "hrnet_w18", "MTI-Net (HRNet-48)": "hrnet_w48"}


class HRNetBranches(Encoder):
    """timm's HRNet (``features_only``, ``feature_location=""``) as four feature maps: its
    branches at strides 4 / 8 / 16 / 32, without the stem's stride-2 map. A stand-in until an
    HRNet encoder is registered: it runs the whole network, it cannot run a range of stages."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self.model = timm.create_model(name, features_only=True, feature_location="")
        info = self.model.feature_info
        self.feature_info = [
            FeatureSpec(c, s)
            for c, s in zip(info.channels()[1:], info.reduction()[1:], strict=True)
        ]

    def forward_stages(self, inputs, start=0, end=None):
        if (start, end) != (0, None):
            raise ValueError("HRNetBranches runs all its stages at once")
        return self.model(inputs)[1:]


def predict_every_task(model: Architecture, image: torch.Tensor) -> None:
    """The forward passes of ``model``'s evaluation plan that score tasks (no palette rule)."""
    batch = {"image": image}
    for evaluation_pass in model.evaluation_plan():
        if evaluation_pass.rule is None:
            conditions = {key: build(batch) for key, build in evaluation_pass.conditions.items()}
            model(image, **conditions)


def flops(model: Architecture, size: tuple[int, int], device: str = "cpu") -> int:
    """FLOPs of :func:`predict_every_task` at batch 1 (``device="meta"``: counted, not run;
    a model that checks its inputs' values, as CompositeTasking checks its palette, is run
    on the CPU instead)."""
    model = model.to(device).eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            predict_every_task(model, torch.zeros(1, 3, *size, device=device))
    except NotImplementedError:  # a data-dependent operation has no meta kernel
        return flops(model.to_empty(device="cpu"), size, "cpu")  # values do not count
    return counter.get_total_flops()


def latency_ms(model: Architecture, size: tuple[int, int], repeats: int = 30) -> float:
    """Median wall time of :func:`predict_every_task` at batch 1, one thread, after warm-up."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    model = model.eval()
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(0))
    times = []
    try:
        with torch.no_grad():
            for index in range(repeats + 5):
                start = time.perf_counter()
                predict_every_task(model, image)
                if index >= 5:
                    times.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(threads)
    return 1000.0 * statistics.median(times)


def parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def paper_scale(task_sets: Mapping[str, dict[str, int]]) -> dict[str, dict[str, Any]]:
    """Row -> task set -> parameters and FLOPs at :data:`PAPER_SIZE` with the paper's backbone;
    the single-task row is the sum of one network per task."""
    table: dict[str, dict[str, Any]] = {}
    for row, (architecture, keywords) in PAPER_MODELS.items():
        table[row] = {}
        for name, tasks in task_sets.items():
            models = (
                [create_model(architecture, {task: c}, **keywords) for task, c in tasks.items()]
                if architecture == "single_task"
                else [create_model(architecture, tasks, **keywords)]
            )
            table[row][name] = {
                "parameters": sum(parameters(model) for model in models),
                "flops": sum(flops(model, PAPER_SIZE, "meta") for model in models),
            }
    for row, hrnet in HRNETS.items():
        table[row] = {}
        for name, tasks in task_sets.items():
            model = MTINet(tasks, HRNetBranches(hrnet))
            table[row][name] = {
                "parameters": parameters(model),
                "flops": flops(model, PAPER_SIZE, "meta"),
            }
    return table


def paper_markdown(paper: Mapping[str, Mapping[str, Mapping[str, int]]]) -> list[str]:
    """Rows of :func:`paper_scale` as a Markdown table: millions of parameters, GFLOPs."""
    sets = list(next(iter(paper.values())))
    header = ["row", *(f"{name} parameters" for name in sets), *(f"{name} GFLOPs" for name in sets)]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for row, by_set in paper.items():
        cells = [f"{by_set[s]['parameters'] / 1e6:.1f} M" for s in sets]
        cells += [f"{by_set[s]['flops'] / 1e9:.0f}" for s in sets]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Paper-scale parameters and FLOPs.")
    parser.add_argument("--report-dir", type=Path, default=Path(__file__).resolve().parent)
    add_provenance_options(parser, verify=False)
    args = parser.parse_args(argv)
    provenance = start_benchmark(__file__, args, argv, [args.report_dir])
    paper = paper_scale(PAPER_TASK_SETS)
    results = {"provenance": provenance, "size": PAPER_SIZE, "models": PAPER_MODELS}
    results |= {"hrnets": HRNETS, "task_sets": PAPER_TASK_SETS, "table": paper}
    text = "\n".join(
        [
            "# Paper-scale cost: parameters and FLOPs at 448×576",
            "",
            provenance_line(provenance).strip(),
            "",
            "Batch 1, each paper's backbone and output stride (README.md), random initial "
            "weights; FLOPs from `torch.utils.flop_counter`, 2 per multiply-add (halve them to "
            "compare with papers that count multiply-adds); predicting every task once "
            "(CompositeTasking: one pass per task). S-D: semseg (40 classes) + depth; S-D-N-E: "
            "+ normals + edges. The single-task row sums one network per task.",
            "",
            *paper_markdown(paper),
        ]
    )
    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / "paper_scale.json").write_text(
        json.dumps(results, indent=2, ensure_ascii=False) + "\n"
    )
    (args.report_dir / "paper_scale.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
