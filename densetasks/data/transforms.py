"""Joint transforms: callables on sample dicts that keep the image and every label aligned.

Every tensor in a sample is treated by what it is: ``image`` (bilinear, padded with 0),
``meta`` (its ``intrinsics`` follow every geometric change), and each label by its
:class:`~densetasks.data.sample.LabelKind` looked up by key in the ``kinds`` every transform is
given (the run's table: every registered task's label kind and the model's conditioning
inputs, built above this package by ``densetasks.tasks.registry.label_kinds``). A tensor
under an unknown key is an error: a label never passes a transform untyped (the trap of
torchvision v2, pytorch/vision#9264).

Labels are resized and cropped with nearest-neighbour sampling, so class ids, instance ids,
binary values, depth values, normal vectors and regression values are only ever copied, never
blended (bilinear would also spread a regression label's NaN, its "no label", into labelled
pixels); padding uses each kind's invalid value (``LabelKind.empty``). A horizontal flip
negates the x component of normals (the OpenCV camera frame's x points right). Random
transforms draw from ``generator`` when one is given, otherwise from torch's global generator
(which DataLoader workers seed per worker), so a fixed seed gives a fixed sequence. Give a
generator only for single-process loading (tests, scripts): each DataLoader worker would get
a copy of it in the same state and repeat the other workers' draws.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF

from densetasks.data.dataset import Sample, Transform
from densetasks.data.geometry import scale_intrinsics
from densetasks.data.sample import LabelKind

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# A geometric change of one tensor: (tensor [C, H, W], kind or None for the image) -> tensor.
_TensorOp = Callable[[torch.Tensor, LabelKind | None], torch.Tensor]
# The same change applied to a [3, 3] intrinsics matrix.
_IntrinsicsOp = Callable[[torch.Tensor], torch.Tensor]


def sample_size(sample: Sample) -> tuple[int, int]:
    """``(H, W)`` of a sample's image."""
    image = sample.get("image")
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        raise ValueError("a sample needs an 'image' tensor [C, H, W]")
    return int(image.shape[-2]), int(image.shape[-1])


def apply_geometric(
    sample: Sample,
    kinds: Mapping[str, LabelKind],
    tensor_op: _TensorOp,
    intrinsics_op: _IntrinsicsOp,
) -> Sample:
    """A new sample with ``tensor_op`` applied to the image and every label, by kind.

    Labels stored without a channel axis (``[H, W]``: masks, binary, instance) get one for
    the operation and lose it again. ``meta["intrinsics"]`` goes through ``intrinsics_op``.
    """
    size = sample_size(sample)
    out: Sample = {}
    for key, value in sample.items():
        if key == "meta":
            out[key] = _transform_meta(value, intrinsics_op)
        elif key == "image":
            out[key] = tensor_op(value, None)
        elif isinstance(value, torch.Tensor):
            kind = _kind_of(key, kinds)
            if tuple(value.shape[-2:]) != size:
                raise ValueError(
                    f"label {key!r} has size {tuple(value.shape[-2:])}, image has {size}"
                )
            planar = value.ndim == 2
            result = tensor_op(value[None] if planar else value, kind)
            out[key] = result[0] if planar else result
        else:
            out[key] = value
    return out


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for transform in self.transforms:
            sample = transform(sample)
        return sample

    def __repr__(self) -> str:
        inner = ", ".join(repr(transform) for transform in self.transforms)
        return f"Compose([{inner}])"


class RandomHorizontalFlip:
    """Mirror the sample left-right with probability ``p``.

    Normals negate x; the principal point moves to ``W − 1 − cx`` (and the skew changes
    sign), so the intrinsics describe the mirrored image.
    """

    def __init__(
        self,
        kinds: Mapping[str, LabelKind],
        p: float = 0.5,
        generator: torch.Generator | None = None,
    ) -> None:
        self.p = p
        self.kinds = dict(kinds)
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        if torch.rand((), generator=self.generator).item() >= self.p:
            return sample
        return hflip(sample, self.kinds)

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


def hflip(sample: Sample, kinds: Mapping[str, LabelKind]) -> Sample:
    """Mirror a sample left-right (always; see :class:`RandomHorizontalFlip`)."""
    width = sample_size(sample)[1]

    def flip_tensor(tensor: torch.Tensor, kind: LabelKind | None) -> torch.Tensor:
        flipped = tensor.flip(-1)
        if kind is LabelKind.NORMALS:
            flipped[0] = -flipped[0]
        return flipped

    def flip_intrinsics(intrinsics: torch.Tensor) -> torch.Tensor:
        flipped = intrinsics.clone()
        flipped[0, 1] = -intrinsics[0, 1]
        flipped[0, 2] = width - 1 - intrinsics[0, 2]
        return flipped

    return apply_geometric(sample, dict(kinds), flip_tensor, flip_intrinsics)


