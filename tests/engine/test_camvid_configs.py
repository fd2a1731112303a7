"""The CamVid benchmark configs (benchmarks/camvid): valid, and comparable to each other.

Δm is only meaningful when the baselines and the multi-task run differ in nothing but the
tasks and the architecture, so that is checked key by key. No training here.
"""

import importlib.util
from pathlib import Path

import pytest

from densetasks.engine.config import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
EXPECTED = {
    "camvid_stl_semseg": ("single_task", ["semseg"]),
    "camvid_stl_edges": ("single_task", ["edges"]),
    "camvid_mtl": ("hard_sharing", ["semseg", "edges"]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_loads_with_the_expected_tasks_and_architecture(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    architecture, tasks = EXPECTED[name]
    assert config.model.architecture == architecture
    assert list(config.tasks) == tasks
    assert config.data.dataset == "camvid"
    assert config.data.root == "../shared/data/camvid"
    assert (config.data.train_split, config.data.val_split, config.data.test_split) == (
        "train",
        "val",
        "test",
    )
    assert config.model.pretrained is False
    assert dict(config.balancer.weights) == {task: 1.0 for task in tasks}


def test_runs_differ_only_in_tasks_architecture_and_weights():
    dumps = {name: load_config(CONFIGS / f"{name}.yaml").to_dict() for name in EXPECTED}
    for dump in dumps.values():
        dump.pop("tasks")
        dump["model"].pop("architecture")
        dump["balancer"].pop("weights")
    reference = dumps.pop("camvid_mtl")
    for name, dump in dumps.items():
        assert dump == reference, name


def _load_run_script():
    path = CONFIGS.parent / "benchmarks" / "camvid" / "run.py"
    spec = importlib.util.spec_from_file_location("camvid_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_script_trains_each_config_with_the_given_root(tmp_path):
    run_script = _load_run_script()
    assert set(run_script.BASELINES) < set(run_script.RUNS)
    for name in run_script.RUNS:
        command = run_script.train_command(name, tmp_path / "camvid", tmp_path / "runs")
        config_path, overrides = command[2], command[command.index("--set") + 1 :: 2]
        assert command[:2] == ["densetasks", "train"]
        assert command[command.index("--out") + 1] == str(tmp_path / "runs" / name)
        config = load_config(config_path, overrides)
        assert list(config.tasks) == EXPECTED[f"camvid_{name}"][1]
        assert config.data.root == str((tmp_path / "camvid").resolve())
