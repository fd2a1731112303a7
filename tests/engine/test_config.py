import pytest
import yaml

from densetasks.engine.config import (
    RunConfig,
    apply_overrides,
    load_config,
    parse_overrides,
    save_config,
    validate_config,
)
from densetasks.errors import ConfigError

MINIMAL = {"tasks": {"semseg": {}, "depth": {"loss": "l1"}}}


def write(tmp_path, data):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_defaults_fill_every_section(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.train.schedule == "poly" and config.train.power == 0.9
    assert config.data.dataset == "synthetic"
    assert config.tasks["depth"] == {"loss": "l1"}


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        ({**MINIMAL, "train": {"lrr": 0.1}}, "train.lrr"),
        ({**MINIMAL, "train": {"lr": "fast"}}, "train.lr"),
        ({**MINIMAL, "data": {"crop_size": [64]}}, "data.crop_size"),
        ({**MINIMAL, "model": {"encoder": "r18", "colour": 1}}, "model.colour"),
        ({**MINIMAL, "train": {"schedule": "cosine"}}, "train.schedule"),
        ({**MINIMAL, "surprise": 1}, "surprise"),
    ],
)
def test_bad_key_fails_with_its_dotted_path(tmp_path, raw, path):
    with pytest.raises(ConfigError, match=path.replace(".", r"\.")):
        load_config(write(tmp_path, raw))


def test_references_to_unknown_tasks_fail():
    with pytest.raises(ConfigError, match="balancer.weights.edges"):
        validate_config({**MINIMAL, "balancer": {"weights": {"edges": 1.0}}})
    with pytest.raises(ConfigError, match="eval.best"):
        validate_config({**MINIMAL, "eval": {"best": "normals.mean"}})


def test_overrides_are_yaml_values_at_dotted_paths(tmp_path):
    config = load_config(
        write(tmp_path, MINIMAL),
        ["train.lr=1e-3", "data.crop_size=[32, 48]", "train.nesterov=true", "tasks.edges={}"],
    )
    assert config.train.lr == pytest.approx(1e-3)
    assert config.data.crop_size == (32, 48)
    assert config.train.nesterov is True
    assert list(config.tasks) == ["semseg", "depth", "edges"]  # the file's order is kept


def test_override_errors_name_the_key():
    with pytest.raises(ConfigError, match="key.path=value"):
        parse_overrides(["train.lr"])
    with pytest.raises(ConfigError, match="train.lr is not a mapping"):
        apply_overrides({"train": {"lr": 1.0}}, {"train.lr.x": 2})


def test_saved_config_reads_back_identically(tmp_path):
    config = validate_config({**MINIMAL, "data": {"crop_size": [32, 32], "scale_range": [0.5, 2]}})
    save_config(config, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == config
    assert RunConfig.model_validate(config.to_dict()) == config


def test_backbone_training_options_are_validated(tmp_path):
    config = load_config(
        write(tmp_path, MINIMAL),
        [
            "model.encoder=swin_tiny_patch4_window7_224",
            "model.encoder_options={drop_path_rate: 0.2, img_size: [448, 576]}",
            "train.layer_decay=0.65",
            "train.selective_decay=true",
            "train.grad_checkpointing=true",
        ],
    )
    assert config.model.encoder_options == {"drop_path_rate": 0.2, "img_size": [448, 576]}
    assert (config.train.layer_decay, config.train.selective_decay) == (0.65, True)
    assert config.train.grad_checkpointing is True
    assert RunConfig.model_validate(MINIMAL).train.layer_decay is None  # off unless asked for
    for bad in ("0", "1.5"):
        with pytest.raises(ConfigError, match=r"train\.layer_decay"):
            load_config(write(tmp_path, MINIMAL), [f"train.layer_decay={bad}"])
