"""Stand-in tasks for balancer tests: a balancer only reads a task's name and likelihood."""

from dataclasses import dataclass

import pytest

from densetasks.tasks.base import Likelihood


@dataclass(frozen=True)
class StandInTask:
    name: str
    likelihood: Likelihood


@pytest.fixture
def two_tasks() -> list[StandInTask]:
    """A classification task ``seg`` and a regression task ``depth``."""
    return [
        StandInTask("seg", Likelihood.CLASSIFICATION),
        StandInTask("depth", Likelihood.REGRESSION),
    ]


@pytest.fixture
def make_task():
    """Build a stand-in task: ``make_task(name, Likelihood.X)``."""
    return StandInTask
