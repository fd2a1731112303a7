"""One small member of each timm family the encoder tests run (at most a few hundred thousand
parameters, HRNet aside), and what densetasks promises for it."""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Family:
    encoder: str
    options: dict[str, Any] = field(default_factory=dict)
    output_strides: tuple[int, ...] = (8, 16, 32)
    """The output strides it can be built at (dilation, or the ViT pyramid's resampling)."""
    stages: bool = True
    """Whether ``forward_stages`` splits it anywhere."""


SWIN_TINY = {"embed_dim": 16, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]}
"""Swin-T's layout shrunk through ``model.encoder_options`` (timm has no ``test_swin``)."""

FAMILIES = {
    "vit": Family("test_vit"),
    "swin": Family("swin_tiny_patch4_window7_224", SWIN_TINY, (32,)),
    "convnext": Family("test_convnext"),
    "efficientnet": Family("test_efficientnet"),
    "hrnet": Family("hrnet_w18_small", output_strides=(32,), stages=False),
    "regnet": Family("regnetx_002"),
    "mambaout": Family("test_mambaout", output_strides=(32,)),  # NHWC like Swin, no attention
    "eva": Family(  # a one-stride family other than VisionTransformer: forward_intermediates
        "vit_medium_patch16_rope_reg1_gap_256",
        {"depth": 4, "embed_dim": 32, "num_heads": 2},
        stages=False,
    ),
}
