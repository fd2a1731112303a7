"""``densetasks predict``: per-task PNGs and a labelled sheet per image, clear errors."""

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from densetasks.cli import predict as predict_command
from densetasks.cli.main import main
from densetasks.cli.predict import (
    check_palette_run,
    predict_image,
    predicted_palette,
    read_conditions,
    sheet_keys,
)
from densetasks.data.io import read_image
from densetasks.data.palettes import read_palette_png
from densetasks.data.transforms import build_transforms
from densetasks.engine.config import validate_config
from densetasks.engine.inference import LoadedRun, Prediction, Predictor
from densetasks.engine.run import train
from densetasks.errors import ConfigError, DataError, DiskFullError
from densetasks.models.base import Architecture
from densetasks.pictures import (
    LABEL_HEIGHT,
    SHEET_MIN_HEIGHT,
    ClassLegend,
    ColourBar,
    IconKey,
    contact_sheet,
)
from densetasks.tasks.depth import Depth
from densetasks.tasks.normals import SurfaceNormals
from densetasks.tasks.registry import label_kinds
from densetasks.tasks.semseg import SemanticSegmentation
from densetasks.tasks.task_palette import TaskPalette

COMPOSITE_TASKS = ["semseg", "parts", "edges", "saliency", "normals"]


class TwoHeads(Architecture):
    """Semseg logits that make class 1 win where the red channel is bright; constant depth."""

    def __init__(self) -> None:
        super().__init__({"semseg": 3, "depth": 1})
        self.unused = nn.Linear(1, 1)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        red = image[:, :1]
        return {
            "semseg": torch.cat([-red, red, torch.zeros_like(red)], dim=1),
            "depth": torch.full_like(red, 0.5),
        }

    def encoder_parameters(self) -> list[nn.Parameter]:
        return []

    def shared_parameters(self) -> list[nn.Parameter]:
        return []


def by_hand(tasks: dict, run_dir: str = "unused") -> Predictor:
    """A predictor over what ``load_run`` returns, built by hand (its model: TwoHeads)."""
    run = LoadedRun(
        run_dir=Path(run_dir),
        config=None,
        model=TwoHeads(),
        tasks=tasks,
        transform=build_transforms(train=False, size=None, kinds=label_kinds()),
        step=0,
        device=torch.device("cpu"),
    )
    return Predictor(run)


@pytest.fixture
def loaded() -> Predictor:
    return by_hand({"semseg": SemanticSegmentation(num_classes=3), "depth": Depth()})


def write_image(path: Path, height: int = 24, width: int = 32) -> Path:
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2, 0] = 255
    Image.fromarray(pixels).save(path)
    return path


