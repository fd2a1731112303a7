"""UnlabelledImages: a dataset's images without a single label (the UDA target)."""

import torch

from densetasks.data.synthetic import SyntheticScenes
from densetasks.data.unlabelled import UnlabelledImages


def test_only_the_image_and_meta_leave_and_the_transform_sees_no_label():
    scenes = SyntheticScenes(3, size=(16, 16), style="night")
    seen = []

    def transform(sample):
        seen.append(set(sample))
        return sample

    images = UnlabelledImages(scenes, transform=transform)
    assert len(images) == 3 and images.tasks == ()
    sample = images[1]
    assert set(sample) == {"image", "meta"} and seen == [{"image", "meta"}]
    assert torch.equal(sample["image"], scenes[1]["image"])
