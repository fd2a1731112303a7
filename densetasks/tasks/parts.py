"""Human body parts: semantic segmentation of person parts (paper 002's "parts" task)."""

from densetasks.tasks.semseg import SemanticSegmentation


class HumanParts(SemanticSegmentation):
    """Per-pixel part classes of people (e.g. PASCAL-Context parts: background + 6 parts).

    Behaves exactly as :class:`SemanticSegmentation` (loss, decode, mIoU, colours, composite
    anchors); it is its own task so it has its own head, loss weight and metrics in a run.
    Paper 002 trains it with the focal loss, γ = 2 (``focal_gamma=2``).
    """

    name = "parts"
