"""Latency of one ``densetasks serve`` prediction on a CompositeTasking run, per way of running
its evaluation plan (``benchmarks/serve_latency.md``).

Trains ``configs/popovic2021_synthetic.yaml`` for 2 steps (latency does not depend on the
weights), then times the run's ``Predictor`` on one RGB upload of ``--size`` px, the three
ways interleaved (each repeat runs all three in turn, so a change of machine load hits them
alike) and reports the medians of the wall time and of the process's CPU time
(``time.process_time``: on a shared machine a pass waits for a core, and the wall time measures
that wait; with one torch thread the CPU time is the work alone):

* ``full_plan``: the whole evaluation plan, as the server did before: one rule-S pass per task
  and one pass per evaluation rule (R1r, Rrnd), whose outputs the page never shows;
* ``rule_s``: the rule-S passes only, one forward each (what the server runs now);
* ``rule_s_stacked``: the rule-S passes as one forward on a batch of one copy per task.

Usage, from a clean checkout of one commit (``start_benchmark``; ``docs/benchmarks.md``):
``python benchmarks/serve_latency.py --work-dir /tmp/serve_latency [--threads 1]``; prints the
provenance record, then the timings as JSON. It only times, so it has no ``--verify``.
"""

import argparse
import io
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from densetasks.engine.config import load_config
from densetasks.engine.run import train
from densetasks.experiments.provenance import (
    add_provenance_options,
    provenance_line,
    start_benchmark,
)
from densetasks.serve import Limits, load_runs
from densetasks.serve.uploads import decode_image

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "popovic2021_synthetic.yaml"
SHORT_RUN = [
    "train.steps=2",
    "train.eval_every=2",
    "train.checkpoint_every=2",
    "data.options.n_train=8",
    "data.options.n_val=2",
    "data.options.n_test=2",
]
WAYS = {
    "full_plan": {"rules": True, "stack": False},
    "rule_s": {"rules": False, "stack": False},
    "rule_s_stacked": {"rules": False, "stack": True},
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", type=Path, required=True)
    parser.add_argument("--size", type=int, default=384, help="upload side in px (384)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    add_provenance_options(parser, verify=False)
    return parser.parse_args()


def upload(size: int) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(provenance_line(start_benchmark(__file__, args)))
    run_dir = args.work_dir / "ctn"
    if not (run_dir / "checkpoints" / "best.pt").is_file():
        train(load_config(CONFIG, SHORT_RUN), run_dir)
    (served,) = load_runs([run_dir]).values()
    image = decode_image(upload(args.size), Limits())
    passes = len(served.predictor.run.model.evaluation_plan())
    for options in WAYS.values():  # warm-up
        served.predictor(image, **options)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    cpu_times: dict[str, list[float]] = {way: [] for way in WAYS}
    for _ in range(args.repeats):
        for way, options in WAYS.items():
            started, cpu_started = time.perf_counter(), time.process_time()
            served.predictor(image, **options)
            times[way].append(time.perf_counter() - started)
            cpu_times[way].append(time.process_time() - cpu_started)
    result = {
        "torch_threads": torch.get_num_threads(),
        "load_average_before_after": [
            round(value, 2) for value in (*load_before, *os.getloadavg())
        ],
        "size": args.size,
        "tasks": list(served.predictor.tasks),
        "plan_passes": passes,
        "seconds": {way: [round(value, 3) for value in values] for way, values in times.items()},
        "median_s": {way: round(statistics.median(values), 3) for way, values in times.items()},
        "cpu_seconds": {
            way: [round(value, 3) for value in values] for way, values in cpu_times.items()
        },
        "median_cpu_s": {
            way: round(statistics.median(values), 3) for way, values in cpu_times.items()
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
