"""Boundary metrics: hand-made cases (a doubled edge, a thinned plateau, ODS / OIS / AP), the
tolerance presets, thinning against scikit-image, matching against an augmenting-path
reference and a BSDS-style minimum-cost assignment, and the whole protocol against a plain
per-threshold reference on realistic edge maps (blurred, doubled, plateau, shifted,
cluttered)."""

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.optimize
import scipy.sparse
import torch

from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError
from densetasks.metrics.boundary import (
    TOLERANCE_PRESETS,
    BoundaryMetrics,
    average_precision,
    disk_footprint,
    image_counts,
    matching_size,
    resolve_tolerance,
    suppress_non_maxima,
    thin,
)

from .references import augmenting_path_matching, bsds_counts
from .scenes import REALISTIC_KINDS, realistic_prediction, segment_boundaries


def line_label(column: int, size: int = 128) -> torch.Tensor:
    label = torch.zeros(1, size, size, dtype=torch.uint8)
    label[0, :, column] = 1
    return label


@pytest.mark.parametrize(("shift", "expected"), [(0, 100.0), (1, 100.0), (3, 0.0)])
def test_ods_of_a_perfect_and_a_shifted_line(shift, expected):
    # 128 x 128: tolerance 0.0075 * 181 = 1.36 px, so 1 px is inside and 3 px outside.
    metric = BoundaryMetrics()
    metric.update(line_label(60 + shift).float(), line_label(60))
    result = metric.compute()
    assert result["odsF"] == pytest.approx(expected)
    assert result["oisF"] == pytest.approx(expected)
    assert result["ap"] == pytest.approx(expected)


def test_ignored_pixels_are_neither_predictions_nor_ground_truth():
    label = line_label(60)
    label[0, :, 100] = IGNORE_INDEX
    pred = line_label(60).float()
    pred[0, :, 100] = 1.0  # a false edge on ignored pixels does not count
    metric = BoundaryMetrics()
    metric.update(pred, label)
    assert metric.compute()["odsF"] == pytest.approx(100.0)
    assert int(metric.gt[0]) == 128 and int(metric.pred[0]) == 128


def test_nms_thins_a_blurred_ridge_to_its_crest():
    prob = torch.zeros(1, 16, 16, dtype=torch.float64)
    prob[0, :, 6], prob[0, :, 7], prob[0, :, 8] = 0.5, 1.0, 0.5
    prob[0, 4, 7] = 0.8  # a weaker stretch of the crest stays
    thin = suppress_non_maxima(prob)
    assert torch.equal(thin[0, :, 7], prob[0, :, 7])
    assert thin[0, :, [6, 8]].abs().sum() == 0
    assert torch.equal(suppress_non_maxima(prob.transpose(1, 2))[0, 7], prob[0, :, 7])
    diagonal = (
        torch.eye(16, dtype=torch.float64)[None]
        + 0.5
        * (
            torch.diag(torch.ones(15, dtype=torch.float64), 1)
            + torch.diag(torch.ones(15, dtype=torch.float64), -1)
        )[None]
    )
    assert torch.equal(suppress_non_maxima(diagonal), torch.eye(16, dtype=torch.float64)[None])


def test_disk_footprint():
    assert disk_footprint(0.5).tolist() == [[True]]
    assert disk_footprint(1.36).astype(int).tolist() == [[0, 1, 0], [1, 1, 1], [0, 1, 0]]
    assert disk_footprint(1.5).all()


def test_average_precision_of_a_step_curve():
    precision = np.array([0.5, 0.8, 1.0])
    recall = np.array([1.0, 0.6, 0.2])  # thresholds ascending
    assert average_precision(precision, recall) == pytest.approx(0.4 * 0.5 + 0.4 * 0.8 + 0.2)


def column_map(height: int, width: int, columns: dict[int, float]) -> torch.Tensor:
    """``[1, H, W]`` float map with full-height vertical lines of the given values."""
    prob = torch.zeros(1, height, width, dtype=torch.float64)
    for column, value in columns.items():
        prob[0, :, column] = value
    return prob


def test_a_doubled_edge_matches_only_one_of_its_two_lines():
    # 64 x 64, max_dist 0.03: radius 2.7 px covers both lines, but pixels match one-to-one.
    metric = BoundaryMetrics(thresholds=1, max_dist=0.03, nms=False)
    metric.update(column_map(64, 64, {10: 1.0, 12: 1.0}), line_label(10, 64))
    assert metric.matched_pred.tolist() == [64] and metric.pred.tolist() == [128]
    assert metric.matched_gt.tolist() == [64] and metric.gt.tolist() == [64]
    assert metric.compute()["odsF"] == pytest.approx(100 * 2 * 0.5 / 1.5)


def test_a_three_pixel_plateau_is_thinned_to_its_middle_line():
    plateau = torch.zeros(1, 12, 12, dtype=torch.float64)
    plateau[0, 2:10, 4:7] = 0.9
    thinned = thin(plateau.numpy() > 0.5)[0]
    expected = np.zeros((12, 12), dtype=bool)
    expected[3:9, 5] = True  # the ends erode by one pixel, as with bwmorph 'thin'
    assert np.array_equal(thinned, expected)
    label = torch.zeros(1, 12, 12, dtype=torch.uint8)
    label[0, 2:10, 5] = 1
    metric = BoundaryMetrics(thresholds=1, max_dist=0.1, nms=False)
    metric.update(plateau, label)
    assert [int(metric.matched_pred[0]), int(metric.pred[0]), int(metric.gt[0])] == [6, 6, 8]


