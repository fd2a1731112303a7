"""The network fission configs (Hickson et al., network fission, supplementary Tables 4-5):
valid, built, with the paper's loss balancing and optimiser, and differing only in the tasks.
No training here."""

from pathlib import Path

import pytest

from densetasks.engine.build import build_balancer, build_model, build_tasks, open_dataset
from densetasks.engine.config import load_config
from densetasks.models import Fission

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BALANCED = {
    "hickson_synthetic_normals_depth": {"normals": 10.0, "depth": 1.0},
    "hickson_synthetic_semseg_depth": {"semseg": 2.0, "depth": 1.0},
}
"""lambda_normals = 10 vs depth 1 (Table 4); lambda_semantics = 2 vs depth 1 (Table 5)."""


@pytest.mark.parametrize("name", sorted(BALANCED))
def test_config_validates_and_builds_mid_fission_with_the_paper_settings(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert dict(config.balancer.weights) == BALANCED[name]
    assert list(config.tasks) == list(BALANCED[name])
    assert (config.train.optimizer, config.train.lr, config.train.betas) == (
        "adam",
        1e-3,
        (0.9, 0.999),
    )
    assert (config.train.schedule, config.train.power, config.train.weight_decay) == (
        "poly",
        0.9,
        5e-4,
    )
    assert config.model.options["split"] == "mid"
    assert config.model.options["aux_weights"] == [0.6, 0.5]
    assert config.model.output_stride == 16
    assert not config.data.flip and config.data.scale_range == (1.0, 1.0)  # no augmentation
    tasks = build_tasks(config, open_dataset(config, config.data.val_split))
    model = build_model(config, tasks)
    balancer = build_balancer(config, tasks, model)
    assert balancer.task_weights.tolist() == list(BALANCED[name].values())
    assert isinstance(model, Fission) and model.split == "mid"
    assert {aux.key: aux.weight for aux in model.auxiliary_outputs} == {
        f"{task}@{stage}": weight
        for task in tasks
        for stage, weight in (("stage1", 0.6), ("stage2", 0.5))
    }


def test_the_two_configs_differ_only_in_the_first_task_and_its_weight():
    dumps = [load_config(CONFIGS / f"{name}.yaml").to_dict() for name in sorted(BALANCED)]
    for dump in dumps:
        dump["tasks"].pop("normals", None)
        dump["tasks"].pop("semseg", None)
        dump["balancer"]["weights"] = {"depth": dump["balancer"]["weights"]["depth"]}
    assert dumps[0] == dumps[1]
