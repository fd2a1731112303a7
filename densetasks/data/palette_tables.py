"""Class -> task tables of the semantic palette rules R2 and R3, by name.

A semantic rule asks for a task at a pixel according to the pixel's semantic class
(Popovic et al., CVPR 2021, Sec. 4 / supplementary C). A :class:`PaletteTable` lists, for each
task, the class ids of one dataset where that task is asked; classes it does not list get no
task.

PASCAL-MT (``pascal_r2``, ``pascal_r3``): the class lists are the paper's (supplementary C),
mapped onto the 21 VOC classes of :mod:`densetasks.data.readers.pascal_mt` by name. The paper's
"edges everywhere else" is the class ``background``, as in the authors' code (``edges:
["background"]``): the 20 object classes and the background cover every labelled pixel, and
unlabelled (ignore) pixels get no task.

Synthetic scenes (``synthetic_r2``, ``synthetic_r3``): the paper has no table for them; ours
are a documented choice in the spirit of its groups (``docs/palettes.md``). Persons -> parts
and the room (floor, wall, ceiling) -> edges in both, as the paper keeps parts and edges in
place; boxes stand for household objects (furniture), spheres for the animals (rounded,
"organic"), cylinders for the vehicles. R2: boxes -> normals, spheres -> semseg, cylinders ->
saliency. R3, like the paper's, drops semseg, keeps normals on the household objects and
moves the vehicles to normals and the animals to saliency: boxes and cylinders -> normals,
spheres -> saliency.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from densetasks._registry import Registry
from densetasks.data.class_lists import PASCAL_SEMSEG_NAMES
from densetasks.data.sample import IGNORE_INDEX
from densetasks.data.synthetic.scene import SYNTHETIC_CLASSES
from densetasks.errors import ConfigError


@dataclass(frozen=True)
class PaletteTable:
    """Which semantic classes ask for which task: ``classes[task] = (class id, ...)``.

    ``class_names`` are the dataset's class names by id (for docs and error messages).
    """

    name: str
    class_names: tuple[str, ...]
    classes: Mapping[str, tuple[int, ...]]

    def __post_init__(self) -> None:
        """Class ids are ints in ``[0, 255)`` (255 is the ignore value) and each class
        asks for one task only, so a table is a function class -> task."""
        seen: dict[int, str] = {}
        for task, ids in self.classes.items():
            for class_id in ids:
                if isinstance(class_id, bool) or not isinstance(class_id, int):
                    raise ConfigError(
                        f"palette table {self.name!r}: class id {class_id!r} "
                        f"of task {task!r} is not an integer"
                    )
                if not 0 <= class_id < IGNORE_INDEX:
                    raise ConfigError(
                        f"palette table {self.name!r}: class id {class_id} of "
                        f"task {task!r} is outside [0, {IGNORE_INDEX})"
                    )
                if seen.setdefault(class_id, task) != task:
                    raise ConfigError(
                        f"palette table {self.name!r}: class {class_id} asks "
                        f"for two tasks, {seen[class_id]!r} and {task!r}"
                    )

    @classmethod
    def from_names(
        cls, name: str, class_names: Sequence[str], groups: Mapping[str, Sequence[str]]
    ) -> "PaletteTable":
        """A table from class *names* per task, resolved to ids through ``class_names``."""
        ids = {class_name: index for index, class_name in enumerate(class_names)}
        unknown = sorted({c for members in groups.values() for c in members} - set(ids))
        if unknown:
            raise ConfigError(f"palette table {name!r}: unknown class name(s) {unknown}")
        classes = {task: tuple(ids[c] for c in members) for task, members in groups.items()}
        return cls(name, tuple(class_names), classes)

    def task_of_class(self) -> dict[int, str]:
        """``{class id: task}`` for every class the table lists."""
        return {class_id: task for task, ids in self.classes.items() for class_id in ids}


PALETTE_TABLES: Registry[PaletteTable] = Registry("palette table")


def get_palette_table(name: str) -> PaletteTable:
    """The built-in table ``name``; an unknown name is a ConfigError listing the known ones."""
    return PALETTE_TABLES.get(name)()


def _register(table: PaletteTable) -> PaletteTable:
    PALETTE_TABLES.register(table.name, lambda: table)
    return table


_PASCAL_R2_GROUPS = {
    "normals": ("bottle", "chair", "diningtable", "pottedplant", "sofa", "tvmonitor"),
    "parts": ("person",),
    "semseg": ("bird", "horse", "cow", "cat", "dog", "sheep"),
    "saliency": ("aeroplane", "bicycle", "boat", "bus", "car", "motorbike", "train"),
    "edges": ("background",),
}
_PASCAL_R3_GROUPS = {
    "normals": ("chair", "diningtable", "sofa", "bicycle", "bus", "car", "motorbike", "train"),
    "parts": ("person",),
    "saliency": ("aeroplane", "boat", "bird", "horse", "cow", "cat", "dog", "sheep", "bottle",
                 "pottedplant", "tvmonitor"),
    "edges": ("background",),
}  # fmt: skip
_SYNTHETIC_R2_GROUPS = {
    "normals": ("box",),
    "parts": ("person",),
    "semseg": ("sphere",),
    "saliency": ("cylinder",),
    "edges": ("floor", "wall", "ceiling"),
}
_SYNTHETIC_R3_GROUPS = {
    "normals": ("box", "cylinder"),
    "parts": ("person",),
    "saliency": ("sphere",),
    "edges": ("floor", "wall", "ceiling"),
}

PASCAL_R2 = _register(PaletteTable.from_names("pascal_r2", PASCAL_SEMSEG_NAMES, _PASCAL_R2_GROUPS))
"""Rule R2 on PASCAL-MT (supplementary C): normals on household objects, parts on persons,
semseg on animals, saliency on vehicles, edges everywhere else (the background class)."""

PASCAL_R3 = _register(PaletteTable.from_names("pascal_r3", PASCAL_SEMSEG_NAMES, _PASCAL_R3_GROUPS))
"""Rule R3 on PASCAL-MT (supplementary C): no semseg; normals on some household objects and
most vehicles, saliency on the other vehicles and household objects and on animals; parts and
edges where R2 asks for them."""

SYNTHETIC_R2 = _register(
    PaletteTable.from_names("synthetic_r2", SYNTHETIC_CLASSES, _SYNTHETIC_R2_GROUPS)
)
"""Rule R2 on the synthetic scenes (our choice, see the module docstring)."""

SYNTHETIC_R3 = _register(
    PaletteTable.from_names("synthetic_r3", SYNTHETIC_CLASSES, _SYNTHETIC_R3_GROUPS)
)
"""Rule R3 on the synthetic scenes (our choice, see the module docstring)."""
