"""``SyntheticScenes``: the built-in dataset of procedurally generated, ray-cast indoor scenes.

It needs no download and yields all seven labels exactly. Sample ``i`` depends only on
``(seed, i)`` and the constructor's arguments, never on access order: its geometry is drawn
from ``default_rng([seed, i, 0])`` and its appearance from ``default_rng([seed, i, 1])``, so
the same ``(seed, i)`` has the same geometry in every style. With ``depth_noise="kinect"`` the
depth label is Kinect-like (:mod:`densetasks.data.synthetic.depth_noise`), drawn from
``default_rng([seed, i, 2])``; every other label, the normals included, stays exact.
"""

from collections.abc import Sequence

import numpy as np
import torch

from densetasks.data.dataset import DenseDataset, Sample, Transform
from densetasks.data.derive import edges_from_segments
from densetasks.data.synthetic.depth_noise import DEPTH_NOISE_MODELS, kinect_depth
from densetasks.data.synthetic.layout import sample_scene
from densetasks.data.synthetic.render import Rendering, render
from densetasks.data.synthetic.scene import (
    SYNTHETIC_CLASSES,
    SYNTHETIC_PARTS,
    THING_CLASSES,
    Scene,
)
from densetasks.data.synthetic.styles import STYLES, Style
from densetasks.errors import ConfigError

SYNTHETIC_TASKS: tuple[str, ...] = (
    "semseg",
    "depth",
    "normals",
    "edges",
    "saliency",
    "parts",
    "instance",
)

_GEOMETRY, _APPEARANCE, _DEPTH_NOISE = 0, 1, 2


def labels_from_rendering(rendering: Rendering, tasks: Sequence[str]) -> dict[str, torch.Tensor]:
    """The sample-format tensors of the requested ``tasks`` (see :mod:`densetasks.data.sample`).

    Edges are the boundaries of the segment map that combines class and instance, so the
    outline of each object and the boundary between two touching objects are both edges.
    Saliency marks every object and person (instance id > 0); the room is background.
    """
    semseg = torch.from_numpy(rendering.semseg)
    instance = torch.from_numpy(rendering.instance)
    makers = {
        "semseg": lambda: semseg,
        "depth": lambda: torch.from_numpy(rendering.depth)[None],
        "normals": lambda: torch.from_numpy(rendering.normals),
        "edges": lambda: edges_from_segments(semseg * (int(instance.max()) + 1) + instance),
        "saliency": lambda: (instance > 0).to(torch.uint8),
        "parts": lambda: torch.from_numpy(rendering.parts),
        "instance": lambda: instance,
    }
    return {task: makers[task]() for task in tasks}


def _check_range(name: str, value: tuple[int, int]) -> tuple[int, int]:
    if len(value) != 2 or not 0 <= value[0] <= value[1]:
        raise ConfigError(f"{name} must be (low, high) with 0 <= low <= high, got {value!r}")
    return int(value[0]), int(value[1])


class SyntheticScenes(DenseDataset):
    """``n`` random indoor scenes (room, boxes, spheres, cylinders, articulated persons).

    ``size`` is ``(height, width)`` in pixels. ``num_objects`` and ``persons`` are inclusive
    ranges of how many are drawn per scene (one that finds no free floor is left out).
    ``tasks`` restricts the returned labels (default: all of :data:`SYNTHETIC_TASKS`).
    ``depth_noise`` is ``"none"`` (exact depth) or ``"kinect"`` (quantised, holed, range-limited
    depth, as real data; see :mod:`densetasks.data.synthetic.depth_noise`).
    """

    tasks: tuple[str, ...] = SYNTHETIC_TASKS

    def __init__(
        self,
        n: int,
        size: tuple[int, int] = (128, 128),
        seed: int = 0,
        style: str = "default",
        num_objects: tuple[int, int] = (3, 6),
        persons: tuple[int, int] = (0, 2),
        tasks: Sequence[str] | None = None,
        transform: Transform | None = None,
        depth_noise: str = "none",
    ) -> None:
        super().__init__(transform)
        if n < 0:
            raise ConfigError(f"n must be >= 0, got {n}")
        if len(size) != 2 or min(size) <= 0:
            raise ConfigError(f"size must be two positive ints (height, width), got {size!r}")
        if style not in STYLES:
            raise ConfigError(f"unknown style {style!r}; known: {', '.join(sorted(STYLES))}")
        if seed < 0:
            raise ConfigError(f"seed must be >= 0, got {seed}")
        if depth_noise not in DEPTH_NOISE_MODELS:
            raise ConfigError(
                f"unknown depth_noise {depth_noise!r}; known: {', '.join(DEPTH_NOISE_MODELS)}"
            )
        requested = SYNTHETIC_TASKS if tasks is None else tuple(tasks)
        unknown = [task for task in requested if task not in SYNTHETIC_TASKS]
        if unknown:
            raise ConfigError(
                f"tasks {unknown} are not synthetic labels; known: {', '.join(SYNTHETIC_TASKS)}"
            )
        self.n = n
        self.size = (int(size[0]), int(size[1]))
        self.seed = seed
        self.style: Style = STYLES[style]
        self.num_objects = _check_range("num_objects", num_objects)
        self.persons = _check_range("persons", persons)
        self.tasks = requested
        self.depth_noise = depth_noise
        options = {
            "semseg": {
                "num_classes": len(SYNTHETIC_CLASSES),
                "class_names": list(SYNTHETIC_CLASSES),
            },
            "parts": {"num_classes": len(SYNTHETIC_PARTS), "class_names": list(SYNTHETIC_PARTS)},
            "instance": {"instance_classes": list(THING_CLASSES)},
        }
        self.task_options = {task: value for task, value in options.items() if task in requested}

    def __len__(self) -> int:
        return self.n

    def scene(self, index: int) -> Scene:
        """The geometry of sample ``index`` (the same in every style)."""
        if not 0 <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} synthetic scenes")
        rng = np.random.default_rng([self.seed, index, _GEOMETRY])
        return sample_scene(rng, *self.size, self.num_objects, self.persons)

    def load(self, index: int) -> Sample:
        scene = self.scene(index)
        rendering = render(
            scene, self.style, np.random.default_rng([self.seed, index, _APPEARANCE])
        )
        sample: Sample = {"image": torch.from_numpy(rendering.image)}
        sample.update(labels_from_rendering(rendering, self.tasks))
        if self.depth_noise == "kinect" and "depth" in sample:
            rng = np.random.default_rng([self.seed, index, _DEPTH_NOISE])
            noisy = kinect_depth(rendering.depth, scene.camera.focal, rng)
            sample["depth"] = torch.from_numpy(noisy)[None]
        sample["meta"] = {
            "name": f"synthetic_{self.seed}_{index:06d}",
            "intrinsics": torch.from_numpy(scene.camera.intrinsics),
        }
        return sample
