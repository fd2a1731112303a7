"""What a run reports while it trains: progress, ``events.jsonl``, TensorBoard, pictures.

Progress is a tqdm bar when standard output is a terminal. Otherwise (CI, ``nohup``, a
cluster job's log file) a bar would fill the log with carriage-return frames, so a plain
line is printed every ``log_every`` steps instead (:func:`format_train_line`).

Only the main process (rank 0) creates a :class:`RunLog` that writes; the others get one
with ``enabled=False`` whose methods do nothing. ``events.jsonl`` holds one JSON object per
line (``{"type": "train", ...}`` every ``log_every`` steps, ``{"type": "eval", ...}`` per
evaluation). The file is only ever appended to: a checkpoint records its size
(:meth:`RunLog.events_bytes`) and a resumed run cuts what came after that (the steps it will
take again, a line torn by a kill) before it appends, so the file reads as one uninterrupted
run. TensorBoard's files are never rewritten either: a resumed run starts a new event file
whose ``purge_step`` tells TensorBoard to drop the earlier files' points from the resumed step
on; it is started in a later second than the newest file, because TensorBoard applies the files
in name order and a name begins with the second it was made (:func:`wait_to_sort_last`).
"""

import json
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from densetasks.data.io import no_room_error, write_png_array
from densetasks.pictures import joint_key
from densetasks.tasks.base import Task


class RunLog:
    """Progress (bar or plain lines) + JSONL events + TensorBoard scalars for one run."""

    def __init__(
        self,
        run_dir: Path,
        total_steps: int,
        start_step: int,
        enabled: bool,
        events_bytes: int | None = 0,
    ) -> None:
        """``events_bytes``: the size of ``events.jsonl`` recorded in the checkpoint the run
        resumes from (0 for a fresh run; ``None`` for a checkpoint without the record, then
        the events after ``start_step`` are cut); see :func:`cut_events`."""
        self.enabled = enabled
        self.events_path = run_dir / "events.jsonl"
        self._bar = None
        self._writer = None
        if not enabled:
            return
        cut_events(self.events_path, start_step, events_bytes)
        self.total_steps = total_steps
        if sys.stdout.isatty():
            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", dynamic_ncols=True
            )
        from torch.utils.tensorboard import SummaryWriter  # slow import, main process only

        wait_to_sort_last(run_dir / "tensorboard")
        self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step + 1)

    def advance(self, loss: float, images_per_s: float) -> None:
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(loss=f"{loss:.4f}", img_s=f"{images_per_s:.1f}")

    def train(
        self,
        step: int,
        losses: Mapping[str, float],
        total: float,
        weights: Mapping[str, float],
        learning_rates: Mapping[str, float],
        images_per_s: float,
    ) -> None:
        if not self.enabled:
            return
        self._append(
            {
                "type": "train",
                "step": step,
                "losses": dict(losses),
                "total": total,
                "weights": dict(weights),
                "lr": dict(learning_rates),
                "images_per_s": images_per_s,
            }
        )
        if self._bar is None:
            line = format_train_line(
                step, self.total_steps, losses, total, images_per_s, learning_rates
            )
            print(line, flush=True)
        scalars = {"loss/total": total, "speed/images_per_s": images_per_s}
        scalars.update({f"loss/{name}": value for name, value in losses.items()})
        scalars.update({f"weight/{name}": value for name, value in weights.items()})
        scalars.update({f"lr/{name}": value for name, value in learning_rates.items()})
        for tag, value in scalars.items():
            self._writer.add_scalar(tag, value, step)

    def evaluation(self, split: str, step: int, metrics: Mapping[str, Mapping[str, float]]) -> None:
        if not self.enabled:
            return
        self._append({"type": "eval", "split": split, "step": step, "metrics": metrics})
        for task, values in metrics.items():
            for name, value in values.items():
                self._writer.add_scalar(f"{split}/{task}/{name}", value, step)
        summary = ", ".join(
            f"{task}.{name}={value:.4g}"
            for task, values in metrics.items()
            for name, value in values.items()
        )
        self.message(f"step {step} {split}: {summary}")

    def message(self, text: str) -> None:
        """A line for people, printed above the progress bar (or plainly, without one)."""
        if self._bar is not None:
            tqdm.write(text)
        elif self.enabled:
            print(text, flush=True)

    def flush(self) -> None:
        """Put TensorBoard's buffered points on the disk (before a checkpoint: after a kill,
        the points up to the checkpoint are in the files and the resumed run adds the rest)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()

    def events_bytes(self) -> int:
        """The size of ``events.jsonl`` now, which a checkpoint records."""
        return self.events_path.stat().st_size if self.events_path.is_file() else 0

    def _append(self, event: dict[str, Any]) -> None:
        line = json.dumps(event) + "\n"
        try:
            with self.events_path.open("a") as stream:
                stream.write(line)
        except OSError as error:
            full = no_room_error(self.events_path, error, len(line))
            if full is None:
                raise
            raise full from None


def format_train_line(
    step: int,
    total_steps: int,
    losses: Mapping[str, float],
    total: float,
    images_per_s: float,
    learning_rates: Mapping[str, float],
) -> str:
    """``step 20/1000 semseg=0.5123 depth=0.3312 total=0.8435 img/s=52.1 lr=0.001``.

    One learning rate is shown as ``lr=``; parameter groups with different rates each as
    ``lr.<group>=``.
    """
    parts = [f"step {step}/{total_steps}"]
    parts += [f"{name}={value:.4f}" for name, value in losses.items()]
    parts += [f"total={total:.4f}", f"img/s={images_per_s:.1f}"]
    if len(set(learning_rates.values())) == 1:
        parts.append(f"lr={next(iter(learning_rates.values())):.3g}")
    else:
        parts += [f"lr.{name}={value:.3g}" for name, value in learning_rates.items()]
    return " ".join(parts)


def wait_to_sort_last(folder: Path) -> None:
    """Wait until a new TensorBoard event file in ``folder`` sorts after every file there.

    TensorBoard reads a folder's event files in name order, and a name is
    ``events.out.tfevents.<second>.<host>.<pid>.<n>``. A run resumed in the same second as the
    killed run it continues started would sort by process id, possibly first; the killed run's
    file (``purge_step=1``) would then drop every point the resumed run wrote. Waits at most
    about a second, and only when such a file is that recent.
    """
    seconds = [
        int(part)
        for path in folder.glob("events.out.tfevents.*")
        if (part := path.name.split(".")[3]).isdigit()
    ]
    while seconds and time.time() < max(seconds) + 1:
        time.sleep(0.05)


def cut_events(path: Path, last_step: int, size: int | None) -> None:
    """Drop the events after the first ``size`` bytes of ``path`` (the size a checkpoint
    recorded), or with ``size=None`` from the first line after ``last_step`` or the first
    torn line on. The file is cut in place: the lines kept are not rewritten."""
    if not path.is_file():
        return
    if size is None:
        size = _end_of_step(path, last_step)
    if size < path.stat().st_size:
        os.truncate(path, size)


def _end_of_step(path: Path, last_step: int) -> int:
    """The byte offset after the last whole line of an event up to ``last_step``."""
    offset = 0
    with path.open("rb") as stream:
        for line in stream:
            try:
                step = json.loads(line)["step"]
            except (ValueError, KeyError, TypeError):
                break
            if not line.endswith(b"\n") or step > last_step:
                break
            offset += len(line)
    return offset


def display_image(image: torch.Tensor) -> np.ndarray:
    """A normalised ``[3, H, W]`` input -> ``uint8 [H, W, 3]``, stretched to its own range."""
    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low).clamp_min(1e-8)
    return (scaled.permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)


SAMPLE_KEY_WIDTH = 256
"""Width in pixels of the key drawn for a label and prediction pair of the sample pictures:
the width at which ``densetasks report`` shows the pair (two pictures and the gap between
them), so the key's words are shown at their own size."""


