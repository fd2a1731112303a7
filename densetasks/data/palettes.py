"""Task Palette rules: which task a CompositeTasking model is asked for at each pixel.

A Task Palette is an int64 map ``[B, H, W]`` of task ids, the index of a task in the run's
ordered task list, with :data:`NO_TASK` (255) where no task is asked (Popovic et al., CVPR
2021, Sec. 3.1). A :class:`PaletteRule` builds one for a batch (Sec. 4 / supplementary C):

* ``S``: one task everywhere (a named one, or a random task per image);
* ``R1r``: a random mosaic of four rectangles around a random point;
* ``R2``, ``R3``: the task of each pixel by its semantic class (``palette_tables``);
* ``Rrnd``: a random task per pixel;
* ``file``: a palette drawn by hand, read from a PNG (task editing, Sec. 6.3).

Random rules draw only from the ``generator`` they are given (else torch's global one), on
the CPU, so a seeded generator gives the same palettes on every device. ``docs/palettes.md``
describes the rules, their options and the palette PNG format.
"""

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from densetasks._registry import Registry
from densetasks.data.io import read_png_array, write_png_array
from densetasks.data.palette_tables import PaletteTable, get_palette_table
from densetasks.data.sample import IGNORE_INDEX
from densetasks.errors import ConfigError, DataError

NO_TASK = IGNORE_INDEX

ALL_TASKS = 254
"""A palette value that asks for every task at the pixel: only a model with one output per
task can honour it (the multi-head baseline "trained on complete labels", Popovic et al.,
CVPR 2021, Sec. 5.2); a CompositeTasking network, with one output per pixel, refuses it."""
"""Palette value of a pixel where no task is asked (not supervised, not evaluated)."""

_PNG_FORMAT = "a Task Palette PNG is 8-bit single channel: task index, 255 = no task"


