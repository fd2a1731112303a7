"""Human body parts: semantic segmentation of person parts (the "parts" task of
Popovic et al., CVPR 2021)."""

from densetasks.tasks.semseg import SemanticSegmentation


class HumanParts(SemanticSegmentation):
    """Per-pixel part classes of people (e.g. PASCAL-Context parts: background + 6 parts).

    Behaves exactly as :class:`SemanticSegmentation` (loss, decode, mIoU, colours, composite
    anchors); it is its own task so it has its own head, loss weight and metrics in a run.
    Popovic et al. (CVPR 2021) train it with the focal loss, γ = 2 (``focal_gamma=2``).
    """

    name = "parts"
