import json

import numpy as np
import pytest
import torch

from densetasks.data.folder import FolderDataset, write_folder_dataset
from densetasks.data.io import write_npy, write_png_array
from densetasks.data.sample import LabelKind
from densetasks.errors import DataError
from densetasks.tasks.registry import TASKS, label_kinds
from densetasks.tasks.semseg import SemanticSegmentation

H, W = 6, 8
K = torch.tensor([[10.0, 0.0, 3.5], [0.0, 10.0, 2.5], [0.0, 0.0, 1.0]])


def full_sample(name: str, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    semseg = torch.randint(0, 3, (H, W), generator=g)
    semseg[0, 0] = 255
    normals = torch.nn.functional.normalize(torch.randn(3, H, W, generator=g), dim=0)
    normals[:, 1, 1] = 0.0
    depth = torch.rand(1, H, W, generator=g) * 10 + 0.5
    depth[0, 2, 2] = 0.0
    edges = torch.randint(0, 2, (H, W), generator=g).to(torch.uint8)
    edges[3, 3] = 255
    return {
        "image": torch.rand(3, H, W, generator=g),
        "semseg": semseg,
        "parts": torch.randint(0, 2, (H, W), generator=g),
        "depth": depth,
        "normals": normals,
        "edges": edges,
        "saliency": torch.randint(0, 2, (H, W), generator=g).to(torch.uint8),
        "instance": torch.randint(0, 1000, (H, W), generator=g),
        "meta": {"name": name, "intrinsics": K.clone()},
    }


@pytest.fixture
def root(tmp_path):
    samples = [full_sample("a", 0), {"image": torch.rand(3, H, W), "meta": {"name": "b"}}]
    options = {"semseg": {"class_names": ["x", "y", "z"]}}
    count = write_folder_dataset(samples, tmp_path, "train", label_kinds(), task_options=options)
    assert count == 2
    return tmp_path


def test_round_trip_is_exact_with_npy(root):
    original = full_sample("a", 0)
    dataset = FolderDataset(root, "train", label_kinds=label_kinds())
    assert len(dataset) == 2 and dataset.names == ["a", "b"]
    assert dataset.tasks == ("depth", "edges", "instance", "normals", "parts", "saliency", "semseg")
    assert dataset.task_options["semseg"] == {"num_classes": 3, "class_names": ["x", "y", "z"]}
    loaded = dataset[0]
    for key in dataset.tasks:
        assert loaded[key].dtype == original[key].dtype, key
        assert torch.equal(loaded[key], original[key]), key
    assert (loaded["image"] - original["image"]).abs().max() <= 0.5 / 255 + 1e-6
    assert torch.equal(loaded["meta"]["intrinsics"], K) and loaded["meta"]["name"] == "a"
    sparse = dataset[1]
    assert set(sparse) == {"image", "meta"}  # missing labels are simply absent


def test_round_trip_with_png_depth_and_normals(tmp_path):
    original = full_sample("a", 1)
    write_folder_dataset(
        [original],
        tmp_path,
        "val",
        label_kinds(),
        formats={"depth": "png", "normals": "png"},
        intrinsics_per_sample=False,
    )
    assert (tmp_path / "depth" / "a.png").is_file() and (tmp_path / "intrinsics.json").is_file()
    loaded = FolderDataset(tmp_path, "val", label_kinds=label_kinds())[0]
    assert (loaded["depth"] - original["depth"]).abs().max() <= 0.0005 + 1e-6
    assert loaded["depth"][0, 2, 2] == 0
    valid = original["normals"].norm(dim=0) > 0
    assert torch.equal(loaded["normals"].norm(dim=0) > 0, valid)
    cosine = (loaded["normals"] * original["normals"]).sum(0)[valid]
    assert torch.rad2deg(torch.acos(cosine.clamp(max=1))).max() < 1.0
    assert torch.equal(loaded["meta"]["intrinsics"], K)


def test_rewriting_with_another_format_replaces_the_old_file(tmp_path):
    sample = full_sample("a")
    write_folder_dataset([sample], tmp_path, "train", label_kinds(), formats={"depth": "png"})
    write_folder_dataset([sample], tmp_path, "train", label_kinds(), formats={"depth": "npy"})
    assert sorted(p.name for p in (tmp_path / "depth").iterdir()) == ["a.npy"]
    assert (tmp_path / "splits" / "train.txt").read_text().split() == ["a"]


def test_writer_updates_split_and_dataset_json(tmp_path):
    write_folder_dataset(
        [full_sample("a")],
        tmp_path,
        "train",
        label_kinds(),
        task_options={"semseg": {"class_names": list("xyz")}},
    )
    write_folder_dataset(
        [{"image": torch.rand(3, H, W), "meta": {"name": "c"}}], tmp_path, "val", label_kinds()
    )
    description = json.loads((tmp_path / "dataset.json").read_text())
    assert description["version"] == 1 and "semseg" in description["tasks"]
    assert description["task_options"]["semseg"]["num_classes"] == 3
    assert FolderDataset(tmp_path, "val", label_kinds=label_kinds()).names == ["c"]
    assert FolderDataset(tmp_path, None, label_kinds=label_kinds()).names == ["a", "c"]


def test_without_dataset_json_tasks_come_from_folders(root):
    (root / "dataset.json").unlink()
    dataset = FolderDataset(root, "train", tasks=None, label_kinds=label_kinds())
    assert "depth" in dataset.tasks and dataset.task_options["depth"] == {}


def test_task_selection_and_unknown_tasks(root):
    assert set(FolderDataset(root, "train", tasks=["depth"], label_kinds=label_kinds())[0]) == {
        "image",
        "meta",
        "depth",
    }
    with pytest.raises(DataError, match=r"unknown task 'depht'; known: depth, edges"):
        FolderDataset(root, "train", tasks=["depht"], label_kinds=label_kinds())
    (root / "saliency").rename(root / "gone")
    with pytest.raises(DataError, match=r"saliency: no such task folder"):
        FolderDataset(root, "train", tasks=["saliency"], label_kinds=label_kinds())


def test_up_front_errors_name_the_path(tmp_path, root):
    with pytest.raises(DataError, match=r"nothing: dataset folder not found"):
        FolderDataset(tmp_path / "nothing", label_kinds=label_kinds())
    with pytest.raises(DataError, match=r"splits/test.txt: split file not found"):
        FolderDataset(root, "test", label_kinds=label_kinds())
    (root / "splits" / "train.txt").write_text("a\nghost\n")
    with pytest.raises(DataError, match=r"train.txt: 1 names have no image.*ghost"):
        FolderDataset(root, "train", label_kinds=label_kinds())
    (root / "images").rename(root / "pictures")
    with pytest.raises(DataError, match=r"images: images folder not found"):
        FolderDataset(root, "train", label_kinds=label_kinds())


def test_class_id_out_of_range_names_file_id_and_count(root):
    write_png_array(root / "semseg" / "a.png", np.full((H, W), 7, dtype=np.uint8))
    with pytest.raises(DataError, match=r"semseg/a.png: class id 7 is not in 0..2 \(3 classes\)"):
        FolderDataset(root, "train", label_kinds=label_kinds())[0]


def test_label_size_mismatch_names_file_and_both_shapes(root):
    write_png_array(root / "edges" / "a.png", np.zeros((H + 1, W), dtype=np.uint8))
    with pytest.raises(DataError, match=r"edges/a.png: label size \(7, 8\) differs .* \(6, 8\)"):
        FolderDataset(root, "train", label_kinds=label_kinds())[0]


def test_nan_depth_and_bad_binary_values_are_errors(root):
    depth = np.ones((H, W), dtype=np.float32)
    depth[1, 1] = np.nan
    write_npy(root / "depth" / "a.npy", depth)
    with pytest.raises(DataError, match=r"depth/a.npy: depth contains NaN"):
        FolderDataset(root, "train", tasks=["depth"], label_kinds=label_kinds())[0]
    write_png_array(root / "saliency" / "a.png", np.full((H, W), 128, dtype=np.uint8))
    with pytest.raises(DataError, match=r"saliency/a.png: binary labels must be 0, 1 or 255"):
        FolderDataset(root, "train", tasks=["saliency"], label_kinds=label_kinds())[0]


def test_truncated_image_is_named(root):
    path = root / "images" / "a.png"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DataError, match=r"images/a.png: cannot read image"):
        FolderDataset(root, "train", label_kinds=label_kinds())[0]


