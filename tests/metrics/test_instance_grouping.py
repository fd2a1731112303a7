"""Grouping centroid votes into instances: hand-made blobs, ground-truth recovery on synthetic
scenes, agreement of the fast (grid) path with scikit-learn's OPTICS, options and errors."""

import pytest
import torch
from sklearn.metrics import adjusted_rand_score

from densetasks.data.derive import centroid_offsets
from densetasks.data.synthetic import SyntheticScenes
from densetasks.errors import ConfigError
from densetasks.metrics.instance_ap import InstanceAPMetric
from densetasks.metrics.instance_grouping import (
    GroupingConfig,
    group_instances,
    group_instances_batch,
)

OBJECT_CLASSES = [3, 4, 5, 6]  # box, sphere, cylinder, person in SYNTHETIC_CLASSES


def two_squares() -> tuple[torch.Tensor, torch.Tensor]:
    """Two 6×6 instances of class 1 on a 16×16 background of class 0."""
    ids = torch.zeros(1, 16, 16, dtype=torch.int64)
    ids[0, 1:7, 1:7] = 7
    ids[0, 9:15, 8:14] = 3
    return ids, (ids > 0).long()


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    pairs = torch.unique(torch.stack([a.flatten(), b.flatten()]), dim=1)
    return pairs.shape[1] == len(a.unique()) == len(b.unique())


@pytest.mark.parametrize("method", ["xi", "dbscan"])
@pytest.mark.parametrize("grid", [1.0, None])
def test_exact_offsets_of_two_squares_give_the_two_instances(method, grid):
    ids, semantic = two_squares()
    offsets, _ = centroid_offsets(ids)
    grouped = group_instances(offsets[0], semantic[0], [1], cluster_method=method, grid=grid)
    assert grouped.dtype == torch.int64
    assert sorted(grouped.unique().tolist()) == [0, 1, 2]
    assert same_partition(grouped, ids[0])


def test_only_pixels_of_instance_classes_get_ids_and_noise_joins_the_nearest_instance():
    ids, semantic = two_squares()
    offsets, _ = centroid_offsets(ids)
    semantic[0, 1, 1] = 2  # predicted as a non-instance class: id 0 whatever it votes
    offsets[0, :, 2, 2] = torch.tensor([40.0, 40.0])  # an outlier vote far from both
    grouped = group_instances(offsets[0], semantic[0], [1])
    assert grouped[1, 1] == 0
    # The outlier lands nearest to the centroid of the lower right square.
    assert grouped[2, 2] == grouped[10, 10] != grouped[3, 3]


def test_noisy_votes_split_by_density_not_by_connectivity():
    """One instance whose pixels are two far-apart pieces (an occluded object) stays one
    instance: its votes agree; two touching instances stay two."""
    ids = torch.zeros(1, 20, 30, dtype=torch.int64)
    ids[0, 2:8, 2:8] = 1
    ids[0, 12:18, 20:26] = 1
    ids[0, 2:8, 8:14] = 2
    offsets, _ = centroid_offsets(ids)
    generator = torch.Generator().manual_seed(0)
    noisy = offsets + 0.5 * torch.randn(offsets.shape, generator=generator)
    grouped = group_instances(noisy[0], (ids[0] > 0).long(), [1])
    assert same_partition(grouped, ids[0])


def test_ground_truth_offsets_recover_synthetic_instances():
    scenes = SyntheticScenes(8, size=(64, 64), seed=0, tasks=["semseg", "instance"])
    ids = torch.stack([scenes[i]["instance"] for i in range(len(scenes))])
    semantic = torch.stack([scenes[i]["semseg"] for i in range(len(scenes))])
    offsets, _ = centroid_offsets(ids)
    metric = InstanceAPMetric()
    metric.update(group_instances_batch(offsets, semantic, OBJECT_CLASSES), ids)
    assert metric.compute()["ap50"] >= 95.0


def test_grid_path_agrees_with_sklearn_optics_on_noisy_votes():
    scenes = SyntheticScenes(1, size=(32, 48), seed=3, tasks=["semseg", "instance"])
    ids, semantic = scenes[0]["instance"], scenes[0]["semseg"]
    offsets, _ = centroid_offsets(ids[None])
    noisy = offsets[0] + torch.randn(offsets[0].shape, generator=torch.Generator().manual_seed(1))
    fast = group_instances(noisy, semantic, OBJECT_CLASSES)
    naive = group_instances(noisy, semantic, OBJECT_CLASSES, grid=None)
    instance = ids > 0
    assert len(ids.unique()) > 2
    assert adjusted_rand_score(naive[instance], fast[instance]) >= 0.95
    assert adjusted_rand_score(ids[instance], fast[instance]) >= 0.95


def test_per_class_clustering_never_merges_classes():
    ids, semantic = two_squares()
    offsets, _ = centroid_offsets(ids)
    semantic[0, 1:7, 1:4] = 2  # the left half of one square predicted as another class
    merged = group_instances(offsets[0], semantic[0], [1, 2])
    separate = group_instances(offsets[0], semantic[0], [1, 2], per_class=True)
    assert merged[1, 1] == merged[1, 6]
    assert separate[1, 1] != separate[1, 6]
    assert len(separate.unique()) == 4


def test_subsampled_votes_still_find_the_instances_and_are_deterministic():
    ids, semantic = two_squares()
    offsets, _ = centroid_offsets(ids)
    first = group_instances(offsets[0], semantic[0], [1], max_votes=30)
    again = group_instances(offsets[0], semantic[0], [1], max_votes=30)
    assert same_partition(first, ids[0])
    assert torch.equal(first, again)


def test_fewer_votes_than_min_samples_make_one_instance_and_no_votes_none():
    semantic = torch.zeros(8, 8, dtype=torch.int64)
    semantic[2:4, 2:4] = 1
    offsets = torch.zeros(2, 8, 8)
    grouped = group_instances(offsets, semantic, [1])
    assert grouped.sum() == 4 and grouped.max() == 1
    assert not group_instances(offsets, semantic, [5]).any()


def test_bad_config_and_shapes_are_named():
    with pytest.raises(ConfigError, match="instance.grouping.min_samples"):
        GroupingConfig(min_samples=1)
    with pytest.raises(ConfigError, match="instance.grouping.cluster_method"):
        GroupingConfig(cluster_method="kmeans")
    with pytest.raises(ValueError, match=r"\[2, H, W\]"):
        group_instances(torch.zeros(3, 4, 4), torch.zeros(4, 4, dtype=torch.int64), [1])
    with pytest.raises(ValueError, match=r"\[B, 2, H, W\]"):
        group_instances_batch(torch.zeros(2, 4, 4), torch.zeros(1, 4, 4), [1])
