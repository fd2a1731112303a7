"""Geometry of one synthetic scene: the room, the camera, the light and the primitives.

World frame: metres, ``z`` up, the room is the box ``[0, Lx] × [0, Ly] × [0, Lz]``.
Every object is a primitive (sphere, box, finite cylinder) with its own local frame, so a
box rotated about the vertical and an arm pointing anywhere are the same kind of thing.
Sampling uses only the geometry generator, so two styles render the same geometry.
"""

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

SYNTHETIC_CLASSES: tuple[str, ...] = (
    "floor",
    "wall",
    "ceiling",
    "box",
    "sphere",
    "cylinder",
    "person",
)
"""Semantic classes; the id is the position. Floor, wall and ceiling are "stuff" (instance 0)."""

SYNTHETIC_PARTS: tuple[str, ...] = ("background", "head", "torso", "arms", "legs")
"""Human parts; 0 is every pixel that is not a person."""

FLOOR, WALL, CEILING, BOX, SPHERE, CYLINDER, PERSON = range(len(SYNTHETIC_CLASSES))

THING_CLASSES: tuple[int, ...] = (BOX, SPHERE, CYLINDER, PERSON)
"""The classes whose pixels belong to instances (the others are stuff, instance id 0)."""
HEAD, TORSO, ARMS, LEGS = range(1, len(SYNTHETIC_PARTS))


class Shape(IntEnum):
    """Primitive kinds the ray caster intersects."""

    SPHERE = 0
    BOX = 1
    CYLINDER = 2


@dataclass(frozen=True)
class Primitive:
    """One convex primitive.

    ``rotation`` maps local to world coordinates (its columns are the local axes in world).
    ``size`` is the half extents for a box, ``(r, r, r)`` for a sphere and
    ``(r, r, half_length)`` for a cylinder along its local ``z``.
    """

    shape: Shape
    center: np.ndarray
    rotation: np.ndarray
    size: np.ndarray
    semantic: int
    instance: int
    part: int = 0


@dataclass(frozen=True)
class Camera:
    """A pinhole camera looking along OpenCV axes (x right, y down, z forward).

    ``rotation`` maps camera to world coordinates (columns: right, down, forward in world).
    Pixel ``(u, v)`` (integer indices) looks along ``K⁻¹ [u, v, 1]``; the principal point is
    the image centre ``((W − 1) / 2, (H − 1) / 2)`` and ``fx = fy``.
    """

    position: np.ndarray
    rotation: np.ndarray
    focal: float
    height: int
    width: int

    @property
    def intrinsics(self) -> np.ndarray:
        """The float32 ``[3, 3]`` matrix ``K``."""
        return np.array(
            [
                [self.focal, 0.0, (self.width - 1) / 2],
                [0.0, self.focal, (self.height - 1) / 2],
                [0.0, 0.0, 1.0],
            ],
            dtype=np.float32,
        )

    def camera_rays(self) -> np.ndarray:
        """Per-pixel directions ``[H·W, 3]`` in the camera frame with ``z = 1``.

        With ``z = 1`` the ray parameter of a hit is its depth, so no conversion is needed.
        """
        v, u = np.mgrid[0 : self.height, 0 : self.width].astype(np.float32)
        x = (u - (self.width - 1) / 2) / self.focal
        y = (v - (self.height - 1) / 2) / self.focal
        return np.stack([x.ravel(), y.ravel(), np.ones(x.size, np.float32)], axis=1)


def look_rotation(yaw: float, pitch: float) -> np.ndarray:
    """Camera-to-world rotation for a camera turned by ``yaw`` about ``z``, tilted by ``pitch``.

    ``pitch > 0`` looks up. Columns: right, down, forward (a right-handed OpenCV frame).
    """
    forward = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    right = np.array([np.sin(yaw), -np.cos(yaw), 0.0])
    down = np.cross(forward, right)
    return np.stack([right, down, forward], axis=1)


def yaw_rotation(angle: float) -> np.ndarray:
    """Rotation by ``angle`` about the world's vertical axis."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def frame_along(axis: np.ndarray) -> np.ndarray:
    """A rotation whose third column is the unit vector ``axis`` (cylinder frames)."""
    z = axis / np.linalg.norm(axis)
    helper = np.array([1.0, 0.0, 0.0]) if abs(z[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    x = np.cross(helper, z)
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


def cylinder_between(
    start: np.ndarray, end: np.ndarray, radius: float, semantic: int, instance: int, part: int
) -> Primitive:
    """A capped cylinder from ``start`` to ``end`` (limbs)."""
    axis = end - start
    return Primitive(
        Shape.CYLINDER,
        (start + end) / 2,
        frame_along(axis),
        np.array([radius, radius, np.linalg.norm(axis) / 2]),
        semantic,
        instance,
        part,
    )


@dataclass(frozen=True)
class Scene:
    """Everything the renderer needs besides the appearance."""

    room: np.ndarray
    """Room extents ``(Lx, Ly, Lz)`` in metres."""
    camera: Camera
    light: np.ndarray
    """Position of the point light (near the ceiling, outside every object)."""
    primitives: tuple[Primitive, ...]
