"""Appearance styles: visual domains over the same geometry (for domain adaptation).

A style fixes the colour statistics of the surfaces (hue, saturation and value ranges), the
texture families, the light and the air (fog), and the camera: tone curve, optical blur and
sensor grain.
Every surface draws its colours from the same distribution whatever its class, so the class
is not readable from colour alone. ``default`` is the source domain of the benchmarks;
``dusk`` is a mild shift; ``night`` changes every one of these factors at once and is the
target domain of the multi-task domain adaptation benchmark (Lopes et al., WACV 2023,
Sec. 4.5; the gap it opens is measured in ``docs/synthetic.md``).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Style:
    """How a scene looks; geometry is not affected."""

    name: str
    patterns: tuple[str, ...]
    """Texture families drawn per surface (names of :data:`render.PATTERNS`)."""
    saturation: tuple[float, float]
    value: tuple[float, float]
    contrast: tuple[float, float]
    """How far a texture's second colour is from its base colour (0 = plain)."""
    frequency: tuple[float, float]
    """Texture frequency range in cycles per metre."""
    light_colour: tuple[float, float, float]
    light_intensity: float
    ambient: tuple[float, float, float]
    gamma: float
    grain: float
    """Standard deviation of per-pixel Gaussian sensor noise."""
    hue: tuple[float, float] = (0.0, 1.0)
    """Hue range of the surface colours (HSV, 0-1); the full circle by default."""
    blur: float = 0.0
    """Standard deviation in pixels of the Gaussian optical blur, applied before the grain."""
    fog_density: float = 0.0
    """Extinction per metre of a uniform fog: a pixel at distance ``t`` keeps
    ``exp(−density · t)`` of its colour and takes the rest from ``fog_colour``."""
    fog_colour: tuple[float, float, float] = (0.0, 0.0, 0.0)


STYLES: dict[str, Style] = {
    style.name: style
    for style in (
        Style(
            name="default",
            patterns=("plain", "stripes", "checker", "waves"),
            saturation=(0.25, 0.9),
            value=(0.45, 1.0),
            contrast=(0.2, 0.6),
            frequency=(1.5, 6.0),
            light_colour=(1.0, 0.98, 0.92),
            light_intensity=1.3,
            ambient=(0.3, 0.3, 0.32),
            gamma=1.0,
            grain=0.0,
        ),
        Style(
            name="dusk",
            patterns=("plain", "rings", "grain"),
            saturation=(0.05, 0.45),
            value=(0.35, 0.85),
            contrast=(0.1, 0.4),
            frequency=(3.0, 12.0),
            light_colour=(1.0, 0.62, 0.33),
            light_intensity=1.7,
            ambient=(0.1, 0.12, 0.24),
            gamma=1.1,
            grain=0.02,
        ),
        Style(
            name="night",
            patterns=("grain", "rings"),
            saturation=(0.55, 1.0),
            value=(0.25, 0.7),
            contrast=(0.35, 0.8),
            frequency=(4.0, 14.0),
            light_colour=(0.55, 0.7, 1.0),
            light_intensity=2.2,
            ambient=(0.02, 0.03, 0.08),
            gamma=0.75,
            grain=0.1,
            hue=(0.45, 0.85),
            blur=0.8,
            fog_density=0.3,
            fog_colour=(0.3, 0.35, 0.45),
        ),
    )
}
"""Known styles by name."""