class Resize:
    """Resize to ``size = (H, W)``: image bilinear (antialiased), labels nearest.

    Depth values and normal vectors are copied from the nearest pixel, unchanged: resizing an
    image is a change of intrinsics, not of the scene, so the metric depth and the
    camera-frame normal of the surface seen at a point stay the same (and nearest sampling
    keeps normals unit length, so no renormalisation is needed). Intrinsics are scaled.
    """

    def __init__(self, size: tuple[int, int], kinds: Mapping[str, LabelKind]):
        self.size = (int(size[0]), int(size[1]))
        self.kinds = dict(kinds)

    def __call__(self, sample: Sample) -> Sample:
        return resize(sample, self.size, self.kinds)

    def __repr__(self) -> str:
        return f"Resize(size={self.size})"


def resize(sample: Sample, size: tuple[int, int], kinds: Mapping[str, LabelKind]) -> Sample:
    """A sample resized to ``size = (H, W)`` (see :class:`Resize`)."""
    if min(size) < 1:
        raise ValueError(f"resize size must be positive, got {size}")
    from_size = sample_size(sample)

    def resize_tensor(tensor: torch.Tensor, kind: LabelKind | None) -> torch.Tensor:
        if kind is None:
            return _resize_bilinear(tensor, size)
        return _resize_nearest(tensor, size)

    def resize_intrinsics(intrinsics: torch.Tensor) -> torch.Tensor:
        return scale_intrinsics(intrinsics, from_size, size)

    return apply_geometric(sample, dict(kinds), resize_tensor, resize_intrinsics)


def crop(
    sample: Sample,
    top: int,
    left: int,
    size: tuple[int, int],
    kinds: Mapping[str, LabelKind],
) -> Sample:
    """The window ``[top, top + H) × [left, left + W)`` of a sample, ``size = (H, W)``.

    The window may reach outside the image (negative ``top``/``left`` or past the end):
    the image is padded with 0 and each label with its invalid value. The principal point
    moves by ``(-left, -top)``.
    """

    def crop_tensor(tensor: torch.Tensor, kind: LabelKind | None) -> torch.Tensor:
        channels, height, width = tensor.shape
        if kind is None:
            out = tensor.new_zeros((channels, *size))
        else:
            empty = kind.empty(*size).to(tensor.dtype).reshape(-1, *size)
            out = empty.expand(channels, -1, -1).clone()
        source_rows = slice(max(top, 0), min(top + size[0], height))
        source_columns = slice(max(left, 0), min(left + size[1], width))
        target_rows = slice(source_rows.start - top, source_rows.stop - top)
        target_columns = slice(source_columns.start - left, source_columns.stop - left)
        if source_rows.stop > source_rows.start and source_columns.stop > source_columns.start:
            out[:, target_rows, target_columns] = tensor[:, source_rows, source_columns]
        return out

    def crop_intrinsics(intrinsics: torch.Tensor) -> torch.Tensor:
        moved = intrinsics.clone()
        moved[0, 2] = intrinsics[0, 2] - left
        moved[1, 2] = intrinsics[1, 2] - top
        return moved

    return apply_geometric(sample, dict(kinds), crop_tensor, crop_intrinsics)


class CenterCrop:
    """Crop the central ``size = (H, W)`` window (padding where the image is smaller)."""

    def __init__(self, size: tuple[int, int], kinds: Mapping[str, LabelKind]):
        self.size = (int(size[0]), int(size[1]))
        self.kinds = dict(kinds)

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample_size(sample)
        top = (height - self.size[0]) // 2
        left = (width - self.size[1]) // 2
        return crop(sample, top, left, self.size, self.kinds)

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class RandomCrop:
    """Crop a random ``size = (H, W)`` window; a smaller image is padded at a random place."""

    def __init__(
        self,
        size: tuple[int, int],
        kinds: Mapping[str, LabelKind],
        generator: torch.Generator | None = None,
    ) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.kinds = dict(kinds)
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        height, width = sample_size(sample)
        top = _random_offset(height, self.size[0], self.generator)
        left = _random_offset(width, self.size[1], self.generator)
        return crop(sample, top, left, self.size, self.kinds)

    def __repr__(self) -> str:
        return f"RandomCrop(size={self.size})"


