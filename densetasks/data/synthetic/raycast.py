"""Vectorised ray casting of many rays from one origin against the room and the primitives.

All rays share their origin (the camera centre, or the light for shadow rays), so each
primitive's origin in its local frame is computed once and the work is a handful of array
operations over ``primitives × rays``; the nearest hit is an ``argmin``. Directions need not
be unit length: the returned ``t`` is in units of the direction's length, so with camera rays
of ``z = 1`` it is the depth. The origin must be outside every primitive and inside the room.
"""

from dataclasses import dataclass

import numpy as np

from densetasks.data.synthetic.scene import Primitive, Shape

MIN_DISTANCE = 1e-4
"""Hits closer than this (in ``t``) are ignored: the origin never lies on a surface."""

ROOM_SURFACES = 3
"""Surface ids 0, 1, 2 are floor, walls and ceiling; primitive ``p`` is surface ``3 + p``."""


def _bounding_radius(primitive: Primitive) -> float:
    if primitive.shape == Shape.CYLINDER:
        return float(np.hypot(primitive.size[0], primitive.size[2]))
    return (
        float(np.linalg.norm(primitive.size))
        if primitive.shape == Shape.BOX
        else float(primitive.size[0])
    )


@dataclass(frozen=True)
class PrimitiveArrays:
    """The primitives of a scene stacked into arrays, grouped by shape."""

    centers: np.ndarray
    rotations: np.ndarray
    sizes: np.ndarray
    shapes: np.ndarray
    bounds: np.ndarray
    """Radius of each primitive's bounding sphere (about its centre)."""
    groups: dict[Shape, np.ndarray]
    """Indices of the primitives of each shape (shapes without primitives are absent)."""

    @classmethod
    def stack(cls, primitives: tuple[Primitive, ...]) -> "PrimitiveArrays":
        shapes = np.array([p.shape for p in primitives], dtype=np.int64)
        return cls(
            centers=np.array([p.center for p in primitives], dtype=np.float32).reshape(-1, 3),
            rotations=np.array([p.rotation for p in primitives], dtype=np.float32).reshape(
                -1, 3, 3
            ),
            sizes=np.array([p.size for p in primitives], dtype=np.float32).reshape(-1, 3),
            shapes=shapes,
            bounds=np.array([_bounding_radius(p) for p in primitives], dtype=np.float32),
            groups={s: np.flatnonzero(shapes == s) for s in Shape if np.any(shapes == s)},
        )

    def __len__(self) -> int:
        return len(self.shapes)


@dataclass(frozen=True)
class Hits:
    """Nearest hit of every ray."""

    t: np.ndarray
    """Ray parameter ``[N]`` (the depth for camera rays with ``z = 1``)."""
    surface: np.ndarray
    """``[N]``: 0 floor, 1 wall, 2 ceiling, ``3 + p`` primitive ``p``."""
    normal: np.ndarray
    """Outward unit normal ``[N, 3]`` in world coordinates (into the room for the room)."""
    texture_coords: np.ndarray
    """``[N, 3]``: world coordinates on the room, the primitive's local ones on a primitive."""


