"""Read what a finished run left on disk, for reports: config, metrics, events, pictures.

Only files are read (no checkpoint, no model), so reports work on any machine and tests
build run directories by hand. The layout is the engine's (``docs/engine.md``)::

    RUN_DIR/config.yaml             resolved config (``tasks`` mapping, ``model.architecture``)
    RUN_DIR/metrics_<split>.json    {"step", "split", "metrics", "higher_is_better", "primary",
                                     "units" (runs written before units: none)}
    RUN_DIR/events.jsonl            {"type": "train", ...} and {"type": "eval", ...} lines
    RUN_DIR/images/step_<n>/*.png   sample predictions of the evaluation at step n
"""

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from densetasks.errors import DataError

MetricTable = dict[str, dict[str, float]]


@dataclass(frozen=True)
class RunRecord:
    """The numbers and pictures of one run directory."""

    name: str
    path: Path
    tasks: list[str]
    architecture: str | None
    split: str
    step: int
    metrics: MetricTable
    higher_is_better: dict[str, dict[str, bool]]
    primary: dict[str, str]
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    train_events: list[dict[str, Any]] = field(default_factory=list)
    eval_events: list[dict[str, Any]] = field(default_factory=list)
    sample_images: list[Path] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def seed(self) -> int | None:
        """The config's top-level ``seed``; ``None`` when the run has no config to say it."""
        return self.config.get("seed")


def load_run_record(run_dir: Path, split: str, name: str | None = None) -> RunRecord:
    """Read ``run_dir``; raises :class:`DataError` when it has no ``metrics_<split>.json``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run directory {run_dir} does not exist")
    metrics_file = run_dir / f"metrics_{split}.json"
    if not metrics_file.is_file():
        raise DataError(
            f"{run_dir} has no {metrics_file.name}; "
            f"run `densetasks eval {run_dir} --split {split}` first"
        )
    stored = _read_json(metrics_file)
    for key in ("metrics", "higher_is_better", "primary"):
        if not isinstance(stored.get(key), dict):
            raise DataError(f"{metrics_file}: key {key!r} is missing or not a mapping")
    config = _read_config(run_dir / "config.yaml")
    tasks = list(config.get("tasks") or stored["metrics"])
    events = read_events(run_dir / "events.jsonl")
    return RunRecord(
        name=name or run_dir.name,
        path=run_dir,
        tasks=tasks,
        architecture=(config.get("model") or {}).get("architecture"),
        split=split,
        step=int(stored.get("step", 0)),
        metrics=stored["metrics"],
        higher_is_better=stored["higher_is_better"],
        primary=stored["primary"],
        units=stored.get("units") if isinstance(stored.get("units"), dict) else {},
        train_events=[event for event in events if event.get("type") == "train"],
        eval_events=[event for event in events if event.get("type") == "eval"],
        sample_images=latest_sample_images(run_dir / "images"),
        config=config,
    )


def read_events(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of an ``events.jsonl`` file, in order; none if it does not exist."""
    if not path.is_file():
        return []
    events = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}:{number}: not a JSON object ({error.msg})") from None
        if not isinstance(event, dict):
            raise DataError(f"{path}:{number}: expected a JSON object")
        events.append(event)
    return events


def latest_sample_images(images_dir: Path) -> list[Path]:
    """The PNG files of the highest-numbered ``images/step_<n>`` folder, sorted by name."""
    steps = []
    if images_dir.is_dir():
        for folder in images_dir.iterdir():
            match = re.fullmatch(r"step_(\d+)", folder.name)
            if match and folder.is_dir():
                steps.append((int(match.group(1)), folder))
    if not steps:
        return []
    return sorted(max(steps)[1].glob("*.png"))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON ({error.msg} at line {error.lineno})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: expected a JSON object")
    return value


def _read_config(path: Path) -> dict[str, Any]:
    """The resolved config as plain data; empty when the run has none."""
    if not path.is_file():
        return {}
    try:
        value = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        raise DataError(f"{path}: invalid YAML ({error})") from None
    if value is not None and not isinstance(value, dict):
        raise DataError(f"{path}: expected a mapping at the top level")
    return value or {}
