"""The Ray backend of sweeps: each planned run is one Ray task, on one machine or a cluster.

A sweep that outgrows one machine goes to an existing engine rather than a home-made pool.
Each run becomes a task ``@ray.remote(num_cpus=..., num_gpus=...)`` calling
:func:`densetasks.experiments.sweep.train_one`, the function the local backend calls, so
skipping finished runs, resuming from ``last.pt`` and reporting failures are
:func:`~densetasks.experiments.sweep.run_sweep`'s, whichever backend trains. Ray schedules
the tasks on whatever CPUs and GPUs the cluster has, and re-runs a task whose worker or node
died (it then resumes from its last checkpoint).

Workers write into the run directories themselves, so every node must see them at the same
path (a shared file system), and must have densetasks installed. Ray is an optional extra
(``pip install 'densetasks[ray]'``), imported only when this backend runs.
"""

import functools
from collections.abc import Callable, Sequence
from types import ModuleType

from densetasks.errors import ConfigError
from densetasks.experiments import sweep
from densetasks.experiments.sweep import Backend, PlannedRun


def ray_backend(
    address: str | None = None, cpus_per_run: float = 1.0, gpus_per_run: float = 0.0
) -> Backend:
    """A :data:`~densetasks.experiments.sweep.Backend` for ``run_sweep(..., backend=...)``.

    ``address``: the Ray cluster (``auto`` on a cluster node, ``ray://HEAD:10001``); ``None``
    lets ``ray.init`` choose (``RAY_ADDRESS``, a cluster started on this machine, else a new
    local instance). Each run reserves ``cpus_per_run`` CPUs (its torch threads) and
    ``gpus_per_run`` GPUs. Checked here, before anything trains.
    """
    if cpus_per_run <= 0 or gpus_per_run < 0:
        raise ConfigError(
            f"a Ray run needs CPUs > 0 and GPUs >= 0, got {cpus_per_run} and {gpus_per_run}"
        )
    _import_ray()
    return functools.partial(
        train_on_ray, address=address, cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run
    )


def train_on_ray(
    todo: Sequence[PlannedRun],
    log: Callable[[str], None],
    address: str | None = None,
    cpus_per_run: float = 1.0,
    gpus_per_run: float = 0.0,
) -> dict[str, Exception]:
    """Submit every run as a Ray task, then wait for each; returns ``{name: error}``.

    Uses the Ray connection already open in this process (as a test's ``ray.init``) or opens
    one to ``address`` and closes it afterwards. Run directories are made absolute, since
    workers do not share the driver's working directory.
    """
    ray = _import_ray()
    connect = not ray.is_initialized()
    if connect:
        ray.init(address=address)
    try:
        task = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run)(sweep.train_one)
        threads = max(1, int(cpus_per_run))
        waits = {}
        for run in todo:
            log(f"sweep: submitting {run.name} to Ray")
            ref = task.remote(run.config.to_dict(), str(run.run_dir.resolve()), threads)
            waits[run.name] = functools.partial(_result, ray, ref)
        return sweep.gather_outcomes(waits, log)
    finally:
        if connect:
            ray.shutdown()


def _result(ray: ModuleType, ref: object) -> object:
    """``ray.get(ref)``, raising a failed task's own exception rather than Ray's wrapper."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as error:
        if isinstance(error.cause, Exception):
            raise error.cause from None
        raise


def _import_ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "--backend ray needs Ray: pip install 'densetasks[ray]' (or pip install ray)"
        ) from None
    return ray