def test_two_files_for_one_name_are_an_error(root):
    write_png_array(root / "depth" / "a.png", np.ones((H, W), dtype=np.uint16))
    with pytest.raises(DataError, match=r"depth: a.npy and a.png share a name"):
        FolderDataset(root, "train", label_kinds=label_kinds())


def test_writer_rejects_what_it_cannot_encode(tmp_path):
    too_deep = full_sample("a")
    too_deep["depth"] = torch.full((1, H, W), 70.0)
    with pytest.raises(DataError, match=r"65.535 m"):
        write_folder_dataset([too_deep], tmp_path, "train", label_kinds(), formats={"depth": "png"})
    with pytest.raises(DataError, match=r"class id 2 is not in 0..1"):
        write_folder_dataset(
            [full_sample("a")],
            tmp_path,
            "train",
            label_kinds(),
            task_options={"semseg": {"class_names": ["x", "y"]}},
        )
    unknown = {"image": torch.rand(3, H, W), "flow": torch.zeros(2, H, W)}
    with pytest.raises(DataError, match=r"flow: unknown task 'flow'"):
        write_folder_dataset([unknown], tmp_path, "train", label_kinds())
    different = full_sample("b")
    different["meta"]["intrinsics"] = K * 2
    with pytest.raises(DataError, match=r"intrinsics_per_sample=True"):
        write_folder_dataset(
            [full_sample("a"), different],
            tmp_path,
            "train",
            label_kinds(),
            intrinsics_per_sample=False,
        )


