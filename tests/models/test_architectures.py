import inspect

import pytest
import torch

from densetasks.errors import ConfigError
from densetasks.models import ARCHITECTURES, create_model

TASK_SUBSETS = [{"semseg": 5}, {"semseg": 5, "depth": 1, "normals": 3}]
# (encoder, bottleneck, head): every head and bottleneck on the tiny encoder with every
# architecture and task subset; the default ASPP + DeepLab head on real timm encoders (a
# ResNet and a MobileNetV3) once each, with all three tasks, to keep the suite fast.
TINY_COMPONENTS = [
    ("tiny", "aspp", "deeplab"),
    ("tiny", "aspp", "multiscale"),
    ("tiny", "none", "multiscale"),
]
WITH_HEADS = [
    name
    for name in ARCHITECTURES.names()
    if "bottleneck" in inspect.signature(ARCHITECTURES.get(name)).parameters
]
"""Architectures built from a bottleneck and heads; the palette-conditioned ones have their
own every-parameter-gets-a-gradient test (tests/models/test_composite_tasking.py)."""
CASES = [
    (architecture, tasks, components)
    for architecture in WITH_HEADS
    for tasks in TASK_SUBSETS
    for components in TINY_COMPONENTS
    if not (architecture == "single_task" and len(tasks) > 1)
] + [
    ("hard_sharing", TASK_SUBSETS[1], (encoder, "aspp", "deeplab"))
    for encoder in ("resnet18", "mobilenetv3_small_100")
]


def _case_id(case):
    architecture, tasks, (encoder, bottleneck, head) = case
    return f"{architecture}-{'+'.join(tasks)}-{encoder}-{bottleneck}-{head}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_forward_backward_every_parameter_gets_a_gradient(case):
    architecture, tasks, (encoder, bottleneck, head) = case
    torch.manual_seed(0)
    model = create_model(
        architecture, tasks, encoder=encoder, bottleneck=bottleneck, head=head, output_stride=16
    )
    outputs = model(torch.randn(2, 3, 64, 64))
    assert set(outputs) == set(tasks)
    for task, channels in tasks.items():
        assert outputs[task].shape == (2, channels, 64, 64)
        assert torch.isfinite(outputs[task]).all()
    sum(output.square().mean() for output in outputs.values()).backward()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_parameter_groups_partition_the_model():
    model = create_model("hard_sharing", TASK_SUBSETS[1], encoder="tiny")
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    encoder, shared, decoder = (
        ids(model.encoder_parameters()),
        ids(model.shared_parameters()),
        ids(model.decoder_parameters()),
    )
    assert encoder == ids(model.encoder.parameters())
    assert shared == encoder | ids(model.bottleneck.parameters())
    assert encoder.isdisjoint(decoder)
    assert encoder | decoder == ids(model.parameters())
    assert ids(model.heads.parameters()) == decoder - shared


def test_a_task_loss_reaches_the_shared_parts_and_only_its_own_head():
    torch.manual_seed(0)
    model = create_model("hard_sharing", {"semseg": 5, "depth": 1}, encoder="tiny")
    model(torch.randn(2, 3, 32, 32))["depth"].mean().backward()
    assert all(p.grad is not None for p in model.shared_parameters())
    assert all(p.grad is not None for p in model.heads["depth"].parameters())
    assert all(p.grad is None for p in model.heads["semseg"].parameters())


def test_output_stride_8_builds_the_kendall2018_network():
    model = create_model("hard_sharing", {"semseg": 5}, encoder="tiny", output_stride=8)
    assert model.encoder.feature_info[-1].stride == 8
    assert model.bottleneck.rates == (12, 24, 36)
    assert model.bottleneck.feature_info[-1].channels == 1280


def test_options_reach_the_bottleneck_and_every_head():
    model = create_model(
        "hard_sharing",
        {"semseg": 5, "depth": 1},
        encoder="tiny",
        bottleneck_options={"project": True},
        head_options={"kernel_size": 1},
    )
    assert model.bottleneck.feature_info[-1].channels == 256
    assert all(head.hidden[0].kernel_size == (1, 1) for head in model.heads.values())


def test_channels_last_model_gives_the_same_outputs():
    torch.manual_seed(0)
    model = create_model("hard_sharing", TASK_SUBSETS[1], encoder="tiny", head="multiscale").eval()
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = model(image)
        model = model.to(memory_format=torch.channels_last)
        got = model(image.to(memory_format=torch.channels_last))
    for task in expected:
        torch.testing.assert_close(got[task], expected[task], rtol=1e-4, atol=1e-5)


def test_single_task_with_two_tasks_raises_naming_them():
    with pytest.raises(ConfigError, match=r"exactly one task, got \['depth', 'semseg'\]"):
        create_model("single_task", {"semseg": 5, "depth": 1}, encoder="tiny")


@pytest.mark.parametrize(
    ("tasks", "message"), [({}, "at least one task"), ({"semseg": 0}, "must be positive")]
)
def test_bad_task_channels_raise(tasks, message):
    with pytest.raises(ConfigError, match=message):
        create_model("hard_sharing", tasks, encoder="tiny")


def test_unknown_names_and_options_raise_config_error():
    with pytest.raises(
        ConfigError, match="unknown architecture 'no_such_net'; known: .*hard_sharing"
    ):
        create_model("no_such_net", {"semseg": 5})
    with pytest.raises(ConfigError, match="unknown head 'fpn'"):
        create_model("hard_sharing", {"semseg": 5}, encoder="tiny", head="fpn")
    with pytest.raises(ConfigError, match=r"\['dropout'\]; it takes: encoder"):
        create_model("hard_sharing", {"semseg": 5}, encoder="tiny", dropout=0.1)