def write_prediction_images(
    folder: Path,
    tasks: Mapping[str, Task],
    batch: Mapping[str, Any],
    predictions: Mapping[str, torch.Tensor],
    count: int,
) -> None:
    """``<k>_input.png`` and, per task, ``<k>_<task>_label.png``, ``<k>_<task>_pred.png``
    and ``<k>_<task>_key.png`` per sample.

    ``predictions`` are the tasks' evaluation inputs (``evaluation_inputs``), batched like
    ``batch``. The label and the prediction of a task are painted with one key
    (:func:`~densetasks.pictures.joint_key` of theirs: the classes present in either, one
    depth range over both), so that equal values have equal colours; the key is drawn once,
    ``SAMPLE_KEY_WIDTH`` wide, for the pair, so the samples ``densetasks report`` shows can
    be read without the run's configuration. A task without a key (or a sample without a
    label) writes no key (or no label) picture.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(min(count, batch["image"].shape[0])):
        write_png_array(folder / f"{index}_input.png", display_image(batch["image"][index]))
        for name, task in tasks.items():
            label = task.target(batch)
            pictures = {"pred": predictions[name][index].cpu()}
            if label is not None:
                pictures = {"label": label[index].cpu(), **pictures}
            _write_pair(folder / f"{index}_{name}", task, pictures)


def _write_pair(stem: Path, task: Task, pictures: Mapping[str, Any]) -> None:
    """``<stem>_<kind>.png`` per picture (``label``, ``pred``), painted with their joint
    key, and ``<stem>_key.png`` (that key) when the task has one."""
    key = None
    for value in pictures.values():
        key = joint_key(key, task.picture_key(value))
    for kind, value in pictures.items():
        write_png_array(Path(f"{stem}_{kind}.png"), task.visualize_with(value, key))
    if key is not None:
        write_png_array(Path(f"{stem}_key.png"), key.draw(SAMPLE_KEY_WIDTH))
