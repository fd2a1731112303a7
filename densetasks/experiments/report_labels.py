"""Short, unique run labels for the report's table, plots and sample headings.

Sweep runs are named by their overrides (``balancer.weights.semseg=10,balancer.weights.depth=1,
seed=0``), too long for a column header or a plot legend. :func:`short_labels` keeps what tells
the runs apart: ``key=value`` pairs shared by every run are dropped, dotted keys are cut to
their last part (``semseg=10,depth=1``) and what is still longer than ``MAX_LABEL`` characters
is cut with ``…``. The report keeps the full names: a footnote maps each shortened label back
(:func:`label_footnotes`), and the HTML page shows the full name as a tooltip.
"""

from collections.abc import Mapping, Sequence

MAX_LABEL = 28
"""Labels longer than this many characters are cut (a plot legend stays narrow)."""


def short_labels(names: Sequence[str]) -> dict[str, str]:
    """Full run name -> a short label, unique over ``names`` (in the order given)."""
    unique = list(dict.fromkeys(names))
    pairs = {name: _pairs(name) for name in unique}
    shared = _shared_pairs([found for found in pairs.values() if found is not None])
    labels: dict[str, str] = {}
    for name in unique:
        label = _shortened(name, pairs[name], shared)
        labels[name] = _deduplicated(label, set(labels.values()))
    return labels


def label_footnotes(labels: Mapping[str, str]) -> list[str]:
    """``"semseg=10,depth=1: balancer.weights.semseg=10,..."`` for every shortened label."""
    return [f"{label}: {name}" for name, label in labels.items() if label != name]


def _pairs(name: str) -> list[tuple[str, str]] | None:
    """``"a.b=1,c=2"`` -> ``[("a.b", "1"), ("c", "2")]``; ``None`` when not of that form."""
    pairs = []
    for item in name.split(","):
        key, separator, value = item.partition("=")
        if not separator or not key:
            return None
        pairs.append((key, value))
    return pairs


def _shared_pairs(all_pairs: Sequence[list[tuple[str, str]]]) -> set[tuple[str, str]]:
    """The pairs every one of several runs has (nothing when there is only one run)."""
    if len(all_pairs) < 2:
        return set()
    return set.intersection(*(set(pairs) for pairs in all_pairs))


def _shortened(name: str, pairs: list[tuple[str, str]] | None, shared: set[tuple[str, str]]) -> str:
    """The label of one run before making it unique."""
    if pairs is not None:
        kept = [pair for pair in pairs if pair not in shared] or pairs
        last_parts = [key.rsplit(".", 1)[-1] for key, _ in kept]
        keys = last_parts if len(set(last_parts)) == len(kept) else [key for key, _ in kept]
        name = ",".join(f"{key}={value}" for key, (_, value) in zip(keys, kept, strict=True))
    return name if len(name) <= MAX_LABEL else name[: MAX_LABEL - 1] + "…"


def _deduplicated(label: str, taken: set[str]) -> str:
    """``label``, or ``label #2``, ``label #3``, ... when an earlier run has it already."""
    candidate, count = label, 1
    while candidate in taken:
        count += 1
        candidate = f"{label} #{count}"
    return candidate