class PaletteRule(ABC):
    """Builds the Task Palette of a batch; ``name`` is the paper's name of the rule."""

    name: ClassVar[str]

    @abstractmethod
    def __call__(
        self,
        batch: Mapping[str, Any],
        tasks: Sequence[str],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """int64 ``[B, H, W]`` task ids (index into ``tasks``), ``NO_TASK`` where no task is
        asked; shaped like ``batch["image"]`` (``[B, 3, H, W]``) and on its device."""


PALETTE_RULES: Registry[PaletteRule] = Registry("palette rule")


def create_palette_rule(
    name: str, config_path: str = "palette rule", **options: Any
) -> PaletteRule:
    """The rule ``name`` with its options; a wrong name or option is a ConfigError naming
    ``config_path`` (the config section the options came from)."""
    return PALETTE_RULES.create(name, config_path=config_path, **options)


class SingleTaskRule(PaletteRule):
    """Rule S: one task at every pixel (Popovic et al., CVPR 2021, Sec. 4).

    ``task`` names it; with ``None`` each image gets a random task, changing with every
    request, as when training with S.
    """

    name = "S"

    def __init__(self, task: str | None = None) -> None:
        self.task = task

    def __call__(
        self,
        batch: Mapping[str, Any],
        tasks: Sequence[str],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        count, height, width = _batch_size(batch)
        if self.task is None:
            ids = torch.randint(_task_count(tasks), (count,), generator=generator)
        else:
            ids = torch.full((count,), _task_index(tasks, self.task), dtype=torch.int64)
        palette = ids.view(count, 1, 1).expand(count, height, width).contiguous()
        return palette.to(batch["image"].device)


class MosaicRule(PaletteRule):
    """Rule R1r: four rectangles around a random split point, a random task each.

    Per image the split point is ``c_x ~ U[W/4, 3W/4)``, ``c_y ~ U[H/4, 3H/4)`` in integers
    (Popovic et al., CVPR 2021, supplementary C, eq. 6; half-open as in the authors' code,
    bounds rounded up so the point stays in the middle half). Columns ``x < c_x`` are the
    left rectangles, rows ``y < c_y`` the top ones. With at least four tasks the four
    rectangles get four distinct random tasks, as in the authors' code; with fewer tasks
    each rectangle draws its task independently (so two may share one).
    """

    name = "R1r"

    def __call__(
        self,
        batch: Mapping[str, Any],
        tasks: Sequence[str],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        count, height, width = _batch_size(batch)
        rows = _split_points(height, count, generator)
        columns = _split_points(width, count, generator)
        bottom = torch.arange(height).view(1, height, 1) >= rows.view(count, 1, 1)
        right = torch.arange(width).view(1, 1, width) >= columns.view(count, 1, 1)
        quadrant = 2 * bottom.long() + right.long()
        region_tasks = _region_tasks(_task_count(tasks), count, generator)
        palette = region_tasks.gather(1, quadrant.view(count, -1)).view(count, height, width)
        return palette.to(batch["image"].device)


def _split_points(length: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """``count`` integers uniform in ``[length / 4, 3 · length / 4)`` (one at least)."""
    low = -(-length // 4)
    high = max(-(-3 * length // 4), low + 1)
    return torch.randint(low, high, (count,), generator=generator)


def _region_tasks(task_count: int, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """``[count, 4]`` tasks of the four rectangles: distinct when there are four tasks."""
    if task_count < 4:
        return torch.randint(task_count, (count, 4), generator=generator)
    return torch.stack([torch.randperm(task_count, generator=generator)[:4] for _ in range(count)])


class AllTasksRule(PaletteRule):
    """Every task everywhere (:data:`ALL_TASKS`): complete labels for a multi-output
    baseline, what "MHN trained under S" means in Popovic et al., CVPR 2021, Table 1."""

    name = "all"

    def __call__(
        self,
        batch: Mapping[str, Any],
        tasks: Sequence[str],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        return torch.full(_batch_size(batch), ALL_TASKS, device=batch["image"].device)


class RandomRule(PaletteRule):
    """Rule Rrnd: a task drawn uniformly and independently for every pixel, the hardest
    composition (Popovic et al., CVPR 2021, Sec. 4 and 6.5)."""

    name = "Rrnd"

    def __call__(
        self,
        batch: Mapping[str, Any],
        tasks: Sequence[str],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        size = _batch_size(batch)
        palette = torch.randint(_task_count(tasks), size, generator=generator)
        return palette.to(batch["image"].device)


class SemanticRule(PaletteRule):
    """Rules R2 / R3: each pixel's task from its ground-truth semantic class (Popovic et
    al., CVPR 2021, Sec. 4 / supplementary C), so that tasks are asked where they mean most.

    The class -> task table is a built-in one named by ``table``
    (:mod:`~densetasks.data.palette_tables`; default :attr:`default_table`, the paper's
    PASCAL-MT table) or ``classes = {task: [class id, ...]}``. The classes are read from the
    batch's ``semantic_task`` label; ignored pixels and classes the table does not list get
    ``NO_TASK``.
    """

    name = "R2"
    default_table: ClassVar[str] = "pascal_r2"

    def __init__(
        self,
        table: str | None = None,
        classes: Mapping[str, Sequence[int]] | None = None,
        semantic_task: str = "semseg",
    ) -> None:
        if table is not None and classes is not None:
            raise ConfigError(f"palette rule {self.name!r}: give either table or classes")
        if classes is None:
            self.table = get_palette_table(table or self.default_table)
        else:
            self.table = PaletteTable("classes", (), _class_lists(classes, self.name))
        self.semantic_task = semantic_task

    def __call__(
        self,
        batch: Mapping[str, Any],
        tasks: Sequence[str],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        labels = self._semantic_labels(batch)
        lookup = self._lookup(tasks).to(labels.device)
        known = (labels >= 0) & (labels < lookup.numel())
        palette = lookup[labels.clamp(0, lookup.numel() - 1)]
        return torch.where(known, palette, NO_TASK).to(batch["image"].device)

    def _semantic_labels(self, batch: Mapping[str, Any]) -> torch.Tensor:
        labels = batch.get(self.semantic_task)
        if labels is None:
            keys = ", ".join(str(key) for key in batch)
            raise DataError(
                f"palette rule {self.name!r} needs the semantic label {self.semantic_task!r} "
                f"in the batch (option semantic_task); the batch has: {keys}"
            )
        if tuple(labels.shape) != _batch_size(batch):
            raise DataError(
                f"palette rule {self.name!r}: label {self.semantic_task!r} has shape "
                f"{tuple(labels.shape)}, expected [B, H, W] = {list(_batch_size(batch))}"
            )
        return labels.long()

    def _lookup(self, tasks: Sequence[str]) -> torch.Tensor:
        """``[256]`` task id of every class id, ``NO_TASK`` where the table has none."""
        missing = sorted(set(self.table.classes) - set(tasks))
        if missing:
            raise ConfigError(
                f"palette rule {self.name!r} (table {self.table.name!r}) asks for task(s) "
                f"{missing} that the run does not have; its tasks: {', '.join(tasks)}"
            )
        lookup = torch.full((NO_TASK + 1,), NO_TASK, dtype=torch.int64)
        for class_id, task in self.table.task_of_class().items():
            lookup[class_id] = list(tasks).index(task)
        return lookup


class SemanticRuleR3(SemanticRule):
    """Rule R3: :class:`SemanticRule` with the paper's second PASCAL-MT table by default."""

    name = "R3"
    default_table = "pascal_r3"


def _class_lists(classes: Mapping[str, Sequence[int]], rule: str) -> dict[str, tuple[int, ...]]:
    """``classes`` from a config as ``{task: (class id, ...)}``, or a ConfigError."""
    if not isinstance(classes, Mapping):
        raise ConfigError(f"palette rule {rule!r}: classes must map task names to class ids")
    lists = {}
    for task, ids in classes.items():
        if isinstance(ids, str | bytes) or not isinstance(ids, Sequence):
            raise ConfigError(f"palette rule {rule!r}: classes[{task!r}] must be a list of ids")
        lists[task] = tuple(ids)
    return lists


class FileRule(PaletteRule):
    """A user's palette from a PNG file, the same for every image: a palette edited by hand
    (Popovic et al., CVPR 2021, Sec. 6.3).

    The PNG is read once (:func:`read_palette_png`) and resized nearest to each batch's size.
    """

    name = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.palette = read_palette_png(self.path)

    def __call__(
        self,
        batch: Mapping[str, Any],
        tasks: Sequence[str],
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        count, height, width = _batch_size(batch)
        _check_ids(self.palette, tasks, str(self.path))
        resized = F.interpolate(
            self.palette[None, None].float(), size=(height, width), mode="nearest-exact"
        )
        palette = resized[0, 0].long().expand(count, height, width).contiguous()
        return palette.to(batch["image"].device)


def read_palette_png(path: str | Path) -> torch.Tensor:
    """The Task Palette of a PNG as int64 ``[H, W]``: 8-bit grey, or palette mode ('P')
    whose indices are the task ids. Anything else is a one-line DataError naming the file."""
    try:
        array = read_png_array(Path(path))
    except DataError as error:
        raise DataError(f"{error} ({_PNG_FORMAT})") from None
    if array.max() > NO_TASK:
        raise DataError(f"{path}: values up to {array.max()} ({_PNG_FORMAT})")
    return torch.from_numpy(array)


def write_palette_png(path: str | Path, palette: torch.Tensor) -> None:
    """Write an integer ``[H, W]`` palette (task ids, 255 = no task) as an 8-bit grey PNG,
    atomically, so that :func:`read_palette_png` reads it back unchanged."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: a Task Palette is written as .png (lossless)")
    if palette.ndim != 2 or palette.dtype.is_floating_point or palette.dtype == torch.bool:
        raise ValueError(
            f"{path}: a Task Palette is an integer [H, W] map, "
            f"got {palette.dtype} of shape {tuple(palette.shape)}"
        )
    if palette.numel() and (palette.min() < 0 or palette.max() > NO_TASK):
        raise ValueError(f"{path}: Task Palette values must be in 0..{NO_TASK}")
    write_png_array(path, palette.detach().cpu().numpy().astype(np.uint8))


def check_palette(
    palette: torch.Tensor,
    tasks: Sequence[str],
    size: Sequence[int],
    source: str = "palette",
) -> None:
    """A one-line DataError when ``palette`` (``[..., H, W]``) is not of ``size = (H, W)``,
    is not integer or holds an id that is neither a task index nor ``NO_TASK``."""
    if tuple(palette.shape[-2:]) != tuple(size):
        have, want = tuple(palette.shape[-2:]), tuple(size)
        raise DataError(f"{source}: the palette is {_hw(have)} but the image is {_hw(want)}")
    _check_ids(palette, tasks, source)


def _check_ids(palette: torch.Tensor, tasks: Sequence[str], source: str) -> None:
    if palette.dtype.is_floating_point or palette.dtype == torch.bool:
        raise DataError(f"{source}: a palette holds integer task ids, got {palette.dtype}")
    unknown = sorted(set(palette.unique().tolist()) - set(range(len(tasks))) - {NO_TASK})
    if unknown:
        known = ", ".join(f"{index} = {task}" for index, task in enumerate(tasks))
        raise DataError(
            f"{source}: unknown task id(s) {unknown[:10]}; the run's tasks are {known} "
            f"and {NO_TASK} = no task"
        )


def _hw(size: Sequence[int]) -> str:
    return f"{size[0]}x{size[1]} (HxW)"


def _batch_size(batch: Mapping[str, Any]) -> tuple[int, int, int]:
    """``(B, H, W)`` of the batch's image ``[B, 3, H, W]``."""
    image = batch["image"]
    return image.shape[0], image.shape[-2], image.shape[-1]


def _task_count(tasks: Sequence[str]) -> int:
    if not tasks:
        raise ConfigError("a palette rule needs at least one task")
    if len(tasks) > NO_TASK:
        raise ConfigError(f"a Task Palette holds at most {NO_TASK} tasks, got {len(tasks)}")
    return len(tasks)


def _task_index(tasks: Sequence[str], task: str) -> int:
    if task not in tasks:
        raise ConfigError(f"palette rule 'S': task {task!r} is not one of {', '.join(tasks)}")
    return list(tasks).index(task)


for _rule in (
    SingleTaskRule,
    MosaicRule,
    SemanticRule,
    SemanticRuleR3,
    RandomRule,
    AllTasksRule,
    FileRule,
):
    PALETTE_RULES.register(_rule.name, _rule)
