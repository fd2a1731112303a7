"""Label kinds: the empty label, the valid pixels and the restriction to a mask, for the
dense regression kind (any float, NaN = no label) beside the others."""

import torch

from densetasks.data.sample import IGNORE_INDEX, LabelKind


def test_a_regression_label_is_valid_wherever_no_channel_is_nan() -> None:
    label = torch.tensor([[[0.0, -3.5], [float("nan"), 1e6]], [[0.0, 2.0], [1.0, float("nan")]]])
    valid = LabelKind.REGRESSION.valid(label[None])
    assert valid.tolist() == [[[True, True], [False, False]]]  # 0 and negatives are labels


def test_the_empty_regression_label_is_nan_with_one_channel() -> None:
    empty = LabelKind.REGRESSION.empty(2, 3)
    assert empty.shape == (1, 2, 3) and empty.dtype == torch.float32 and empty.isnan().all()
    assert not LabelKind.REGRESSION.valid(empty[None]).any()


def test_restricting_a_regression_label_empties_every_channel_outside_the_mask() -> None:
    label = torch.arange(8.0).reshape(1, 2, 2, 2)
    mask = torch.tensor([[[True, False], [False, True]]])
    restricted = LabelKind.REGRESSION.restrict(label, mask)
    assert restricted.shape == label.shape
    assert restricted[0, :, 0, 0].tolist() == [0.0, 4.0]
    assert restricted[0, :, 0, 1].isnan().all() and restricted[0, :, 1, 0].isnan().all()
    assert LabelKind.REGRESSION.valid(restricted).tolist() == mask.tolist()


def test_every_kind_has_an_empty_label_with_no_valid_pixel_but_instance() -> None:
    for kind in LabelKind:
        valid = kind.valid(kind.empty(2, 3)[None])
        assert valid.shape == (1, 2, 3), kind
        assert valid.all() if kind is LabelKind.INSTANCE else not valid.any(), kind
    assert LabelKind.MASK.empty(1, 1).item() == IGNORE_INDEX
