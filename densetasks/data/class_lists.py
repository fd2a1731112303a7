"""Class lists that more than one part of the data package reads.

The PASCAL multi-task benchmark (PASCAL-Context images with the 20 VOC object classes plus
background, and the person parts of Pascal-Part grouped into six) is read by its dataset
reader and painted by the CompositeTasking semantic palette rules R2 / R3, so its names live
here rather than in either of them.
"""

PASCAL_SEMSEG_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat",
    "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
    "sheep", "sofa", "train", "tvmonitor",
)  # fmt: skip
"""The 21 semantic classes of PASCAL MT, in label-id order (VOC 2012)."""
PASCAL_PART_NAMES = (
    "background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg",
)  # fmt: skip
"""The 6 human parts of PASCAL MT (ASTMT / ATRC's grouping of Pascal-Part) and background."""
