"""Instances from centroid votes: OPTICS on ``c_n + x̂_n`` (Kendall et al., CVPR 2018, Sec. 4).

Every pixel whose *predicted* semantic class is an instance class casts the vote
``v_n = c_n + x̂_n`` (its coordinate plus its predicted offset to the instance centroid).
The votes are clustered with OPTICS (no fixed number of instances, no fixed size), every
such pixel is assigned to the nearest cluster centre (OPTICS noise points too) and every
other pixel gets id 0.

Speed: OPTICS in scikit-learn costs tens of seconds for a few thousand votes. With ``grid``
set, the votes are snapped to the mean vote of their ``grid``-pixel cell and OPTICS runs on
the occupied cells with the cell's vote count as its weight (:func:`_weighted_optics`): the
core distance counts votes, not cells, so ``min_samples`` keeps its meaning, and the
reachability plot is expanded back to one entry per vote before scikit-learn's own cluster
extraction. This is exactly OPTICS on the snapped votes (up to the order of ties), in time
that grows with the number of occupied cells instead of votes. See ``docs/instances.md``.

Why in ``metrics``: grouping is the evaluation step that turns predicted offsets into the
instance masks that :mod:`densetasks.metrics.instance_segmentation` scores. Dependencies run
one way, tasks -> metrics: the instance task imports this module (for its config and its
drawing), this module imports nothing from ``densetasks.tasks``.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.spatial import cKDTree
from sklearn.cluster import OPTICS, cluster_optics_dbscan, cluster_optics_xi

from densetasks.errors import ConfigError

NOISE = -1
"""Cluster label of a vote that OPTICS leaves out of every cluster."""

_SUBSAMPLE_SEED = 0
"""Seed of the vote subsample (``max_votes``): the same input always groups the same way."""


@dataclass(frozen=True)
class GroupingConfig:
    """How votes become instances; the config keys ``instance.grouping.*``.

    - ``min_samples``: votes within a neighbourhood for a core point (OPTICS), also the
      smallest cluster; an instance with fewer pixels is merged into its nearest neighbour.
    - ``max_eps``: the largest neighbourhood radius in pixels; votes farther apart than this
      are never linked, which also bounds the neighbour searches.
    - ``xi``: the relative drop in reachability that starts or ends a cluster (``"xi"``).
    - ``cluster_method``: ``"xi"`` (steep areas of the reachability plot) or ``"dbscan"``
      (every cluster of votes density-connected within ``max_eps``).
    - ``max_votes``: cluster a random subsample of at most this many votes (``min_samples``
      scaled by the sampled fraction); ``None`` clusters every vote.
    - ``grid``: cell size in pixels for snapping votes (the fast path); ``None`` runs
      scikit-learn's OPTICS on the votes themselves (slow, the reference).
    - ``per_class``: cluster the votes of each instance class separately, so that two classes never
      share an instance. Off by default, as in Kendall et al. (CVPR 2018): a pixel whose class is
      mispredicted still joins the instance its vote points to.
    """

    min_samples: int = 10
    max_eps: float = 6.0
    xi: float = 0.3
    cluster_method: Literal["xi", "dbscan"] = "xi"
    max_votes: int | None = None
    grid: float | None = 1.0
    per_class: bool = False

    def __post_init__(self) -> None:
        checks = {
            "min_samples": self.min_samples >= 2,
            "max_eps": self.max_eps > 0,
            "xi": 0 < self.xi < 1,
            "cluster_method": self.cluster_method in ("xi", "dbscan"),
            "max_votes": self.max_votes is None or self.max_votes >= 2,
            "grid": self.grid is None or self.grid > 0,
        }
        for key, valid in checks.items():
            if not valid:
                raise ConfigError(
                    f"instance.grouping.{key} is out of range: {getattr(self, key)!r}"
                )


_DEFAULTS = GroupingConfig()


def group_instances(
    offsets: torch.Tensor,
    semantic: torch.Tensor,
    instance_classes: Sequence[int],
    *,
    min_samples: int = _DEFAULTS.min_samples,
    max_eps: float = _DEFAULTS.max_eps,
    xi: float = _DEFAULTS.xi,
    cluster_method: Literal["xi", "dbscan"] = _DEFAULTS.cluster_method,
    max_votes: int | None = _DEFAULTS.max_votes,
    grid: float | None = _DEFAULTS.grid,
    per_class: bool = _DEFAULTS.per_class,
) -> torch.Tensor:
    """Instance ids ``int64 [H, W]`` (``1..K``, 0 elsewhere) from offsets ``[2, H, W]``.

    ``offsets`` are ``(dx, dy)`` in pixels as the instance task predicts them; ``semantic``
    is the predicted class map ``[H, W]``; only pixels of ``instance_classes`` vote and get
    an id. The keywords are the fields of :class:`GroupingConfig`.
    """
    config = GroupingConfig(
        min_samples=min_samples,
        max_eps=max_eps,
        xi=xi,
        cluster_method=cluster_method,
        max_votes=max_votes,
        grid=grid,
        per_class=per_class,
    )
    return _group_image(offsets, semantic, instance_classes, config)


def group_instances_batch(
    offsets: torch.Tensor,
    semantic: torch.Tensor,
    instance_classes: Sequence[int],
    config: GroupingConfig = _DEFAULTS,
) -> torch.Tensor:
    """:func:`group_instances` for every image of ``offsets [B, 2, H, W]`` and
    ``semantic [B, H, W]``; ids ``int64 [B, H, W]`` (each image numbered from 1)."""
    if offsets.ndim != 4 or semantic.ndim != 3 or semantic.shape[0] != offsets.shape[0]:
        raise ValueError(
            f"expected offsets [B, 2, H, W] and semantic [B, H, W], got "
            f"{tuple(offsets.shape)} and {tuple(semantic.shape)}"
        )
    images = [
        _group_image(image_offsets, image_semantic, instance_classes, config)
        for image_offsets, image_semantic in zip(offsets, semantic, strict=True)
    ]
    return torch.stack(images) if images else semantic.new_zeros(semantic.shape, dtype=torch.int64)


def _group_image(
    offsets: torch.Tensor,
    semantic: torch.Tensor,
    instance_classes: Sequence[int],
    config: GroupingConfig,
) -> torch.Tensor:
    height, width = semantic.shape[-2:]
    if semantic.ndim != 2 or offsets.shape != (2, height, width):
        raise ValueError(
            f"expected offsets [2, H, W] and semantic [H, W], got {tuple(offsets.shape)} "
            f"and {tuple(semantic.shape)}"
        )
    classes = semantic.detach().cpu().long().numpy()
    dx, dy = offsets.detach().cpu().double().numpy()
    ys, xs = np.mgrid[:height, :width]
    votes = np.stack([xs + dx, ys + dy], axis=-1)
    ids = np.zeros((height, width), dtype=np.int64)
    groups = [[c] for c in instance_classes] if config.per_class else [list(instance_classes)]
    for group in groups:
        voting = np.isin(classes, group)
        if voting.any():
            labels = _cluster_and_assign(votes[voting], config)
            ids[voting] = labels + 1 + ids.max()
    return torch.from_numpy(ids)


def _cluster_and_assign(votes: np.ndarray, config: GroupingConfig) -> np.ndarray:
    """One instance label ``0..K-1`` per vote ``[N, 2]``: OPTICS clusters, then every vote
    to the nearest cluster centre (mean of the cluster's votes). Without any cluster (fewer
    votes than ``min_samples``, say) all votes form one instance: the semantic map says an
    instance is there."""
    sample, min_samples = _subsample(len(votes), config)
    labels = _optics_labels(votes[sample], min_samples, config)
    clustered = labels != NOISE
    if not clustered.any():
        return np.zeros(len(votes), dtype=np.int64)
    members = labels[clustered]
    counts = np.bincount(members)
    centres = (
        np.stack(
            [np.bincount(members, weights=votes[sample][clustered, axis]) for axis in range(2)], 1
        )[counts > 0]
        / counts[counts > 0, None]
    )
    _, nearest = cKDTree(centres).query(votes)
    _, consecutive = np.unique(nearest, return_inverse=True)
    return consecutive.astype(np.int64)


def _subsample(count: int, config: GroupingConfig) -> tuple[np.ndarray, int]:
    """Indices of the votes to cluster and the ``min_samples`` to use on them (scaled by the
    sampled fraction, so the density a cluster needs stays the same)."""
    if config.max_votes is None or count <= config.max_votes:
        return np.arange(count), config.min_samples
    generator = np.random.default_rng(_SUBSAMPLE_SEED)
    sample = np.sort(generator.choice(count, size=config.max_votes, replace=False))
    scaled = round(config.min_samples * config.max_votes / count)
    return sample, max(2, scaled)


def _optics_labels(votes: np.ndarray, min_samples: int, config: GroupingConfig) -> np.ndarray:
    """OPTICS cluster labels of ``votes [N, 2]`` (``NOISE`` for noise)."""
    if len(votes) < min_samples:
        return np.full(len(votes), NOISE)
    # Identical votes give zero reachabilities; scikit-learn's xi ratios then divide by zero
    # (harmlessly: the ratio is only compared with 1 - xi).
    with np.errstate(divide="ignore", invalid="ignore"):
        return _optics_extract(votes, min_samples, config)


def _optics_extract(votes: np.ndarray, min_samples: int, config: GroupingConfig) -> np.ndarray:
    if config.grid is None:
        optics = OPTICS(
            min_samples=min_samples,
            max_eps=config.max_eps,
            xi=config.xi,
            cluster_method=config.cluster_method,
        )
        return optics.fit(votes).labels_
    cell = np.floor(votes / config.grid).astype(np.int64)
    _, vote_cell, weights = np.unique(cell, axis=0, return_inverse=True, return_counts=True)
    vote_cell = vote_cell.ravel()
    points = (
        np.stack([np.bincount(vote_cell, weights=votes[:, axis]) for axis in range(2)], 1)
        / weights[:, None]
    )
    graph = _weighted_optics(points, weights, min_samples, config.max_eps)
    reachability, predecessor, core, ordering = _expand_to_votes(
        graph, weights, vote_cell, config.grid
    )
    if config.cluster_method == "dbscan":
        return cluster_optics_dbscan(
            reachability=reachability,
            core_distances=core,
            ordering=ordering,
            eps=config.max_eps,
        )
    labels, _ = cluster_optics_xi(
        reachability=reachability,
        predecessor=predecessor,
        ordering=ordering,
        min_samples=min_samples,
        xi=config.xi,
    )
    return labels


@dataclass(frozen=True)
class _OpticsGraph:
    """OPTICS output over weighted points (scikit-learn's ``compute_optics_graph`` names)."""

    reachability: np.ndarray
    predecessor: np.ndarray
    core_distances: np.ndarray
    ordering: np.ndarray


def _weighted_optics(
    points: np.ndarray, weights: np.ndarray, min_samples: int, max_eps: float
) -> _OpticsGraph:
    """OPTICS (Ankerst et al. 1999) over ``points [M, 2]`` standing for ``weights`` votes each.

    The core distance of a point is the distance at which the votes of it and its nearest
    points first add up to ``min_samples`` (scikit-learn counts the point itself too); above
    ``max_eps`` it is infinite. The ordering loop is scikit-learn's ``compute_optics_graph``:
    take the unprocessed point of least reachability (the lowest index on ties), then lower
    its neighbours' reachability to ``max(core distance, distance)``.
    """
    count = len(points)
    tree = cKDTree(points)
    nearest = min(min_samples, count)
    distances, indices = tree.query(points, k=nearest)
    distances, indices = distances.reshape(count, nearest), indices.reshape(count, nearest)
    enough = np.cumsum(weights[indices], axis=1) >= min_samples
    core = np.where(enough.any(1), distances[np.arange(count), enough.argmax(1)], np.inf)
    core[core > max_eps] = np.inf
    reachability = np.full(count, np.inf)
    predecessor = np.full(count, -1)
    processed = np.zeros(count, dtype=bool)
    open_reachability = reachability.copy()
    ordering = np.empty(count, dtype=np.int64)
    neighbours = tree.query_ball_point(points, r=max_eps) if np.isfinite(max_eps) else None
    for position in range(count):
        point = int(np.argmin(open_reachability))
        if processed[point]:  # every open point is unreachable: the first one starts anew
            point = int(np.argmin(processed))
        processed[point] = True
        open_reachability[point] = np.inf
        ordering[position] = point
        if not np.isfinite(core[point]):
            continue
        near = np.arange(count) if neighbours is None else np.asarray(neighbours[point])
        near = near[~processed[near]]
        reach = np.maximum(np.hypot(*(points[near] - points[point]).T), core[point])
        better = reach < reachability[near]
        near, reach = near[better], reach[better]
        reachability[near] = reach
        open_reachability[near] = reach
        predecessor[near] = point
    return _OpticsGraph(reachability, predecessor, core, ordering)


def _expand_to_votes(
    graph: _OpticsGraph, weights: np.ndarray, vote_cell: np.ndarray, grid: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reachability plot of the snapped votes: each cell's votes, consecutive in the
    cell's place of the ordering. The first keeps the cell's reachability and predecessor;
    the others, at distance 0 from it, are reached at ``min(reachability, core distance)``
    (from the first vote when that is the core distance). Returns per-vote reachability,
    predecessor and core distance, and the vote ordering."""
    votes_by_cell = np.argsort(vote_cell, kind="stable")
    representative = votes_by_cell[np.concatenate([[0], np.cumsum(weights)[:-1]])]
    cell_predecessor = np.where(
        graph.predecessor >= 0, representative[graph.predecessor.clip(min=0)], -1
    )
    copy_reachability = np.minimum(graph.reachability, np.maximum(graph.core_distances, grid))
    reached_by_core = copy_reachability < graph.reachability
    copy_predecessor = np.where(reached_by_core, representative, cell_predecessor)
    is_first = np.zeros(len(vote_cell), dtype=bool)
    is_first[representative] = True
    cell_rank = np.empty(len(weights), dtype=np.int64)
    cell_rank[graph.ordering] = np.arange(len(weights))
    ordering = np.lexsort((~is_first, cell_rank[vote_cell]))
    reachability = np.where(is_first, graph.reachability[vote_cell], copy_reachability[vote_cell])
    predecessor = np.where(is_first, cell_predecessor[vote_cell], copy_predecessor[vote_cell])
    return reachability, predecessor, graph.core_distances[vote_cell], ordering


__all__ = ["GroupingConfig", "group_instances", "group_instances_batch"]
