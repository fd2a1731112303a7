"""What a run reports while it trains: progress, ``events.jsonl``, TensorBoard, pictures.

Progress is a tqdm bar when standard output is a terminal. Otherwise (CI, ``nohup``, a
cluster job's log file) a bar would fill the log with carriage-return frames, so a plain
line is printed every ``log_every`` steps instead (:func:`format_train_line`).

Only the main process (rank 0) creates a :class:`RunLog` that writes; the others get one
with ``enabled=False`` whose methods do nothing. ``events.jsonl`` holds one JSON object per
line (``{"type": "train", ...}`` every ``log_every`` steps, ``{"type": "eval", ...}`` per
evaluation); on resume, lines after the resumed step are dropped so the file reads as one
uninterrupted run.
"""

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from densetasks.pictures import joint_key
from densetasks.tasks.base import Task


class RunLog:
    """Progress (bar or plain lines) + JSONL events + TensorBoard scalars for one run."""

    def __init__(self, run_dir: Path, total_steps: int, start_step: int, enabled: bool) -> None:
        self.enabled = enabled
        self.events_path = run_dir / "events.jsonl"
        self._bar = None
        self._writer = None
        if not enabled:
            return
        truncate_events(self.events_path, start_step)
        self.total_steps = total_steps
        if sys.stdout.isatty():
            self._bar = tqdm(
                total=total_steps, initial=start_step, desc="train", dynamic_ncols=True
            )
        from torch.utils.tensorboard import SummaryWriter  # slow import, main process only

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

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._writer is not None:
            self._writer.close()

    def _append(self, event: dict[str, Any]) -> None:
        with self.events_path.open("a") as stream:
            stream.write(json.dumps(event) + "\n")


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


def truncate_events(path: Path, last_step: int) -> None:
    """Keep only the events up to ``last_step`` (those a resumed run will not repeat)."""
    if not path.is_file():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["step"] <= last_step
    ]
    path.write_text("".join(line + "\n" for line in kept))


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
        Image.fromarray(display_image(batch["image"][index])).save(folder / f"{index}_input.png")
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
        Image.fromarray(task.visualize_with(value, key)).save(f"{stem}_{kind}.png")
    if key is not None:
        Image.fromarray(key.draw(SAMPLE_KEY_WIDTH)).save(f"{stem}_key.png")
