"""Evaluation plans through ``run_plan``: stacking the passes changes nothing but the calls."""

import pytest
import torch

from densetasks.engine.passes import run_plan
from densetasks.models import create_model
from densetasks.tasks import create_task

TASKS = {"semseg": {"num_classes": 5}, "depth": {}, "normals": {}, "edges": {}}


@pytest.fixture
def composite():
    torch.manual_seed(0)
    tasks = {name: create_task(name, **options) for name, options in TASKS.items()}
    model = create_model(
        "composite_tasking",
        {name: task.channels for name, task in tasks.items()},
        encoder="tiny",
        output_stride=32,
        decoder_widths=[16, 16, 16, 16, 8],
    ).eval()
    batch = {"image": torch.rand(2, 3, 32, 40), "meta": [{"name": "a"}, {"name": "b"}]}
    return model, tasks, batch


def test_stacked_rule_s_passes_equal_one_pass_at_a_time(composite) -> None:
    model, tasks, batch = composite
    plan = model.evaluation_plan()
    calls = []
    hook = model.register_forward_hook(lambda module, args, output: calls.append(args[0].shape))
    try:
        one_by_one = run_plan(model, tasks, batch, plan, torch.device("cpu"))
        stacked = run_plan(model, tasks, batch, plan, torch.device("cpu"), stack=True)
    finally:
        hook.remove()
    # four rule-S passes and the R1r pass one by one; then the four as one batch of 8, R1r
    assert [shape[0] for shape in calls] == [2, 2, 2, 2, 2, 8, 2]
    assert set(stacked.main.outputs) == set(one_by_one.main.outputs) == set(TASKS)
    for name, output in one_by_one.main.outputs.items():
        torch.testing.assert_close(stacked.main.outputs[name], output, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stacked.main.masks[name], one_by_one.main.masks[name])
        assert stacked.main.masks[name].all()  # rule S: the task everywhere
    for name, output in one_by_one.by_rule["R1r"].outputs.items():
        torch.testing.assert_close(stacked.by_rule["R1r"].outputs[name], output)


def test_a_plan_of_one_pass_is_not_stacked(composite) -> None:
    model, tasks, batch = composite
    plan = model.evaluation_plan()[:1]
    stacked = run_plan(model, tasks, batch, plan, torch.device("cpu"), stack=True)
    plain = run_plan(model, tasks, batch, plan, torch.device("cpu"))
    assert list(stacked.main.outputs) == ["semseg"]
    torch.testing.assert_close(stacked.main.outputs["semseg"], plain.main.outputs["semseg"])
