"""Task Palette rules and tables (Popovic et al., CVPR 2021, Sec. 4 / supplementary C)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from densetasks.data.class_lists import PASCAL_SEMSEG_NAMES
from densetasks.data.palette_tables import PALETTE_TABLES, get_palette_table
from densetasks.data.palettes import (
    ALL_TASKS,
    NO_TASK,
    PALETTE_RULES,
    check_palette,
    create_palette_rule,
    read_palette_png,
    write_palette_png,
)
from densetasks.data.synthetic import SYNTHETIC_CLASSES
from densetasks.errors import ConfigError, DataError

TASKS = ("semseg", "parts", "edges", "saliency", "normals")


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_batch(count: int = 2, height: int = 16, width: int = 20, **labels) -> dict:
    return {"image": torch.zeros(count, 3, height, width), **labels}


@pytest.fixture
def palette_file(tmp_path: Path) -> Path:
    path = tmp_path / "palette.png"
    palette = torch.tensor([[0, 1, 2, 3], [4, NO_TASK, 0, 1]], dtype=torch.int64)
    write_palette_png(path, palette)
    return path


def rule_options(name: str, palette_file: Path) -> dict:
    return {"file": {"path": palette_file}}.get(name, {})


@pytest.mark.parametrize("name", PALETTE_RULES.names())
def test_every_rule_gives_int64_ids_shaped_like_the_image(name: str, palette_file: Path) -> None:
    rule = create_palette_rule(name, **rule_options(name, palette_file))
    semseg = torch.randint(0, len(PASCAL_SEMSEG_NAMES), (3, 12, 10))
    palette = rule(make_batch(3, 12, 10, semseg=semseg), TASKS, seeded())
    assert rule.name == name
    assert palette.shape == (3, 12, 10) and palette.dtype == torch.int64
    assert palette.device == torch.device("cpu")
    assert set(palette.unique().tolist()) <= {*range(len(TASKS)), NO_TASK, ALL_TASKS}


@pytest.mark.parametrize("name", PALETTE_RULES.names())
def test_every_rule_follows_the_image_to_its_device(name: str, palette_file: Path) -> None:
    rule = create_palette_rule(name, **rule_options(name, palette_file))
    device = torch.device("meta")
    batch = {"image": torch.zeros(2, 3, 6, 6, device=device)}
    batch["semseg"] = torch.zeros(2, 6, 6, dtype=torch.int64, device=device)
    assert rule(batch, TASKS, seeded()).device == device


def test_unknown_rule_and_option_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown palette rule 'R9'"):
        create_palette_rule("R9")
    with pytest.raises(ConfigError, match=r"model.palette: .*'R1r'.*\['tsk'\]"):
        create_palette_rule("R1r", config_path="model.palette", tsk="semseg")


# S


def test_s_with_a_task_fills_every_pixel_with_its_index() -> None:
    palette = create_palette_rule("S", task="saliency")(make_batch(), TASKS)
    assert (palette == TASKS.index("saliency")).all()


def test_s_without_a_task_draws_one_task_per_image() -> None:
    palette = create_palette_rule("S")(make_batch(count=64), TASKS, seeded())
    per_image = palette.flatten(1)
    assert (per_image == per_image[:, :1]).all()
    assert set(per_image[:, 0].tolist()) == set(range(len(TASKS)))


def test_s_with_an_unknown_task_names_it() -> None:
    with pytest.raises(ConfigError, match="'depth' is not one of semseg"):
        create_palette_rule("S", task="depth")(make_batch(), TASKS)


# R1r


def split_point(palette: torch.Tensor) -> tuple[int, int]:
    """``(c_y, c_x)`` of one mosaic: the first row and column of the bottom-right rectangle."""
    rows = (palette[1:] != palette[:-1]).any(dim=1).nonzero()
    columns = (palette[:, 1:] != palette[:, :-1]).any(dim=0).nonzero()
    return int(rows[0]) + 1, int(columns[0]) + 1


@pytest.mark.parametrize("size", [(16, 20), (7, 10), (2, 3)])
def test_r1r_split_point_stays_in_the_middle_half(size: tuple[int, int]) -> None:
    height, width = size
    palette = create_palette_rule("R1r")(make_batch(500, height, width), TASKS, seeded())
    points = [split_point(image) for image in palette]
    rows = {row for row, _ in points}
    columns = {column for _, column in points}
    assert all(height / 4 <= row < 3 * height / 4 for row in rows)
    assert all(width / 4 <= column < 3 * width / 4 for column in columns)
    assert len(rows) == len([r for r in range(height) if height / 4 <= r < 3 * height / 4])
    assert len(columns) == len([c for c in range(width) if width / 4 <= c < 3 * width / 4])


def test_r1r_gives_four_rectangles_of_four_distinct_tasks() -> None:
    palette = create_palette_rule("R1r")(make_batch(200, 16, 20), TASKS, seeded())
    for image in palette:
        row, column = split_point(image)
        quadrants = [
            image[:row, :column],
            image[:row, column:],
            image[row:, :column],
            image[row:, column:],
        ]
        assert all((q == q[0, 0]).all() for q in quadrants)
        assert len({int(q[0, 0]) for q in quadrants}) == 4


def test_r1r_with_fewer_than_four_tasks_draws_a_task_per_rectangle() -> None:
    palette = create_palette_rule("R1r")(make_batch(100, 8, 8), TASKS[:2], seeded())
    assert set(palette.unique().tolist()) == {0, 1}
    corners = palette[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == corners[:, :1]).all(dim=1).any()


def test_r1r_is_reproducible_with_a_seed_and_varies_across_seeds() -> None:
    rule = create_palette_rule("R1r")
    batch = make_batch(4)
    assert torch.equal(rule(batch, TASKS, seeded(3)), rule(batch, TASKS, seeded(3)))
    assert not torch.equal(rule(batch, TASKS, seeded(3)), rule(batch, TASKS, seeded(4)))


# Rrnd


def test_rrnd_asks_each_task_about_equally_often() -> None:
    palette = create_palette_rule("Rrnd")(make_batch(4, 64, 64), TASKS, seeded())
    frequency = torch.bincount(palette.flatten(), minlength=len(TASKS)).float() / palette.numel()
    assert torch.allclose(frequency, torch.full_like(frequency, 1 / len(TASKS)), atol=0.01)


def test_rrnd_is_reproducible_with_a_seed() -> None:
    rule = create_palette_rule("Rrnd")
    assert torch.equal(rule(make_batch(), TASKS, seeded(1)), rule(make_batch(), TASKS, seeded(1)))


# R2 / R3


def class_map(names: list[list[str]], class_names=PASCAL_SEMSEG_NAMES) -> torch.Tensor:
    ids = [[class_names.index(n) if n != "ignore" else 255 for n in row] for row in names]
    return torch.tensor([ids], dtype=torch.int64)


PASCAL_SCENE = [
    ["background", "person", "cat", "chair"],
    ["bottle", "bus", "aeroplane", "ignore"],
]


PAPER_EXPECTED = {
    "R2": [["edges", "parts", "semseg", "normals"], ["normals", "saliency", "saliency", None]],
    "R3": [["edges", "parts", "saliency", "normals"], ["saliency", "normals", "saliency", None]],
}


@pytest.mark.parametrize(("name", "expected"), PAPER_EXPECTED.items())
def test_semantic_rules_follow_the_paper_tables(name: str, expected: list[list]) -> None:
    semseg = class_map(PASCAL_SCENE)
    palette = create_palette_rule(name)(make_batch(1, 2, 4, semseg=semseg), TASKS)
    ids = [[NO_TASK if task is None else TASKS.index(task) for task in row] for row in expected]
    assert palette.tolist() == [ids]


def test_synthetic_r2_table() -> None:
    scene = [["floor", "wall", "ceiling", "box"], ["sphere", "cylinder", "person", "ignore"]]
    semseg = class_map(scene, SYNTHETIC_CLASSES)
    rule = create_palette_rule("R2", table="synthetic_r2")
    palette = rule(make_batch(1, 2, 4, semseg=semseg), TASKS)
    expected = [["edges"] * 3 + ["normals"], ["semseg", "saliency", "parts"]]
    ids = [[TASKS.index(task) for task in row] for row in expected]
    assert palette.tolist() == [[ids[0], [*ids[1], NO_TASK]]]


def test_semantic_rule_with_a_class_list_and_its_own_label_key() -> None:
    labels = torch.tensor([[[0, 1, 2, 7]]])
    rule = create_palette_rule("R2", classes={"normals": [1, 2], "edges": [0]}, semantic_task="seg")
    palette = rule(make_batch(1, 1, 4, seg=labels), TASKS)
    assert palette.tolist() == [[[2, 4, 4, NO_TASK]]]


def test_semantic_rule_names_the_tasks_the_run_lacks() -> None:
    batch = make_batch(1, 2, 4, semseg=class_map(PASCAL_SCENE))
    with pytest.raises(ConfigError, match=r"asks for task\(s\) \['normals', 'saliency'\]"):
        create_palette_rule("R3")(batch, ("semseg", "parts", "edges"))


def test_semantic_rule_names_the_missing_label() -> None:
    with pytest.raises(DataError, match="needs the semantic label 'semseg'.*has: image"):
        create_palette_rule("R2")(make_batch(), TASKS)


def test_semantic_rule_rejects_bad_tables() -> None:
    with pytest.raises(ConfigError, match="unknown palette table 'pascal_r9'"):
        create_palette_rule("R2", table="pascal_r9")
    with pytest.raises(ConfigError, match="either table or classes"):
        create_palette_rule("R2", table="pascal_r2", classes={"edges": [0]})
    with pytest.raises(ConfigError, match="class 3 asks for two tasks"):
        create_palette_rule("R2", classes={"edges": [3], "normals": [3]})
    with pytest.raises(ConfigError, match=r"outside \[0, 255\)"):
        create_palette_rule("R2", classes={"edges": [255]})


@pytest.mark.parametrize("name", PALETTE_TABLES.names())
def test_every_table_gives_one_task_per_class(name: str) -> None:
    table = get_palette_table(name)
    class_names = SYNTHETIC_CLASSES if name.startswith("synthetic") else PASCAL_SEMSEG_NAMES
    assert table.class_names == tuple(class_names)
    assert sorted(table.task_of_class()) == list(range(len(class_names)))
    assert set(table.classes) <= set(TASKS)


# file


def test_palette_png_round_trip(tmp_path: Path) -> None:
    palette = torch.randint(0, 5, (9, 7))
    palette[0, 0] = NO_TASK
    write_palette_png(tmp_path / "p.png", palette)
    assert torch.equal(read_palette_png(tmp_path / "p.png"), palette)
    assert read_palette_png(tmp_path / "p.png").dtype == torch.int64


def test_palette_mode_png_is_read_as_its_indices(tmp_path: Path) -> None:
    image = Image.fromarray(np.array([[0, 1], [2, 255]], dtype=np.uint8), mode="P")
    image.putpalette([value for index in range(256) for value in (index, 255 - index, 0)])
    image.save(tmp_path / "p.png")
    assert read_palette_png(tmp_path / "p.png").tolist() == [[0, 1], [2, 255]]


def test_file_rule_resizes_nearest_and_repeats_per_image(palette_file: Path) -> None:
    palette = create_palette_rule("file", path=str(palette_file))(make_batch(2, 4, 8), TASKS)
    expected = torch.tensor([[0, 1, 2, 3], [4, NO_TASK, 0, 1]]).repeat_interleave(2, dim=0)
    assert torch.equal(palette[0], expected.repeat_interleave(2, dim=1))
    assert torch.equal(palette[1], palette[0])


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_file_rule_rejects_colour_pngs(tmp_path: Path, mode: str) -> None:
    Image.new(mode, (4, 4)).save(tmp_path / "colour.png")
    with pytest.raises(DataError, match=rf"colour.png: .*mode {mode} .*8-bit single channel"):
        create_palette_rule("file", path=tmp_path / "colour.png")


def test_file_rule_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nothing.png: file not found"):
        create_palette_rule("file", path=tmp_path / "nothing.png")


def test_file_rule_names_the_file_with_unknown_task_ids(palette_file: Path) -> None:
    rule = create_palette_rule("file", path=palette_file)
    with pytest.raises(DataError, match=r"palette.png: unknown task id\(s\) \[3, 4\]"):
        rule(make_batch(), TASKS[:3])


def test_write_palette_png_rejects_what_it_cannot_store(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must be in 0..255"):
        write_palette_png(tmp_path / "p.png", torch.tensor([[0, 256]]))
    with pytest.raises(ValueError, match=r"integer \[H, W\]"):
        write_palette_png(tmp_path / "p.png", torch.zeros(2, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="as .png"):
        write_palette_png(tmp_path / "p.jpg", torch.zeros(2, 2, dtype=torch.int64))


# check_palette


def test_check_palette_accepts_task_ids_and_no_task() -> None:
    check_palette(torch.tensor([[0, 4], [NO_TASK, 2]]), TASKS, (2, 2))


def test_check_palette_names_both_sizes() -> None:
    with pytest.raises(DataError, match=r"palette is 2x3 \(HxW\) but the image is 4x5"):
        check_palette(torch.zeros(2, 3, dtype=torch.int64), TASKS, (4, 5))


def test_check_palette_names_unknown_ids_and_the_tasks() -> None:
    palette = torch.tensor([[0, 5], [254, NO_TASK]])
    with pytest.raises(DataError, match=r"unknown task id\(s\) \[5, 254\].*4 = normals"):
        check_palette(palette, TASKS, (2, 2), source="edit.png")
