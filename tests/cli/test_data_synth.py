"""``densetasks data synth``: writes the folder format; reading it back gives the same samples."""

import torch

from densetasks.cli.main import main
from densetasks.data import FolderDataset, SyntheticScenes
from densetasks.data.geometry import normals_from_depth, preset_options
from densetasks.tasks.registry import label_kinds


def test_synth_writes_a_folder_dataset_that_reads_back_identically(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        main(["data", "synth", "--out", str(out), "--n", "3", "--size", "24x32", "--seed", "5"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "wrote 3 samples of 24x32" in printed and "semseg classes: floor, wall" in printed

    written = FolderDataset(out, split="train", label_kinds=label_kinds())
    rendered = SyntheticScenes(n=3, size=(24, 32), seed=5)
    assert len(written) == 3 and set(written.tasks) == set(rendered.tasks)
    assert (
        written.task_options["semseg"]["class_names"]
        == rendered.task_options["semseg"]["class_names"]
    )
    for index in range(3):
        expected, actual = rendered[index], written[index]
        assert torch.allclose(actual["image"], expected["image"], atol=0.5 / 255)
        for task in rendered.tasks:
            assert torch.equal(actual[task], expected[task]), task  # exact: npy depth/normals
        assert torch.allclose(actual["meta"]["intrinsics"], expected["meta"]["intrinsics"])


def test_synth_rejects_a_bad_size(capsys):
    try:
        main(["data", "synth", "--out", "unused", "--size", "0x4"])
    except SystemExit as stop:
        assert stop.code == 2
    assert "size must be HxW" in capsys.readouterr().err


def test_synth_kinect_depth_and_normals_from_it(tmp_path, capsys):
    out = tmp_path / "kinect"
    argv = ["data", "synth", "--out", str(out), "--n", "2", "--size", "48x64", "--seed", "3"]
    assert main([*argv, "--depth-noise", "kinect", "--normals-from-depth"]) == 0
    assert "depth: kinect-like noise; normals from the noisy depth" in capsys.readouterr().out
    written = FolderDataset(out, split="train", label_kinds=label_kinds())
    noisy = SyntheticScenes(n=2, size=(48, 64), seed=3, depth_noise="kinect")
    exact = SyntheticScenes(n=2, size=(48, 64), seed=3)
    for index in range(2):
        actual, expected = written[index], noisy[index]
        assert torch.equal(actual["depth"], expected["depth"])
        assert not torch.equal(actual["depth"], exact[index]["depth"])
        intrinsics = expected["meta"]["intrinsics"]
        normals = normals_from_depth(expected["depth"], intrinsics, **preset_options("real", 64))
        assert torch.equal(actual["normals"], normals)
        holes = actual["depth"][0] == 0
        assert holes.any() and not (actual["normals"][:, holes].norm(dim=0) > 0).any()
        assert torch.equal(actual["semseg"], exact[index]["semseg"])


def test_synth_kinect_depth_keeps_exact_normals_unless_asked(tmp_path, capsys):
    out = tmp_path / "kinect"
    argv = ["data", "synth", "--out", str(out), "--n", "1", "--size", "24x32"]
    assert main([*argv, "--depth-noise", "kinect"]) == 0
    assert "normals from the exact geometry" in capsys.readouterr().out
    written = FolderDataset(out, split="train", label_kinds=label_kinds())[0]
    assert torch.equal(written["normals"], SyntheticScenes(n=1, size=(24, 32))[0]["normals"])
    assert main([*argv, "--normals-from-depth"]) == 2
    assert "--normals-from-depth needs --depth-noise kinect" in capsys.readouterr().err
