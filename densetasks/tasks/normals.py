"""Surface normals: three channels, a unit vector per pixel, loss ``1 − cos``."""

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from densetasks.data.sample import LabelKind
from densetasks.metrics.normals import NormalsMetrics
from densetasks.pictures import ICON, IconKey
from densetasks.tasks._common import masked_mean
from densetasks.tasks.base import Likelihood, Meaning, Task


class SurfaceNormals(Task):
    """Unit normals in the OpenCV camera frame (label kind NORMALS, zero vector = unlabelled).

    Loss ``1 − cos(n̂, n) = 1 − n̂·n / (‖n̂‖ ‖n‖)`` averaged over labelled pixels (Lopes et al.,
    WACV 2023, Sec. 4.1.1; Popovic et al., CVPR 2021, Sec. 4), so the head is free in its output's
    length.
    """

    name = "normals"
    label_kind = LabelKind.NORMALS
    likelihood = Likelihood.REGRESSION
    primary_metric = "mean"
    picture_colours = "RGB = (n + 1) / 2; x right, y down, z forward"

    @property
    def channels(self) -> int:
        return 3

    def loss(
        self, output: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean ``1 − cos`` between output and label vectors over labelled pixels in ``mask``."""
        valid = self.valid(label, mask)
        self.check_output(output, label)
        cosine = (F.normalize(output, dim=1) * F.normalize(label, dim=1)).sum(dim=1)
        return masked_mean(1.0 - cosine, valid)

    def resize_output(self, output: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Bilinear, then each vector rescaled to unit length where its norm is > 0.

        The raw output is read as a vector whose length means nothing (the loss and
        :meth:`decode` normalise it), so bilinear mixing of neighbours keeps the meaning and
        rescaling changes neither the loss nor the decoded normal; it gives a resized output
        that is itself a normal (zero vectors stay zero, without a NaN gradient).
        """
        resized = super().resize_output(output, size)
        norm = resized.norm(dim=1, keepdim=True)
        return resized / torch.where(norm > 0, norm, torch.ones_like(norm))

    def discriminator_input(
        self, output: torch.Tensor, source_label: torch.Tensor | None
    ) -> torch.Tensor:
        """The output normalised to unit vectors (Lopes et al.'s released code for
        multi-task domain adaptation; the paper, Supp. B.3, adapts S-D only)."""
        return F.normalize(output, dim=1)

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Unit vectors ``[B, 3, H, W]`` (a zero output stays zero)."""
        return F.normalize(output, dim=1)

    def metrics(self) -> NormalsMetrics:
        return NormalsMetrics()

    def visualize(self, value: torch.Tensor) -> np.ndarray:
        """Normals ``[3, H, W]`` -> RGB ``(n + 1) / 2 · 255``; zero vectors are black."""
        if value.ndim != 3 or value.shape[0] != 3:
            raise ValueError(f"normals visualize expects [3, H, W], got {tuple(value.shape)}")
        normals = value.detach().double().cpu().numpy().transpose(1, 2, 0)
        rgb = np.clip(np.round((normals + 1.0) / 2.0 * 255.0), 0, 255).astype(np.uint8)
        rgb[np.abs(normals).sum(axis=-1) == 0] = 0
        return rgb

    def picture_key(self, value: Any, mask: torch.Tensor | None = None) -> IconKey:
        """A sphere seen from the camera, drawn as normals are: each point of it coloured as
        a surface that faces the same way (the centre faces the camera, ``z = −1``)."""
        return IconKey(self._sphere(), "colour: the way a surface faces, as on this ball")

    def _sphere(self) -> np.ndarray:
        """The picture of a unit sphere's normals ``(u, v, −√(1 − u² − v²))`` over an
        ``ICON``-pixel square, white around the sphere."""
        centres = (torch.arange(ICON, dtype=torch.float64) + 0.5) / ICON * 2 - 1
        v, u = torch.meshgrid(centres, centres, indexing="ij")
        inside = u**2 + v**2 < 1
        normals = torch.stack([u, v, -(1 - u**2 - v**2).clamp(min=0).sqrt()]) * inside
        picture = self.visualize(normals)
        picture[~inside.numpy()] = 255
        return picture

    def meaning(self) -> Meaning:
        """Unit vectors ``[B, 3, H, W]`` in the OpenCV camera frame."""
        return Meaning(
            "unit surface normals in the camera frame (x right, y down, z forward; a zero "
            "vector where the output is zero)",
            channels=("x", "y", "z"),
            value_range=(-1.0, 1.0),
        )

    def from_composite(self, composite: torch.Tensor) -> torch.Tensor:
        """Identity: the 3 composite channels are the normal (Popovic et al., CVPR 2021,
        Sec. 3.3)."""
        return composite

    def to_composite(self, label: torch.Tensor) -> torch.Tensor:
        """Identity: a normal is already a point of the 3-channel space."""
        return label
