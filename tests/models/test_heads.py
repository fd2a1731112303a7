import pytest
import torch

from densetasks.errors import ConfigError
from densetasks.models import HEADS, DeepLabHead, FeatureSpec, MultiScaleHead, create_head

SPECS = [FeatureSpec(4, 2), FeatureSpec(6, 4), FeatureSpec(8, 8), FeatureSpec(12, 16)]


def _features(batch: int = 2, size: int = 32) -> list[torch.Tensor]:
    shapes = [(batch, spec.channels, size // spec.stride, size // spec.stride) for spec in SPECS]
    return [torch.randn(shape, requires_grad=True) for shape in shapes]


@pytest.mark.parametrize("name", HEADS.names())
def test_every_head_outputs_task_channels_at_input_size(name):
    torch.manual_seed(0)
    head = create_head(name, SPECS, out_channels=5)
    output = head(_features(), (32, 30))
    assert output.shape == (2, 5, 32, 30)
    output.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())


@pytest.mark.parametrize(("kernel_size", "padding"), [(3, 1), (1, 0)])
def test_deeplab_head_is_conv_bn_relu_then_1x1(kernel_size, padding):
    head = DeepLabHead(SPECS, out_channels=3, kernel_size=kernel_size)
    conv = head.hidden[0]
    assert conv.weight.shape == (256, 12, kernel_size, kernel_size)
    assert conv.padding == (padding, padding)
    assert head.classifier.weight.shape == (3, 256, 1, 1)


def test_deeplab_head_reads_only_the_deepest_feature():
    features = _features()
    DeepLabHead(SPECS, out_channels=2)(features, (32, 32)).sum().backward()
    assert [f.grad is not None for f in features] == [False, False, False, True]


@pytest.mark.parametrize(
    ("finest_stride", "used"), [(4, [False, True, True, True]), (2, [True] * 4)]
)
def test_multiscale_head_uses_skips_down_to_the_finest_stride(finest_stride, used):
    torch.manual_seed(0)
    head = MultiScaleHead(SPECS, out_channels=2, channels=8, finest_stride=finest_stride)
    features = _features()
    head(features, (32, 32)).sum().backward()
    assert [f.grad is not None for f in features] == used
    assert [lateral.in_channels for lateral in head.laterals] == [
        spec.channels for spec, use in zip(SPECS[:-1], used[:-1], strict=True) if use
    ][::-1]


def test_unknown_head_raises_config_error():
    with pytest.raises(ConfigError, match="unknown head 'fpn'; known: deeplab, multiscale"):
        create_head("fpn", SPECS, 2)
