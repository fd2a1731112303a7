"""Exact geometry of the ray caster on hand-built scenes with a known camera."""

import numpy as np
import pytest

from densetasks.data.synthetic.render import render
from densetasks.data.synthetic.scene import (
    BOX,
    CYLINDER,
    SPHERE,
    WALL,
    Camera,
    Primitive,
    Scene,
    Shape,
    look_rotation,
)
from densetasks.data.synthetic.styles import STYLES

ROOM = np.array([4.0, 4.0, 3.0])
SIZE = 48


def _camera(pitch: float = 0.0) -> Camera:
    """At (1, 2, 1.5), looking along +x (towards the wall x = 4, 3 m away), 60° fov."""
    focal = (SIZE / 2) / np.tan(np.deg2rad(30.0))
    return Camera(np.array([1.0, 2.0, 1.5]), look_rotation(0.0, pitch), focal, SIZE, SIZE)


def _render(primitives=(), pitch: float = 0.0):
    scene = Scene(ROOM, _camera(pitch), np.array([2.0, 2.0, 2.9]), tuple(primitives))
    return render(scene, STYLES["default"], np.random.default_rng(0))


def test_fronto_parallel_wall_depth_equals_its_distance():
    result = _render()
    wall = result.semseg == WALL
    assert wall.sum() > SIZE * SIZE / 3
    np.testing.assert_allclose(result.depth[wall], 3.0, rtol=1e-5)
    np.testing.assert_allclose(
        result.normals[:, wall].T, [[0.0, 0.0, -1.0]] * int(wall.sum()), atol=1e-6
    )


@pytest.mark.parametrize("pitch", [0.0, -0.35])
def test_floor_normal_is_world_up_in_camera_frame(pitch):
    result = _render(pitch=pitch)
    floor = result.semseg == 0
    assert floor.sum() > 0
    # Up is (0, 0, 1) in the world; in the OpenCV camera frame of a camera pitched down by
    # |pitch| it is (0, -cos(pitch), sin(pitch)): mostly "-y" (up the image), tilted forward.
    expected = np.array([0.0, -np.cos(pitch), np.sin(pitch)])
    np.testing.assert_allclose(
        result.normals[:, floor].T, np.broadcast_to(expected, (floor.sum(), 3)), atol=1e-5
    )
    # The floor is 1.5 m below the camera: depth · (ray's y) = 1.5 for pitch 0.
    if pitch == 0.0:
        rows = np.nonzero(floor)[0]
        y = (rows - (SIZE - 1) / 2) / _camera().focal
        np.testing.assert_allclose(result.depth[floor] * y, 1.5, rtol=1e-4)


def _centre_pixel(result):
    return result.depth[SIZE // 2 - 1 : SIZE // 2 + 1, SIZE // 2 - 1 : SIZE // 2 + 1]


def test_sphere_depth_and_normal_at_image_centre():
    # Centre on the optical axis, 2 m ahead, radius 0.5: the near pole is 1.5 m away.
    sphere = Primitive(
        Shape.SPHERE, np.array([3.0, 2.0, 1.5]), np.eye(3), np.full(3, 0.5), SPHERE, 1
    )
    result = _render([sphere])
    np.testing.assert_allclose(_centre_pixel(result), 1.5, atol=2e-3)
    # Every sphere pixel: the normal is (hit point − centre) / radius, in the camera frame.
    on_sphere = result.semseg == SPHERE
    rays = _camera().camera_rays().reshape(SIZE, SIZE, 3)[on_sphere]
    points = result.depth[on_sphere][:, None] * rays
    expected = (points - np.array([0.0, 0.0, 2.0])) / 0.5
    np.testing.assert_allclose(result.normals[:, on_sphere].T, expected, atol=1e-4)
    assert set(np.unique(result.instance[result.semseg == SPHERE])) == {1}


def test_box_face_and_standing_cylinder_depth():
    box = Primitive(
        Shape.BOX, np.array([2.5, 2.0, 1.5]), np.eye(3), np.array([0.3, 0.4, 0.4]), BOX, 1
    )
    result = _render([box])
    np.testing.assert_allclose(_centre_pixel(result), 1.2, rtol=1e-5)
    cylinder = Primitive(
        Shape.CYLINDER,
        np.array([3.0, 2.0, 1.5]),
        np.eye(3),
        np.array([0.25, 0.25, 0.5]),
        CYLINDER,
        1,
    )
    result = _render([cylinder])
    np.testing.assert_allclose(_centre_pixel(result), 1.75, atol=2e-3)
    assert (result.semseg == CYLINDER).sum() > 0


def test_cylinder_cap_seen_from_above_faces_up():
    # A short cylinder below the camera, looking down at it: its top cap is visible.
    cylinder = Primitive(
        Shape.CYLINDER, np.array([2.0, 2.0, 0.3]), np.eye(3), np.array([0.4, 0.4, 0.3]), CYLINDER, 1
    )
    result = _render([cylinder], pitch=-0.8)
    top = result.semseg == CYLINDER
    up = np.array([0.0, -np.cos(-0.8), np.sin(-0.8)])
    cap = np.abs(result.normals[:, top].T @ up - 1.0) < 1e-4
    assert cap.sum() > 10


def test_normals_are_unit_and_face_the_camera():
    sphere = Primitive(
        Shape.SPHERE, np.array([3.0, 1.5, 1.0]), np.eye(3), np.full(3, 0.5), SPHERE, 1
    )
    result = _render([sphere], pitch=-0.2)
    np.testing.assert_allclose(np.linalg.norm(result.normals, axis=0), 1.0, atol=1e-5)
    rays = _camera(-0.2).camera_rays().T.reshape(3, SIZE, SIZE)
    assert ((result.normals * rays).sum(axis=0) < 0).all()
