"""Monocular depth: one channel that predicts an inverse-depth-like quantity.

Three losses, one per paper, each fixing what the head's channel means:

``l1_inverse`` (Kendall et al., CVPR 2018, Sec. 5 "Depth Regression")
    output ≈ 1/d (1/m); ``L = mean |o − 1/d|`` over labelled pixels.
``berhu`` (Lopes et al., WACV 2023, Sec. 4.1.1; its released code)
    output ≈ d_far/d; ``L = mean berHu(o − d_far/d)`` with
    ``berHu(e) = |e|`` if ``|e| <= c`` else ``(e² + c²) / (2c)``, ``c = 0.2 · max |e|`` over the
    batch's labelled pixels (Laina et al. 2016).
``ssi`` (Hickson et al., WACV 2022, mobile models)
    output ≈ 1/d up to scale and shift; per image the least-squares ``s, t`` align ``o`` to
    the true disparity 1/d and ``L = mean |s·o + t − 1/d| + w · mean |o − 1/d|``; the second
    term (``w = ssi_depth_weight``, "0.25 × the depth loss") keeps values in fp16 range.
"""

from typing import Any, Literal, get_args

import numpy as np
import torch

from densetasks.data.sample import LabelKind
from densetasks.errors import ConfigError, DataError
from densetasks.metrics.depth import DepthMetrics, align_disparity
from densetasks.pictures import ColourBar
from densetasks.tasks._common import masked_mean
from densetasks.tasks.base import Likelihood, Meaning, Task

DepthLoss = Literal["l1_inverse", "berhu", "ssi"]
DEPTH_LOSSES: tuple[str, ...] = get_args(DepthLoss)

MIN_OUTPUT = 1e-6
"""Outputs are clamped to at least this before inversion, so decoded depth stays finite."""

BERHU_THRESHOLD = 0.2
"""``c = 0.2 · max |e|`` (released code of Lopes et al., WACV 2023, after Laina et al. 2016)."""


