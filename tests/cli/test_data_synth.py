"""``densetasks data synth``: writes the folder format; reading it back gives the same samples."""

import torch

from densetasks.cli.main import main
from densetasks.data import FolderDataset, SyntheticScenes


def test_synth_writes_a_folder_dataset_that_reads_back_identically(tmp_path, capsys):
    out = tmp_path / "synth"
    assert (
        main(["data", "synth", "--out", str(out), "--n", "3", "--size", "24x32", "--seed", "5"])
        == 0
    )
    printed = capsys.readouterr().out
    assert "wrote 3 samples of 24x32" in printed and "semseg classes: floor, wall" in printed

    written = FolderDataset(out, split="train")
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
