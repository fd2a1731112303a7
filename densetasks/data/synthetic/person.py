"""An articulated "person" of primitives: head sphere, torso box, two arms, two legs.

Proportions are those of a 1.7 m adult scaled by ``scale``; the pose is random: the legs
swing forward/back in opposite phase (walking), each arm swings and is raised sideways.
"""

import numpy as np

from densetasks.data.synthetic.scene import (
    ARMS,
    HEAD,
    LEGS,
    PERSON,
    TORSO,
    Primitive,
    Shape,
    cylinder_between,
    yaw_rotation,
)

PERSON_FOOTPRINT = 0.45
"""Radius (m, at scale 1) of the floor circle a person may occupy, for placement."""


def _limb_direction(swing: float, raise_: float, side: float) -> np.ndarray:
    """Unit vector of a limb hanging down, swung forward by ``swing`` and raised sideways.

    In the person frame (x forward, y left, z up); ``side`` is +1 for the left limb.
    """
    return np.array(
        [
            np.sin(swing) * np.cos(raise_),
            side * np.sin(raise_),
            -np.cos(swing) * np.cos(raise_),
        ]
    )


def sample_person(
    rng: np.random.Generator, position: np.ndarray, scale: float, instance: int
) -> list[Primitive]:
    """The six primitives of a person standing at floor point ``position`` (x, y)."""
    facing = yaw_rotation(rng.uniform(0.0, 2.0 * np.pi))
    origin = np.array([position[0], position[1], 0.0])

    def world(local: np.ndarray) -> np.ndarray:
        return origin + facing @ (scale * local)

    parts = [
        Primitive(
            Shape.SPHERE,
            world(np.array([0.0, 0.0, 1.58])),
            np.eye(3),
            np.full(3, 0.11 * scale),
            PERSON,
            instance,
            HEAD,
        ),
        Primitive(
            Shape.BOX,
            world(np.array([0.0, 0.0, 1.15])),
            facing,
            scale * np.array([0.11, 0.19, 0.3]),
            PERSON,
            instance,
            TORSO,
        ),
    ]
    leg_swing = rng.uniform(-0.45, 0.45)
    for side in (1.0, -1.0):
        hip = np.array([0.0, side * 0.1, 0.86])
        foot = hip + 0.86 * _limb_direction(side * leg_swing, 0.0, side)
        parts.append(
            cylinder_between(world(hip), world(foot), 0.07 * scale, PERSON, instance, LEGS)
        )
        shoulder = np.array([0.0, side * 0.25, 1.4])
        hand = shoulder + 0.62 * _limb_direction(
            rng.uniform(-1.0, 1.0), rng.uniform(0.1, 1.4), side
        )
        parts.append(
            cylinder_between(world(shoulder), world(hand), 0.05 * scale, PERSON, instance, ARMS)
        )
    return parts
