"""Camera geometry of a pinhole image: unprojection, intrinsics under resizing, normals.

Pixel convention (OpenCV): the centre of pixel ``(row v, column u)`` has image coordinates
``(u, v)``; the camera frame has x right, y down, z forward. A point of depth ``z`` (metres,
along the optical axis) seen at pixel ``(u, v)`` is ``z · K⁻¹ [u, v, 1]ᵀ``.

Normals from real (noisy, holed) depth follow what Hickson et al., network fission,
supplementary Sec. 2.2 use for ground truth (their ref. [5], "Floors are flat"): in-paint the
holes, fit local planes in edge-aware windows (integral images), and optionally give every
planar region of a flat semantic class its mean normal.
"""

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage, sparse
from scipy.sparse import csgraph
from scipy.sparse.linalg import spsolve

# Neighbour offsets (row, column) in pairs a quarter turn apart, all turning the same way
# (right -> down, left -> up, and the diagonals alike), so every cross product of a pair
# points to the same side of the surface before the pairs are summed.
_NEIGHBOUR_PAIRS = (
    ((0, 1), (1, 0)),
    ((0, -1), (-1, 0)),
    ((1, 1), (1, -1)),
    ((-1, -1), (-1, 1)),
)

# Mean-shift iterations per "floors are flat" region; they stop earlier once the region's
# pixels no longer change (a handful in practice: the kernel is wide and the seed is a mode).
_MEAN_SHIFT_STEPS = 20


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


NORMALS_PRESETS: dict[str, dict[str, bool | int]] = {
    "synthetic": {"inpaint": False, "smoothing": 0},
    "real": {"inpaint": True, "smoothing": 30},
}
"""Options of :func:`normals_from_depth` by name, for a 640-pixel-wide image. ``synthetic``:
exact depth, neighbour differences (the default). ``real``: in-paint holes (their pixels keep
the ignore value), then local planes in edge-aware windows of at most 30 px, the authors'
setting for 640 × 480 real depth (Hickson et al., network fission, supplementary Sec. 2.2;
they use 10 px for synthetic depth). :func:`preset_options` scales the window to other widths."""

PRESET_WIDTH = 640
"""The image width the windows of :data:`NORMALS_PRESETS` are meant for (Kinect, NYUDv2)."""


def preset_options(name: str, width: int) -> dict[str, bool | int]:
    """The options of ``NORMALS_PRESETS[name]`` for an image ``width`` pixels wide.

    The smoothing window is scaled by ``width / 640`` (rounded, at least 3 pixels, the
    smallest window that fits a plane), so that it covers the same part of the scene as the
    authors' window does at 640 × 480.
    """
    if name not in NORMALS_PRESETS:
        raise ValueError(f"unknown normals preset {name!r}; known: {', '.join(NORMALS_PRESETS)}")
    options = dict(NORMALS_PRESETS[name])
    if options["smoothing"]:
        options["smoothing"] = max(3, int(options["smoothing"] * width / PRESET_WIDTH + 0.5))
    return options