def test_writes_one_png_per_task_and_a_sheet(loaded, tmp_path: Path) -> None:
    image = write_image(tmp_path / "room.png")
    written = predict_image(loaded, image, tmp_path / "out")
    names = [path.name for path in written]
    assert names == ["room_semseg.png", "room_depth.png", "room_sheet.png"]
    semseg = np.asarray(Image.open(tmp_path / "out" / "room_semseg.png"))
    expected = loaded.tasks["semseg"].visualize(
        torch.cat([torch.ones(24, 16), torch.zeros(24, 16)], dim=1).long()
    )
    np.testing.assert_array_equal(semseg, expected)
    sheet = Image.open(tmp_path / "out" / "room_sheet.png")
    scale = -(-SHEET_MIN_HEIGHT // 24)
    bar_height = ColourBar("magma", 1.0, 2.0).draw(96).shape[0]  # under the depth panel
    assert sheet.size == (3 * 32 * scale, 24 * scale + LABEL_HEIGHT + bar_height)


def test_a_full_disk_names_the_file_and_leaves_the_previous_prediction(
    loaded, tmp_path: Path, file_size_limit
) -> None:
    image = write_image(tmp_path / "room.png")
    predict_image(loaded, image, tmp_path / "out")
    sheet = tmp_path / "out" / "room_sheet.png"
    before = sheet.read_bytes()
    write_image(tmp_path / "room.png", width=40)
    with file_size_limit(len(before) - 1), pytest.raises(DiskFullError) as raised:
        predict_image(loaded, image, tmp_path / "out")
    assert str(raised.value).startswith(f"cannot write {sheet}: File too large; it needs")
    assert sheet.read_bytes() == before
    assert Image.open(tmp_path / "out" / "room_depth.png").size == (40, 24)  # written before


def test_size_option_resizes_before_predicting(loaded, tmp_path: Path) -> None:
    image = write_image(tmp_path / "room.png")
    predict_image(loaded, image, tmp_path, size=(16, 20))
    assert Image.open(tmp_path / "room_depth.png").size == (20, 16)


def test_contact_sheet_labels_every_panel() -> None:
    panels = [(name, np.full((130, 40, 3), 200, dtype=np.uint8)) for name in ("input", "semseg")]
    sheet = contact_sheet(panels)
    assert sheet.shape == (130 + LABEL_HEIGHT, 80, 3)
    # the label strip has dark text pixels in both panels
    assert (sheet[:LABEL_HEIGHT, :40] < 100).any() and (sheet[:LABEL_HEIGHT, 40:] < 100).any()


def named_tasks() -> dict:
    names = ["floor", "wall", "person"]
    return {
        "semseg": SemanticSegmentation(num_classes=3, class_names=names),
        "depth": Depth(),
        "normals": SurfaceNormals(),
    }


def test_sheet_keys_legend_the_classes_present_bar_the_depth_range_and_show_the_normals() -> None:
    """Issue 24: the legend listed absent classes too, and normals had no key."""
    depth = torch.tensor([[[0.0, 1.25], [3.5, 2.0]]])  # 0: unlabelled, left out of the range
    prediction = Prediction(
        image=torch.zeros(3, 2, 2),
        outputs={},
        predictions={
            "semseg": torch.tensor([[2, 0], [0, 2]]),
            "depth": depth,
            "normals": torch.zeros(3, 2, 2),
        },
    )
    tasks = named_tasks()
    keys = sheet_keys(tasks, prediction)
    assert [name for name, _ in keys["semseg"].entries] == ["floor", "person"]
    np.testing.assert_array_equal(keys["semseg"].colours, tasks["semseg"].colours)
    assert keys["depth"].labels() == ("1.25 m", "3.5 m") and keys["depth"].ticks() == [2]
    assert isinstance(keys["normals"], IconKey)


def test_tasks_without_class_names_get_no_legend(loaded) -> None:
    prediction = Prediction(
        image=torch.zeros(3, 2, 2),
        outputs={},
        predictions={"semseg": torch.zeros(2, 2).long(), "depth": torch.ones(1, 2, 2)},
    )
    assert set(sheet_keys(loaded.tasks, prediction)) == {"depth"}


def test_the_legend_draws_a_swatch_and_the_name_of_every_class() -> None:
    tasks = named_tasks()
    legend = ClassLegend(tuple(tasks["semseg"].class_names), tasks["semseg"].colours)
    picture = legend.draw(400)
    assert picture.shape[1] == 400 and (picture < 60).all(axis=2).any()  # black text
    for colour in tasks["semseg"].colours:
        assert (picture == colour).all(axis=2).sum() >= 8 * 8  # its swatch
    narrow = legend.draw(60)  # one class per row
    assert narrow.shape[0] > picture.shape[0]


def test_the_sheet_is_taller_by_its_keys_and_they_sit_under_their_panels() -> None:
    tasks = named_tasks()
    panels = [
        ("input", np.zeros((32, 32, 3), np.uint8)),
        ("semseg", np.zeros((32, 32, 3), np.uint8)),
    ]
    legend = ClassLegend(tuple(tasks["semseg"].class_names), tasks["semseg"].colours)
    plain = contact_sheet(panels)
    keyed = contact_sheet(panels, {"semseg": legend})
    assert keyed.shape[0] > plain.shape[0] and keyed.shape[1] == plain.shape[1]
    under = keyed[plain.shape[0] :]
    assert (under[:, :128] == 255).all()  # nothing under the input panel
    assert (under[:, 128:] == tasks["semseg"].colours[0]).all(axis=2).any()


def test_the_depth_bar_runs_from_bright_near_to_dark_far_with_its_labels() -> None:
    bar = Depth().picture_key(torch.tensor([[[0.5, 7.25]]]))
    assert bar.labels() == ("0.5 m", "7.25 m")
    picture = bar.draw(200).astype(int)
    stripe = picture[6]  # through the colours
    assert stripe[10].sum() > stripe[-10].sum()  # near is bright
    assert (picture[-12:] < 60).all(axis=2).any()  # the labels


def test_unreadable_image_names_the_file(loaded, tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    with pytest.raises(DataError, match="broken.jpg"):
        predict_image(loaded, broken, tmp_path)


def test_an_image_over_max_pixels_is_refused_naming_it(loaded, tmp_path: Path) -> None:
    image = write_image(tmp_path / "room.png")
    with pytest.raises(DataError, match=r"room.png: image is 32x24 = 768 pixels"):
        predict_image(loaded, image, tmp_path / "out", max_pixels=700)


def test_parser_options() -> None:
    parser = argparse.ArgumentParser()
    predict_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(
        [
            "predict",
            "run",
            "a.png",
            "b.png",
            "--out",
            "o",
            "--checkpoint",
            "last",
            "--size",
            "64x48",
        ]
    )
    assert args.images == [Path("a.png"), Path("b.png")]
    assert (args.checkpoint, args.size, args.device) == ("last", (64, 48), "cpu")


def test_conditions_are_read_from_png_files(tmp_path: Path) -> None:
    ids = np.array([[0, 1], [255, 2]], dtype=np.uint8)
    Image.fromarray(ids).save(tmp_path / "palette.png")
    conditions = read_conditions([f"palette={tmp_path / 'palette.png'}"])
    assert conditions["palette"].dtype == torch.int64
    assert conditions["palette"].tolist() == ids.tolist()
    with pytest.raises(ConfigError, match="NAME=PNG"):
        read_conditions(["palette"])


def train_tiny(out: Path, tasks: dict, model: dict) -> Path:
    """A 3-step run of ``model`` (tiny encoder) on 32-px synthetic scenes."""
    config = validate_config(
        {
            "tasks": tasks,
            "data": {
                "options": {"n_train": 4, "n_val": 2, "size": [32, 32]},
                "batch_size": 2,
                "test_split": None,
            },
            "model": {"encoder": "tiny", **model},
            "train": {
                "steps": 3,
                "optimizer": "adam",
                "lr": 1e-3,
                "eval_every": 3,
                "checkpoint_every": 3,
                "images_every": 0,
            },
        }
    )
    return train(config, out)


def test_a_palette_run_predicts_the_palette_of_a_composite_run(tmp_path: Path, one_thread) -> None:
    composite = train_tiny(
        tmp_path / "ctn",
        {name: {} for name in COMPOSITE_TASKS},
        {
            "architecture": "composite_tasking",
            "output_stride": 32,
            "options": {"decoder_widths": [16, 16, 16, 16, 8], "eval_rules": []},
        },
    )
    palette_run = train_tiny(
        tmp_path / "palette",
        {"task_palette": {"tasks": COMPOSITE_TASKS, "rule_options": {"table": "synthetic_r2"}}},
        {"architecture": "single_task", "options": {"bottleneck": "none", "head": "multiscale"}},
    )
    image = write_image(tmp_path / "room.png")
    out = tmp_path / "out"
    command = ["predict", str(composite), str(image), "--out", str(out)]
    assert main(["--debug", *command, "--palette-run", str(palette_run)]) == 0
    expected = predicted_palette(Predictor.from_run_dir(palette_run), read_image(image))
    assert expected.shape == (24, 32) and set(expected.unique().tolist()) <= set(range(5))
    assert torch.equal(read_palette_png(out / "room_palette.png"), expected)
    names = {path.name for path in out.iterdir()}
    assert {f"room_{name}.png" for name in COMPOSITE_TASKS} | {"room_composite.png"} <= names
    with pytest.raises(ConfigError, match=f"--palette-run {composite} has no task 'task_palette'"):
        main(["--debug", *command, "--palette-run", str(composite)])


def test_a_palette_run_over_other_tasks_is_refused_naming_both_runs(loaded) -> None:
    palette = TaskPalette(
        tasks=list(reversed(COMPOSITE_TASKS)), rule_options={"table": "synthetic_r2"}
    )
    composite = by_hand({name: loaded.tasks["semseg"] for name in COMPOSITE_TASKS}, "runs/ctn")
    palette_predictor = by_hand({"task_palette": palette}, "runs/palette")
    with pytest.raises(ConfigError, match=r"runs/palette paints the tasks \['normals'.* runs/ctn"):
        check_palette_run(palette_predictor, composite)
    check_palette_run(by_hand({"task_palette": TaskPalette(tasks=COMPOSITE_TASKS)}), composite)


def test_palette_run_excludes_the_other_palette_sources() -> None:
    parser = argparse.ArgumentParser()
    predict_command.add_parser(parser.add_subparsers())
    args = parser.parse_args(["predict", "run", "a.png", "--out", "o", "--palette-run", "p"])
    assert args.palette_run == Path("p")
    with pytest.raises(SystemExit):
        parser.parse_args(
            ["predict", "run", "a.png", "--out", "o", "--palette-run", "p", "--rule", "S"]
        )
