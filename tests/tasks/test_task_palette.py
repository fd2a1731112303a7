"""Task Palette prediction (Popovic et al., CVPR 2021, Sec. 6.2): the label painted by a
semantic rule from the class map, its loss and mIoU, its options, and a short training run."""

import json
from pathlib import Path

import pytest
import torch

from densetasks.data.palettes import NO_TASK
from densetasks.engine.config import validate_config
from densetasks.engine.run import train
from densetasks.errors import ConfigError
from densetasks.tasks.registry import create_task

TASKS = ["semseg", "parts", "edges", "saliency", "normals"]
SYNTHETIC_R2 = {"table": "synthetic_r2"}


def palette_task(**options):
    return create_task("task_palette", **{"tasks": TASKS, "rule_options": SYNTHETIC_R2, **options})


def class_map() -> torch.Tensor:
    """Synthetic classes floor 0, wall 1, ceiling 2, box 3, sphere 4, cylinder 5, person 6."""
    return torch.tensor([[[0, 1, 2, 3], [4, 5, 6, NO_TASK]]])


def test_target_paints_the_rule_from_the_class_map():
    task = palette_task()
    edges, normals, semseg, saliency, parts = 2, 4, 0, 3, 1
    expected = [[[edges, edges, edges, normals], [semseg, saliency, parts, NO_TASK]]]
    assert task.target({"semseg": class_map()}).tolist() == expected
    r3 = palette_task(rule="R3", rule_options={"table": "synthetic_r3"})
    assert r3.target({"semseg": class_map()}).tolist() == [
        [[edges, edges, edges, normals], [saliency, normals, parts, NO_TASK]]
    ]
    assert task.target({"edges": torch.zeros(1, 2, 4)}) is None  # no class map: unsupervised
    assert (task.num_classes, task.class_names, task.label_sources) == (5, TASKS, ("semseg",))


def test_another_semantic_label_and_task_order():
    task = palette_task(
        tasks=list(reversed(TASKS)), rule_options={**SYNTHETIC_R2, "semantic_task": "classes"}
    )
    assert task.target({"classes": class_map()})[0, 0].tolist() == [2, 2, 2, 0]
    assert task.label_sources == ("classes",)


def test_loss_and_miou_read_the_painted_target():
    task = palette_task()
    labels = {"semseg": class_map()}
    target = task.target(labels)
    perfect = torch.nn.functional.one_hot(target.clamp(max=4), 5).permute(0, 3, 1, 2) * 20.0
    wrong = perfect.roll(1, dims=1)
    assert task.loss(perfect, target) < 1e-6 < task.loss(wrong, target)
    changed = perfect.clone()
    changed[0, :, 1, 3] = torch.tensor([50.0, 0, 0, 0, 0])  # the ignored pixel
    assert task.loss(changed, target) == task.loss(perfect, target)
    metric = task.metrics()
    metric.update(task.decode(perfect), task.evaluation_target(labels))
    assert metric.compute()["miou"] == pytest.approx(100.0)
    metric = task.metrics()
    metric.update(task.decode(wrong), task.evaluation_target(labels))
    assert metric.compute()["miou"] == 0.0
    assert task.primary_metric == "miou"


def test_options_round_trip():
    task = palette_task(focal_gamma=2.0)
    options = task.options()
    assert options == {
        "tasks": TASKS,
        "rule": "R2",
        "rule_options": SYNTHETIC_R2,
        "focal_gamma": 2.0,
        "composite_eps": 1e-8,
    }
    rebuilt = create_task("task_palette", **options)
    assert rebuilt.options() == options
    labels = {"semseg": class_map()}
    assert torch.equal(rebuilt.target(labels), task.target(labels))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rule": "R1r", "rule_options": None}, "must be a semantic rule"),
        ({"tasks": ["semseg", "edges"]}, r"asks for task\(s\) \['normals', 'parts', 'saliency'\]"),
        ({"tasks": ["edges", "edges"]}, "distinct tasks"),
        ({"rule_options": {"tabel": "synthetic_r2"}}, "task_palette.rule_options"),
    ],
)
def test_bad_options_are_config_errors(options, message):
    with pytest.raises(ConfigError, match=message):
        palette_task(**options)


def test_a_short_training_run_lowers_the_loss(tmp_path: Path):
    """A single-task network learns the R2 palette of the synthetic scenes; ``semseg`` is
    no task of the run, yet its class map reaches the batch to paint the label."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = validate_config(
        {
            "tasks": {"task_palette": {"tasks": TASKS, "rule_options": SYNTHETIC_R2}},
            "data": {
                "options": {"n_train": 16, "n_val": 4, "n_test": 4, "size": [32, 32]},
                "batch_size": 4,
            },
            "model": {
                "architecture": "single_task",
                "encoder": "tiny",
                "options": {"bottleneck": "none", "head": "multiscale"},
            },
            "train": {
                "steps": 30,
                "optimizer": "adam",
                "lr": 3e-3,
                "schedule": "constant",
                "eval_every": 30,
                "log_every": 1,
                "checkpoint_every": 30,
                "images_every": 30,
            },
        }
    )
    try:
        run = train(config, tmp_path / "run")
    finally:
        torch.set_num_threads(threads)
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    totals = [event["total"] for event in events if event["type"] == "train"]
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    print(f"task_palette loss: first 5 steps {first:.3f}, last 5 {last:.3f}")
    assert len(totals) == 30 and last < 0.7 * first, (first, last)
    evaluation = [event for event in events if event["type"] == "eval"][-1]
    assert 0.0 <= evaluation["metrics"]["task_palette"]["miou"] <= 100.0
    assert list((run / "images").rglob("*_task_palette_label.png"))
