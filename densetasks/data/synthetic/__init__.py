"""The procedural synthetic scene generator: the built-in default dataset (no download).

Indoor-like rooms with boxes, spheres, cylinders and articulated persons, ray cast in NumPy
with a pinhole camera; every label (semantics, depth, normals, edges, saliency, human parts,
instances) is exact. See ``docs/synthetic.md``.
"""

from densetasks.data.synthetic.dataset import SYNTHETIC_TASKS, SyntheticScenes
from densetasks.data.synthetic.scene import SYNTHETIC_CLASSES, SYNTHETIC_PARTS
from densetasks.data.synthetic.styles import STYLES, Style

__all__ = [
    "STYLES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PARTS",
    "SYNTHETIC_TASKS",
    "Style",
    "SyntheticScenes",
]
