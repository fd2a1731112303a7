"""How fast each metric's ``update`` runs: images per second on random 4 x 128 x 128 batches.

Edges are also timed on realistic maps at 240 x 320 (blurred one-pixel boundaries of wavy
cells plus weaker clutter and noise), where the BSDS protocol's thinning and matching work on
what a network predicts; uniform noise is their worst case.

Run: ``python benchmarks/metrics_speed.py [--batches 50] [--size 128] [--threads 1]``.
Inputs are made once per metric before timing; only ``update`` calls are timed.
Results for the record are in ``benchmarks/metrics_speed.md``.
"""

import argparse
import time
from collections.abc import Callable

import numpy as np
import scipy.ndimage
import torch
import torch.nn.functional as F

from densetasks.experiments.provenance import (
    add_provenance_options,
    provenance_line,
    start_benchmark,
)
from densetasks.metrics.base import Metric
from densetasks.metrics.boundary import BoundaryMetrics
from densetasks.metrics.depth import DepthMetrics
from densetasks.metrics.normals import NormalsMetrics
from densetasks.metrics.offsets import OffsetErrorMetric
from densetasks.metrics.saliency import SaliencyMetrics
from densetasks.metrics.segmentation import ConfusionMatrixMetric

Inputs = Callable[[int, int], tuple[torch.Tensor, torch.Tensor]]


def binary_maps(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    label = (torch.rand(batch, size, size) > 0.9).to(torch.uint8)
    return torch.rand(batch, size, size), label


EDGE_SHAPE = (240, 320)


def _boundaries(cells: np.ndarray) -> np.ndarray:
    """One-pixel boundaries of a cell map, one side only (BSDS's ``seg2bmap``)."""
    edge = np.zeros(cells.shape, dtype=bool)
    edge[:, :-1] |= cells[:, :-1] != cells[:, 1:]
    edge[:-1] |= cells[:-1] != cells[1:]
    return edge


def _wavy_cells(seeds: int, generator: np.random.Generator) -> np.ndarray:
    ys, xs = np.mgrid[: EDGE_SHAPE[0], : EDGE_SHAPE[1]].astype(float)
    ys += 6 * np.sin(xs / 17 + generator.uniform(0, 6))
    centres = generator.uniform((0, 0), EDGE_SHAPE, (seeds, 2))
    return ((ys[..., None] - centres[:, 0]) ** 2 + (xs[..., None] - centres[:, 1]) ** 2).argmin(-1)


def realistic_edge_maps(batch: int, _size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` EDGE_SHAPE edge maps: blurred boundaries, weaker clutter, 10 % noise."""
    generator = np.random.default_rng(int(torch.randint(2**31, ())))
    probs, labels = [], []
    for _ in range(batch):
        gt = _boundaries(_wavy_cells(14, generator))
        clutter = _boundaries(_wavy_cells(30, generator))
        prob = scipy.ndimage.gaussian_filter(0.8 * gt + 0.4 * clutter, 1.5)
        probs.append(np.clip(prob / prob.max() + 0.1 * generator.random(EDGE_SHAPE), 0, 1))
        labels.append(gt.astype(np.uint8))
    return torch.from_numpy(np.stack(probs)).float(), torch.from_numpy(np.stack(labels))


def class_maps(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.randint(0, 21, (batch, size, size)), torch.randint(0, 21, (batch, size, size))


def depth_maps(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return 1 + 9 * torch.rand(batch, 1, size, size), 1 + 9 * torch.rand(batch, 1, size, size)


def normal_maps(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        F.normalize(torch.randn(batch, 3, size, size), dim=1),
        F.normalize(torch.randn(batch, 3, size, size), dim=1),
    )


def offset_maps(batch: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    return 10 * torch.randn(batch, 2, size, size), torch.randint(0, 20, (batch, size, size))


CASES: dict[str, tuple[Callable[[], Metric], Inputs]] = {
    "edges BoundaryMetrics (99 thr, NMS)": (BoundaryMetrics, binary_maps),
    "edges BoundaryMetrics (99 thr, no NMS)": (lambda: BoundaryMetrics(nms=False), binary_maps),
    "edges BoundaryMetrics (99 thr, NMS, realistic 240x320)": (
        BoundaryMetrics,
        realistic_edge_maps,
    ),
    "edges BoundaryMetrics (99 thr, no NMS, realistic 240x320)": (
        lambda: BoundaryMetrics(nms=False),
        realistic_edge_maps,
    ),
    "saliency SaliencyMetrics": (SaliencyMetrics, binary_maps),
    "instance OffsetErrorMetric": (OffsetErrorMetric, offset_maps),
    "semseg ConfusionMatrixMetric (21)": (lambda: ConfusionMatrixMetric(21), class_maps),
    "depth DepthMetrics": (DepthMetrics, depth_maps),
    "normals NormalsMetrics": (NormalsMetrics, normal_maps),
}


def images_per_second(
    factory: Callable[[], Metric], inputs: Inputs, batches: int, batch: int, size: int
) -> float:
    data = [inputs(batch, size) for _ in range(batches)]
    metric = factory()
    metric.update(*data[0])  # warm-up outside the timing
    metric.reset()
    start = time.perf_counter()
    for pred, target in data:
        metric.update(pred, target)
    elapsed = time.perf_counter() - start
    metric.compute()
    return batches * batch / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    add_provenance_options(parser, verify=False)
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    print(provenance_line(start_benchmark(__file__, args)))
    print(
        f"| metric | images/s ({args.batches} x {args.batch}x{args.size}x{args.size}, "
        f"{args.threads} thread) |"
    )
    print("|---|---:|")
    for name, (factory, inputs) in CASES.items():
        rate = images_per_second(factory, inputs, args.batches, args.batch, args.size)
        print(f"| {name} | {rate:,.1f} |")


if __name__ == "__main__":
    main()
