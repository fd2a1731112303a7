"""The configs of the survey architectures (cross-stitch, NDDR-CNN, MTAN, MTI-Net) and InvPT: each
paper's NYUD recipe validates, holds the paper's settings and builds its model and datasets on
a NYUD fixture (shrunk by ``--set``); each synthetic config trains (shrunk to two steps)."""

import importlib.util
import shutil
from pathlib import Path

import pytest
import torch

from densetasks.engine import build
from densetasks.engine.config import load_config
from densetasks.engine.run import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
READER_TESTS = Path(__file__).resolve().parents[1] / "data" / "readers"
PAPERS = {
    "misra2016": "CrossStitch",
    "gao2019": "NDDR",
    "liu2019": "MTAN",
    "vandenhende2020": "MTINet",
    "ye2022_invpt": "InvPT",
}
SHRINK = [
    "model.encoder=tiny",
    "model.pretrained=false",
    "data.batch_size=2",
    "data.workers=0",
    "train.images_every=0",
    "model.options.bottleneck_options={channels: 8}",
    "model.options.head_options={channels: 8}",
]
"""Small enough for a test: the tiny encoder, 8-channel ASPP and heads (MTI-Net has neither
option and drops them)."""


INVPT_SHRINK = [
    "model.encoder=test_vit",
    "model.encoder_options={}",
    "model.options.embed_channels=16",
    "model.options.prediction_channels=8",
]
"""InvPT decodes a plain ViT's tokens: timm's test ViT instead of the tiny CNN, a narrow
decoder."""


def shrink(paper: str, *extra: str) -> list[str]:
    overrides = [*SHRINK, *extra]
    if paper in ("vandenhende2020", "ye2022_invpt"):
        overrides = [item for item in overrides if "_options" not in item]
    if paper == "ye2022_invpt":
        overrides = [item for item in overrides if item != "model.encoder=tiny"] + INVPT_SHRINK
    return overrides


