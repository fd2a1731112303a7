"""Throughput of the synthetic scene generator (images/s) on one CPU core.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/synthetic_generator.py [--images 40]``.
Reports both wall-clock and process-CPU rates: on a shared machine the CPU rate is the
stable number (it does not count time the process spent waiting for a core).
"""

import argparse
import os
import time

import torch

from densetasks.data.synthetic import STYLES, SyntheticScenes
from densetasks.experiments.provenance import (
    add_provenance_options,
    provenance_line,
    start_benchmark,
)

SIZES = ((64, 64), (128, 128), (256, 256))


def measure(size: tuple[int, int], style: str, images: int) -> tuple[float, float]:
    """(wall, cpu) images per second for ``images`` full samples (all seven labels)."""
    dataset = SyntheticScenes(images + 1, size=size, style=style)
    dataset[images]  # warm-up: imports and first-call costs
    wall, cpu = time.perf_counter(), time.process_time()
    for index in range(images):
        dataset[index]
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=40)
    add_provenance_options(parser, verify=False)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(provenance_line(start_benchmark(__file__, args)))
    print(
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, {args.images} images each"
    )
    print("| size | style | images/s (wall) | images/s (CPU) |")
    print("|---|---|---|---|")
    for size in SIZES:
        for style in sorted(STYLES):
            wall, cpu = measure(size, style, args.images)
            print(f"| {size[0]}×{size[1]} | {style} | {wall:.1f} | {cpu:.1f} |")


if __name__ == "__main__":
    main()
