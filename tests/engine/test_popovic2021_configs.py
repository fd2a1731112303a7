"""The CompositeTasking configs (Popovic et al., CVPR 2021): the PASCAL-MT setup, its rule
transfer fine-tuning and the palette predictor validate, build their model and datasets
(PASCAL-MT: on a tiny fixture, shrunk by ``--set``), and the PASCAL-MT config trains."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from densetasks.engine import build
from densetasks.engine.checkpoint import load_matching_weights
from densetasks.engine.config import load_config
from densetasks.engine.run import train

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
READER_TESTS = Path(__file__).resolve().parents[1] / "data" / "readers"
TASK_ORDER = ["semseg", "parts", "edges", "saliency", "normals"]
SHRINK = [
    "model.encoder=tiny",
    "model.pretrained=false",
    "data.crop_size=[32,32]",
    "data.batch_size=2",
    "data.workers=0",
    "train.images_every=0",
]
PASCAL_SHRINK = [*SHRINK, "model.options.decoder_widths=[16,16,16,16,8]", "data.eval_size=[32,32]"]
SYNTHETIC_SHRINK = [*SHRINK, "data.options={n_train: 4, n_val: 2, n_test: 2, size: [32, 32]}"]


def write_pascal(root: Path) -> Path:
    """The PASCAL-MT fixture of the reader's tests, with a val split (the same images)."""
    spec = importlib.util.spec_from_file_location(
        "pascal_fixture", READER_TESTS / "test_pascal_mt.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.write_pascal(root, ["2008_000002", "2008_000003"])
    (root / "ImageSets/Context/val.txt").write_text("2008_000002\n2008_000003\n")
    return root


def built(config) -> tuple[dict, torch.nn.Module]:
    """Tasks and model of ``config``, after one training and one validation sample went
    through the run's transforms and the model."""
    train_set = build.open_training_dataset(config)
    tasks = build.build_tasks(config, train_set)
    model = build.build_model(config, tasks)
    build.attach_transform(config, train_set, tasks, model, train=True)
    val_set = build.attach_transform(
        config, build.open_dataset(config, config.data.val_split), tasks, model, train=False
    )
    for sample in (train_set[0], val_set[0]):
        assert tuple(sample["image"].shape[-2:]) == (32, 32)
    return tasks, model


@pytest.mark.parametrize("name", ["popovic2021_pascal", "popovic2021_pascal_r3_finetune"])
def test_pascal_configs_build_on_a_pascal_fixture(name: str, tmp_path: Path) -> None:
    root = write_pascal(tmp_path / "PASCAL_MT")
    config = load_config(CONFIGS / f"{name}.yaml", [*PASCAL_SHRINK, f"data.root={root}"])
    tasks, model = built(config)
    assert list(tasks) == TASK_ORDER
    assert type(model).__name__ == "CompositeTasking"
    expected_rule = "R2" if name == "popovic2021_pascal" else "R3"
    assert model.condition_inputs[0].sample.rule.name == expected_rule


def test_the_pascal_config_is_the_papers_setup() -> None:
    config = load_config(CONFIGS / "popovic2021_pascal.yaml")
    assert (config.data.dataset, config.data.test_split) == ("pascal_mt", None)
    assert (config.model.encoder, config.model.pretrained, config.model.output_stride) == (
        "resnet34",
        True,
        32,
    )
    assert "decoder_widths" not in config.model.options  # the authors' widths, the default
    assert config.data.crop_size == config.data.eval_size == (256, 256)
    assert config.data.batch_size == 10
    steps_per_epoch = math.ceil(4998 / config.data.batch_size)
    assert (config.train.steps, config.train.eval_every) == (100 * steps_per_epoch, steps_per_epoch)
    train_config = config.train
    assert (train_config.optimizer, train_config.lr, train_config.encoder_lr) == (
        "adam",
        1e-3,
        1e-5,
    )
    assert (train_config.weight_decay, train_config.schedule, train_config.gamma) == (
        1e-5,
        "plateau",
        0.3,
    )
    assert train_config.patience == 12
    assert dict(config.balancer.weights) == dict(
        zip(TASK_ORDER, [3.0, 4.0, 50.0, 8.0, 4.0], strict=True)
    )


def test_the_fine_tuning_differs_from_the_r2_run_only_where_it_should() -> None:
    r2 = load_config(CONFIGS / "popovic2021_pascal.yaml").to_dict()
    r3 = load_config(CONFIGS / "popovic2021_pascal_r3_finetune.yaml").to_dict()
    assert r3["model"].pop("init_from") == "runs/popovic2021_pascal"
    assert r3["model"].pop("options")["train_rule"] == "R3"
    assert r2["model"].pop("options")["train_rule"] == "R2"
    assert (r2["model"].pop("init_from"), r2["model"].pop("pretrained")) == (None, True)
    assert r3["model"].pop("pretrained") is False
    for key in ("steps", "images_every"):
        r2["train"].pop(key), r3["train"].pop(key)
    assert r2 == r3


def test_the_palette_config_learns_the_synthetic_runs_palette() -> None:
    config = load_config(CONFIGS / "popovic2021_palette.yaml", SYNTHETIC_SHRINK)
    composite = load_config(CONFIGS / "popovic2021_synthetic.yaml")
    options = config.tasks["task_palette"]
    assert options["tasks"] == list(composite.tasks) == TASK_ORDER
    assert options["rule_options"] == {"table": "synthetic_r2"}
    unshrunk = load_config(CONFIGS / "popovic2021_palette.yaml")
    assert unshrunk.data == composite.data
    tasks, model = built(config)
    assert list(tasks) == ["task_palette"] and model.task_channels == {"task_palette": 5}


def test_the_pascal_config_trains_and_the_fine_tuning_starts_from_it(
    tmp_path: Path, one_thread
) -> None:
    root = write_pascal(tmp_path / "PASCAL_MT")
    steps = ["train.steps=2", "train.eval_every=2", "train.checkpoint_every=2", "train.log_every=1"]
    overrides = [*PASCAL_SHRINK, f"data.root={root}", *steps]
    r2 = train(load_config(CONFIGS / "popovic2021_pascal.yaml", overrides), tmp_path / "r2")
    assert (r2 / "checkpoints" / "best.pt").is_file()
    config = load_config(
        CONFIGS / "popovic2021_pascal_r3_finetune.yaml", [*overrides, f"model.init_from={r2}"]
    )
    _, model = built(config)
    loaded, kept = load_matching_weights(model, Path(config.model.init_from))
    assert kept == [] and loaded == sorted(model.state_dict())
