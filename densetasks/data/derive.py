"""Labels derived from other labels: semantic edges from a segment map, centroid offsets
from instance ids.

The offsets live here rather than in ``densetasks.tasks.instance`` because both the instance
task (its loss target) and ``densetasks.metrics.offsets`` (its ground truth) derive them from
the ids; the metrics must not import the tasks, which import the metrics."""

import torch
import torch.nn.functional as F

from densetasks.data.sample import IGNORE_INDEX


def edges_from_segments(
    segments: torch.Tensor, ignore: torch.Tensor | None = None, thickness: int = 1
) -> torch.Tensor:
    """Binary boundary map (uint8 ``[H, W]``, values 0/1/``IGNORE_INDEX``) of a segment map.

    A pixel is an edge when its right or lower neighbour belongs to another segment
    (``segments`` is int ``[H, W]``: class ids, instance ids or any combination): one side of
    each boundary is marked, so edges are 1 px wide, as the BSDS benchmark's ``seg2bmap``
    draws them (Martin, Fowlkes & Malik, TPAMI 2004) and as its one-to-one matching expects
    (a 2-px label caps a perfect prediction near odsF 67). ``thickness`` dilates them with a
    square of side ``2 * thickness - 1``. Pixels in ``ignore`` (bool ``[H, W]``) do not create
    edges and are themselves marked ``IGNORE_INDEX``, unless they are already edges.
    """
    if segments.ndim != 2:
        raise ValueError(f"segments must be [H, W], got shape {tuple(segments.shape)}")
    ignored = torch.zeros_like(segments, dtype=torch.bool) if ignore is None else ignore
    edge = torch.zeros_like(segments, dtype=torch.bool)
    vertical = (segments[1:, :] != segments[:-1, :]) & ~ignored[1:, :] & ~ignored[:-1, :]
    horizontal = (segments[:, 1:] != segments[:, :-1]) & ~ignored[:, 1:] & ~ignored[:, :-1]
    edge[:-1, :] |= vertical
    edge[:, :-1] |= horizontal
    if thickness > 1:
        size = 2 * thickness - 1
        grown = F.max_pool2d(edge[None, None].float(), size, stride=1, padding=thickness - 1)
        edge = grown[0, 0] > 0
    out = edge.to(torch.uint8)
    out[ignored & ~edge] = IGNORE_INDEX
    return out


def centroid_offsets(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets to the instance centroids and the instance-pixel mask of a batch of id maps.

    ``ids`` is int ``[B, H, W]`` (0 = no instance, any positive id; the same id in two
    images of the batch is two instances). Pixel ``(row y, column x)`` sits at ``(x, y)``;
    the centroid is the mean position of the instance's pixels, so it may fall between
    pixels. Returns float32 offsets ``[B, 2, H, W]`` (channel 0 = dx = centroid x − x,
    channel 1 = dy), zero outside instances, and the bool mask ``ids > 0`` ``[B, H, W]``.

    Vectorised: (image, id) pairs are numbered by ``torch.unique`` and the coordinates of
    each pair summed by one ``scatter_add``; there is no loop over instances.
    """
    if ids.ndim != 3 or ids.is_floating_point():
        raise ValueError(
            f"instance ids must be an integer [B, H, W] tensor, got {ids.dtype} {tuple(ids.shape)}"
        )
    batch, height, width = ids.shape
    instance = ids > 0
    ids = ids.long()
    image = torch.arange(batch, device=ids.device)[:, None, None]
    key = image * (int(ids.max().clamp(min=0)) + 1) + ids.clamp(min=0)
    _, group = torch.unique(key.flatten(), return_inverse=True)
    groups = int(group.max()) + 1
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=torch.float64, device=ids.device),
        torch.arange(width, dtype=torch.float64, device=ids.device),
        indexing="ij",
    )
    positions = torch.stack([xs, ys])[:, None].expand(-1, batch, -1, -1).reshape(2, -1)
    totals = torch.zeros(2, groups, dtype=torch.float64, device=ids.device)
    totals.scatter_add_(1, group.expand(2, -1), positions)
    sizes = torch.bincount(group, minlength=groups).to(torch.float64)
    centroids = totals / sizes
    offsets = (centroids[:, group] - positions) * instance.flatten()
    return offsets.view(2, batch, height, width).transpose(0, 1).float(), instance
