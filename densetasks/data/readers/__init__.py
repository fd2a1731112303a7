"""Readers of real datasets in their published layouts (see ``docs/datasets.md``).

``READERS`` maps a format name to its reader class; every reader is a
:class:`~densetasks.data.dataset.DenseDataset` built as ``Reader(root, split, tasks,
transform, **options)``.
"""

from densetasks._registry import Registry
from densetasks.data.dataset import DenseDataset
from densetasks.data.readers.camvid import CamVid
from densetasks.data.readers.cityscapes import Cityscapes
from densetasks.data.readers.nyud_mat import NYUDLabelledMat
from densetasks.data.readers.nyud_mt import NYUDMultiTask
from densetasks.data.readers.nyud_npy import NYUDNpy
from densetasks.data.readers.pascal_mt import PascalMultiTask

READERS: Registry[DenseDataset] = Registry("dataset format")
READERS.register("nyud_mt", NYUDMultiTask)
READERS.register("nyud_npy", NYUDNpy)
READERS.register("nyud_mat", NYUDLabelledMat)
READERS.register("pascal_mt", PascalMultiTask)
READERS.register("cityscapes", Cityscapes)
READERS.register("camvid", CamVid)

__all__ = [
    "READERS",
    "CamVid",
    "Cityscapes",
    "NYUDLabelledMat",
    "NYUDMultiTask",
    "NYUDNpy",
    "PascalMultiTask",
]
