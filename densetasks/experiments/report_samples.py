"""The sample pictures of a report: each run's latest ones, laid out as rows per image.

A run writes, per evaluation image ``k`` (:func:`densetasks.engine.logs.
write_prediction_images`), ``<k>_input.png`` and per task ``<k>_<task>_label.png``,
``<k>_<task>_pred.png`` and ``<k>_<task>_key.png`` (the key of the label and prediction
pair). :func:`copy_samples` copies a run's latest set next to the report and orders it as
people read it: one row per image, the input first, then every task in the run's order as a
label | prediction pair over its key. Pictures of runs written before the pairs had one key
(their keys drawn under each picture) are laid out the same way, without a key.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from densetasks.data.io import write_bytes
from densetasks.experiments.run_record import RunRecord

_NAME = re.compile(r"(?P<index>\d+)_(?:input|(?P<task>.+)_(?P<kind>label|pred|key))")
"""``<k>_input`` or ``<k>_<task>_<label|pred|key>`` (a task name may hold ``_``)."""
_FIELDS = {"label": "label", "pred": "prediction", "key": "key"}
"""File name part -> :class:`TaskPair` field."""


@dataclass(frozen=True)
class TaskPair:
    """One task's pictures of one image: its label, its prediction and their key (each
    ``None`` where the run wrote none)."""

    task: str
    label: Path | None = None
    prediction: Path | None = None
    key: Path | None = None


@dataclass(frozen=True)
class SampleRow:
    """One image: its input picture and a pair per task, in the run's task order."""

    index: int
    input: Path | None
    pairs: tuple[TaskPair, ...]


@dataclass(frozen=True)
class SampleSet:
    """A run's sample pictures: the evaluation step they are from, and one row per image."""

    step: int | None
    rows: tuple[SampleRow, ...]


def copy_samples(records: Sequence[RunRecord], samples_dir: Path) -> dict[str, SampleSet]:
    """Copy each run's latest sample pictures to ``samples_dir/<run>/``; run name -> the
    copies laid out (:func:`sample_rows`). Runs without pictures are left out."""
    sets: dict[str, SampleSet] = {}
    for record in records:
        if not record.sample_images:
            continue
        target = samples_dir / _safe_name(record.name)
        target.mkdir(parents=True, exist_ok=True)
        copies = [_copy(image, target / image.name) for image in record.sample_images]
        match = re.fullmatch(r"step_(\d+)", record.sample_images[0].parent.name)
        sets[record.name] = SampleSet(
            int(match.group(1)) if match else None, sample_rows(copies, record.tasks)
        )
    return sets


def _copy(source: Path, target: Path) -> Path:
    """Copy a file atomically (a full disk names ``target`` and leaves no half file)."""
    write_bytes(target, source.read_bytes())
    return target


def sample_rows(images: Sequence[Path], tasks: Sequence[str]) -> tuple[SampleRow, ...]:
    """The pictures named as a run names them, as rows by image index; per row the tasks
    in ``tasks``' order, then any other task by name. Files named otherwise are left out."""
    inputs: dict[int, Path] = {}
    pairs: dict[int, dict[str, dict[str, Path]]] = {}
    for image in images:
        match = _NAME.fullmatch(image.stem)
        if match is None:
            continue
        index = int(match["index"])
        pairs.setdefault(index, {})
        if match["task"] is None:
            inputs[index] = image
        else:
            pairs[index].setdefault(match["task"], {})[match["kind"]] = image
    rows = []
    for index in sorted(pairs):
        found = pairs[index]
        order = [task for task in tasks if task in found]
        order += sorted(task for task in found if task not in tasks)
        row = tuple(
            TaskPair(task, **{_FIELDS[kind]: path for kind, path in found[task].items()})
            for task in order
        )
        rows.append(SampleRow(index, inputs.get(index), row))
    return tuple(rows)


def samples_caption(sample_set: SampleSet) -> str:
    """What the rows show, in words."""
    when = (
        f"the evaluation at step {sample_set.step}"
        if sample_set.step is not None
        else "the latest evaluation"
    )
    return (
        f"Validation images of {when}: the input, then per task the label and the "
        "prediction, painted in one colour code (its key under them: the classes present "
        "in either, one colour range over both)."
    )


def markdown_samples(sample_set: SampleSet, out_dir: Path) -> list[str]:
    """The caption and a Markdown table: one row per image, the input and then one cell per
    task (label and prediction, the key under them)."""
    tasks = list(dict.fromkeys(pair.task for row in sample_set.rows for pair in row.pairs))
    lines = [samples_caption(sample_set), ""]
    lines.append("| input | " + " | ".join(f"{task}: label, prediction" for task in tasks) + " |")
    lines.append("|---" * (len(tasks) + 1) + "|")
    for row in sample_set.rows:
        by_task = {pair.task: pair for pair in row.pairs}
        cells = [_markdown_image(row.input, f"input {row.index}", out_dir)]
        for task in tasks:
            pair = by_task.get(task, TaskPair(task))
            pictures = [
                _markdown_image(pair.label, f"{task} label", out_dir),
                _markdown_image(pair.prediction, f"{task} prediction", out_dir),
            ]
            key = _markdown_image(pair.key, f"{task} key", out_dir)
            cells.append(" ".join(p for p in pictures if p) + (f"<br>{key}" if key else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _markdown_image(path: Path | None, alt: str, out_dir: Path) -> str:
    return "" if path is None else f"![{alt}]({path.relative_to(out_dir).as_posix()})"


def _safe_name(name: str) -> str:
    return "".join(char if char.isalnum() or char in "-_." else "_" for char in name)
