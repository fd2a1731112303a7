"""Small pieces several tasks share: masked means, class colours, composite anchors."""

import numpy as np
import torch


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the ``True`` pixels of ``valid`` (same shape, or broadcast).

    Returns ``values.sum() * 0`` (a zero that keeps the graph) when no pixel is valid, so a
    batch without any label of a task contributes nothing and breaks nothing.
    """
    valid = valid.to(values.dtype)
    count = valid.sum()
    if count == 0:
        return values.sum() * 0.0
    return (values * valid).sum() / count


def class_colours(num_classes: int) -> np.ndarray:
    """A fixed, well-separated ``uint8`` colour per class id, ``[num_classes, 3]``.

    The PASCAL VOC bit-interleaving scheme: deterministic, distinct for every id < 256. These
    colours / 255 are also the class anchors of the composite space (the code of Popovic et al.,
    CVPR 2021).
    """
    colours = np.zeros((num_classes, 3), dtype=np.uint8)
    for index in range(num_classes):
        red = green = blue = 0
        value = index + 1  # id 0 gets a colour too, not black
        for shift in range(7, -1, -1):
            red |= ((value >> 0) & 1) << shift
            green |= ((value >> 1) & 1) << shift
            blue |= ((value >> 2) & 1) << shift
            value >>= 3
        colours[index] = (red, green, blue)
    return colours


def quasi_logits(composite: torch.Tensor, anchors: torch.Tensor, eps: float) -> torch.Tensor:
    """Popovic et al., CVPR 2021, Sec. 3.3: ``l_k = 1 / (‖sigmoid(o) − a_k‖ + ε)`` for every anchor
    ``a_k``.

    ``composite`` is ``[B, 3, H, W]`` raw output, ``anchors`` ``[K, 3]`` in ``[0, 1]``;
    returns ``[B, K, H, W]`` to be used as logits (softmax, cross-entropy, focal loss).
    """
    points = torch.sigmoid(composite).unsqueeze(1)  # [B, 1, 3, H, W]
    distance = (points - anchors[None, :, :, None, None].to(points)).norm(dim=2)
    return 1.0 / (distance + eps)