def normals_from_depth(
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    valid: torch.Tensor | None = None,
    invalid_dilation: int = 1,
    *,
    inpaint: bool = False,
    label_holes: bool = False,
    smoothing: int = 0,
    max_depth_change: float = 0.02,
    semseg: torch.Tensor | None = None,
    flat_classes: Sequence[int] = (),
    flat_angle: float = 0.4,
) -> torch.Tensor:
    """Unit surface normals ``[3, H, W]`` of a metric depth map ``[1, H, W]``.

    With the defaults, as Lopes et al., WACV 2023, App. B.1.1 describe: every pixel is
    unprojected with ``K⁻¹`` (``intrinsics`` of this image at this size, depth in metres — the
    authors' release feeds inverse depth and unscaled intrinsics, which we do not), then the
    cross products of the differences to neighbouring points are averaged over four neighbour
    pairs taken from the 8 neighbours (right/down, left/up and the two diagonal pairs),
    normalised, and oriented towards the camera (``n · p < 0``, the convention of
    :mod:`densetasks.data.sample`). The result is the zero vector (invalid) where depth is not
    valid (``depth <= 0`` or not in ``valid``), on the one-pixel image border, and within
    ``invalid_dilation`` pixels (at least 1, the stencil's reach) of an invalid pixel.

    For real depth (Hickson et al., network fission, supplementary Sec. 2.2; see
    :data:`NORMALS_PRESETS`): ``inpaint`` fills every invalid pixel first
    (:func:`inpaint_depth`), so that the normals of measured pixels next to holes are
    computed; the pixels whose depth was in-painted still get the zero vector (the normals
    label's ignore value, which the normals loss and metrics skip), since an in-painted
    surface is a guess, unless ``label_holes``. ``smoothing > 0`` replaces the stencil by
    local planes fitted in windows of at most ``smoothing`` pixels that stop at depth changes
    above ``max_depth_change`` (:func:`local_plane_normals`; ``invalid_dilation`` is then
    unused, the windows never reach an invalid pixel); ``flat_classes`` with the ``semseg``
    map ``[H, W]`` gives every planar region of those classes its mean normal
    (:func:`flatten_flat_classes`, ``flat_angle`` in radians), after the holes are zeroed so
    that guessed normals never enter a mean.
    """
    _check_depth_and_intrinsics(depth, intrinsics)
    if invalid_dilation < 1:
        raise ValueError(f"invalid_dilation must be >= 1, got {invalid_dilation}")
    if smoothing < 0:
        raise ValueError(f"smoothing must be >= 0 pixels, got {smoothing}")
    if flat_classes and semseg is None:
        raise ValueError("flat_classes needs the semantic map semseg [H, W]")
    measured = _has_depth(depth, valid)
    if inpaint:
        depth, valid = inpaint_depth(depth, valid), None
    if smoothing:
        has_depth = _has_depth(depth, valid)
        normals = local_plane_normals(depth, intrinsics, has_depth, smoothing, max_depth_change)
    else:
        normals = _stencil_normals(depth, intrinsics, valid, invalid_dilation)
    if not label_holes:
        normals = normals * measured
    if flat_classes:
        normals = flatten_flat_classes(normals, semseg, flat_classes, flat_angle)
    return normals.to(depth.dtype)


def _stencil_normals(
    depth: torch.Tensor, intrinsics: torch.Tensor, valid: torch.Tensor | None, dilation: int
) -> torch.Tensor:
    """Neighbour-difference normals (Lopes et al., WACV 2023, App. B.1.1), float64."""
    points = unproject(depth, intrinsics).to(torch.float64)
    summed = torch.zeros_like(points)
    for first, second in _NEIGHBOUR_PAIRS:
        to_first = _shifted(points, *first) - points
        to_second = _shifted(points, *second) - points
        summed += torch.linalg.cross(to_first, to_second, dim=0)
    normals = F.normalize(summed, dim=0)
    facing_away = (normals * points).sum(dim=0) > 0
    normals = torch.where(facing_away, -normals, normals)
    usable = _usable_pixels(depth, valid, dilation) & (summed.norm(dim=0) > 0)
    return normals * usable


