"""Camera geometry of a pinhole image: unprojection, intrinsics under resizing, normals.

Pixel convention (OpenCV): the centre of pixel ``(row v, column u)`` has image coordinates
``(u, v)``; the camera frame has x right, y down, z forward. A point of depth ``z`` (metres,
along the optical axis) seen at pixel ``(u, v)`` is ``z · K⁻¹ [u, v, 1]ᵀ``.
"""

import torch
import torch.nn.functional as F

# Neighbour offsets (row, column) in pairs a quarter turn apart, all turning the same way
# (right -> down, left -> up, and the diagonals alike), so every cross product of a pair
# points to the same side of the surface before the pairs are summed.
_NEIGHBOUR_PAIRS = (
    ((0, 1), (1, 0)),
    ((0, -1), (-1, 0)),
    ((1, 1), (1, -1)),
    ((-1, -1), (-1, 1)),
)


def unproject(depth: torch.Tensor, intrinsics: torch.Tensor) -> torch.Tensor:
    """3-D camera-frame points ``[3, H, W]`` of a metric depth map ``[1, H, W]``.

    ``intrinsics`` is the ``[3, 3]`` pinhole matrix of this image at this size.
    """
    _check_depth_and_intrinsics(depth, intrinsics)
    _, height, width = depth.shape
    dtype = torch.float64
    rows, columns = torch.meshgrid(
        torch.arange(height, dtype=dtype), torch.arange(width, dtype=dtype), indexing="ij"
    )
    pixels = torch.stack([columns, rows, torch.ones_like(rows)]).reshape(3, -1)
    rays = torch.linalg.inv(intrinsics.to(dtype)) @ pixels
    points = rays.reshape(3, height, width) * depth.to(dtype)
    return points.to(depth.dtype)


def scale_intrinsics(
    intrinsics: torch.Tensor, from_size: tuple[int, int], to_size: tuple[int, int]
) -> torch.Tensor:
    """The intrinsics of an image resized from ``(H, W)`` = ``from_size`` to ``to_size``.

    With pixel centres at integer coordinates, a resize by ``s`` maps ``u`` to
    ``(u + 0.5) · s − 0.5``: focal lengths and skew scale by ``s``, and the principal point
    moves by the half-pixel correction too.
    """
    scale_y = to_size[0] / from_size[0]
    scale_x = to_size[1] / from_size[1]
    scaled = intrinsics.clone()
    scaled[0, :] = intrinsics[0, :] * scale_x
    scaled[1, :] = intrinsics[1, :] * scale_y
    scaled[0, 2] = (intrinsics[0, 2] + 0.5) * scale_x - 0.5
    scaled[1, 2] = (intrinsics[1, 2] + 0.5) * scale_y - 0.5
    return scaled


def normals_from_depth(
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    valid: torch.Tensor | None = None,
    invalid_dilation: int = 1,
) -> torch.Tensor:
    """Unit surface normals ``[3, H, W]`` of a metric depth map ``[1, H, W]``.

    As Lopes et al., WACV 2023, App. B.1.1 describe: every pixel is unprojected with ``K⁻¹``
    (``intrinsics`` of this image at this size, depth in metres — the authors' release feeds
    inverse depth and unscaled intrinsics, which we do not), then the cross products of the
    differences to neighbouring points are averaged over four neighbour pairs taken from the 8
    neighbours (right/down, left/up and the two diagonal pairs), normalised, and oriented
    towards the camera (``n · p < 0``, the convention of :mod:`densetasks.data.sample`).

    The result is the zero vector (invalid) where depth is not valid (``depth <= 0`` or not
    in ``valid``), on the one-pixel image border, and within ``invalid_dilation`` pixels of
    an invalid pixel (a square neighbourhood). ``invalid_dilation`` must be at least 1: the
    8-neighbour stencil reaches one pixel, so a normal any closer would mix in missing points.
    """
    _check_depth_and_intrinsics(depth, intrinsics)
    if invalid_dilation < 1:
        raise ValueError(f"invalid_dilation must be >= 1, got {invalid_dilation}")
    points = unproject(depth, intrinsics).to(torch.float64)
    summed = torch.zeros_like(points)
    for first, second in _NEIGHBOUR_PAIRS:
        to_first = _shifted(points, *first) - points
        to_second = _shifted(points, *second) - points
        summed += torch.linalg.cross(to_first, to_second, dim=0)
    normals = F.normalize(summed, dim=0)
    facing_away = (normals * points).sum(dim=0) > 0
    normals = torch.where(facing_away, -normals, normals)
    usable = _usable_pixels(depth, valid, invalid_dilation) & (summed.norm(dim=0) > 0)
    return (normals * usable).to(depth.dtype)


def _shifted(points: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """``out[:, v, u] = points[:, v + rows, u + columns]`` (border values wrap; masked later)."""
    return torch.roll(points, shifts=(-rows, -columns), dims=(1, 2))


def _usable_pixels(
    depth: torch.Tensor, valid: torch.Tensor | None, invalid_dilation: int
) -> torch.Tensor:
    """Inner pixels with depth everywhere within ``invalid_dilation`` pixels (a square)."""
    has_depth = depth[0] > 0
    if valid is not None:
        if valid.shape != has_depth.shape:
            raise ValueError(
                f"valid must be [H, W] = {tuple(has_depth.shape)}, got {tuple(valid.shape)}"
            )
        has_depth &= valid.to(torch.bool)
    invalid = (~has_depth).to(torch.float32)[None, None]
    size = 2 * invalid_dilation + 1
    near_invalid = F.max_pool2d(invalid, size, stride=1, padding=invalid_dilation)[0, 0] > 0
    usable = ~near_invalid
    usable[:1, :] = usable[-1:, :] = False
    usable[:, :1] = usable[:, -1:] = False
    return usable


def _check_depth_and_intrinsics(depth: torch.Tensor, intrinsics: torch.Tensor) -> None:
    if depth.ndim != 3 or depth.shape[0] != 1:
        raise ValueError(f"depth must be [1, H, W], got shape {tuple(depth.shape)}")
    if intrinsics.shape != (3, 3):
        raise ValueError(f"intrinsics must be [3, 3], got shape {tuple(intrinsics.shape)}")
