"""Fast (grid-snapped) against naive (scikit-learn OPTICS on every vote) instance grouping.

Synthetic scenes at 128×256; the "predictions" are the ground-truth centroid offsets plus
Gaussian noise of ``--noise`` pixels (0 = the exact ground truth) and the ground-truth
semantics. Per condition it prints the median grouping time of each method, the speed-up,
the adjusted Rand index between the two over instance pixels (median and minimum over the
images) and each method's mask AP against the ground truth, as a Markdown table.

    python benchmarks/instance_grouping.py --images 5 --noise 0 0.5 1
"""

import argparse
import dataclasses
import statistics
import time

import torch
from sklearn.metrics import adjusted_rand_score

from densetasks.data.derive import centroid_offsets
from densetasks.data.synthetic import SYNTHETIC_CLASSES, SyntheticScenes
from densetasks.experiments.provenance import (
    add_provenance_options,
    provenance_line,
    start_benchmark,
)
from densetasks.metrics.instance_ap import InstanceAPMetric
from densetasks.metrics.instance_grouping import GroupingConfig, group_instances_batch

INSTANCE_CLASSES = [
    SYNTHETIC_CLASSES.index(name) for name in ("box", "sphere", "cylinder", "person")
]


def run_condition(scenes: SyntheticScenes, noise: float, config: GroupingConfig) -> dict:
    """Group every scene with the fast and the naive method; times, ARI and AP."""
    naive = dataclasses.replace(config, grid=None, max_votes=None)
    times = {"fast": [], "naive": []}
    metrics = {"fast": InstanceAPMetric(), "naive": InstanceAPMetric()}
    agreement = []
    for index in range(len(scenes)):
        sample = scenes[index]
        truth = sample["instance"][None]
        offsets, _ = centroid_offsets(truth)
        generator = torch.Generator().manual_seed(index)
        offsets = offsets + noise * torch.randn(offsets.shape, generator=generator)
        grouped = {}
        for method, method_config in (("fast", config), ("naive", naive)):
            start = time.perf_counter()
            grouped[method] = group_instances_batch(
                offsets, sample["semseg"][None], INSTANCE_CLASSES, method_config
            )
            times[method].append(time.perf_counter() - start)
            metrics[method].update(grouped[method], truth)
        instance = truth > 0
        naive_ids, fast_ids = grouped["naive"][instance], grouped["fast"][instance]
        agreement.append(adjusted_rand_score(naive_ids.numpy(), fast_ids.numpy()))
    return {
        "noise": noise,
        "time": {method: statistics.median(values) for method, values in times.items()},
        "ari_median": statistics.median(agreement),
        "ari_min": min(agreement),
        "ap": {method: metric.compute() for method, metric in metrics.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--noise", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--seed", type=int, default=1)
    add_provenance_options(parser, verify=False)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    print(provenance_line(start_benchmark(__file__, arguments)))
    scenes = SyntheticScenes(
        arguments.images, size=(128, 256), seed=arguments.seed, tasks=["semseg", "instance"]
    )
    config = GroupingConfig()
    print(f"config: {config}")
    print(f"{arguments.images} synthetic scenes 128×256, seed {arguments.seed}\n")
    print(
        "| noise σ (px) | fast time (s) | naive time (s) | speed-up | ARI median (min) "
        "| AP50 fast / naive | AP fast / naive |"
    )
    print("|---|---|---|---|---|---|---|")
    for noise in arguments.noise:
        row = run_condition(scenes, noise, config)
        fast, naive = row["time"]["fast"], row["time"]["naive"]
        ap = row["ap"]
        print(
            f"| {noise:g} | {fast:.3f} | {naive:.2f} | {naive / fast:.0f}× "
            f"| {row['ari_median']:.3f} ({row['ari_min']:.3f}) "
            f"| {ap['fast']['ap50']:.3f} / {ap['naive']['ap50']:.3f} "
            f"| {ap['fast']['ap']:.3f} / {ap['naive']['ap']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
