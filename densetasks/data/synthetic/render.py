"""Render a scene: one camera ray cast gives the image and every label exactly.

Shading is Lambertian from the scene's point light, with an ambient term and cast shadows
(one shadow ray per pixel, cast from the light so that all shadow rays share an origin).
No antialiasing: every pixel belongs to exactly one surface, so labels stay exact.
"""

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from densetasks.data.synthetic.appearance import albedo, sample_appearance
from densetasks.data.synthetic.raycast import (
    ROOM_SURFACES,
    Hits,
    PrimitiveArrays,
    cast,
    primitive_distances,
)
from densetasks.data.synthetic.scene import CEILING, FLOOR, WALL, Scene
from densetasks.data.synthetic.styles import Style

LIGHT_FALLOFF = 5.0
"""Distance (m) at which the light's irradiance has fallen to half."""

SHADOW_TOLERANCE = 1e-3
"""Relative distance before a lit point within which an occluder is the point itself."""


@dataclass(frozen=True)
class Rendering:
    """Image and per-pixel labels as NumPy arrays, ``H × W`` each."""

    image: np.ndarray
    """float32 ``[3, H, W]`` in ``[0, 1]``."""
    depth: np.ndarray
    """float32 ``[H, W]``, metres along the optical axis."""
    normals: np.ndarray
    """float32 ``[3, H, W]``, unit, OpenCV camera frame, towards the camera."""
    semseg: np.ndarray
    instance: np.ndarray
    parts: np.ndarray


def _surface_table(scene: Scene, attribute: str, room_values: tuple[int, int, int]) -> np.ndarray:
    """A per-surface lookup of a primitive attribute (semantic, instance, part)."""
    values = [getattr(p, attribute) for p in scene.primitives]
    return np.array(list(room_values) + values, dtype=np.int64)


def _shadowed(scene: Scene, arrays: PrimitiveArrays, points: np.ndarray) -> np.ndarray:
    """Whether a primitive lies between the light and each point (``t < 1`` from the light)."""
    if not len(arrays):
        return np.zeros(len(points), dtype=bool)
    towards = points - scene.light.astype(np.float32)
    nearest = primitive_distances(scene.light.astype(np.float32), towards, arrays).min(axis=0)
    return nearest < 1.0 - SHADOW_TOLERANCE


def _shade(
    scene: Scene,
    style: Style,
    hits: Hits,
    points: np.ndarray,
    colour: np.ndarray,
    arrays: PrimitiveArrays,
) -> np.ndarray:
    """Lambertian radiance: ``albedo · (ambient + light · max(n·l, 0) · falloff · lit)``."""
    to_light = scene.light.astype(np.float32) - points
    distance = np.linalg.norm(to_light, axis=1)
    cosine = np.maximum(np.einsum("nj,nj->n", hits.normal, to_light) / distance, 0.0)
    falloff = 1.0 / (1.0 + (distance / LIGHT_FALLOFF) ** 2)
    lit = cosine * falloff * style.light_intensity * ~_shadowed(scene, arrays, points)
    light = np.asarray(style.ambient) + np.asarray(style.light_colour) * lit[:, None]
    return colour * light


def render(scene: Scene, style: Style, rng: np.random.Generator) -> Rendering:
    """Ray cast ``scene`` and shade it in ``style``; ``rng`` draws only the appearance."""
    camera = scene.camera
    height, width = camera.height, camera.width
    rays_camera = camera.camera_rays()
    rotation = camera.rotation.astype(np.float32)
    rays_world = rays_camera @ rotation.T
    arrays = PrimitiveArrays.stack(scene.primitives)
    hits = cast(camera.position, rays_world, scene.room, arrays)
    points = camera.position.astype(np.float32) + hits.t[:, None] * rays_world

    appearance = sample_appearance(rng, style, ROOM_SURFACES + len(arrays))
    colour = _shade(
        scene,
        style,
        hits,
        points,
        albedo(appearance, style, hits.surface, hits.texture_coords),
        arrays,
    )
    if style.fog_density > 0:
        distance = hits.t * np.linalg.norm(rays_world, axis=1)
        kept = np.exp(-style.fog_density * distance)[:, None]
        colour = kept * colour + (1.0 - kept) * np.asarray(style.fog_colour)
    colour = np.clip(colour, 0.0, 1.0) ** style.gamma
    if style.blur > 0:
        blurred = gaussian_filter(colour.reshape(height, width, 3), (style.blur, style.blur, 0))
        colour = blurred.reshape(-1, 3)
    if style.grain > 0:
        colour = colour + rng.normal(0.0, style.grain, colour.shape)
    image = np.clip(colour, 0.0, 1.0).astype(np.float32)

    normals = hits.normal @ rotation
    facing_away = np.einsum("nj,nj->n", normals, rays_camera) > 0
    normals[facing_away] *= -1

    def grid(values: np.ndarray) -> np.ndarray:
        return values.reshape(height, width)

    def channels(values: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(values.T.reshape(-1, height, width))

    return Rendering(
        image=channels(image),
        depth=grid(hits.t).astype(np.float32),
        normals=channels(normals.astype(np.float32)),
        semseg=grid(_surface_table(scene, "semantic", (FLOOR, WALL, CEILING))[hits.surface]),
        instance=grid(_surface_table(scene, "instance", (0, 0, 0))[hits.surface]),
        parts=grid(_surface_table(scene, "part", (0, 0, 0))[hits.surface]),
    )