SHADING = label_kinds({"shading": LabelKind.REGRESSION})


def test_a_regression_label_round_trips_exactly_with_its_nan(tmp_path):
    shading = torch.randn(2, H, W, generator=torch.Generator().manual_seed(0)) * 100
    shading[:, 1, 2] = float("nan")
    sample = {"image": torch.rand(3, H, W), "shading": shading, "meta": {"name": "a"}}
    write_folder_dataset([sample], tmp_path, "train", SHADING)
    assert np.load(tmp_path / "shading" / "a.npy").shape == (2, H, W)
    loaded = FolderDataset(tmp_path, "train", label_kinds=SHADING)[0]["shading"]
    assert loaded.dtype == torch.float32
    assert torch.equal(loaded.nan_to_num(7.0), shading.nan_to_num(7.0))


def test_a_plain_map_is_one_channel_and_infinity_or_integers_are_refused(tmp_path):
    write_folder_dataset(
        [{"image": torch.rand(3, H, W), "shading": torch.zeros(1, H, W), "meta": {"name": "a"}}],
        tmp_path,
        "train",
        SHADING,
    )
    path = tmp_path / "shading" / "a.npy"
    np.save(path, np.full((H, W), -2.5, dtype=np.float32))
    dataset = FolderDataset(tmp_path, "train", label_kinds=SHADING)
    assert dataset[0]["shading"].shape == (1, H, W) and dataset[0]["shading"].eq(-2.5).all()
    np.save(path, np.full((H, W), np.inf, dtype=np.float32))
    with pytest.raises(DataError, match=r"a\.npy: regression values contain infinity"):
        dataset[0]
    np.save(path, np.zeros((H, W), dtype=np.int64))
    with pytest.raises(DataError, match=r"a\.npy: a regression label must be a float"):
        dataset[0]
    label = torch.full((1, H, W), float("inf"))
    with pytest.raises(DataError, match="infinity"):
        write_folder_dataset(
            [{"image": torch.rand(3, H, W), "shading": label, "meta": {"name": "b"}}],
            tmp_path,
            "train",
            SHADING,
        )


class Terrain(SemanticSegmentation):
    """A task the library does not define: its label is a class mask like semseg's."""

    name = "terrain"


@pytest.fixture
def terrain_task(register):
    register(TASKS, Terrain.name, Terrain)
    return Terrain


def test_a_task_registered_outside_the_library_round_trips(tmp_path, terrain_task):
    terrain = torch.randint(0, 4, (H, W), generator=torch.Generator().manual_seed(0))
    terrain[0, 0] = 255
    sample = {"image": torch.rand(3, H, W), "terrain": terrain, "meta": {"name": "a"}}
    options = {"terrain": {"class_names": list("abcd")}}
    write_folder_dataset([sample], tmp_path, "train", label_kinds(), task_options=options)
    assert (tmp_path / "terrain" / "a.png").is_file()
    dataset = FolderDataset(tmp_path, "train", label_kinds=label_kinds())
    assert dataset.tasks == ("terrain",) and dataset.task_options["terrain"]["num_classes"] == 4
    loaded = dataset[0]["terrain"]
    assert loaded.dtype == torch.int64 and torch.equal(loaded, terrain)
    (tmp_path / "dataset.json").unlink()
    assert FolderDataset(tmp_path, "train", label_kinds=label_kinds()).tasks == (
        "terrain",
    )  # found by its folder
