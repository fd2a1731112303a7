"""Engine overhead: ``engine.loop.train_step`` vs a hand-written PyTorch step, same model/batch.

Both sides train the same architecture on the same pre-collated batch (data loading is
excluded: it is identical work for both). The engine step adds the balancer, the NaN check
(one synchronisation), the schedule and the grad-scaler calls. Rounds of both alternate so
that drifting machine load hits both alike; the medians are compared.

    python benchmarks/engine_overhead.py --encoder resnet18 --size 64 --steps 30
"""

import argparse
import statistics
import time

import torch

from densetasks.balancers import create_balancer
from densetasks.engine.config import TrainConfig
from densetasks.engine.loop import StepParts, train_step
from densetasks.engine.optim import build_optimizer
from densetasks.experiments.provenance import (
    add_provenance_options,
    provenance_line,
    start_benchmark,
)
from densetasks.models import create_model
from densetasks.tasks.registry import create_task


def make_batch(batch_size: int, size: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(batch_size, 3, size, size, generator=generator),
        "semseg": torch.randint(0, 8, (batch_size, size, size), generator=generator),
        "depth": torch.rand(batch_size, 1, size, size, generator=generator) + 0.5,
    }


def build(encoder: str):
    tasks = {"semseg": create_task("semseg", num_classes=8), "depth": create_task("depth")}
    model = create_model("hard_sharing", {n: t.channels for n, t in tasks.items()}, encoder=encoder)
    config = TrainConfig(optimizer="sgd", lr=1e-3, nesterov=True, schedule="poly", steps=10**6)
    optimizer = build_optimizer(config, model.encoder_parameters(), model.decoder_parameters())
    return tasks, model, config, optimizer


def engine_step(encoder: str):
    tasks, model, config, optimizer = build(encoder)
    balancer = create_balancer("equal", list(tasks.values()))
    parts = StepParts.on_cpu(model, tasks, balancer, optimizer, config)
    counter = iter(range(10**9))
    return lambda batch: train_step(parts, batch, next(counter))


def plain_step(encoder: str):
    tasks, model, _, optimizer = build(encoder)

    def step(batch):
        model.train()
        outputs = model(batch["image"])
        loss = sum(task.loss(outputs[name], batch[name]) for name, task in tasks.items())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def seconds_per_step(step, batch, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        step(batch)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30, help="measured steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=5)
    add_provenance_options(parser, verify=False)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(provenance_line(start_benchmark(__file__, args)))
    batch = make_batch(args.batch, args.size)
    steps = {"plain": plain_step(args.encoder), "engine": engine_step(args.encoder)}
    for step in steps.values():
        seconds_per_step(step, batch, args.warmup)
    timings: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            timings[name].append(seconds_per_step(step, batch, args.steps))
    plain, engine = (statistics.median(timings[name]) for name in ("plain", "engine"))
    threads = torch.get_num_threads()
    print(f"encoder={args.encoder} size={args.size} batch={args.batch} threads={threads}")
    for name in steps:
        print(
            f"{name:>6}: median {statistics.median(timings[name]) * 1e3:.1f} ms/step "
            f"(rounds: {', '.join(f'{t * 1e3:.1f}' for t in timings[name])})"
        )
    print(f"overhead: {100 * (engine / plain - 1):+.1f} %")


if __name__ == "__main__":
    main()
