"""SyntheticScenes: sample format, determinism, label consistency, styles, argument errors."""

import numpy as np
import pytest
import torch

from densetasks.data.synthetic import (
    STYLES,
    SYNTHETIC_CLASSES,
    SYNTHETIC_PARTS,
    SyntheticScenes,
)
from densetasks.errors import ConfigError

PERSON = SYNTHETIC_CLASSES.index("person")


@pytest.fixture(scope="module")
def dataset():
    return SyntheticScenes(4, size=(40, 56), seed=3, persons=(1, 2))


@pytest.fixture(scope="module")
def samples(dataset):
    return [dataset[i] for i in range(len(dataset))]


def test_every_label_has_its_shape_and_dtype(samples):
    expected = {
        "image": ((3, 40, 56), torch.float32),
        "semseg": ((40, 56), torch.int64),
        "depth": ((1, 40, 56), torch.float32),
        "normals": ((3, 40, 56), torch.float32),
        "edges": ((40, 56), torch.uint8),
        "saliency": ((40, 56), torch.uint8),
        "parts": ((40, 56), torch.int64),
        "instance": ((40, 56), torch.int64),
    }
    for sample in samples:
        assert set(sample) == set(expected) | {"meta"}
        for key, (shape, dtype) in expected.items():
            assert tuple(sample[key].shape) == shape, key
            assert sample[key].dtype == dtype, key
        assert sample["image"].min() >= 0.0 and sample["image"].max() <= 1.0
        assert sample["meta"]["intrinsics"].dtype == torch.float32
        assert sample["meta"]["intrinsics"].shape == (3, 3)


def test_meta_name_and_intrinsics(samples):
    assert samples[2]["meta"]["name"] == "synthetic_3_000002"
    k = samples[0]["meta"]["intrinsics"]
    assert k[0, 0] == k[1, 1] and k[0, 2] == pytest.approx(27.5) and k[1, 2] == pytest.approx(19.5)


def test_depth_positive_finite_and_normals_unit(samples):
    for sample in samples:
        assert torch.isfinite(sample["depth"]).all() and (sample["depth"] > 0).all()
        torch.testing.assert_close(
            sample["normals"].norm(dim=0), torch.ones(40, 56), atol=1e-5, rtol=0
        )


def test_same_seed_same_sample_in_any_order(dataset):
    again = SyntheticScenes(4, size=(40, 56), seed=3, persons=(1, 2))
    for index in (3, 0):
        first, second = dataset[index], again[index]
        for key in ("image", "semseg", "depth", "normals", "instance", "parts"):
            assert torch.equal(first[key], second[key]), key
    assert not torch.equal(dataset[0]["image"], dataset[1]["image"])
    other_seed = SyntheticScenes(1, size=(40, 56), seed=4, persons=(1, 2))
    assert not torch.equal(dataset[0]["depth"], other_seed[0]["depth"])


def test_instances_agree_with_semantics(samples):
    object_classes = torch.tensor(
        [SYNTHETIC_CLASSES.index(c) for c in ("box", "sphere", "cylinder", "person")]
    )
    for sample in samples:
        on_object = torch.isin(sample["semseg"], object_classes)
        assert torch.equal(sample["instance"] > 0, on_object)
        for instance in sample["instance"].unique()[1:]:
            assert sample["semseg"][sample["instance"] == instance].unique().numel() == 1


def test_parts_only_and_always_on_persons(samples):
    seen_person = False
    for sample in samples:
        person = sample["semseg"] == PERSON
        seen_person |= bool(person.any())
        assert torch.equal(sample["parts"] > 0, person)
        assert int(sample["parts"].max()) < len(SYNTHETIC_PARTS)
    assert seen_person


def test_saliency_marks_objects(samples):
    for sample in samples:
        assert torch.equal(sample["saliency"], (sample["semseg"] > 2).to(torch.uint8))


def test_edges_are_the_boundaries_of_class_and_instance_segments(samples):
    for sample in samples:
        segments = (sample["semseg"] * 1000 + sample["instance"]).numpy()
        boundary = np.zeros(segments.shape, dtype=bool)
        vertical = segments[1:] != segments[:-1]
        horizontal = segments[:, 1:] != segments[:, :-1]
        boundary[:-1] |= vertical  # the upper / left side only (BSDS seg2bmap)
        boundary[:, :-1] |= horizontal
        assert np.array_equal(sample["edges"].numpy(), boundary.astype(np.uint8))
        assert boundary.any()


def test_tasks_restrict_the_labels_and_options():
    subset = SyntheticScenes(1, size=(32, 32), tasks=["depth", "parts"])
    assert set(subset[0]) == {"image", "depth", "parts", "meta"}
    assert subset.tasks == ("depth", "parts")
    assert set(subset.task_options) == {"parts"}
    full = SyntheticScenes(1, size=(32, 32))
    assert full.task_options["semseg"] == {"num_classes": 7, "class_names": list(SYNTHETIC_CLASSES)}
    assert full.task_options["parts"]["num_classes"] == 5


def test_styles_share_geometry_but_not_colour_statistics():
    assert {"default", "dusk"} <= set(STYLES)
    day = SyntheticScenes(3, size=(48, 48), style="default")
    dusk = SyntheticScenes(3, size=(48, 48), style="dusk")
    day_means, dusk_means = [], []
    for index in range(3):
        a, b = day[index], dusk[index]
        assert torch.equal(a["depth"], b["depth"]) and torch.equal(a["semseg"], b["semseg"])
        day_means.append(a["image"].mean(dim=(1, 2)))
        dusk_means.append(b["image"].mean(dim=(1, 2)))
    day_mean, dusk_mean = torch.stack(day_means).mean(0), torch.stack(dusk_means).mean(0)
    # Dusk light is orange over a blue ambient: blue falls relative to red.
    assert (dusk_mean[2] / dusk_mean[0]) < 0.9 * (day_mean[2] / day_mean[0])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"n": -1}, "n"),
        ({"size": (0, 32)}, "size"),
        ({"style": "noon"}, "default"),
        ({"num_objects": (4, 2)}, "num_objects"),
        ({"persons": (-1, 1)}, "persons"),
        ({"tasks": ["semseg", "flow"]}, "flow"),
        ({"seed": -2}, "seed"),
    ],
)
def test_bad_arguments_raise_config_errors_naming_them(kwargs, name):
    arguments = {"n": 2, **kwargs}
    with pytest.raises(ConfigError, match=name):
        SyntheticScenes(**arguments)


def test_index_out_of_range():
    with pytest.raises(IndexError, match="index 2"):
        SyntheticScenes(2, size=(32, 32))[2]
