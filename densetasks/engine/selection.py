"""Which validation result is "best": the rule that picks ``best.pt``.

``mean_relative`` (the default): the mean over tasks of the sign-corrected relative change of
each task's primary metric against the run's first evaluation,
``1/T Σ_t (−1)^{g_t} (m_t − b_t) / |b_t|`` with ``g_t = 1`` when lower is better — the Δm of
Lopes et al., WACV 2023 (Sec. 4) with the first evaluation as the reference, so tasks on
different scales count alike. ``"<task>.<metric>"``: that one number, negated when lower is
better. Higher scores are better in both cases. Only validation results are ever scored.
"""

from densetasks.errors import ConfigError

Metrics = dict[str, dict[str, float]]


def primary_values(metrics: Metrics, primary: dict[str, str]) -> dict[str, float]:
    """``{task: value of its primary metric}``."""
    return {task: metrics[task][name] for task, name in primary.items()}


def selection_score(
    criterion: str,
    metrics: Metrics,
    higher_is_better: dict[str, dict[str, bool]],
    primary: dict[str, str],
    baseline: dict[str, float],
) -> float:
    """The score of one validation result under ``criterion`` (higher is better)."""
    if criterion == "mean_relative":
        changes = []
        for task, name in primary.items():
            value, reference = metrics[task][name], baseline[task]
            sign = 1.0 if higher_is_better[task][name] else -1.0
            changes.append(sign * (value - reference) / max(abs(reference), 1e-12))
        return sum(changes) / len(changes)
    task, name = criterion.split(".")
    if task not in metrics or name not in metrics[task]:
        known = sorted(f"{t}.{m}" for t, values in metrics.items() for m in values)
        raise ConfigError(f"eval.best {criterion!r} is not a computed metric; known: {known}")
    sign = 1.0 if higher_is_better[task][name] else -1.0
    return sign * metrics[task][name]


def best_reason(criterion: str, score: float, metrics: Metrics, first: bool) -> str:
    """Why a validation result is the new best, for the run log: the relative change the
    score is (``mean_relative``; the ``first`` evaluation is its reference, so its score is 0
    by definition and says nothing), or the chosen metric's value."""
    if criterion != "mean_relative":
        task, name = criterion.split(".")
        return f"{criterion} {metrics[task][name]:.4g}"
    if first:
        return "the first evaluation: the reference later ones are scored against"
    return f"primary metrics {100 * score:+.2f} % on average against the first evaluation"