def inpaint_depth(depth: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """``depth`` ``[1, H, W]`` with every invalid pixel (``<= 0`` or not in ``valid``) filled.

    Hickson et al., network fission, supplementary Sec. 2.2 in-paint depth holes before
    computing normals (their code: OpenCV Navier–Stokes in-painting, radius 5). OpenCV is not
    a dependency, so we solve the steady state of the diffusion that Navier–Stokes in-painting
    adds transport to: the discrete Laplace equation (4-neighbour, no flux across the image
    border) over the holes, with the valid pixels as boundary values, in one sparse solve. We
    diffuse *inverse* depth: the inverse depth of a plane is affine in ``(u, v)`` and affine
    functions are discrete-harmonic, so a hole inside a plane (not touching the image border)
    is filled exactly. A map without any valid pixel is returned unchanged.
    """
    known = _has_depth(depth, valid).numpy()
    if known.all() or not known.any():
        return depth.clone()
    inverse = np.zeros(known.shape)
    inverse[known] = 1.0 / depth[0].double().numpy()[known]
    filled = inverse.copy()
    filled[~known] = _solve_laplace(inverse, ~known)
    result = torch.from_numpy(1.0 / filled).to(depth.dtype)[None]
    return torch.where(torch.from_numpy(known)[None], depth, result)


def _solve_laplace(values: np.ndarray, holes: np.ndarray) -> np.ndarray:
    """The discrete-harmonic values at ``holes`` given ``values`` elsewhere (Dirichlet)."""
    height, width = holes.shape
    hole_v, hole_u = np.nonzero(holes)
    count = len(hole_v)
    number = np.full(holes.shape, -1)
    number[hole_v, hole_u] = np.arange(count)
    degree = np.zeros(count)
    rhs = np.zeros(count)
    rows, columns = [], []
    for dv, du in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        v, u = hole_v + dv, hole_u + du
        inside = (v >= 0) & (v < height) & (u >= 0) & (u < width)
        own, v, u = number[hole_v[inside], hole_u[inside]], v[inside], u[inside]
        degree[own] += 1
        neighbour_is_hole = holes[v, u]
        rows.append(own[neighbour_is_hole])
        columns.append(number[v[neighbour_is_hole], u[neighbour_is_hole]])
        np.add.at(
            rhs, own[~neighbour_is_hole], values[v[~neighbour_is_hole], u[~neighbour_is_hole]]
        )
    rows, columns = np.concatenate(rows), np.concatenate(columns)
    off_diagonal = sparse.coo_matrix((-np.ones(len(rows)), (rows, columns)), shape=(count, count))
    return spsolve((off_diagonal + sparse.diags(degree)).tocsc(), rhs)


def local_plane_normals(
    depth: torch.Tensor,
    intrinsics: torch.Tensor,
    has_depth: torch.Tensor,
    smoothing: int,
    max_depth_change: float = 0.02,
) -> torch.Tensor:
    """Normals ``[3, H, W]`` of planes fitted to the points of edge-aware windows.

    The integral-image covariance method of PCL's ``IntegralImageNormalEstimation``, which
    the authors' code uses (Hickson et al., network fission, supplementary Sec. 2.2): a depth
    change between 4-neighbours larger than ``2 · max_depth_change · (z + 1 m)`` (PCL's
    threshold), or a missing neighbour, marks both pixels; a pixel at Euclidean distance ``d``
    from the nearest marked pixel gets the square window of ``s = ⌊min(d, smoothing)⌋`` pixels
    (``s // 2`` on each side, clipped at the image border) and no normal if ``s <= 2``. The
    normal is the eigenvector of the smallest eigenvalue of the covariance of the window's
    back-projected points, oriented towards the camera. Window sums come from integral images,
    so the cost does not depend on the window size.
    """
    points = unproject(depth, intrinsics).double().numpy()
    known = has_depth.numpy()
    marked = _depth_changes(points[2], known, max_depth_change)
    if marked.any():
        distance = ndimage.distance_transform_edt(~marked)
    else:
        distance = np.full(known.shape, np.inf)
    size = np.floor(np.minimum(distance, smoothing)).astype(np.int64)
    fits = known & (size > 2)
    normals = np.zeros_like(points)
    fit_v, fit_u = np.nonzero(fits)
    fitted = _window_plane_normals(points, known, fit_v, fit_u, size[fits] // 2)
    facing_away = np.einsum("nj,jn->n", fitted, points[:, fit_v, fit_u]) > 0
    fitted[facing_away] *= -1
    normals[:, fit_v, fit_u] = fitted.T
    return torch.from_numpy(normals)


def _depth_changes(z: np.ndarray, known: np.ndarray, max_depth_change: float) -> np.ndarray:
    """Pixels on either side of a large depth change or next to a missing depth (PCL's map)."""
    marked = ~known.copy()
    threshold = 2.0 * max_depth_change * (np.abs(z) + 1.0)
    right = (np.abs(z[:, 1:] - z[:, :-1]) > threshold[:, :-1]) | ~known[:, 1:] | ~known[:, :-1]
    down = (np.abs(z[1:] - z[:-1]) > threshold[:-1]) | ~known[1:] | ~known[:-1]
    marked[:, 1:] |= right
    marked[:, :-1] |= right
    marked[1:] |= down
    marked[:-1] |= down
    return marked


def _window_plane_normals(
    points: np.ndarray, known: np.ndarray, v: np.ndarray, u: np.ndarray, half: np.ndarray
) -> np.ndarray:
    """``[N, 3]`` smallest-eigenvector normals of the windows ``v ± half``, ``u ± half``."""
    height, width = known.shape
    weight = known.astype(np.float64)
    centred = (points - points[:, known].mean(axis=1)[:, None, None]) * weight
    x, y, z = centred
    channels = np.stack([weight, x, y, z, x * x, x * y, x * z, y * y, y * z, z * z])
    integral = np.zeros((len(channels), height + 1, width + 1))
    integral[:, 1:, 1:] = channels.cumsum(axis=1).cumsum(axis=2)
    top, bottom = np.clip(v - half, 0, height), np.clip(v + half + 1, 0, height)
    left, right = np.clip(u - half, 0, width), np.clip(u + half + 1, 0, width)
    sums = (
        integral[:, bottom, right]
        - integral[:, top, right]
        - integral[:, bottom, left]
        + integral[:, top, left]
    )
    mean = sums[1:4] / sums[0]
    second = sums[4:] / sums[0]
    upper = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
    covariance = np.empty((len(v), 3, 3))
    for channel, (i, j) in enumerate(upper):
        covariance[:, i, j] = covariance[:, j, i] = second[channel] - mean[i] * mean[j]
    return np.linalg.eigh(covariance)[1][:, :, 0]


def flatten_flat_classes(
    normals: torch.Tensor,
    semseg: torch.Tensor,
    flat_classes: Sequence[int],
    max_angle: float = 0.4,
    min_share: float = 0.001,
) -> torch.Tensor:
    """ "Floors are flat": each planar region of a flat class gets its mean normal.

    Hickson et al., network fission, supplementary Sec. 2.2 (their ref. [5]) join pixels of a
    flat semantic class whose normals are similar and give each component its mean normal;
    their code joins 4-neighbours whose normals differ by less than 0.04 rad (union-find).
    Pairwise joining chains: smoothed normals turn gradually across a concave corner between
    two walls, so both walls became one component with a mean wrong for both (12.7° instead of
    6.8° mean error, ``benchmarks/normals_from_depth.md``). Here a region is grown against
    its *mean*, not pairwise: per class, a mean-shift with a flat kernel of ``max_angle``
    radians (0.4, the supplementary's "planar threshold parameter") starts at the densest cell
    of a grid over the normals, moves the mean to the mean of the free pixels within
    ``max_angle`` until it stops changing, and claims those pixels; this repeats while a region
    holds at least ``min_share`` of the image's pixels. Each 4-connected component of the
    pixels claimed by one region gets its normalised mean normal. Every claimed normal lies
    within ``max_angle`` of its region's mean, so two planes more than ``2 · max_angle`` apart
    (two walls at a corner) never share a region. Pixels of no region, of other classes, and
    invalid (zero) normals are unchanged.
    """
    if semseg.shape != normals.shape[1:]:
        raise ValueError(
            f"semseg must be [H, W] = {tuple(normals.shape[1:])}, got {tuple(semseg.shape)}"
        )
    if not 0.0 < max_angle < math.pi / 2:
        raise ValueError(f"flat_angle must be in (0, pi/2) radians, got {max_angle}")
    vectors = normals.double().numpy()
    labels = semseg.numpy()
    has_normal = np.abs(vectors).sum(axis=0) > 0
    region = np.full(labels.shape, -1, dtype=np.int64)
    min_pixels = max(1, math.ceil(min_share * labels.size))
    for flat_class in dict.fromkeys(flat_classes):
        pixels = np.flatnonzero(has_normal & (labels == flat_class))
        claimed = _mean_shift_regions(vectors.reshape(3, -1)[:, pixels].T, max_angle, min_pixels)
        region.flat[pixels] = np.where(claimed >= 0, claimed + region.max() + 1, -1)
    component = _region_components(region)
    inside = component >= 0
    sums = np.stack([np.bincount(component[inside], weights=c[inside]) for c in vectors])
    means = sums / np.linalg.norm(sums, axis=0).clip(min=1e-12)
    vectors[:, inside] = means[:, component[inside]]
    return torch.from_numpy(vectors).to(normals.dtype)


def _mean_shift_regions(vectors: np.ndarray, max_angle: float, min_pixels: int) -> np.ndarray:
    """Region id per unit vector of ``[N, 3]`` (``-1``: none), regions grown against their mean.

    The seed of each region is the mean of the densest free cell of a cube grid whose cells
    (side ``max_angle / 2``) fit well inside the kernel; mean-shift iterations then converge
    to a mode of the free vectors, so the largest planes are found first.
    """
    region = np.full(len(vectors), -1, dtype=np.int64)
    cells = np.floor(vectors / (max_angle / 2)).astype(np.int64)
    minimum_cosine = math.cos(max_angle)
    free = np.arange(len(vectors))
    while len(free) >= min_pixels:
        _, cell, counts = np.unique(cells[free], axis=0, return_inverse=True, return_counts=True)
        members = free[cell.ravel() == counts.argmax()]
        for _ in range(_MEAN_SHIFT_STEPS):
            mean = vectors[members].sum(axis=0)
            mean /= np.linalg.norm(mean)
            moved = free[vectors[free] @ mean > minimum_cosine]
            if np.array_equal(moved, members):
                break
            members = moved
            if not len(members):
                break
        if len(members) < min_pixels:
            break
        region[members] = region.max() + 1
        free = np.setdiff1d(free, members, assume_unique=True)
    return region


def _region_components(region: np.ndarray) -> np.ndarray:
    """Numbered 4-connected components of equal ``region >= 0`` (``-1`` elsewhere)."""
    number = np.arange(region.size).reshape(region.shape)
    rows, columns = [], []
    for here, there in (
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
        ((slice(None, -1), slice(None)), (slice(1, None), slice(None))),
    ):
        joined = (region[here] >= 0) & (region[here] == region[there])
        rows.append(number[here][joined])
        columns.append(number[there][joined])
    rows, columns = np.concatenate(rows), np.concatenate(columns)
    graph = sparse.coo_matrix(
        (np.ones(len(rows)), (rows, columns)), shape=(region.size, region.size)
    )
    _, component = csgraph.connected_components(graph, directed=False)
    component = component.reshape(region.shape)
    inside = region >= 0
    renumbered = np.full(region.shape, -1, dtype=np.int64)
    renumbered[inside] = np.unique(component[inside], return_inverse=True)[1].ravel()
    return renumbered


def _has_depth(depth: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """``[H, W]`` bool: positive depth, and in ``valid`` when given."""
    has_depth = depth[0] > 0
    if valid is not None:
        if valid.shape != has_depth.shape:
            raise ValueError(
                f"valid must be [H, W] = {tuple(has_depth.shape)}, got {tuple(valid.shape)}"
            )
        has_depth &= valid.to(torch.bool)
    return has_depth


def _shifted(points: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    """``out[:, v, u] = points[:, v + rows, u + columns]`` (border values wrap; masked later)."""
    return torch.roll(points, shifts=(-rows, -columns), dims=(1, 2))


def _usable_pixels(
    depth: torch.Tensor, valid: torch.Tensor | None, invalid_dilation: int
) -> torch.Tensor:
    """Inner pixels with depth everywhere within ``invalid_dilation`` pixels (a square)."""
    has_depth = _has_depth(depth, valid)
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