def test_ods_ois_and_ap_by_hand():
    # 16 x 16, max_dist 0.1: radius 2.26 px; thresholds 0.25, 0.5, 0.75; ground truth column 4.
    label = line_label(4, 16)
    metric = BoundaryMetrics(thresholds=3, max_dist=0.1, nms=False)
    metric.update(column_map(16, 16, {4: 0.6, 10: 0.3}), label)  # a far false edge at 0.3
    metric.update(column_map(16, 16, {4: 0.8, 6: 0.8}), label)  # a doubled edge
    assert metric.matched_pred.tolist() == [32, 32, 16]
    assert metric.pred.tolist() == [64, 48, 32]
    assert metric.gt.tolist() == [32, 32, 32]
    assert metric.ois.tolist() == [32, 48, 32, 32]  # image 1 at 0.5, image 2 (ties) at 0.25
    result = metric.compute()
    assert result["odsF"] == pytest.approx(80.0)  # P = 2/3, R = 1 at 0.5
    assert result["oisF"] == pytest.approx(80.0)
    assert result["ap"] == pytest.approx(100 * (0.5 * 2 / 3 + 0.5 * 0.5))


def test_tolerance_presets():
    assert TOLERANCE_PRESETS == {"bsds": 0.0075, "pascal": 0.0075, "nyud": 0.011}
    assert resolve_tolerance("nyud") == 0.011 and resolve_tolerance(0.02) == 0.02
    assert BoundaryMetrics(max_dist="bsds").max_dist == 0.0075
    with pytest.raises(ConfigError, match="nyud"):
        BoundaryMetrics(max_dist="kitti")
    with pytest.raises(ConfigError, match="max_dist"):
        BoundaryMetrics(max_dist=-0.1)


def test_thinning_equals_scikit_image():
    skimage_morphology = pytest.importorskip("skimage.morphology")
    generator = np.random.default_rng(0)
    masks = generator.random((40, 24, 32)) > generator.uniform(0.05, 0.9, (40, 1, 1))
    masks[:4] = scipy.ndimage.binary_dilation(masks[:4], iterations=2)  # thick blobs
    expected = np.stack([skimage_morphology.thin(mask) for mask in masks])
    assert np.array_equal(thin(masks), expected)


def bsds_assignment_size(distances: np.ndarray, radius: float) -> int:
    """Matched pairs of BSDS ``correspondPixels``' cost model: a minimum-cost perfect
    assignment where each pixel may instead take its own outlier at cost 100 × radius."""
    rows, columns = distances.shape
    outlier = 100 * radius
    cost = np.full((rows + columns, rows + columns), 1e9)
    cost[:rows, :columns] = np.where(distances <= radius, distances, 1e9)
    cost[:rows, columns:][np.diag_indices(rows)] = outlier
    cost[rows:, :columns][np.diag_indices(columns)] = outlier
    cost[rows:, columns:] = 0.0
    row_index, column_index = scipy.optimize.linear_sum_assignment(cost)
    return int(((row_index < rows) & (column_index < columns)).sum())


def test_matching_size_against_augmenting_paths_and_the_bsds_cost_model():
    generator = np.random.default_rng(1)
    for _ in range(30):
        pred = np.argwhere(generator.random((10, 12)) > 0.75)
        gt = np.argwhere(generator.random((10, 12)) > 0.75)
        distances = np.hypot(*(pred[:, None, :] - gt[None, :, :]).transpose(2, 0, 1))
        radius = generator.uniform(0.5, 2.5)
        adjacency = distances <= radius
        graph = scipy.sparse.csr_matrix(adjacency.astype(np.int8))
        expected = augmenting_path_matching(
            [list(np.flatnonzero(row)) for row in adjacency], len(gt)
        )
        assert matching_size(graph) == expected == bsds_assignment_size(distances, radius)


@pytest.mark.parametrize("kind", REALISTIC_KINDS)
def test_realistic_maps_equal_the_plain_bsds_loop(kind):
    generator = np.random.default_rng(REALISTIC_KINDS.index(kind))
    gt = segment_boundaries(60, 80, 6, generator)
    label = gt.astype(np.uint8)
    label[:5, :10] = IGNORE_INDEX
    prob = suppress_non_maxima(torch.from_numpy(realistic_prediction(kind, gt, generator))[None])
    thresholds = np.linspace(0, 1, 27)[1:-1]
    radius = 0.02 * math.hypot(60, 80)  # 2 px
    expected = bsds_counts(prob[0].numpy(), label, thresholds, radius)
    assert image_counts(prob[0].numpy(), label, thresholds, radius).tolist() == expected.tolist()


def test_random_maps_equal_the_plain_bsds_loop_with_ignored_pixels():
    generator = np.random.default_rng(2)
    prob = generator.random((20, 24))
    label = (generator.random((20, 24)) > 0.8).astype(np.uint8)
    label[generator.random((20, 24)) > 0.9] = IGNORE_INDEX
    thresholds = np.linspace(0, 1, 21)[1:-1]
    expected = bsds_counts(prob, label, thresholds, 1.5)
    assert image_counts(prob, label, thresholds, 1.5).tolist() == expected.tolist()


def test_reset_and_shape_check():
    metric = BoundaryMetrics()
    metric.update(line_label(3, 32).float(), line_label(3, 32))
    metric.reset()
    assert int(metric.gt.sum()) == 0 and int(metric.ois.sum()) == 0
    with pytest.raises(ValueError, match=r"\[B, H, W\]"):
        metric.update(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.uint8))
