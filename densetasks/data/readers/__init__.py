"""Readers of real datasets in their published layouts (see ``docs/datasets.md``).

``READERS`` maps a format name to its reader class; every reader is a
:class:`~densetasks.data.readers._base.DatasetReader` built as ``Reader(root, split, tasks,
transform, **options)`` and registered under its ``format_name``.
"""

from densetasks._registry import Registry
from densetasks.data.dataset import DenseDataset
from densetasks.data.readers._base import DatasetReader
from densetasks.data.readers.camvid import CamVid
from densetasks.data.readers.cityscapes import Cityscapes
from densetasks.data.readers.nyud_mat import NYUDLabelledMat
from densetasks.data.readers.nyud_mt import NYUDMultiTask
from densetasks.data.readers.nyud_npy import NYUDNpy
from densetasks.data.readers.pascal_mt import PascalMultiTask

READERS: Registry[DenseDataset] = Registry("dataset format")
for _reader in (NYUDMultiTask, NYUDNpy, NYUDLabelledMat, PascalMultiTask, Cityscapes, CamVid):
    READERS.register(_reader.format_name, _reader)

__all__ = [
    "READERS",
    "CamVid",
    "Cityscapes",
    "DatasetReader",
    "NYUDLabelledMat",
    "NYUDMultiTask",
    "NYUDNpy",
    "PascalMultiTask",
]
