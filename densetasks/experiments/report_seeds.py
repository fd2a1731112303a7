"""Several seeds per report row: grouping, mean ± sample std, and "within the seeds' spread".

Papers report a configuration as mean ± std over a few training runs that differ only by their
seed (Lopes, Vu & de Charette, WACV 2023, Table 1: three runs). A :class:`SeedGroup` is such a
row; :func:`seed_group` checks that its runs really are seeds of one config (same resolved
``config.yaml`` except the top-level ``seed``, every seed different) so that a report never
averages runs that were meant to differ.

Two rows are *within the seeds' spread* on a metric when ``|mean_a − mean_b| < std_a + std_b``:
their difference is no larger than the noise that the seeds alone produce. Only rows with at
least two seeds have a spread, so only they are compared.
"""

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from densetasks.errors import DataError
from densetasks.experiments.run_record import RunRecord

MetricTable = dict[str, dict[str, float]]


@dataclass(frozen=True)
class SeedGroup:
    """One row of the report: the runs of one config that differ only by their ``seed``."""

    name: str
    records: tuple[RunRecord, ...]

    @property
    def seeds(self) -> list[int | None]:
        """The seed of each run, in the order given."""
        return [record.seed for record in self.records]


def seed_group(name: str, records: Sequence[RunRecord]) -> SeedGroup:
    """Group ``records`` as the row ``name`` after checking that they are seeds of one config.

    A single run needs no check. Several runs raise :class:`DataError` when one has no
    ``seed`` in its ``config.yaml`` (or no config), two share a seed (the same run twice?) or two
    configs differ in any key but ``seed`` (every such key is named with both values).
    """
    if not records:
        raise ValueError(f"row {name!r} has no runs")
    if len(records) > 1:
        _check_seeds_of_one_config(name, records)
    return SeedGroup(name, tuple(records))


def _check_seeds_of_one_config(name: str, records: Sequence[RunRecord]) -> None:
    first = records[0]
    reference = _flatten(first.config)
    seen: dict[Any, RunRecord] = {}
    for record in records:
        if record.seed is None:
            raise DataError(
                f"{name}: {record.path} has no seed (config.yaml without one, or no "
                "config.yaml), so it cannot be told apart from the other seeds"
            )
        if record.seed in seen:
            raise DataError(
                f"{name}: {seen[record.seed].path} and {record.path} have the same seed "
                f"{record.seed} (the same run twice?)"
            )
        seen[record.seed] = record
        differences = _differences(reference, _flatten(record.config))
        if differences:
            raise DataError(
                f"{name}: {first.path} and {record.path} differ in more than their seed: "
                + "; ".join(differences)
            )


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _differences(reference: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """``key (a vs b)`` for every key but ``seed`` whose values differ (absent is ``None``)."""
    keys = [key for key in dict.fromkeys([*reference, *other]) if key != "seed"]
    return [
        f"{key} ({reference.get(key)!r} vs {other.get(key)!r})"
        for key in keys
        if reference.get(key) != other.get(key)
    ]


def name_by_seed(group: SeedGroup) -> SeedGroup:
    """The group with each run named ``<row> seed <n>`` (one run: just ``<row>``).

    Plots and sample folders are labelled by run name; these names stay unique across rows
    even when the seed folders of two rows share their names (``seed=0``).
    """
    if len(group.records) == 1:
        return replace(group, records=(replace(group.records[0], name=group.name),))
    renamed = tuple(
        replace(record, name=f"{group.name} seed {record.seed}") for record in group.records
    )
    return replace(group, records=renamed)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (n − 1); the std is ``None`` for a single value.

    NaN (a metric a run could not measure) propagates into both. Equal values give exactly
    their value and a std of exactly 0 (:mod:`statistics` sums exactly, no ``1e-16`` noise).
    """
    if not values:
        raise ValueError("mean_std needs at least one value")
    if any(math.isnan(value) for value in values):
        return math.nan, None if len(values) == 1 else math.nan
    if len(values) == 1:
        return values[0], None
    return statistics.mean(values), statistics.stdev(values)


def mean_std_tables(tables: Sequence[MetricTable]) -> tuple[MetricTable, MetricTable]:
    """Per ``task -> metric``: the mean and the sample std over the tables that have it.

    Tasks and metrics keep their order of first appearance. A metric that only one table
    has gets no std (``None``, dropped from the std table).
    """
    means: MetricTable = {}
    stds: MetricTable = {}
    for task in dict.fromkeys(task for table in tables for task in table):
        names = dict.fromkeys(name for table in tables for name in table.get(task, {}))
        for name in names:
            values = [table[task][name] for table in tables if name in table.get(task, {})]
            mean, std = mean_std(values)
            means.setdefault(task, {})[name] = mean
            if std is not None:
                stds.setdefault(task, {})[name] = std
    return means, stds


Spread = tuple[float | None, float | None]
"""A row's ``(mean, std)`` on one line of the table; ``std`` is ``None`` for a single run."""


def _comparable(spread: Spread) -> bool:
    mean, std = spread
    return mean is not None and std is not None and not (math.isnan(mean) or math.isnan(std))


def within_spread(a: Spread, b: Spread) -> bool:
    """``|mean_a − mean_b| ≤ std_a + std_b``, both rows having a spread (≥ 2 seeds).

    ``≤``, not ``<``: two rows with equal means and no spread at all are not told apart.
    """
    if not (_comparable(a) and _comparable(b)):
        return False
    return abs(a[0] - b[0]) <= a[1] + b[1]


def pairs_within_spread(names: Sequence[str], spreads: Sequence[Spread]) -> list[list[str]] | None:
    """Every pair of rows within each other's spread; ``None`` when fewer than two compare."""
    comparable = [index for index, spread in enumerate(spreads) if _comparable(spread)]
    if len(comparable) < 2:
        return None
    return [
        [names[i], names[j]]
        for position, i in enumerate(comparable)
        for j in comparable[position + 1 :]
        if within_spread(spreads[i], spreads[j])
    ]


def close_to_best(spreads: Sequence[Spread], higher_is_better: bool) -> set[int]:
    """Indices of the rows (not the best itself) within the spread of the best row's mean.

    The best row is the comparable row (≥ 2 seeds) with the best mean, the first on ties.
    These are the cells the table marks with ``≈``: not separable from the best by the seeds.
    """
    comparable = [index for index, spread in enumerate(spreads) if _comparable(spread)]
    if len(comparable) < 2:
        return set()
    sign = 1.0 if higher_is_better else -1.0
    best = max(comparable, key=lambda index: (sign * spreads[index][0], -index))
    return {
        index
        for index in comparable
        if index != best and within_spread(spreads[index], spreads[best])
    }
