"""Data: datasets yielding sample dicts, joint transforms, and collate."""

from densetasks.data.sample import IGNORE_INDEX, LabelKind

__all__ = ["IGNORE_INDEX", "LabelKind"]
