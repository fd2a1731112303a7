"""Procedural surface appearance: per-surface colours and textures, drawn from a style.

Each surface (floor, walls, ceiling, every primitive) gets a base colour, a second colour
and a texture pattern evaluated in its texture coordinates (world coordinates on the room,
the primitive's own coordinates on an object, so a texture moves with its object).
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.colors import hsv_to_rgb

from densetasks.data.synthetic.styles import Style

Pattern = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _along(coords: np.ndarray, frequency: np.ndarray, direction: np.ndarray) -> np.ndarray:
    return frequency * np.einsum("nj,nj->n", coords, direction)


def _plain(coords, frequency, direction, phase) -> np.ndarray:
    return np.zeros(len(coords), dtype=np.float32)


def _stripes(coords, frequency, direction, phase) -> np.ndarray:
    return (np.mod(_along(coords, frequency, direction) + phase, 1.0) < 0.5).astype(np.float32)


def _checker(coords, frequency, direction, phase) -> np.ndarray:
    cells = np.floor(frequency[:, None] * coords + phase[:, None]).sum(axis=1)
    return np.mod(cells, 2.0).astype(np.float32)


def _waves(coords, frequency, direction, phase) -> np.ndarray:
    across = np.roll(direction, 1, axis=1)
    first = np.sin(2 * np.pi * (_along(coords, frequency, direction) + phase))
    second = np.sin(2 * np.pi * (_along(coords, frequency, across) - phase))
    return (0.5 + 0.25 * (first + second)).astype(np.float32)


def _rings(coords, frequency, direction, phase) -> np.ndarray:
    axial = np.einsum("nj,nj->n", coords, direction)[:, None] * direction
    radius = np.linalg.norm(coords - axial, axis=1)
    return (np.mod(frequency * radius + phase, 1.0) < 0.5).astype(np.float32)


def _grain(coords, frequency, direction, phase) -> np.ndarray:
    """Value noise on a lattice of cells: a fixed hash of each cell's integer coordinates."""
    cells = np.floor(frequency[:, None] * coords + phase[:, None])
    hashed = np.sin(cells @ np.array([12.9898, 78.233, 37.719])) * 43758.5453
    return np.mod(hashed, 1.0).astype(np.float32)


PATTERNS: dict[str, Pattern] = {
    "plain": _plain,
    "stripes": _stripes,
    "checker": _checker,
    "waves": _waves,
    "rings": _rings,
    "grain": _grain,
}
"""Texture families: coordinates ``[M, 3]`` (+ per-pixel parameters) -> mix weight in [0, 1]."""


@dataclass(frozen=True)
class Appearance:
    """Per-surface texture parameters, ``S`` surfaces."""

    base: np.ndarray
    second: np.ndarray
    pattern: np.ndarray
    """Index into the style's ``patterns``."""
    frequency: np.ndarray
    direction: np.ndarray
    phase: np.ndarray


def sample_appearance(rng: np.random.Generator, style: Style, surfaces: int) -> Appearance:
    """Independent colours and textures for ``surfaces`` surfaces, whatever their class."""
    hsv = np.stack(
        [
            rng.uniform(*style.hue, surfaces),
            rng.uniform(*style.saturation, surfaces),
            rng.uniform(*style.value, surfaces),
        ],
        axis=1,
    )
    base = hsv_to_rgb(hsv)
    contrast = rng.uniform(*style.contrast, surfaces)[:, None]
    shift = contrast * rng.choice([-1.0, 1.0], (surfaces, 1)) * rng.uniform(0.5, 1.0, (surfaces, 3))
    shifted = np.clip(base + shift, 0.0, 1.0)
    direction = rng.normal(size=(surfaces, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return Appearance(
        base=base.astype(np.float32),
        second=shifted.astype(np.float32),
        pattern=rng.integers(len(style.patterns), size=surfaces),
        frequency=rng.uniform(*style.frequency, surfaces).astype(np.float32),
        direction=direction.astype(np.float32),
        phase=rng.random(surfaces).astype(np.float32),
    )


def albedo(
    appearance: Appearance, style: Style, surface: np.ndarray, coords: np.ndarray
) -> np.ndarray:
    """Surface colour ``[N, 3]`` of hits on ``surface`` ``[N]`` at texture ``coords`` ``[N, 3]``."""
    mix = np.zeros(len(surface), dtype=np.float32)
    pattern = appearance.pattern[surface]
    for index, name in enumerate(style.patterns):
        rows = np.flatnonzero(pattern == index)
        if len(rows):
            which = surface[rows]
            mix[rows] = PATTERNS[name](
                coords[rows],
                appearance.frequency[which],
                appearance.direction[which],
                appearance.phase[which],
            )
    mix = mix[:, None]
    return (1.0 - mix) * appearance.base[surface] + mix * appearance.second[surface]
