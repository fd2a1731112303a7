"""The dense tasks by name. Adding a task: its file, its test, one line here."""

from collections.abc import Mapping

from densetasks._registry import Registry
from densetasks.data.sample import LabelKind
from densetasks.tasks.base import Task
from densetasks.tasks.depth import Depth
from densetasks.tasks.edges import Edges
from densetasks.tasks.instance import InstanceOffsets
from densetasks.tasks.normals import SurfaceNormals
from densetasks.tasks.parts import HumanParts
from densetasks.tasks.saliency import Saliency
from densetasks.tasks.semseg import SemanticSegmentation
from densetasks.tasks.task_palette import TaskPalette

TASKS: Registry[Task] = Registry("task")
for _task_class in (
    SemanticSegmentation,
    Depth,
    SurfaceNormals,
    Edges,
    Saliency,
    HumanParts,
    InstanceOffsets,
    TaskPalette,
):
    TASKS.register(_task_class.name, _task_class)

TASK_NAMES: tuple[str, ...] = tuple(TASKS.names())


def create_task(name: str, **options) -> Task:
    """Build task ``name`` with its keyword options; a bad option is a ConfigError."""
    return TASKS.create(name, config_path=f"tasks.{name}", **options)


def label_kinds(extra: Mapping[str, LabelKind] | None = None) -> dict[str, LabelKind]:
    """The one table of label kinds: every registered task's ``Task.label_kind`` (a task
    registered anywhere, a user's file or a test, is included), extended by ``extra`` (a
    run's conditioning inputs, such as a Task Palette).

    The data package takes this table as an argument (transforms, collate, the folder
    format) and never imports the tasks: the tasks build on it, not the reverse.
    """
    return {**{name: TASKS.get(name).label_kind for name in TASKS}, **(extra or {})}


def adaptable_tasks() -> list[str]:
    """Registered tasks that define :meth:`Task.discriminator_input` (can take part in
    domain adaptation), for error messages that list them."""
    return [
        name
        for name in TASKS.names()
        if isinstance(factory := TASKS.get(name), type)
        and factory.discriminator_input is not Task.discriminator_input
    ]
