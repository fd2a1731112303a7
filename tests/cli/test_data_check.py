import argparse
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from densetasks.cli import data_check
from densetasks.errors import DataError


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    data_check.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def write_camvid_split(root: Path, split: str, labels: list[np.ndarray]) -> None:
    (root / split).mkdir(parents=True)
    (root / f"{split}annot").mkdir()
    lines = []
    for index, label in enumerate(labels):
        name = f"f{index}.png"
        Image.fromarray(np.zeros((*label.shape, 3), np.uint8)).save(root / split / name)
        Image.fromarray(label.astype(np.uint8)).save(root / f"{split}annot" / name)
        lines.append(f"/SegNet/CamVid/{split}/{name} /SegNet/CamVid/{split}annot/{name}")
    (root / f"{split}.txt").write_text("\n".join(lines))


def test_prints_counts_tasks_and_class_fractions(tmp_path, capsys):
    label = np.zeros((4, 8))
    label[:, 6:] = 3
    label[0, 0] = 11
    write_camvid_split(tmp_path, "val", [label, label])
    args = parse(["check", str(tmp_path), "--format", "camvid", "--split", "val"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "val: 2 samples, 2 loaded" in out
    assert "semseg (2/2), edges (2/2)" in out
    # 31 labelled pixels per image: 23 sky, 8 road
    assert f"sky              {23 / 31:.4f}" in out
    assert f"road             {8 / 31:.4f}" in out


def test_bad_split_raises_data_error(tmp_path):
    write_camvid_split(tmp_path, "val", [np.full((4, 8), 12)])
    args = parse(["check", str(tmp_path), "--format", "camvid", "--split", "val", "--limit", "1"])
    with pytest.raises(DataError, match="f0.png: unexpected label values"):
        args.func(args)
    args = parse(["check", str(tmp_path), "--format", "camvid"])
    with pytest.raises(DataError, match="train"):
        args.func(args)
