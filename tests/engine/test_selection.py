import pytest

from densetasks.engine.selection import best_reason, primary_values, selection_score
from densetasks.errors import ConfigError

HIGHER = {"semseg": {"miou": True}, "depth": {"rmse": False, "abs_rel": False}}
PRIMARY = {"semseg": "miou", "depth": "rmse"}


def test_mean_relative_is_sign_corrected_delta_against_the_first_evaluation():
    first = {"semseg": {"miou": 0.40}, "depth": {"rmse": 2.0, "abs_rel": 0.3}}
    later = {"semseg": {"miou": 0.50}, "depth": {"rmse": 2.5, "abs_rel": 0.1}}
    baseline = primary_values(first, PRIMARY)
    assert selection_score("mean_relative", first, HIGHER, PRIMARY, baseline) == 0.0
    # semseg +25 %, depth rmse +25 % worse -> (0.25 - 0.25) / 2
    assert selection_score("mean_relative", later, HIGHER, PRIMARY, baseline) == pytest.approx(0.0)
    better = {"semseg": {"miou": 0.60}, "depth": {"rmse": 1.0, "abs_rel": 0.3}}
    assert selection_score("mean_relative", better, HIGHER, PRIMARY, baseline) == pytest.approx(0.5)


def test_named_metric_is_negated_when_lower_is_better():
    metrics = {"semseg": {"miou": 0.5}, "depth": {"rmse": 2.0, "abs_rel": 0.3}}
    assert selection_score("depth.abs_rel", metrics, HIGHER, PRIMARY, {}) == pytest.approx(-0.3)
    assert selection_score("semseg.miou", metrics, HIGHER, PRIMARY, {}) == pytest.approx(0.5)
    with pytest.raises(ConfigError, match="depth.delta1"):
        selection_score("depth.delta1", metrics, HIGHER, PRIMARY, {})


def test_the_best_reason_says_what_the_score_means():
    metrics = {"semseg": {"miou": 41.25}, "depth": {"rmse": 2.0, "abs_rel": 0.3}}
    assert best_reason("mean_relative", 0.0, metrics, first=True) == (
        "the first evaluation: the reference later ones are scored against"
    )
    assert best_reason("mean_relative", 0.0331, metrics, first=False) == (
        "primary metrics +3.31 % on average against the first evaluation"
    )
    assert best_reason("depth.rmse", -2.0, metrics, first=True) == "depth.rmse 2"
    assert best_reason("semseg.miou", 41.25, metrics, first=False) == "semseg.miou 41.25"
