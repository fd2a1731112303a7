"""A dataset's images without their labels: the target domain of unsupervised adaptation.

In unsupervised domain adaptation the target domain has no labels during training (Lopes et
al., WACV 2023, Sec. 4.5). Rather than trusting every consumer to ignore them, the target's
training split is wrapped so that its samples never carry a label: only ``image`` and
``meta`` leave :meth:`UnlabelledImages.load`, before any transform sees the sample.
"""

from densetasks.data.dataset import DenseDataset, Sample, Transform

KEPT_KEYS = ("image", "meta")
"""What an unlabelled sample keeps of the wrapped dataset's samples."""


class UnlabelledImages(DenseDataset):
    """``dataset``'s samples with every label removed; ``tasks`` is empty."""

    tasks: tuple[str, ...] = ()

    def __init__(self, dataset: DenseDataset, transform: Transform | None = None) -> None:
        super().__init__(transform)
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def load(self, index: int) -> Sample:
        sample = self.dataset.load(index)
        return {key: sample[key] for key in KEPT_KEYS if key in sample}
