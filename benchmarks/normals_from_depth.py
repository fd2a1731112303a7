"""Normals from noisy synthetic depth against the exact normals (Hickson et al., network
fission, supplementary Sec. 2.2: in-paint, edge-aware local planes, floors are flat).

    python benchmarks/normals_from_depth.py [--n 16] [--size 480x640] [--seed 0]

Renders ``n`` synthetic scenes with ``depth_noise="kinect"``, computes normals from the noisy
depth with each method, and prints a Markdown table of the angle error (degrees) against the
generator's exact normals, pooled over the pixels that get a normal, on three pixel sets:
pixels with measured depth, pixels the sensor left empty (only methods that in-paint and
label the holes give a normal there), and all.
"""

import argparse
import time

import torch

from densetasks.data.geometry import NORMALS_PRESETS, normals_from_depth
from densetasks.data.synthetic import SYNTHETIC_CLASSES, SyntheticScenes
from densetasks.experiments.provenance import (
    add_provenance_options,
    provenance_line,
    start_benchmark,
)

FLAT = [SYNTHETIC_CLASSES.index(name) for name in ("floor", "wall", "ceiling")]
REAL = NORMALS_PRESETS["real"]
METHODS = {
    "raw (neighbour differences, the `synthetic` preset)": {},
    "raw + in-painting, holes labelled": {"inpaint": True, "label_holes": True},
    "smoothing 30 without in-painting": {"smoothing": 30},
    "**`real` preset** (in-paint + smoothing 30; holes unlabelled)": REAL,
    "`real`, holes labelled": {**REAL, "label_holes": True},
    "**`real` + floors are flat** (floor, wall, ceiling; 0.4 rad)": {**REAL, "flat": True},
    "`real` + floors are flat, holes labelled": {**REAL, "label_holes": True, "flat": True},
    "`real` + floors are flat, 0.04 rad kernel": {**REAL, "flat": True, "flat_angle": 0.04},
    "in-paint + smoothing 10 (the authors' synthetic window)": {"inpaint": True, "smoothing": 10},
}


def angle_errors(normals: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    cosine = (normals * exact).sum(0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cosine))


def summary(errors: list[torch.Tensor], total: int) -> str:
    pooled = torch.cat(errors)
    if not pooled.numel():
        return "– | – | – | 0.0 %"
    within = (pooled < 11.25).float().mean() * 100
    coverage = pooled.numel() / total * 100
    return f"{pooled.mean():.1f} | {pooled.median():.1f} | {within:.1f} | {coverage:.1f} %"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--size", default="480x640")
    parser.add_argument("--seed", type=int, default=0)
    add_provenance_options(parser, verify=False)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(provenance_line(start_benchmark(__file__, args)))
    size = tuple(int(side) for side in args.size.split("x"))
    scenes = SyntheticScenes(
        args.n,
        size=size,
        seed=args.seed,
        tasks=["depth", "normals", "semseg"],
        depth_noise="kinect",
    )
    sets = ("measured", "sensor holes", "all")
    errors = {method: {name: [] for name in sets} for method in METHODS}
    totals = dict.fromkeys(sets, 0)
    seconds = dict.fromkeys(METHODS, 0.0)
    for index in range(len(scenes)):
        sample = scenes[index]
        measured = sample["depth"][0] > 0
        masks = {"measured": measured, "sensor holes": ~measured, "all": torch.ones_like(measured)}
        for name, mask in masks.items():
            totals[name] += int(mask.sum())
        for method, options in METHODS.items():
            options = dict(options)
            if options.pop("flat", False):
                options.update(semseg=sample["semseg"], flat_classes=FLAT)
            start = time.process_time()
            normals = normals_from_depth(sample["depth"], sample["meta"]["intrinsics"], **options)
            seconds[method] += time.process_time() - start
            error = angle_errors(normals, sample["normals"])
            has_normal = normals.norm(dim=0) > 0
            for name, mask in masks.items():
                errors[method][name].append(error[mask & has_normal])
    print(f"{args.n} scenes, {size[0]}x{size[1]}, seed {args.seed}, depth_noise=kinect\n")
    header = " | ".join(f"{name}: mean ° | median ° | % < 11.25° | coverage" for name in sets)
    print(f"| method | {header} | CPU s / image |")
    print("|---" * (2 + 4 * len(sets)) + "|")
    for method in METHODS:
        cells = " | ".join(summary(errors[method][name], totals[name]) for name in sets)
        print(f"| {method} | {cells} | {seconds[method] / args.n:.2f} |")
    holes = totals["sensor holes"] / totals["all"] * 100
    print(f"\nSensor holes (depth 0 after the noise model): {holes:.1f} % of pixels.")


if __name__ == "__main__":
    main()
