"""One reference harness for every metric class, after torchmetrics' ``MetricTester``
(``tests/unittests/_helpers/testers.py``): a metric factory, a reference that computes the
dataset-level numbers from *all* predictions and targets concatenated, and cases (lists of
batches). :func:`check_metric` checks, in this order, each failure naming its check:

``states``
    every state is an int64 or float64 CPU tensor, before and after the updates.
``keys``
    ``compute()`` returns exactly the reference's keys (every key is compared) and
    ``higher_is_better`` has each of them.
``reference``
    ``update`` over the batches one by one, then ``compute()`` equals the reference on the
    concatenation; ``update`` leaves its inputs unchanged and ``compute`` its states.
``resplit``
    the images in another order and other batch sizes give the same numbers: the states are
    sums over images, so accumulation cannot depend on how the set is cut.
``reset``
    after ``reset()`` every state equals a fresh metric's.
``all_reduce``
    two ranks (the reset metric and a fresh one) each update their shard of the images
    (``shard_indices``, as evaluation shards a split), the real
    :func:`densetasks.engine.distributed.all_reduce_metric` sums their states through an
    in-process stand-in for the SUM all-reduce, and each rank's ``compute()`` equals the
    whole set's.

Predictions and targets are tensors ``[B, ...]`` or frozen dataclasses of such tensors
(``InstanceMap``, ``InstancePrediction``); every image of a case has the same size.
"""

import copy
import dataclasses
import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import reduce
from typing import Any
from unittest import mock

import torch

from densetasks.engine import distributed
from densetasks.engine.distributed import ProcessInfo, all_reduce_metric
from densetasks.engine.sampling import shard_indices
from densetasks.metrics.base import Metric

Batch = tuple[Any, Any]
"""``(pred, target)`` as a metric's ``update`` takes them."""

Reference = Callable[[Any, Any], dict[str, float]]


@dataclass(frozen=True)
class Case:
    """A named list of batches, scored as one evaluation set."""

    name: str
    batches: Sequence[Batch]


@dataclass(frozen=True)
class Tolerance:
    """How close the metric must be to the reference: ``rel`` relative, plus an absolute
    ``abs`` per key (default ``default_abs``) for numbers the metric computes from a
    quantised state (a histogram median) or from rounded inputs."""

    rel: float = 1e-9
    default_abs: float = 1e-9
    abs: dict[str, float] = dataclasses.field(default_factory=dict)


def split(name: str, pred: Any, target: Any, sizes: Sequence[int]) -> Case:
    """A case of ``pred`` and ``target`` (all images) cut into batches of ``sizes``."""
    return Case(
        name,
        [(take(pred, part), take(target, part)) for part in _chunks(range(size(pred)), sizes)],
    )


RESPLIT_SIZES = (3, 1, 2)
"""Batch sizes, cycled, of the ``resplit`` check."""

WORLD_SIZE = 2

SUMMATION_ORDER = Tolerance(rel=1e-12, default_abs=1e-12)
"""Between two runs of the metric that add the same numbers in another order."""


def check_metric(
    factory: Callable[[], Metric],
    reference: Reference,
    case: Case,
    tolerance: Tolerance = Tolerance(),
) -> dict[str, float]:
    """Run every check of the module docstring on ``case``; return the metric's numbers."""
    pred, target = (concatenate(list(parts)) for parts in zip(*case.batches, strict=True))
    expected = reference(pred, target)
    metric = factory()
    fresh = {name: state.clone() for name, state in metric.states().items()}
    _check_states(metric)

    untouched = copy.deepcopy(case.batches)
    for batch_pred, batch_target in case.batches:
        metric.update(batch_pred, batch_target)
    _check_unchanged(case.batches, untouched)
    _check_states(metric)
    states = {name: state.clone() for name, state in metric.states().items()}
    result = metric.compute()
    _check_keys(metric, result, expected)
    assert_close(result, expected, tolerance, "reference: batches one by one vs the reference")
    assert _states_equal(metric.states(), states), "reference: compute() changed a state"

    order = torch.randperm(size(pred), generator=torch.Generator().manual_seed(0)).tolist()
    resplit = factory()
    for indices in _chunks(order, RESPLIT_SIZES):
        resplit.update(take(pred, indices), take(target, indices))
    assert_close(resplit.compute(), result, SUMMATION_ORDER, "resplit")

    metric.reset()
    assert _states_equal(metric.states(), fresh), "reset: a state differs from a fresh metric's"
    ranks = [metric, factory()]
    for rank, shard_metric in enumerate(ranks):
        shard = shard_indices(size(pred), rank, WORLD_SIZE)
        for indices in _chunks(shard, (2,)):
            shard_metric.update(take(pred, indices), take(target, indices))
    all_reduce_in_threads(ranks)
    for rank, shard_metric in enumerate(ranks):
        check = f"all_reduce: rank {rank} after summing the states"
        assert_close(shard_metric.compute(), result, SUMMATION_ORDER, check)
    return result