def nyud_fixture(tmp_path: Path, layout: str) -> Path:
    """The NYUD fixture of the reader's tests, with a val split (the same images)."""
    spec = importlib.util.spec_from_file_location("nyud_fixture", READER_TESTS / "test_nyud.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    root = tmp_path / layout
    if layout == "nyud_mt":
        module.write_nyud_mt(root, ["0001", "0002"])
        shutil.copy(root / "gt_sets" / "train.txt", root / "gt_sets" / "val.txt")
    else:
        module.write_nyud_npy(root, 2)
        shutil.copytree(root / "train", root / "val")
    return root


@pytest.mark.parametrize("paper", sorted(PAPERS))
def test_the_nyud_config_builds_on_a_nyud_fixture(paper: str, tmp_path: Path) -> None:
    config = load_config(CONFIGS / f"{paper}_nyud.yaml")
    root = nyud_fixture(tmp_path, config.data.dataset)
    crop = [] if config.data.crop_size is None else ["data.crop_size=[16,16]"]
    config = load_config(CONFIGS / f"{paper}_nyud.yaml", shrink(paper, f"data.root={root}", *crop))
    train_set = build.open_training_dataset(config)
    tasks = build.build_tasks(config, train_set)
    model = build.build_model(config, tasks)
    assert type(model).__name__ == PAPERS[paper]
    build.attach_transform(config, train_set, tasks, model, train=True)
    val_set = build.attach_transform(
        config, build.open_dataset(config, config.data.val_split), tasks, model, train=False
    )
    for images in (
        torch.stack([train_set[0]["image"], train_set[1]["image"]]),
        torch.stack([val_set[0]["image"], val_set[1]["image"]]),
    ):
        with torch.no_grad():
            outputs = model.eval()(images)
        for task in tasks:
            assert outputs[task].shape[-2:] == images.shape[-2:], task


@pytest.mark.parametrize("paper", ["misra2016", "gao2019"])
def test_the_survey_recipe_of_cross_stitch_and_nddr(paper: str) -> None:
    config = load_config(CONFIGS / f"{paper}_nyud.yaml")
    assert (config.data.dataset, list(config.tasks)) == ("nyud_mt", ["semseg", "depth"])
    assert (config.model.encoder, config.model.pretrained, config.model.output_stride) == (
        "resnet50",
        True,
        8,
    )
    assert (config.model.options["alpha"], config.model.options["beta"]) == (0.9, 0.1)
    train_config = config.train
    assert (train_config.optimizer, train_config.lr, train_config.momentum) == ("sgd", 1e-3, 0.9)
    assert (train_config.weight_decay, train_config.schedule) == (1e-4, "poly")
    assert train_config.steps == 50 * (795 // 8)  # 50 epochs, drop_last
    assert config.data.crop_size == (480, 640) and config.data.batch_size == 8


def test_the_mtan_recipe_is_the_authors_nyuv2_setting() -> None:
    config = load_config(CONFIGS / "liu2019_nyud.yaml")
    assert (config.data.dataset, list(config.tasks)) == ("nyud_npy", ["semseg", "depth", "normals"])
    assert (config.data.batch_size, config.data.flip, config.balancer.name) == (2, False, "equal")
    steps_per_epoch = -(-795 // 2)  # their loader keeps the last, smaller batch
    train_config = config.train
    assert (train_config.steps, train_config.step_size) == (200 * steps_per_epoch, 100 * 398)
    assert (train_config.optimizer, train_config.lr, train_config.gamma) == ("adam", 1e-4, 0.5)


def test_the_mti_net_recipe_is_the_papers() -> None:
    config = load_config(CONFIGS / "vandenhende2020_nyud.yaml")
    assert (config.model.output_stride, config.model.options["aux_weight"]) == (32, 1.0)
    train_config = config.train
    assert (train_config.optimizer, train_config.lr, train_config.weight_decay) == (
        "adam",
        1e-4,
        1e-4,
    )
    assert train_config.steps == 100 * (795 // 8)


def test_the_invpt_recipe_is_the_authors_nyud_config() -> None:
    config = load_config(CONFIGS / "ye2022_invpt_nyud.yaml")
    assert (config.data.dataset, list(config.tasks)) == (
        "nyud_mt",
        ["semseg", "depth", "normals", "edges"],
    )
    assert (config.model.encoder, config.model.pretrained) == ("vit_large_patch16_384", True)
    assert config.model.encoder_options == {"drop_path_rate": 0.15}
    options = config.model.options
    assert (options["embed_channels"], options["prediction_channels"]) == (512, 64)
    assert (options["heads"], options["aux_weight"]) == (2, 1.0)
    assert config.balancer.weights == {"semseg": 1.0, "depth": 1.0, "normals": 10.0, "edges": 50.0}
    assert (config.data.crop_size, config.data.scale_range) == ((448, 576), (0.5, 2.0))
    assert config.data.batch_size == 2
    train_config = config.train
    assert (train_config.optimizer, train_config.lr, train_config.weight_decay) == (
        "adam",
        2e-5,
        1e-6,
    )
    assert (train_config.schedule, train_config.power, train_config.steps) == ("poly", 0.9, 40000)


@pytest.mark.parametrize("paper", sorted(PAPERS))
def test_the_synthetic_config_is_the_nyud_recipe_scaled_and_trains(paper: str, tmp_path: Path):
    config = load_config(CONFIGS / f"{paper}_synthetic.yaml")
    nyud = load_config(CONFIGS / f"{paper}_nyud.yaml")
    assert config.model.architecture == nyud.model.architecture
    assert list(config.tasks) == list(nyud.tasks)
    assert (config.train.optimizer, config.train.schedule) == (
        nyud.train.optimizer,
        nyud.train.schedule,
    )
    assert config.balancer == nyud.balancer
    steps = ["train.steps=2", "train.eval_every=2", "train.checkpoint_every=2", "train.log_every=1"]
    data = "data.options={n_train: 4, n_val: 2, n_test: 2, size: [32, 32]}"
    small = load_config(
        CONFIGS / f"{paper}_synthetic.yaml",
        shrink(paper, data, "data.crop_size=[32,32]", "train.step_size=1", *steps),
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = train(small, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    assert (run / "checkpoints" / "best.pt").is_file()
