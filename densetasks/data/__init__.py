"""Data: datasets yielding sample dicts, joint transforms, collate, and derived labels."""

from densetasks.data.collate import collate_samples
from densetasks.data.dataset import DenseDataset
from densetasks.data.folder import FolderDataset, write_folder_dataset
from densetasks.data.geometry import normals_from_depth
from densetasks.data.registry import DATASETS, create_dataset
from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.data.synthetic import STYLES, SYNTHETIC_CLASSES, SYNTHETIC_PARTS, SyntheticScenes
from densetasks.data.transforms import build_transforms

__all__ = [
    "DATASETS",
    "IGNORE_INDEX",
    "STYLES",
    "SYNTHETIC_CLASSES",
    "SYNTHETIC_PARTS",
    "DenseDataset",
    "FolderDataset",
    "LabelKind",
    "SyntheticScenes",
    "build_transforms",
    "collate_samples",
    "create_dataset",
    "normals_from_depth",
    "write_folder_dataset",
]