def check_directions(
    higher_is_better: dict[str, bool],
    perfect: dict[str, float],
    others: Sequence[dict[str, float]],
) -> None:
    """``higher_is_better`` read off the numbers: for every key the perfect prediction is at
    least as good as every other case (up to 1e-9) and better than at least one of them."""
    for name, value in perfect.items():
        values = [other[name] for other in others if not math.isnan(other[name])]
        sign = 1.0 if higher_is_better[name] else -1.0
        worse = [sign * (value - other) for other in values]
        assert all(gap >= -1e-9 for gap in worse), (
            f"direction: {name} of the perfect prediction, {value}, is not the best of {values}"
            f" (higher_is_better={higher_is_better[name]})"
        )
        assert any(gap > 1e-6 for gap in worse), (
            f"direction: no case scores {name} worse than the perfect prediction"
        )


def _check_states(metric: Metric) -> None:
    for name, state in metric.states().items():
        assert state.dtype in (torch.int64, torch.float64), (
            f"states: {name!r} is {state.dtype}, not an int64 or float64 sum"
        )
        assert state.device.type == "cpu", f"states: {name!r} is on {state.device}"


def _check_keys(metric: Metric, result: dict[str, float], expected: dict[str, float]) -> None:
    assert set(result) == set(expected), (
        f"keys: compute() gives {sorted(result)}, the reference {sorted(expected)}"
    )
    missing = set(result) - set(metric.higher_is_better)
    assert not missing, f"keys: higher_is_better lacks {sorted(missing)}"


def _check_unchanged(batches: Sequence[Batch], copies: Sequence[Batch]) -> None:
    for index, (batch, original) in enumerate(zip(batches, copies, strict=True)):
        for part, before in zip(batch, original, strict=True):
            assert all(
                torch.equal(now, then)
                for now, then in zip(_tensors(part), _tensors(before), strict=True)
            ), f"reference: update() changed its input in batch {index}"


def assert_close(
    actual: dict[str, float], expected: dict[str, float], tolerance: Tolerance, check: str
) -> None:
    """Same keys and, per key, both NaN or within the tolerance; one message for all keys."""
    assert set(actual) == set(expected), f"{check}: keys {sorted(actual)} != {sorted(expected)}"
    wrong = []
    for name, value in expected.items():
        got = actual[name]
        if math.isnan(value) or math.isnan(got):
            if not (math.isnan(value) and math.isnan(got)):
                wrong.append(f"{name}: {got} != {value}")
            continue
        allowed = tolerance.abs.get(name, tolerance.default_abs) + tolerance.rel * abs(value)
        if abs(got - value) > allowed:
            wrong.append(f"{name}: {got} != {value} (|Δ| {abs(got - value):.3g} > {allowed:.3g})")
    assert not wrong, f"{check}: " + "; ".join(wrong)


class ThreadAllReduce:
    """What :func:`all_reduce_metric` needs of ``torch.distributed`` — ``get_backend`` and a
    SUM ``all_reduce`` — for ranks that run as threads of this process: each call waits
    until every rank has posted its tensor, then writes their sum into each."""

    def __init__(self, world_size: int) -> None:
        self.posted: list[torch.Tensor | None] = [None] * world_size
        self.barrier = threading.Barrier(world_size, timeout=30)
        self.local = threading.local()

    def get_backend(self) -> str:
        return "gloo"

    def all_reduce(self, tensor: torch.Tensor) -> None:
        self.posted[self.local.rank] = tensor.clone()
        self.barrier.wait()
        total = reduce(torch.add, self.posted)
        self.barrier.wait()  # everyone has read the posts before the next call writes
        tensor.copy_(total)


def all_reduce_in_threads(ranks: Sequence[Metric]) -> None:
    """Sum the states of ``ranks`` with the real :func:`all_reduce_metric`, one thread each."""
    collective = ThreadAllReduce(len(ranks))

    def run(rank: int) -> None:
        collective.local.rank = rank
        all_reduce_metric(ranks[rank], ProcessInfo(rank=rank, world_size=len(ranks)))

    with (
        mock.patch.object(distributed, "dist", collective),
        ThreadPoolExecutor(len(ranks)) as pool,
    ):
        for future in [pool.submit(run, rank) for rank in range(len(ranks))]:
            future.result()


def _states_equal(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> bool:
    return first.keys() == second.keys() and all(
        first[name].dtype == second[name].dtype and torch.equal(first[name], second[name])
        for name in first
    )


def _chunks(indices: Sequence[int], sizes: Sequence[int]) -> list[list[int]]:
    """``indices`` cut into consecutive pieces of ``sizes``, cycled."""
    chunks, start, turn = [], 0, 0
    while start < len(indices):
        step = sizes[turn % len(sizes)]
        chunks.append(list(indices[start : start + step]))
        start, turn = start + step, turn + 1
    return chunks


def _tensors(part: Any) -> list[torch.Tensor]:
    if isinstance(part, torch.Tensor):
        return [part]
    return [getattr(part, field.name) for field in dataclasses.fields(part)]


def concatenate(parts: list[Any]) -> Any:
    """Batches joined along the image axis: tensors, or dataclasses field by field."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    return type(first)(
        **{
            field.name: torch.cat([getattr(part, field.name) for part in parts])
            for field in dataclasses.fields(first)
        }
    )


def take(part: Any, indices: list[int]) -> Any:
    """The images ``indices`` of a batch (tensor or dataclass of tensors)."""
    if isinstance(part, torch.Tensor):
        return part[indices]
    return type(part)(
        **{field.name: getattr(part, field.name)[indices] for field in dataclasses.fields(part)}
    )


def size(part: Any) -> int:
    """Number of images in a batch."""
    return len(_tensors(part)[0])
