"""Random scene layouts: room, camera pose, light and non-overlapping objects on the floor.

Objects and persons stand on the floor; their floor footprints (circles) do not overlap each
other, keep clear of the walls and of the camera, so the camera is never inside an object.
The camera stands in the room at eye height and looks roughly towards the room's centre, so
most objects are in view.
"""

import numpy as np

from densetasks.data.synthetic.person import PERSON_FOOTPRINT, sample_person
from densetasks.data.synthetic.scene import (
    BOX,
    CYLINDER,
    SPHERE,
    Camera,
    Primitive,
    Scene,
    Shape,
    frame_along,
    look_rotation,
    yaw_rotation,
)

CAMERA_CLEARANCE = 0.5
"""Free floor radius (m) around the camera."""

PLACEMENT_TRIES = 40
"""Random positions tried per object before it is left out of a crowded room."""


def _sample_object(rng: np.random.Generator, instance: int) -> tuple[Primitive, float]:
    """A random box, sphere or cylinder resting on the floor at the origin, and its footprint.

    Boxes are axis-aligned or turned about the vertical; cylinders stand or lie on their side.
    """
    kind = rng.integers(3)
    if kind == 0:
        half = np.array([rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.6), rng.uniform(0.15, 0.75)])
        turned = rng.random() < 0.5
        rotation = yaw_rotation(rng.uniform(0.0, np.pi)) if turned else np.eye(3)
        primitive = Primitive(
            Shape.BOX, np.array([0.0, 0.0, half[2]]), rotation, half, BOX, instance
        )
        return primitive, float(np.hypot(half[0], half[1]))
    if kind == 1:
        radius = rng.uniform(0.15, 0.5)
        primitive = Primitive(
            Shape.SPHERE,
            np.array([0.0, 0.0, radius]),
            np.eye(3),
            np.full(3, radius),
            SPHERE,
            instance,
        )
        return primitive, radius
    radius = rng.uniform(0.12, 0.4)
    half_length = rng.uniform(0.15, 0.7)
    size = np.array([radius, radius, half_length])
    if rng.random() < 0.7:
        primitive = Primitive(
            Shape.CYLINDER, np.array([0.0, 0.0, half_length]), np.eye(3), size, CYLINDER, instance
        )
        return primitive, radius
    angle = rng.uniform(0.0, np.pi)
    axis = np.array([np.cos(angle), np.sin(angle), 0.0])
    primitive = Primitive(
        Shape.CYLINDER, np.array([0.0, 0.0, radius]), frame_along(axis), size, CYLINDER, instance
    )
    return primitive, float(np.hypot(radius, half_length))


def _moved(primitive: Primitive, xy: np.ndarray) -> Primitive:
    center = primitive.center + np.array([xy[0], xy[1], 0.0])
    return Primitive(
        primitive.shape,
        center,
        primitive.rotation,
        primitive.size,
        primitive.semantic,
        primitive.instance,
        primitive.part,
    )


class _Floor:
    """Free-space bookkeeping of the floor: circles that must not overlap."""

    def __init__(self, room: np.ndarray, camera_xy: np.ndarray) -> None:
        self.room = room
        self.circles: list[tuple[np.ndarray, float]] = [(camera_xy, CAMERA_CLEARANCE)]

    def place(self, rng: np.random.Generator, radius: float) -> np.ndarray | None:
        """A free centre for a footprint of ``radius`` (and reserve it), or None if crowded."""
        margin = radius + 0.05
        if 2 * margin >= min(self.room[0], self.room[1]):
            return None
        for _ in range(PLACEMENT_TRIES):
            xy = rng.uniform([margin, margin], [self.room[0] - margin, self.room[1] - margin])
            if all(np.linalg.norm(xy - c) >= radius + r for c, r in self.circles):
                self.circles.append((xy, radius))
                return xy
        return None


def sample_camera(rng: np.random.Generator, room: np.ndarray, height: int, width: int) -> Camera:
    """A camera at eye height in the room, looking about towards the centre, slightly down."""
    position = np.array(
        [
            rng.uniform(0.3, room[0] - 0.3),
            rng.uniform(0.3, room[1] - 0.3),
            rng.uniform(1.2, 1.8),
        ]
    )
    to_centre = room[:2] / 2 - position[:2]
    yaw = np.arctan2(to_centre[1], to_centre[0]) + rng.uniform(-0.5, 0.5)
    pitch = rng.uniform(-0.45, 0.1)
    horizontal_fov = rng.uniform(np.deg2rad(55.0), np.deg2rad(75.0))
    focal = (width / 2) / np.tan(horizontal_fov / 2)
    return Camera(position, look_rotation(yaw, pitch), float(focal), height, width)


def sample_scene(
    rng: np.random.Generator,
    height: int,
    width: int,
    num_objects: tuple[int, int],
    persons: tuple[int, int],
) -> Scene:
    """A random scene; objects that find no free floor in a crowded room are left out."""
    room = np.array([rng.uniform(4.0, 8.0), rng.uniform(4.0, 8.0), rng.uniform(2.6, 3.4)])
    camera = sample_camera(rng, room, height, width)
    light = np.array(
        [rng.uniform(0.5, room[0] - 0.5), rng.uniform(0.5, room[1] - 0.5), room[2] - 0.15]
    )
    floor = _Floor(room, camera.position[:2])
    primitives: list[Primitive] = []
    instance = 1
    for _ in range(rng.integers(num_objects[0], num_objects[1] + 1)):
        primitive, footprint = _sample_object(rng, instance)
        xy = floor.place(rng, footprint)
        if xy is not None:
            primitives.append(_moved(primitive, xy))
            instance += 1
    for _ in range(rng.integers(persons[0], persons[1] + 1)):
        scale = rng.uniform(0.85, 1.15)
        xy = floor.place(rng, PERSON_FOOTPRINT * scale)
        if xy is not None:
            primitives.extend(sample_person(rng, xy, scale, instance))
            instance += 1
    return Scene(room, camera, light, tuple(primitives))