def _sphere_entry(origin: np.ndarray, direction: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Entry ``t`` ``[M]`` of local rays (origin, direction ``[M, 3]``) into spheres at 0."""
    a = np.einsum("mj,mj->m", direction, direction)
    b = np.einsum("mj,mj->m", origin, direction)
    disc = b * b - a * (np.einsum("mj,mj->m", origin, origin) - size[:, 0] ** 2)
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / a
    return np.where((disc >= 0) & (t > MIN_DISTANCE), t, np.inf)


def _box_entry(origin: np.ndarray, direction: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Slab test: entry ``t`` ``[M]`` of local rays into boxes of half extents ``size``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse = 1.0 / direction
        t1 = (-size - origin) * inverse
        t2 = (size - origin) * inverse
    near = np.minimum(t1, t2).max(axis=1)
    far = np.maximum(t1, t2).min(axis=1)
    return np.where((near <= far) & (near > MIN_DISTANCE), near, np.inf)


def _cylinder_entry(origin: np.ndarray, direction: np.ndarray, size: np.ndarray) -> np.ndarray:
    """Entry ``t`` ``[M]`` into capped cylinders along local ``z`` (side, or the cap facing
    the origin: a cap is only visible from outside its plane)."""
    ox, oy, oz = origin.T
    dx, dy, dz = direction.T
    radius, half = size[:, 0], size[:, 2]
    a = dx * dx + dy * dy
    b = ox * dx + oy * dy
    disc = b * b - a * (ox * ox + oy * oy - radius * radius)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_side = (-b - np.sqrt(disc)) / a
        side_ok = (disc >= 0) & (t_side > MIN_DISTANCE) & (np.abs(oz + t_side * dz) <= half)
        t_cap = (np.sign(oz) * half - oz) / dz
        x, y = ox + t_cap * dx, oy + t_cap * dy
        cap_ok = (np.abs(oz) > half) & (t_cap > MIN_DISTANCE) & (x * x + y * y <= radius * radius)
    return np.minimum(np.where(side_ok, t_side, np.inf), np.where(cap_ok, t_cap, np.inf))


_ENTRY = {
    Shape.SPHERE: _sphere_entry,
    Shape.BOX: _box_entry,
    Shape.CYLINDER: _cylinder_entry,
}


def _bounding_candidates(
    origin: np.ndarray, directions: np.ndarray, arrays: PrimitiveArrays
) -> tuple[np.ndarray, np.ndarray]:
    """(primitive, ray) pairs whose ray meets the primitive's bounding sphere ahead.

    A ray meets it when its angle to the centre is within the sphere's angular radius;
    an origin inside the bounding sphere makes every ray a candidate.
    Most rays miss most primitives; this cheap ``[P, N]`` test leaves the exact tests to
    the few pairs that can hit, which is what makes the cast fast.
    """
    to_center = arrays.centers - origin
    distance = np.linalg.norm(to_center, axis=1)
    with np.errstate(invalid="ignore"):
        cos_radius = np.sqrt(1.0 - (arrays.bounds / distance) ** 2)
    cos_radius = np.where(distance > arrays.bounds, cos_radius, -np.inf).astype(np.float32)
    unit = directions / np.linalg.norm(directions, axis=1, keepdims=True)
    cosine = (to_center / distance[:, None]).astype(np.float32) @ unit.T
    candidate = cosine >= cos_radius[:, None] - 1e-6
    return np.nonzero(candidate)


def primitive_distances(
    origin: np.ndarray, directions: np.ndarray, arrays: PrimitiveArrays
) -> np.ndarray:
    """Entry ``t`` ``[P, N]`` of every ray into every primitive (``inf`` on a miss)."""
    distances = np.full((len(arrays), len(directions)), np.inf, dtype=np.float32)
    primitive, ray = _bounding_candidates(origin, directions, arrays)
    origin_local = np.einsum("pji,pj->pi", arrays.rotations, origin - arrays.centers)
    pair_shapes = arrays.shapes[primitive]
    for shape in arrays.groups:
        pairs = np.flatnonzero(pair_shapes == shape)
        which, rays = primitive[pairs], ray[pairs]
        direction_local = np.einsum("mji,mj->mi", arrays.rotations[which], directions[rays])
        distances[which, rays] = _ENTRY[shape](
            origin_local[which], direction_local, arrays.sizes[which]
        )
    return distances


def _room_hits(origin: np.ndarray, directions: np.ndarray, room: np.ndarray):
    """Exit ``t``, surface id and inward normal of every ray leaving the room box."""
    with np.errstate(divide="ignore"):
        bound = np.where(directions > 0, room.astype(np.float32), np.float32(0.0))
        per_axis = (bound - origin) / directions
    per_axis = np.where(np.isfinite(per_axis) & (per_axis >= 0), per_axis, np.inf)
    axis = per_axis.argmin(axis=1)
    rows = np.arange(len(directions))
    t = per_axis[rows, axis]
    going_up = directions[rows, 2] > 0
    surface = np.where(axis == 2, np.where(going_up, 2, 0), 1)
    normal = np.zeros_like(directions)
    normal[rows, axis] = -np.sign(directions[rows, axis])
    return t, surface, normal


def _primitive_normals(
    points: np.ndarray, which: np.ndarray, arrays: PrimitiveArrays
) -> tuple[np.ndarray, np.ndarray]:
    """Outward world normals and local coordinates of ``points`` on primitives ``which``."""
    rotations = arrays.rotations[which]
    local = np.einsum("nji,nj->ni", rotations, points - arrays.centers[which])
    size = arrays.sizes[which]
    shapes = arrays.shapes[which]
    normal = np.zeros_like(local)
    sphere = shapes == Shape.SPHERE
    normal[sphere] = local[sphere]
    box = shapes == Shape.BOX
    scaled = np.abs(local[box]) / size[box]
    face = scaled.argmax(axis=1)
    rows = np.arange(len(face))
    box_normal = np.zeros_like(scaled)
    box_normal[rows, face] = np.sign(local[box][rows, face])
    normal[box] = box_normal
    cylinder = shapes == Shape.CYLINDER
    cyl = local[cylinder]
    on_cap = (
        np.abs(cyl[:, 2]) / size[cylinder, 2] > np.hypot(cyl[:, 0], cyl[:, 1]) / size[cylinder, 0]
    )
    normal[cylinder] = np.where(
        on_cap[:, None],
        np.stack([np.zeros_like(cyl[:, 0]), np.zeros_like(cyl[:, 0]), np.sign(cyl[:, 2])], axis=1),
        np.stack([cyl[:, 0], cyl[:, 1], np.zeros_like(cyl[:, 0])], axis=1),
    )
    world = np.einsum("nij,nj->ni", rotations, normal)
    world /= np.linalg.norm(world, axis=1, keepdims=True)
    return world, local


def cast(
    origin: np.ndarray, directions: np.ndarray, room: np.ndarray, arrays: PrimitiveArrays
) -> Hits:
    """Nearest hit of every ray ``[N, 3]`` from ``origin`` in the room with the primitives."""
    origin = origin.astype(np.float32)
    directions = directions.astype(np.float32)
    t, surface, normal = _room_hits(origin, directions, room)
    texture_coords = origin + t[:, None] * directions
    if len(arrays):
        distances = primitive_distances(origin, directions, arrays)
        nearest = distances.argmin(axis=0)
        t_object = distances[nearest, np.arange(len(directions))]
        on_object = t_object < t
        t = np.where(on_object, t_object, t)
        surface = np.where(on_object, ROOM_SURFACES + nearest, surface)
        points = origin + t[on_object, None] * directions[on_object]
        normal[on_object], texture_coords[on_object] = _primitive_normals(
            points, nearest[on_object], arrays
        )
    return Hits(t, surface, normal, texture_coords)