def berhu(error: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Reverse Huber per pixel with ``c = 0.2 · max |e|`` over ``valid``; 0 off ``valid``.

    ``c`` is detached: it sets where L1 turns quadratic, it is not something to optimise.
    Errors off ``valid`` are zeroed first so they can neither set ``c`` nor overflow.
    """
    error = torch.where(valid, error, torch.zeros_like(error))
    magnitude = error.abs()
    largest = magnitude.max().detach()
    threshold = (BERHU_THRESHOLD * largest).clamp(min=torch.finfo(error.dtype).tiny)
    quadratic = (error**2 + threshold**2) / (2 * threshold)
    return torch.where(magnitude <= threshold, magnitude, quadratic)


DEPTH_COLOURMAP = "magma"
"""Depth pictures: magma over inverse depth (see :func:`depth_colour_bar`)."""


def depth_colour_bar(depth: np.ndarray, shown: np.ndarray) -> ColourBar | None:
    """The colour code of a depth picture: :data:`DEPTH_COLOURMAP` over inverse depth,
    min-max over the ``shown`` pixels of ``depth`` (metres), so the nearest shown depth is
    the brightest colour and the farthest the darkest; ``None`` when no pixel is shown.

    The one place that says how depth is coloured: :meth:`Depth.visualize` paints with this
    bar and :meth:`Depth.picture_key` draws it, so a picture and its key agree.
    """
    if not shown.any():
        return None
    values = depth[shown]
    return ColourBar(DEPTH_COLOURMAP, float(values.min()), float(values.max()), "m", inverse=True)


def _metres(value: torch.Tensor) -> np.ndarray:
    """A depth label or prediction ``[1, H, W]`` as float64 ``[H, W]``."""
    if value.ndim != 3 or value.shape[0] != 1:
        raise ValueError(f"depth pictures take [1, H, W], got {tuple(value.shape)}")
    return value[0].detach().double().cpu().numpy()


def _check_positive(**values: float | None) -> None:
    """``ConfigError`` naming the first ``depth.<option>`` that is set but not > 0."""
    for name, value in values.items():
        if value is not None and value <= 0:
            raise ConfigError(f"depth.{name} must be > 0, got {value}")


class Depth(Task):
    """Depth in metres (label kind DEPTH, ``[B, 1, H, W]``, 0 = no label), 1 head channel.

    ``max_depth`` (metres, ``None`` = no limit) leaves labels beyond it out of the loss and the
    metrics: stereo depth far away is sub-pixel matching noise (Cityscapes SGM labels reach
    ~1e5 m while predictions stop at ``far``). ``disparity_scale`` = baseline · focal (m · px)
    adds disparity errors in pixels to the metrics (Kendall et al., CVPR 2018, Table 1).
    ``primary_metric`` picks which metric drives Δm and the best checkpoint (default ``rmse``,
    Lopes et al., WACV 2023); it must be one the metrics compute. A dataset that knows its
    range and camera supplies the first two (Cityscapes: 80 m and its nominal camera).
    """

    name = "depth"
    label_kind = LabelKind.DEPTH
    likelihood = Likelihood.REGRESSION
    primary_metric = "rmse"
    picture_colours = f"{DEPTH_COLOURMAP} of inverse depth, per image: bright = near"

    def __init__(
        self,
        *,
        loss: DepthLoss = "l1_inverse",
        far: float = 80.0,
        ssi_depth_weight: float = 0.25,
        max_depth: float | None = None,
        disparity_scale: float | None = None,
        primary_metric: str = "rmse",
    ) -> None:
        if loss not in DEPTH_LOSSES:
            raise ConfigError(f"depth.loss must be one of {', '.join(DEPTH_LOSSES)}, got {loss!r}")
        _check_positive(far=far, max_depth=max_depth, disparity_scale=disparity_scale)
        if ssi_depth_weight < 0:
            raise ConfigError(f"depth.ssi_depth_weight must be >= 0, got {ssi_depth_weight}")
        self.loss_name = loss
        self.far = far
        self.ssi_depth_weight = ssi_depth_weight
        self.scale_shift_invariant = loss == "ssi"
        self.max_depth = max_depth
        self.disparity_scale = disparity_scale
        self.numerator = far if loss == "berhu" else 1.0
        """The head predicts ``numerator / depth``: d_far for berHu, 1 otherwise."""
        computed = self.metrics().names
        if primary_metric not in computed:
            raise ConfigError(
                f"depth.primary_metric must be one of {', '.join(computed)}, got "
                f"{primary_metric!r} (the disparity errors need depth.disparity_scale)"
            )
        self.primary_metric = primary_metric  # this instance's choice over the class default

    @property
    def channels(self) -> int:
        return 1

    def head_target(self, label: torch.Tensor) -> torch.Tensor:
        """What the head should output for a depth label: ``numerator / d``; 0 where unlabelled."""
        labelled = label > 0
        return torch.where(labelled, self.numerator / label.clamp(min=MIN_OUTPUT), 0.0)

    def valid(self, label: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Labelled pixels within ``mask`` and, with ``max_depth``, not beyond it."""
        valid = super().valid(label, mask)
        if self.max_depth is None:
            return valid
        return valid & (label <= self.max_depth).squeeze(-3)

    def loss(
        self, output: torch.Tensor, label: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The configured loss, averaged over the :meth:`valid` pixels."""
        valid = self.valid(label, mask)
        self.check_output(output, label)
        prediction = output.squeeze(1)
        target = self.head_target(label).squeeze(1)
        error = prediction - target
        if self.loss_name == "berhu":
            return masked_mean(berhu(error, valid), valid)
        direct = masked_mean(error.abs(), valid)
        if self.loss_name == "l1_inverse":
            return direct
        aligned = align_disparity(prediction, target, valid)
        return masked_mean((aligned - target).abs(), valid) + self.ssi_depth_weight * direct

    def discriminator_input(
        self, output: torch.Tensor, source_label: torch.Tensor | None
    ) -> torch.Tensor:
        """``(ReLU(o) − lo) / (hi − lo)``, ``[lo, hi]`` the range of the head targets
        (``numerator / d``) of the source labels' valid pixels: the depth map normalised by
        the source range (Lopes et al., WACV 2023, Supp. B.3, after DADA, Vu et al., ICCV
        2019; their code takes the range of the source batch's ground truth). The range is a
        constant: no gradient flows into it."""
        if source_label is None:
            raise DataError(
                "depth: the discriminator input is normalised by the source batch's depth "
                "range, and the source batch has no depth label"
            )
        valid = self.valid(source_label)
        if not valid.any():
            raise DataError("depth: the source batch has no valid depth pixel to set the range")
        targets = self.head_target(source_label).squeeze(1)[valid]
        low, high = targets.min(), targets.max()
        span = (high - low).clamp(min=torch.finfo(targets.dtype).eps)
        return (output.relu() - low) / span

    def decode(self, output: torch.Tensor) -> torch.Tensor:
        """Depth in metres ``[B, 1, H, W]``: ``numerator / o``, at most ``far``.

        Capping at ``far`` keeps an untrained network's near-zero outputs from decoding to
        millions of metres (which would swamp RMSE early in training); ``ssi`` outputs are
        only defined up to scale and shift, so there only non-positive values are clamped.
        """
        floor = MIN_OUTPUT if self.scale_shift_invariant else self.numerator / self.far
        return self.numerator / output.clamp(min=floor)

    def metrics(self) -> DepthMetrics:
        """Depth metrics up to ``max_depth``; for ``ssi`` they take the raw disparity-like
        output (:meth:`~Task.metric_input`) and align its scale and shift per image first."""
        return DepthMetrics(
            align_scale_shift=self.scale_shift_invariant,
            max_depth=self.max_depth,
            disparity_scale=self.disparity_scale,
        )

    def visualize(self, value: torch.Tensor) -> np.ndarray:
        """Depth ``[1, H, W]`` -> the colours of :func:`depth_colour_bar` over its labelled
        pixels: magma of inverse depth, min-max normalised per image. Near is bright, far is
        dark; unlabelled pixels (depth <= 0) are black.
        """
        return self.visualize_with(value, self.picture_key(value))

    def visualize_with(self, value: torch.Tensor, key: ColourBar | None) -> np.ndarray:
        """Depth ``[1, H, W]`` in the colours of ``key`` (a bar that may span more than this
        picture's depths, e.g. its label's too); unlabelled pixels (depth <= 0) are black."""
        depth = _metres(value)
        labelled = depth > 0
        image = np.zeros((*depth.shape, 3), dtype=np.uint8)
        if key is not None:
            image[labelled] = key.colours(depth[labelled])
        return image

    def picture_key(self, value: Any, mask: torch.Tensor | None = None) -> ColourBar | None:
        """The colour bar of ``value`` (``[1, H, W]`` metres) over its labelled pixels,
        those inside ``mask`` if given: the picture's colours span exactly them."""
        depth = _metres(value)
        shown = depth > 0
        if mask is not None:
            shown &= mask.cpu().numpy()
        return depth_colour_bar(depth, shown)

    def meaning(self) -> Meaning:
        """Metres up to ``far``; for ``ssi`` the raw disparity, up to scale and shift."""
        if self.scale_shift_invariant:
            return Meaning(
                "disparity (inverse depth) defined only up to a per-image scale and shift: "
                "align it to a reference by least squares before use, and invert it for "
                "depth, as the task's metrics do",
                channels=("disparity",),
                digits=3,
            )
        return Meaning(
            f"depth in metres, at most far = {self.far:g} m",
            unit="m",
            channels=("depth",),
            value_range=(0.0, self.far),
        )

    def from_composite(self, composite: torch.Tensor) -> torch.Tensor:
        """The mean over the 3 composite channels (Popovic et al., CVPR 2021, scalar tasks)."""
        return composite.mean(dim=1, keepdim=True)

    def to_composite(self, label: torch.Tensor) -> torch.Tensor:
        """The head target (``numerator / d``, 0 where unlabelled) on all 3 channels."""
        return self.head_target(label).expand(-1, 3, -1, -1)
