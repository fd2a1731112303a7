"""Labels derived from other labels: semantic edges from a segment map."""

import torch
import torch.nn.functional as F

from densetasks.data.sample import IGNORE_INDEX


def edges_from_segments(
    segments: torch.Tensor, ignore: torch.Tensor | None = None, thickness: int = 1
) -> torch.Tensor:
    """Binary boundary map (uint8 ``[H, W]``, values 0/1/``IGNORE_INDEX``) of a segment map.

    A pixel is an edge when one of its 4-neighbours belongs to another segment
    (``segments`` is int ``[H, W]``: class ids, instance ids or any combination). Both sides
    of a boundary are marked, so edges are 2 px wide before ``thickness`` dilation (a square
    of side ``2 * thickness - 1``). Pixels in ``ignore`` (bool ``[H, W]``) do not create
    edges and are themselves marked ``IGNORE_INDEX``, unless they are already edges.
    """
    if segments.ndim != 2:
        raise ValueError(f"segments must be [H, W], got shape {tuple(segments.shape)}")
    ignored = torch.zeros_like(segments, dtype=torch.bool) if ignore is None else ignore
    edge = torch.zeros_like(segments, dtype=torch.bool)
    vertical = (segments[1:, :] != segments[:-1, :]) & ~ignored[1:, :] & ~ignored[:-1, :]
    horizontal = (segments[:, 1:] != segments[:, :-1]) & ~ignored[:, 1:] & ~ignored[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    if thickness > 1:
        size = 2 * thickness - 1
        grown = F.max_pool2d(edge[None, None].float(), size, stride=1, padding=thickness - 1)
        edge = grown[0, 0] > 0
    out = edge.to(torch.uint8)
    out[ignored & ~edge] = IGNORE_INDEX
    return out
