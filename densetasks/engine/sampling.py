"""Data order and augmentation randomness as a pure function of (seed, step).

Training reads one endless sequence of sample indices: epoch ``e`` is a permutation of the
dataset drawn from ``seed + e``. Step ``s`` consumes positions ``[s·B·W, (s+1)·B·W)`` of that
sequence (batch size ``B`` per process, ``W`` processes); rank ``r`` takes the ``r``-th block
of ``B``. Each sample also carries its own seed (derived from the run seed and its position),
with which the transform's random crop / flip / jitter run. Resuming at any step therefore
sees exactly the batches an uninterrupted run would, whatever the number of loader workers.
"""

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, position: int) -> int:
    """A 63-bit seed for the sample at ``position`` of the run's training sequence."""
    return (seed * 0x9E3779B97F4A7C15 + position) % (2**63)


class StepSampler(Sampler[tuple[int, int]]):
    """Yields ``(dataset index, sample seed)`` for steps ``start_step .. steps-1`` of one rank."""

    def __init__(
        self,
        dataset_size: int,
        batch_size: int,
        steps: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if dataset_size < 1:
            raise ValueError("the training dataset is empty")
        self.dataset_size = dataset_size
        self.batch_size = batch_size
        self.steps = steps
        self.seed = seed
        self.start_step = start_step
        self.rank = rank
        self.world_size = world_size

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step) * self.batch_size

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.dataset_size, generator=generator)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        global_batch = self.batch_size * self.world_size
        cached_epoch, order = -1, torch.empty(0)
        for step in range(self.start_step, self.steps):
            first = step * global_batch + self.rank * self.batch_size
            for position in range(first, first + self.batch_size):
                epoch, offset = divmod(position, self.dataset_size)
                if epoch != cached_epoch:
                    cached_epoch, order = epoch, self._epoch_order(epoch)
                yield int(order[offset]), sample_seed(self.seed, position)


class SeededSamples(Dataset):
    """Wraps a dataset so that ``dataset[(index, seed)]`` transforms with that seed.

    The global torch / NumPy / Python random states are seeded for the duration of the
    sample's load + transform and restored afterwards, so the caller's streams are untouched.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> Any:
        index, seed = key
        numpy_state, python_state = np.random.get_state(), random.getstate()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            np.random.seed(seed % 2**32)
            random.seed(seed)
            try:
                return self.dataset[index]
            finally:
                np.random.set_state(numpy_state)
                random.setstate(python_state)


def shard_indices(size: int, rank: int, world_size: int) -> list[int]:
    """Evaluation sharding: every sample exactly once over all ranks (no padding)."""
    return list(range(rank, size, world_size))
