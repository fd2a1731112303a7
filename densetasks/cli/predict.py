"""``densetasks predict``: run a trained network on image files and draw every task's output.

For each image ``<stem>.<ext>`` it writes ``<stem>_<task>.png`` per task (the task's own
visualisation of its decoded prediction) and ``<stem>_sheet.png``: the input and every task
side by side, each panel labelled, with the task's key under its panel (drawn by
:mod:`densetasks.pictures`): a legend of the classes present, a colour bar in metres with
ticks under depth, a sphere coloured as surfaces facing each way under normals. The
prediction itself is the one inference path, :class:`~densetasks.engine.inference.Predictor`; a
conditioned model takes its inputs from ``--condition NAME=PNG`` (e.g. a Task Palette of
task ids), otherwise its evaluation plan. A CompositeTasking run's Task Palette is a PNG
(``--palette``), drawn by a rule (``--rule``) or predicted by a palette run
(``--palette-run``, Popovic et al., CVPR 2021, Sec. 6.2).
"""

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from densetasks.cli.parsing import parse_size
from densetasks.data.io import DEFAULT_MAX_PIXELS, read_image, read_png_array, write_png_array
from densetasks.data.palettes import check_palette, read_palette_png, write_palette_png
from densetasks.engine.inference import Prediction, Predictor
from densetasks.errors import ConfigError
from densetasks.pictures import PictureKey, contact_sheet
from densetasks.tasks.base import Task
from densetasks.tasks.task_palette import TaskPalette


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict every task of a trained run on image files",
        description="Load a run's checkpoint and, for each image, write one PNG per task "
        "(<stem>_<task>.png) and a labelled side-by-side sheet (<stem>_sheet.png) to --out.",
    )
    parser.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a trained run directory")
    parser.add_argument("images", nargs="+", type=Path, metavar="IMAGE", help="image files")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PNG files")
    parser.add_argument(
        "--checkpoint",
        default="best",
        choices=["best", "last"],
        help="which checkpoint (default best)",
    )
    parser.add_argument(
        "--size",
        type=parse_size,
        default=None,
        help="resize every image to HxW before the run's own evaluation transform",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        choices=["auto", "cpu", "cuda"],
        help="where to run (default cpu)",
    )
    parser.add_argument(
        "--amp",
        default="none",
        choices=["none", "bf16", "fp16"],
        help="mixed precision on CUDA (default none)",
    )
    parser.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="NAME=PNG",
        help="a conditioning input of the model as a PNG of integer ids at the image's size, "
        "e.g. palette=palette.png (repeatable)",
    )
    palette = parser.add_mutually_exclusive_group()
    palette.add_argument(
        "--palette",
        type=Path,
        default=None,
        metavar="PNG",
        help="a Task Palette for a CompositeTasking run: 8-bit PNG at the image's size, task "
        "index in the run's task order per pixel, 255 = no task",
    )
    palette.add_argument(
        "--rule",
        default=None,
        metavar="RULE",
        help="draw the Task Palette of each image with a palette rule (S, R1r, Rrnd, ...)",
    )
    palette.add_argument(
        "--palette-run",
        type=Path,
        default=None,
        metavar="PALETTE_RUN",
        help="predict the Task Palette of each image with a trained run of the task "
        "task_palette over the same tasks in the same order (its --checkpoint too)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the palette rule (default 0)")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse larger images (default {DEFAULT_MAX_PIXELS:,} pixels)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    predictor = Predictor.from_run_dir(
        args.run_dir, device=args.device, checkpoint=args.checkpoint, amp=args.amp
    )
    conditions = read_conditions(args.condition)
    palette_predictor = None
    if args.palette_run is not None:
        palette_predictor = Predictor.from_run_dir(
            args.palette_run, device=args.device, checkpoint=args.checkpoint, amp=args.amp
        )
        check_palette_run(palette_predictor, predictor)
    for path in args.images:
        written = predict_image(
            predictor,
            path,
            args.out,
            args.size,
            conditions,
            args.palette,
            args.rule,
            args.seed,
            args.max_pixels,
            palette_predictor,
        )
        print(f"{path}: wrote {', '.join(file.name for file in written)}")
    return 0


def read_conditions(items: Sequence[str]) -> dict[str, torch.Tensor]:
    """``["palette=p.png"]`` -> ``{"palette": int64 [H, W]}`` read from the PNG files."""
    conditions = {}
    for item in items:
        name, separator, path = item.partition("=")
        if not separator or not name or not path:
            raise ConfigError(f"--condition {item!r} is not of the form NAME=PNG")
        conditions[name] = torch.from_numpy(read_png_array(Path(path)).astype(np.int64))
    return conditions


