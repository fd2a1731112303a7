import pytest
import torch
from torch import nn

from densetasks.balancers import create_balancer
from densetasks.engine.config import TrainConfig
from densetasks.engine.loop import StepParts, check_finite, evaluate, task_losses, train_step
from densetasks.engine.optim import build_optimizer
from densetasks.errors import TrainingError
from densetasks.models.base import AdaptedOutputs, Architecture, AuxiliaryOutput
from densetasks.tasks.registry import create_task


class TwoHeads(Architecture):
    """A stand-in model: a shared 1×1 conv, one head per task and a training-only aux output."""

    auxiliary_outputs = (AuxiliaryOutput("semseg", "half", 0.5),)

    def __init__(self):
        super().__init__({"semseg": 3, "depth": 1})
        self.shared = nn.Conv2d(3, 4, 1)
        self.semseg = nn.Conv2d(4, 3, 1)
        self.depth = nn.Conv2d(4, 1, 1)

    def forward(self, image):
        features = torch.relu(self.shared(image))
        outputs = {"semseg": self.semseg(features), "depth": self.depth(features)}
        if self.training:
            outputs["semseg@half"] = self.semseg(nn.functional.avg_pool2d(features, 2))
        return outputs

    def encoder_parameters(self):
        return list(self.shared.parameters())

    def shared_parameters(self):
        return list(self.shared.parameters())


@pytest.fixture
def tasks():
    return {"semseg": create_task("semseg", num_classes=3), "depth": create_task("depth")}


def batch(size=8):
    generator = torch.Generator().manual_seed(0)
    return {
        "image": torch.randn(2, 3, size, size, generator=generator),
        "semseg": torch.randint(0, 3, (2, size, size), generator=generator),
        "depth": torch.rand(2, 1, size, size, generator=generator) + 0.5,
    }


def test_aux_outputs_are_resized_and_weighted_into_their_task(tasks):
    model = TwoHeads()
    data = batch()
    outputs = model(data["image"])
    losses = task_losses(tasks, AdaptedOutputs(outputs), data, model.auxiliary_outputs)
    upsampled = nn.functional.interpolate(outputs["semseg@half"], size=(8, 8), mode="bilinear")
    expected = tasks["semseg"].loss(outputs["semseg"], data["semseg"]) + 0.5 * tasks["semseg"].loss(
        upsampled, data["semseg"]
    )
    assert losses["semseg"].item() == pytest.approx(expected.item())
    assert losses["depth"].item() == pytest.approx(
        tasks["depth"].loss(outputs["depth"], data["depth"]).item()
    )


def test_a_task_without_labels_gets_zero_loss_that_reaches_its_head(tasks):
    model = TwoHeads()
    data = batch()
    del data["depth"]
    losses = task_losses(tasks, AdaptedOutputs(model(data["image"])), data, model.auxiliary_outputs)
    assert losses["depth"].item() == 0.0
    losses["depth"].backward()
    assert model.depth.weight.grad is not None


def test_an_undeclared_or_missing_auxiliary_output_is_named(tasks):
    model = TwoHeads()
    data = batch()
    outputs = model(data["image"])
    with pytest.raises(
        ValueError, match=r"\['semseg@half'\] that its architecture does not declare"
    ):
        task_losses(tasks, AdaptedOutputs(outputs), data, ())
    del outputs["semseg@half"]
    with pytest.raises(ValueError, match="declares auxiliary output 'semseg@half'"):
        task_losses(tasks, AdaptedOutputs(outputs), data, model.auxiliary_outputs)


def test_a_supervision_mask_restricts_the_loss(tasks):
    model = TwoHeads().eval()
    data = batch()
    outputs = model(data["image"])
    mask = torch.zeros(2, 8, 8, dtype=torch.bool)
    mask[:, :4] = True
    losses = task_losses(tasks, AdaptedOutputs(outputs, {"depth": mask}), data)
    top = tasks["depth"].loss(outputs["depth"][..., :4, :], data["depth"][..., :4, :])
    assert losses["depth"].item() == pytest.approx(top.item())


def test_check_finite_names_the_bad_tasks():
    check_finite({"semseg": 1.0, "depth": 2.0}, 0)
    with pytest.raises(TrainingError, match=r"step 8 for task\(s\) depth=inf"):
        check_finite({"semseg": 1.0, "depth": float("inf")}, 7)


def parts_for(model, tasks, clip):
    config = TrainConfig(
        optimizer="sgd",
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        clip_grad_norm=clip,
    )
    balancer = create_balancer("equal", list(tasks.values()))
    optimizer = build_optimizer(
        config,
        [model.shared.weight, model.shared.bias],
        list(model.semseg.parameters()) + list(model.depth.parameters()),
    )
    return StepParts.on_cpu(
        model, tasks, balancer, optimizer, config, shared_parameters=list(model.shared.parameters())
    )


def test_train_step_is_plain_sgd_on_the_summed_loss(tasks):
    model = TwoHeads()
    reference = TwoHeads()
    reference.load_state_dict(model.state_dict())
    data = batch()
    result = train_step(parts_for(model, tasks, clip=None), data, 0)
    losses = task_losses(
        tasks, AdaptedOutputs(reference(data["image"])), data, reference.auxiliary_outputs
    )
    total = sum(losses.values())
    total.backward()
    assert result.total == pytest.approx(total.item())
    for (name, after), before in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert torch.allclose(after, before - 0.1 * before.grad, atol=1e-6), name


def test_clipping_bounds_the_update(tasks):
    model = TwoHeads()
    start = [p.detach().clone() for p in model.parameters()]
    train_step(parts_for(model, tasks, clip=1e-3), batch(), 0)
    step = torch.cat(
        [(p.detach() - s).flatten() for p, s in zip(model.parameters(), start, strict=True)]
    )
    assert step.norm().item() == pytest.approx(0.1 * 1e-3, rel=1e-3)


def test_a_nan_loss_raises_before_any_update(tasks):
    model = TwoHeads()
    with torch.no_grad():
        model.depth.bias.fill_(float("nan"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingError, match=r"task\(s\) depth=nan"):
        train_step(parts_for(model, tasks, clip=None), batch(), 0)
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0, equal_nan=True)


def test_evaluate_over_batches_equals_one_big_batch(tasks):
    model = TwoHeads()
    first, second = batch(), batch()
    second = {key: value.flip(0) for key, value in second.items()}
    second["image"] = second["image"] + 0.1
    split = evaluate(model, tasks, [first, second], torch.device("cpu")).metrics
    joined = {k: torch.cat([first[k], second[k]]) for k in first}
    whole = evaluate(model, tasks, [joined], torch.device("cpu")).metrics
    for name in tasks:
        assert split[name].compute() == pytest.approx(whole[name].compute())
