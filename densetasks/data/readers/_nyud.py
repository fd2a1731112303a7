"""What the three NYUD-v2 layouts share: the Kinect camera and the class lists."""

import torch

from densetasks.data.readers._checks import intrinsics_for_size, pinhole

KINECT_SIZE = (480, 640)
"""(H, W) of the Kinect frames the intrinsics below belong to."""

KINECT_INTRINSICS = pinhole(518.86, 519.47, 325.58, 253.74)
"""NYUD-v2 colour camera (Silberman et al. 2012 toolbox, ``camera_params.m``), 640×480."""

CLASS_NAMES_40 = (
    "wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
    "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain", "dresser",
    "pillow", "mirror", "floor mat", "clothes", "ceiling", "books", "refrigerator",
    "television", "paper", "towel", "shower curtain", "box", "whiteboard", "person",
    "night stand", "toilet", "sink", "lamp", "bathtub", "bag", "otherstructure",
    "otherfurniture", "otherprop",
)  # fmt: skip
"""The 40 classes of Gupta et al. (CVPR 2013), ``classMapping40.mat`` ``className``, ids 1..40."""

CLASS_NAMES_13 = (
    "bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa",
    "table", "tv", "wall", "window",
)  # fmt: skip
"""The 13 classes of Couprie et al. (ICLR 2013) as mtan / LibMTL number them (0..12)."""


def kinect_intrinsics(
    size: tuple[int, int], crop_origin: tuple[int, int] | None = None
) -> torch.Tensor:
    """The Kinect matrix for an image of ``size`` (H, W).

    Without ``crop_origin`` the image is taken as the whole 640×480 frame resized; with it,
    as a crop of the frame whose top-left pixel is ``(top, left)`` (focal lengths unchanged,
    principal point shifted), which is what the cropped NYUD-v2 copies are.
    """
    if crop_origin is None:
        return intrinsics_for_size(KINECT_INTRINSICS, KINECT_SIZE, size)
    top, left = crop_origin
    cropped = KINECT_INTRINSICS.clone()
    cropped[0, 2] -= left
    cropped[1, 2] -= top
    return cropped
