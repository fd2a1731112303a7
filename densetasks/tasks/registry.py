"""The dense tasks by name. Adding a task: its file, its test, one line here."""

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


def task_label_kind(name: str) -> LabelKind:
    """The :class:`LabelKind` of registered task ``name`` (how its label is stored and
    transformed); an unknown name is a ConfigError listing the registered tasks."""
    return TASKS.get(name).label_kind


def adaptable_tasks() -> list[str]:
    """Registered tasks that define :meth:`Task.discriminator_input` (can take part in
    domain adaptation), for error messages that list them."""
    return [
        name
        for name in TASKS.names()
        if isinstance(factory := TASKS.get(name), type)
        and factory.discriminator_input is not Task.discriminator_input
    ]
