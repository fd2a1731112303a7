"""A Kinect-like depth-noise model: what real structured-light depth does to exact depth.

Hickson et al., network fission, supplementary Sec. 2.2 compute normals of real (Kinect,
NYUDv2 / ScanNet) depth with in-painting and smoothing because that depth is quantised, holed
and range-limited. This model puts those three defects onto the exact synthetic depth, so the
normals pipeline can be measured against the exact normals:

- **disparity quantisation**: depth is measured as disparity ``d = f·b / z`` of a sensor
  ``sensor_width`` pixels wide with the camera's field of view, baseline ``b``; ``d`` gets
  Gaussian jitter (``disparity_noise`` px, an assumption, not a measured value) and is rounded
  to ``disparity_step`` (1/8 px, sub-pixel steps of structured light), then ``z = f·b / d``.
  The step in depth grows as ``z² · step / (f·b)``: 2.6 cm at 3 m for the defaults.
- **holes at depth edges**: pixels next to a relative depth jump above ``edge_jump`` between
  4-neighbours (mixed / flying pixels) are invalid, and each pixel one step further with
  probability ``edge_spread``; plus the projector's shadow: the projector sits ``b`` to the
  right (+x) of the camera, so a point is invalid when a nearer surface hides it from the
  projector (its projector column ``u − d`` is not below every column to its right), which
  leaves a band of ``d_near − d_far`` pixels left of near objects.
- **missing range**: depth outside ``[min_range, max_range]`` is invalid (0.8–4 m, the
  range specified for the first Kinect in its default mode).

Invalid pixels are 0, the depth label's invalid value.
"""

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

DEPTH_NOISE_MODELS = ("none", "kinect")


@dataclass(frozen=True)
class KinectNoise:
    """Parameters of :func:`kinect_depth` (metres and pixels)."""

    baseline: float = 0.075
    sensor_width: int = 640
    disparity_step: float = 1 / 8
    disparity_noise: float = 1 / 16
    edge_jump: float = 0.05
    edge_spread: float = 0.5
    min_range: float = 0.8
    max_range: float = 4.0


def kinect_depth(
    depth: np.ndarray, focal: float, rng: np.random.Generator, noise: KinectNoise = KinectNoise()
) -> np.ndarray:
    """Kinect-like float32 depth ``[H, W]`` from exact depth ``[H, W]`` (metres, all > 0).

    ``focal`` is the camera's focal length in pixels of this image; ``rng`` draws the jitter
    and the spread of edge holes only, so a seeded generator gives the same map.
    """
    width = depth.shape[1]
    exact = depth.astype(np.float64)
    sensor_disparity = focal * noise.sensor_width / width * noise.baseline / exact
    jittered = sensor_disparity + rng.normal(0.0, noise.disparity_noise, depth.shape)
    quantised = np.maximum(np.round(jittered / noise.disparity_step), 1) * noise.disparity_step
    noisy = focal * noise.sensor_width / width * noise.baseline / quantised
    invalid = edge_holes(exact, noise.edge_jump, noise.edge_spread, rng)
    invalid |= projector_shadow(focal * noise.baseline / exact)
    invalid |= (noisy < noise.min_range) | (noisy > noise.max_range)
    return np.where(invalid, 0.0, noisy).astype(np.float32)


def edge_holes(
    depth: np.ndarray, edge_jump: float, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """Pixels on either side of a relative depth jump ``> edge_jump`` between 4-neighbours,
    and each 4-neighbour of those with probability ``spread``."""
    right = np.abs(np.diff(depth, axis=1)) > edge_jump * np.minimum(depth[:, 1:], depth[:, :-1])
    down = np.abs(np.diff(depth, axis=0)) > edge_jump * np.minimum(depth[1:], depth[:-1])
    edges = np.zeros(depth.shape, dtype=bool)
    edges[:, 1:] |= right
    edges[:, :-1] |= right
    edges[1:] |= down
    edges[:-1] |= down
    near = ndimage.binary_dilation(edges) & ~edges
    return edges | (near & (rng.random(depth.shape) < spread))


def projector_shadow(disparity: np.ndarray) -> np.ndarray:
    """Pixels the projector (``b`` to the right, +x) cannot see, ``disparity`` in pixels.

    A pixel is shadowed when ``u − d(u) >= min_{u' > u} (u' − d(u'))``: along a row the
    projector column ``u − d`` increases over every surface the projector lights, so a point
    whose column is not below that of every pixel to its right lies behind a nearer surface
    as the projector sees it.
    """
    width = disparity.shape[1]
    column = np.arange(width)[None, :] - disparity
    right_minimum = np.minimum.accumulate(column[:, ::-1], axis=1)[:, ::-1]
    shadow = np.zeros(disparity.shape, dtype=bool)
    shadow[:, :-1] = column[:, :-1] >= right_minimum[:, 1:]
    return shadow
