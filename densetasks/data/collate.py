"""Batching sample dicts whose label sets differ (sparse labels, Popovic et al., CVPR 2021)."""

from collections.abc import Mapping
from typing import Any

import torch

from densetasks.data.dataset import Sample
from densetasks.data.sample import LabelKind
from densetasks.data.transforms import sample_size
from densetasks.errors import DataError


def collate_samples(samples: list[Sample], kinds: Mapping[str, LabelKind]) -> dict[str, Any]:
    """One batch from a list of samples.

    ``image`` and every label present in *any* sample are stacked along a new batch axis; a
    sample lacking a label contributes an all-unsupervised one (``LabelKind.empty``, with
    the channels of the labels present: a REGRESSION label has as many as its task), so the
    batch is rectangular and the loss simply sees no valid pixel there. ``meta`` becomes a
    list of the samples' meta dicts. ``kinds`` gives each label's kind (the run's table:
    registered tasks and conditioning inputs). All images must have one size (transforms
    crop or resize them); otherwise the error names the samples.
    """
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    sizes = [sample_size(sample) for sample in samples]
    if len(set(sizes)) > 1:
        described = ", ".join(
            f"{_name(sample, index)} {size[0]}x{size[1]}"
            for index, (sample, size) in enumerate(zip(samples, sizes, strict=True))
        )
        raise DataError(f"images in one batch differ in size (H x W): {described}")
    height, width = sizes[0]
    known = kinds
    label_keys = sorted({key for sample in samples for key in sample} - {"image", "meta"})
    batch: dict[str, Any] = {"image": torch.stack([sample["image"] for sample in samples])}
    for key in label_keys:
        if key not in known:
            names = ", ".join(sorted(known))
            raise ValueError(f"sample key {key!r} has no known label kind; known: {names}")
        present = next(sample[key] for sample in samples if key in sample)
        empty = _empty_label(known[key], present, (height, width))
        labels = [sample.get(key, empty) for sample in samples]
        for index, label in enumerate(labels):
            if tuple(label.shape[-2:]) != (height, width):
                raise DataError(
                    f"{_name(samples[index], index)}: label {key!r} has size "
                    f"{tuple(label.shape[-2:])}, image has {(height, width)}"
                )
        batch[key] = torch.stack(labels)
    batch["meta"] = [dict(sample.get("meta", {})) for sample in samples]
    return batch


def _empty_label(kind: LabelKind, present: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``kind.empty`` at ``size``, broadcast over the channels of a ``present`` label when
    the kind's empty label has one channel and the label more (REGRESSION)."""
    empty = kind.empty(*size)
    channels = tuple(present.shape[:-2])
    if empty.ndim == present.ndim and empty.shape[:-2] == (1,) and channels != (1,):
        return empty.expand(*channels, *size)
    return empty


def _name(sample: Sample, index: int) -> str:
    return str(sample.get("meta", {}).get("name", f"sample #{index}"))
