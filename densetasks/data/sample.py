"""The sample format every dataset yields and every transform, collate and task reads.

A sample is a ``dict``:

``image``
    float32 tensor ``[3, H, W]`` with values in ``[0, 1]`` (normalisation is a transform).
one entry per task that has a label here
    a missing key means "not supervised here" (sparse labels, Popovic et al., CVPR 2021),
    never an error.
``meta``
    a ``dict`` with ``name`` (str, the sample's file stem or index) and, where known,
    ``intrinsics`` (float32 ``[3, 3]`` pinhole matrix for the image as it is now).

Each label has one :class:`LabelKind`, which fixes its dtype, shape, invalid value and how
geometric transforms treat it (see ``docs/data.md``):

==========  ===================  ========================================  =====================
kind        tensor               invalid / ignore                          geometry
==========  ===================  ========================================  =====================
MASK        int64 ``[H, W]``     ``IGNORE_INDEX`` (255)                    nearest
BINARY      uint8 ``[H, W]``     ``IGNORE_INDEX`` (255); values 0 / 1      nearest
DEPTH       float32 ``[1,H,W]``  ``0`` (metres; ``> 0`` is valid)           nearest, values kept
NORMALS     float32 ``[3,H,W]``  zero vector                               nearest, flip negates x
INSTANCE    int64 ``[H, W]``     ``0`` = no instance; ids arbitrary > 0    nearest
REGRESSION  float32 ``[C,H,W]``  NaN in any channel; every number valid    nearest, values kept
==========  ===================  ========================================  =====================

REGRESSION is any dense float map (shading, albedo, a distance field, ...): no value is
special, so "no label here" is NaN. Its channels are scalars that a flip moves but does not
change; a vector field whose x component must change sign under a flip needs a kind of its
own (as NORMALS).

Normals are unit vectors in the OpenCV camera frame (x right, y down, z forward), oriented
towards the camera (``n · p < 0`` for the surface point ``p``). Instance centroid offsets are
not stored: the instance task computes them from the ids after every transform, so they are
always exact in the current pixel grid.
"""

from enum import Enum

import torch

IGNORE_INDEX = 255
"""Ignore value of class masks and binary masks (semantic, parts, edges, saliency)."""


class LabelKind(str, Enum):
    """How a label is stored and how transforms and collate must treat it."""

    MASK = "mask"
    BINARY = "binary"
    DEPTH = "depth"
    NORMALS = "normals"
    INSTANCE = "instance"
    REGRESSION = "regression"

    def empty(self, height: int, width: int) -> torch.Tensor:
        """A label of this kind that marks every pixel as unsupervised. A REGRESSION label
        has one channel here (all NaN); a label of ``C`` channels is this broadcast over
        them (collate, crop and :meth:`restrict` do)."""
        if self is LabelKind.MASK:
            return torch.full((height, width), IGNORE_INDEX, dtype=torch.int64)
        if self is LabelKind.BINARY:
            return torch.full((height, width), IGNORE_INDEX, dtype=torch.uint8)
        if self is LabelKind.DEPTH:
            return torch.zeros((1, height, width), dtype=torch.float32)
        if self is LabelKind.NORMALS:
            return torch.zeros((3, height, width), dtype=torch.float32)
        if self is LabelKind.REGRESSION:
            return torch.full((1, height, width), float("nan"), dtype=torch.float32)
        return torch.zeros((height, width), dtype=torch.int64)

    def valid(self, label: torch.Tensor) -> torch.Tensor:
        """Boolean map ``[..., H, W]`` of the supervised pixels of a (batched) label.

        For INSTANCE every pixel is valid: 0 means "no instance", which is itself a label.
        For REGRESSION a pixel is valid when none of its channels is NaN.
        """
        if self in (LabelKind.MASK, LabelKind.BINARY):
            return label != IGNORE_INDEX
        if self is LabelKind.DEPTH:
            return (label > 0).squeeze(-3)
        if self is LabelKind.NORMALS:
            return label.abs().sum(dim=-3) > 0
        if self is LabelKind.REGRESSION:
            return ~label.isnan().any(dim=-3)
        return torch.ones_like(label, dtype=torch.bool)

    def restrict(self, label: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A batched label ``[B, (C,) H, W]`` with the pixels outside ``mask`` (bool
        ``[B, H, W]``) made unsupervised, so metrics and losses see only the masked-in pixels
        (a Task Palette evaluated per task)."""
        empty = self.empty(*label.shape[-2:]).to(label.device)
        keep = mask if label.ndim == mask.ndim else mask.unsqueeze(-3)
        return torch.where(keep, label, empty)
