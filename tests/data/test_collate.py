import pytest
import torch

from densetasks.data.collate import collate_samples
from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.errors import DataError
from densetasks.tasks.registry import label_kinds


def sample(name: str, height: int = 4, width: int = 5, **labels) -> dict:
    return {"image": torch.rand(3, height, width), "meta": {"name": name}, **labels}


def test_missing_labels_become_unsupervised_and_batch_is_rectangular():
    semseg = torch.randint(0, 3, (4, 5))
    depth = torch.rand(1, 4, 5) + 1
    batch = collate_samples([sample("a", semseg=semseg), sample("b", depth=depth)], label_kinds())
    assert batch["image"].shape == (2, 3, 4, 5)
    assert torch.equal(batch["semseg"][0], semseg)
    assert batch["semseg"][1].eq(IGNORE_INDEX).all() and batch["semseg"].dtype == torch.int64
    assert batch["depth"].shape == (2, 1, 4, 5) and batch["depth"][0].eq(0).all()
    assert torch.equal(batch["depth"][1], depth)
    assert LabelKind.DEPTH.valid(batch["depth"]).sum() == 20
    assert batch["meta"] == [{"name": "a"}, {"name": "b"}]


def test_every_kind_gets_its_empty_label():
    normals = torch.nn.functional.normalize(torch.randn(3, 4, 5), dim=0)
    labels = {
        "normals": normals,
        "edges": torch.ones(4, 5, dtype=torch.uint8),
        "instance": torch.ones(4, 5, dtype=torch.int64),
    }
    batch = collate_samples([sample("full", **labels), sample("none")], label_kinds())
    assert batch["normals"][1].eq(0).all() and batch["edges"][1].eq(IGNORE_INDEX).all()
    assert batch["instance"][1].eq(0).all() and batch["edges"].dtype == torch.uint8


def test_a_missing_regression_label_is_nan_in_every_channel_of_the_others():
    shading = torch.randn(2, 4, 5)
    kinds = label_kinds({"shading": LabelKind.REGRESSION})
    batch = collate_samples([sample("a"), sample("b", shading=shading)], kinds)
    assert batch["shading"].shape == (2, 2, 4, 5) and batch["shading"][0].isnan().all()
    assert torch.equal(batch["shading"][1], shading)
    assert LabelKind.REGRESSION.valid(batch["shading"]).sum() == 20


def test_different_image_sizes_name_the_samples():
    with pytest.raises(DataError, match=r"a 4x5, b 6x5"):
        collate_samples([sample("a"), sample("b", height=6)], label_kinds())


def test_unknown_label_key_needs_a_kind():
    palette = torch.zeros(4, 5, dtype=torch.int64)
    with pytest.raises(ValueError, match="'palette'"):
        collate_samples([sample("a", palette=palette)], label_kinds())
    batch = collate_samples(
        [sample("a", palette=palette), sample("b")], label_kinds({"palette": LabelKind.MASK})
    )
    assert batch["palette"][1].eq(IGNORE_INDEX).all()


def test_label_of_wrong_size_names_sample_and_key():
    with pytest.raises(DataError, match=r"b: label 'semseg'"):
        collate_samples(
            [sample("a"), sample("b", semseg=torch.zeros(3, 5, dtype=torch.int64))], label_kinds()
        )