class RandomScaleCrop:
    """Resize by a random factor in ``scale_range``, then :class:`RandomCrop` ``crop_size``.

    The usual multi-scale augmentation of dense prediction (Kendall et al., CVPR 2018, train
    on random crops with flips). Both sides are scaled by the same factor.
    """

    def __init__(
        self,
        scale_range: tuple[float, float],
        crop_size: tuple[int, int],
        kinds: Mapping[str, LabelKind],
        generator: torch.Generator | None = None,
    ) -> None:
        low, high = scale_range
        if not 0 < low <= high:
            raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range}")
        self.scale_range = (float(low), float(high))
        self.kinds = dict(kinds)
        self.generator = generator
        self.crop = RandomCrop(crop_size, kinds, generator)

    def __call__(self, sample: Sample) -> Sample:
        low, high = self.scale_range
        scale = low + (high - low) * torch.rand((), generator=self.generator).item()
        height, width = sample_size(sample)
        scaled_size = (max(1, round(height * scale)), max(1, round(width * scale)))
        return self.crop(resize(sample, scaled_size, self.kinds))

    def __repr__(self) -> str:
        return f"RandomScaleCrop(scale_range={self.scale_range}, crop_size={self.crop.size})"


class ColorJitter:
    """Random brightness, contrast and saturation changes of the image only.

    Each factor is drawn uniformly from ``[max(0, 1 − a), 1 + a]`` for its amount ``a``
    (0 switches it off) and applied in that order; labels and intrinsics are untouched.
    """

    def __init__(
        self,
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        generator: torch.Generator | None = None,
    ) -> None:
        self.amounts = {"brightness": brightness, "contrast": contrast, "saturation": saturation}
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        adjust = {
            "brightness": TF.adjust_brightness,
            "contrast": TF.adjust_contrast,
            "saturation": TF.adjust_saturation,
        }
        for name, amount in self.amounts.items():
            if amount > 0:
                low = max(0.0, 1.0 - amount)
                factor = low + (1.0 + amount - low) * torch.rand((), generator=self.generator)
                image = adjust[name](image, factor.item())
        return {**sample, "image": image}

    def __repr__(self) -> str:
        return f"ColorJitter({self.amounts})"


class Normalize:
    """``(image − mean) / std`` per channel (ImageNet statistics by default); image only."""

    def __init__(
        self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(std, dtype=torch.float32)[:, None, None]

    def __call__(self, sample: Sample) -> Sample:
        image = sample["image"]
        return {**sample, "image": (image - self.mean.to(image)) / self.std.to(image)}

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def build_transforms(
    train: bool,
    size: tuple[int, int] | None,
    *,
    kinds: Mapping[str, LabelKind],
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    flip: bool = True,
    color_jitter: float = 0.0,
    normalize: bool = True,
    generator: torch.Generator | None = None,
) -> Compose:
    """The transform pipeline the engine uses.

    Training: random scale in ``scale_range`` and random crop to ``size`` (or a plain resize
    to ``size`` when ``scale_range`` is None; nothing when ``size`` is None), random flip,
    colour jitter of strength ``color_jitter`` (0 = off), normalisation. Evaluation: resize to
    ``size`` (if given) and normalisation only, so evaluation is deterministic.
    """
    steps: list[Transform] = []
    if train and size is not None and scale_range is not None:
        steps.append(RandomScaleCrop(scale_range, size, kinds, generator))
    elif size is not None:
        steps.append(Resize(size, kinds))
    if train and flip:
        steps.append(RandomHorizontalFlip(kinds, 0.5, generator))
    if train and color_jitter > 0:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter, generator))
    if normalize:
        steps.append(Normalize())
    return Compose(steps)


def _kind_of(key: str, kinds: Mapping[str, LabelKind]) -> LabelKind:
    try:
        return kinds[key]
    except KeyError:
        known = ", ".join(sorted(kinds))
        raise ValueError(
            f"sample key {key!r} is a tensor of no known label kind; known: {known} "
            "(declare its kind with the transform's kinds argument)"
        ) from None


def _transform_meta(meta: dict[str, Any], intrinsics_op: _IntrinsicsOp) -> dict[str, Any]:
    if meta.get("intrinsics") is None:
        return dict(meta)
    return {**meta, "intrinsics": intrinsics_op(meta["intrinsics"])}


def _resize_bilinear(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    resized = F.interpolate(
        tensor[None].float(), size=size, mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0].to(tensor.dtype)


def _resize_nearest(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest pixel centre (``floor((i + 0.5) · in / out)``), any dtype, values copied."""
    height, width = tensor.shape[-2:]
    rows = _nearest_indices(height, size[0])
    columns = _nearest_indices(width, size[1])
    return tensor[:, rows][:, :, columns]


def _nearest_indices(source: int, target: int) -> torch.Tensor:
    centres = (torch.arange(target, dtype=torch.float64) + 0.5) * (source / target)
    return centres.floor().long().clamp_(0, source - 1)


def _random_offset(length: int, window: int, generator: torch.Generator | None) -> int:
    """A uniform offset of a ``window`` in ``length``: in ``[0, length − window]`` or,
    when the window is larger, in ``[length − window, 0]`` (the image lands anywhere in it)."""
    low, high = sorted((0, length - window))
    return int(torch.randint(low, high + 1, (), generator=generator).item())
