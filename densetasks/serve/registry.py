"""The runs a server shows, each loaded once through the engine's :class:`Predictor`.

A run is known to requests by an id made from its folder's name (``-2``, ``-3`` for repeated
names); a request names a run only by that id, so no request ever names a path. The run's
test images are offered when its dataset can be opened from here, and its ``report.html``
(in the run folder or its ``report/`` folder) is linked when there is one.

The model is loaded once and kept in memory; the test images and the report are read from
disk at each request. When those files go away or break while the server runs, the request
fails with :class:`RunUnavailable` (404 gone, 503 unreadable) naming the run, and nothing
else changes: the run still predicts uploads and the other runs answer as before.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from densetasks.data.dataset import DenseDataset
from densetasks.engine.build import open_dataset
from densetasks.engine.inference import Predictor
from densetasks.errors import DenseTasksError
from densetasks.serve.describe import describe_task

PALETTE = "palette"
SAMPLE_LIMIT = 24
"""Test images offered per run (the page lists them; more would only make the list long)."""
RULES = ("S", "R1r", "Rrnd")
"""Palette rules a request may name: they need nothing but the image's size. R2 / R3 need a
class map, and ``file`` a path, which no request may give."""


class RunUnavailable(Exception):
    """A file of a served run cannot be read now: ``status`` 404 when it is gone, else 503."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class ServedRun:
    """One loaded run: its predictor, test images (``None``: dataset not openable) and report."""

    id: str
    run_dir: Path
    predictor: Predictor
    samples: DenseDataset | None = None
    report: Path | None = None
    sample_count: int = field(init=False)

    def __post_init__(self) -> None:
        self.sample_count = min(len(self.samples), SAMPLE_LIMIT) if self.samples else 0

    @property
    def takes_palette(self) -> bool:
        """Whether the model is conditioned by a Task Palette (CompositeTasking)."""
        return any(c.name == PALETTE for c in self.predictor.run.model.condition_inputs)

    def sample_image(self, index: int) -> torch.Tensor:
        """Test image ``index`` (``0 <= index < sample_count``) as float ``[3, H, W]``."""
        if not 0 <= index < self.sample_count:
            raise IndexError(index)
        try:
            return self.samples.load(index)["image"]
        except (DenseTasksError, OSError) as error:
            raise RunUnavailable(
                503, f"run {self.id!r}: test image {index} cannot be read now ({error})"
            ) from None

    def read_report(self) -> bytes:
        """The run's ``report.html``: 404 when it has none or it was removed since loading."""
        if self.report is None:
            raise RunUnavailable(404, f"run {self.id!r} has no report.html")
        try:
            return self.report.read_bytes()
        except FileNotFoundError:
            raise RunUnavailable(
                404, f"run {self.id!r}: its report.html was removed after the server started"
            ) from None
        except OSError as error:
            raise RunUnavailable(
                503, f"run {self.id!r}: its report.html cannot be read now ({error.strerror})"
            ) from None

    def no_sample(self, index: int) -> str:
        """Why test image ``index`` is not offered."""
        if not self.sample_count:
            return f"run {self.id!r} offers no test images (its dataset does not open here)"
        return f"run {self.id!r} has no test image {index}; it offers 0..{self.sample_count - 1}"

    def describe(self) -> dict[str, Any]:
        """What ``GET /api/runs`` says about the run."""
        config = self.predictor.run.config
        return {
            "id": self.id,
            "name": self.run_dir.name,
            "architecture": config.model.architecture,
            "step": self.predictor.run.step,
            "tasks": [describe_task(task) for task in self.predictor.tasks.values()],
            "palette": self.takes_palette,
            "rules": list(RULES) if self.takes_palette else [],
            "samples": self.sample_count,
            "report": f"/runs/{self.id}/report.html" if self.report else None,
        }


def load_runs(
    run_dirs: Sequence[str | Path], device: str = "cpu", checkpoint: str = "best"
) -> dict[str, ServedRun]:
    """Every run of ``run_dirs`` loaded once, by id, in the order given."""
    runs: dict[str, ServedRun] = {}
    for run_dir in map(Path, run_dirs):
        run_id = _unique_id(run_dir.resolve().name or "run", runs)
        predictor = Predictor.from_run_dir(run_dir, device=device, checkpoint=checkpoint)
        runs[run_id] = ServedRun(
            id=run_id,
            run_dir=run_dir,
            predictor=predictor,
            samples=_test_images(predictor),
            report=_report(run_dir),
        )
    return runs


def _unique_id(name: str, taken: dict[str, Any]) -> str:
    run_id, number = name, 2
    while run_id in taken:
        run_id, number = f"{name}-{number}", number + 1
    return run_id


def _test_images(predictor: Predictor) -> DenseDataset | None:
    """The run's test split (else validation) when its dataset opens here and is not empty."""
    config = predictor.run.config
    for split in (config.data.test_split, config.data.val_split):
        if split is None:
            continue
        try:
            dataset = open_dataset(config, split)
        except (DenseTasksError, OSError):
            continue
        if len(dataset):
            return dataset
    return None


def _report(run_dir: Path) -> Path | None:
    for path in (run_dir / "report.html", run_dir / "report" / "report.html"):
        if path.is_file():
            return path
    return None
