"""The mobile network fission configs (Hickson et al., network fission, supplementary Sec. 1.2):
MobileNetV3 large / small + mid fission, scale-and-shift-invariant disparity with 0.25 × the
depth loss, evaluated with the aligned depth metrics; each builds and trains a step."""

from pathlib import Path

import pytest

from densetasks.engine.build import build_balancer, build_model, build_tasks, open_dataset
from densetasks.engine.config import load_config
from densetasks.engine.run import train
from densetasks.experiments.run_record import load_run_record
from densetasks.models import Fission

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ENCODERS = {
    "hickson_mobile_large": "mobilenetv3_large_100",
    "hickson_mobile_small": "mobilenetv3_small_100",
}
WEIGHTS = {"semseg": 1.0, "normals": 10.0, "depth": 0.5}
"""The authors' code: labels 1, normals 10, depth 0.5 (docs/fission.md)."""
SHRINK = [
    "data.options.n_train=4",
    "data.options.n_val=2",
    "data.options.n_test=2",
    "data.options.size=[32, 32]",
    "data.crop_size=[32, 32]",
    "data.batch_size=2",
    "train.steps=1",
    "train.eval_every=1",
    "train.checkpoint_every=1",
    "train.log_every=1",
]


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_config_builds_the_mobile_model_with_the_ssi_depth_loss(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.model.encoder == ENCODERS[name]
    assert config.model.options["split"] == "mid"
    assert config.model.options["aux_weights"] == [0.6, 0.5]
    tasks = build_tasks(config, open_dataset(config, config.data.val_split))
    depth = tasks["depth"]
    assert (depth.loss_name, depth.ssi_depth_weight) == ("ssi", 0.25)
    assert depth.metrics().align_scale_shift  # evaluated after scale/shift alignment
    model = build_model(config, tasks)
    assert isinstance(model, Fission) and model.split == "mid"
    balancer = build_balancer(config, tasks, model)
    assert dict(zip(tasks, balancer.task_weights.tolist(), strict=True)) == WEIGHTS


def test_the_two_configs_differ_only_in_the_encoder():
    dumps = [load_config(CONFIGS / f"{name}.yaml").to_dict() for name in sorted(ENCODERS)]
    for dump in dumps:
        dump["model"].pop("encoder")
    assert dumps[0] == dumps[1]


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_config_trains_a_step_and_reports_aligned_depth_metrics(name, tmp_path):
    run_dir = train(load_config(CONFIGS / f"{name}.yaml", SHRINK), tmp_path / "run")
    record = load_run_record(run_dir, "val")
    assert record.step == 1
    assert set(record.metrics) == set(WEIGHTS)
    assert 0.0 <= record.metrics["depth"]["delta1"] <= 100.0
