"""Balancers: how per-task losses become one scalar and one backward pass.

``create_balancer(name, tasks, **options)`` builds one by its registered name; see
``docs/balancers.md`` for each balancer's equation, reference and options.
"""

from collections.abc import Sequence
from typing import Any

from densetasks._registry import Registry
from densetasks.balancers.aggregators import (
    AGGREGATORS,
    JacobianAggregationBalancer,
    aggregation_balancer_factory,
)
from densetasks.balancers.base import Balancer
from densetasks.balancers.db_mtl import DBMTLBalancer
from densetasks.balancers.dwa import DWABalancer
from densetasks.balancers.famo import FAMOBalancer
from densetasks.balancers.fixed import FixedBalancer, equal_balancer
from densetasks.balancers.gls import GLSBalancer
from densetasks.balancers.gradnorm import GradNormBalancer
from densetasks.balancers.imtl_l import IMTLLBalancer
from densetasks.balancers.stch import STCHBalancer
from densetasks.balancers.uncertainty import UncertaintyBalancer
from densetasks.tasks.base import Task

BALANCERS: Registry[Balancer] = Registry("balancer")
BALANCERS.register("equal", equal_balancer)
BALANCERS.register("fixed", FixedBalancer)
BALANCERS.register("uncertainty", UncertaintyBalancer)
BALANCERS.register("dwa", DWABalancer)
BALANCERS.register("gradnorm", GradNormBalancer)
BALANCERS.register("gls", GLSBalancer)
BALANCERS.register("imtl_l", IMTLLBalancer)
BALANCERS.register("famo", FAMOBalancer)
BALANCERS.register("db_mtl", DBMTLBalancer)
BALANCERS.register("stch", STCHBalancer)
for _name in AGGREGATORS:
    BALANCERS.register(_name, aggregation_balancer_factory(_name))


def create_balancer(name: str, tasks: Sequence[Task], **options: Any) -> Balancer:
    """The balancer registered as ``name`` for ``tasks``; unknown options are a ConfigError."""
    return BALANCERS.create(name, tasks, config_path="balancer", **options)


__all__ = [
    "BALANCERS",
    "Balancer",
    "DBMTLBalancer",
    "DWABalancer",
    "FAMOBalancer",
    "FixedBalancer",
    "GLSBalancer",
    "GradNormBalancer",
    "IMTLLBalancer",
    "JacobianAggregationBalancer",
    "STCHBalancer",
    "UncertaintyBalancer",
    "create_balancer",
]