def check_palette_run(palette_predictor: Predictor, predictor: Predictor) -> None:
    """A ConfigError unless ``palette_predictor``'s run predicts a Task Palette
    (task ``task_palette``) over the tasks of ``predictor``'s run, in the same order: a task
    id must mean the same task to both."""
    palette_run, run = palette_predictor.run.run_dir, predictor.run.run_dir
    task = palette_predictor.tasks.get(TaskPalette.name)
    if not isinstance(task, TaskPalette):
        raise ConfigError(
            f"--palette-run {palette_run} has no task {TaskPalette.name!r} "
            f"(its tasks: {', '.join(palette_predictor.tasks)})"
        )
    if task.tasks != list(predictor.tasks):
        raise ConfigError(
            f"--palette-run {palette_run} paints the tasks {task.tasks} but {run} has the "
            f"tasks {list(predictor.tasks)}: the palette's task ids must mean the same tasks"
        )


def predicted_palette(palette_predictor: Predictor, image: torch.Tensor) -> torch.Tensor:
    """The Task Palette ``[H, W]`` that a palette run predicts for ``image`` (float
    ``[3, H, W]``): the most likely task at each pixel, seen through the palette run's own
    evaluation transform."""
    return palette_predictor(image).predictions[TaskPalette.name]


def predict_image(
    predictor: Predictor,
    path: Path,
    out_dir: Path,
    size: tuple[int, int] | None = None,
    conditions: dict[str, torch.Tensor] | None = None,
    palette: Path | None = None,
    rule: str | None = None,
    seed: int = 0,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    palette_predictor: Predictor | None = None,
) -> list[Path]:
    """Predict every task of a run on one image file; returns the files written.

    With a Task Palette (a ``palette`` PNG, drawn by ``rule`` with ``seed``, or predicted by
    ``palette_predictor``, see :func:`check_palette_run`) it also writes the palette
    (``<stem>_palette.png``, task ids) and the composite output drawn per task region
    (``<stem>_composite.png``). An unreadable image or a palette of another size
    raises :class:`~densetasks.errors.DataError` naming the file, and so does an image of
    more than ``max_pixels`` pixels.
    """
    image = read_image(path, max_pixels)
    conditions = dict(conditions or {})
    source = f"--condition palette (for {path})"
    if palette is not None:
        conditions["palette"] = read_palette_png(palette)
        source = f"{palette} (for {path})"
    elif rule is not None:
        conditions["palette"] = predictor.rule_palette(image, rule, seed)
        source = f"rule {rule} for {path}"
    elif palette_predictor is not None:
        conditions["palette"] = predicted_palette(palette_predictor, image)
        source = f"palette run {palette_predictor.run.run_dir} for {path}"
    if "palette" in conditions:
        check_palette(conditions["palette"], list(predictor.tasks), image.shape[-2:], source)
    prediction = predictor(image, conditions, size=size)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = [("input", _to_uint8(prediction.image))]
    written = []
    for name, picture in prediction.pictures(predictor.tasks).items():
        target = out_dir / f"{path.stem}_{name}.png"
        write_png_array(target, picture)
        written.append(target)
        panels.append((name, picture))
    composite = prediction.composite_picture(predictor.tasks)
    if composite is not None and "palette" in conditions:
        palette_file = out_dir / f"{path.stem}_palette.png"
        write_palette_png(palette_file, _resized_palette(conditions["palette"], composite.shape))
        target = out_dir / f"{path.stem}_composite.png"
        write_png_array(target, composite)
        written += [palette_file, target]
        panels.append(("composite", composite))
    sheet = out_dir / f"{path.stem}_sheet.png"
    keys = sheet_keys(predictor.tasks, prediction)
    write_png_array(sheet, contact_sheet(panels, keys))
    return [*written, sheet]


def _resized_palette(palette: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The palette at the prediction's size (``--size`` resizes image and palette alike)."""
    if tuple(palette.shape[-2:]) == tuple(shape[:2]):
        return palette
    resized = torch.nn.functional.interpolate(
        palette[None, None].float(), size=tuple(shape[:2]), mode="nearest"
    )
    return resized[0, 0].long()


def sheet_keys(tasks: Mapping[str, Task], prediction: Prediction) -> dict[str, PictureKey]:
    """Panel name -> its key (:meth:`~densetasks.tasks.base.Task.picture_key`, inside the
    task's mask): the classes present for a task with class names, a colour bar over the
    prediction's own range for depth, the normals sphere; tasks without a key get none."""
    keys = {
        name: task.picture_key(prediction.predictions[name], prediction.masks.get(name))
        for name, task in tasks.items()
    }
    return {name: key for name, key in keys.items() if key is not None}


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """Float ``[3, H, W]`` in [0, 1] -> ``uint8 [H, W, 3]``."""
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
