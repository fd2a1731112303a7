"""Two CPU processes (gloo), as torchrun would start them: sharded data, summed metrics."""

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from densetasks.engine import evaluate_run, train
from densetasks.engine.config import validate_config

CONFIG = {
    "seed": 1,
    "tasks": {"semseg": {}, "depth": {}},
    "data": {"options": {"n_train": 8, "n_val": 5, "n_test": 3, "size": [32, 32]}, "batch_size": 2},
    "model": {"architecture": "hard_sharing", "encoder": "tiny", "bottleneck": "none"},
    "balancer": {"name": "uncertainty"},
    "train": {
        "steps": 4,
        "optimizer": "adam",
        "lr": 1e-3,
        "eval_every": 2,
        "checkpoint_every": 2,
        "log_every": 1,
        "images_every": 0,
    },
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def worker(rank: int, world_size: int, port: int, run_dir: str) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    train(validate_config(CONFIG), run_dir)


@pytest.mark.slow  # two fresh interpreters import torch, timm and the package
def test_two_processes_train_and_their_summed_metrics_match_one_process(tmp_path):
    run_dir = tmp_path / "ddp"
    mp.spawn(worker, args=(2, free_port(), str(run_dir)), nprocs=2, join=True)

    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["type"] == "train"] == [1, 2, 3, 4]  # rank 0 only
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.pt", "last.pt"]
    for split in ("val", "test"):
        stored = json.loads((run_dir / f"metrics_{split}.json").read_text())
        # val has 5 samples: ranks see 3 and 2; the all-reduced sums equal one process's.
        again = evaluate_run(run_dir, split=split)
        for task, values in stored["metrics"].items():
            assert again["metrics"][task] == pytest.approx(values, rel=1e-5, abs=1e-6), split
