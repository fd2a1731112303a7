"""The configs of Lopes et al., WACV 2023 (configs/lopes2023_*.yaml): they validate, carry the
paper's defaults, and build the model and balancer they name. No training here."""

from pathlib import Path

import pytest
import torch

from densetasks.engine.build import build_balancer, build_model, build_tasks, open_dataset
from densetasks.engine.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
WEIGHTS = {
    "lopes2023_synthetic_sd": {"semseg": 50.0, "depth": 1.0},
    "lopes2023_synthetic_sdn": {"semseg": 100.0, "depth": 1.0, "normals": 100.0},
}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_config_has_the_paper_defaults_and_builds(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert list(config.tasks) == list(WEIGHTS[name])
    assert dict(config.balancer.weights) == WEIGHTS[name] and config.balancer.name == "fixed"
    assert config.tasks["depth"]["loss"] == "berhu"
    train = config.train
    assert (train.optimizer, tuple(train.betas)) == ("adam", (0.9, 0.98))
    assert (train.encoder_lr, train.lr, train.clip_grad_norm) == (2e-4, 3e-4, 10.0)
    assert (train.schedule, train.milestones, train.gamma) == ("multistep", [1500], 0.1)
    assert train.milestones[0] == 0.75 * train.steps
    assert config.model.architecture == "three_ways_mteb" and not config.model.options

    tasks = build_tasks(config, open_dataset(config, config.data.train_split))
    model = build_model(config, tasks)
    assert sorted(model.exchanges) == ["1"]
    assert model.bottleneck.rates == (6, 12, 18)
    assert build_balancer(config, tasks, model) is not None
    outputs = model.train()(torch.randn(2, 3, *config.data.crop_size))
    assert set(outputs) == set(tasks) | {f"{task}@scale1" for task in tasks}


@pytest.mark.parametrize("architecture", ["three_ways", "padnet", "three_ways_padnet"])
def test_the_baselines_are_the_same_file_with_another_architecture(architecture):
    config = load_config(
        CONFIGS / "lopes2023_synthetic_sdn.yaml", [f"model.architecture={architecture}"]
    )
    tasks = build_tasks(config, open_dataset(config, config.data.train_split))
    assert set(build_model(config, tasks).eval()(torch.randn(1, 3, 64, 64))) == set(tasks)
