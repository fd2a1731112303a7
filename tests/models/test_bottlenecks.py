import pytest
import torch

from densetasks.errors import ConfigError
from densetasks.models import ASPP, BOTTLENECKS, EASPP, FeatureSpec, create_bottleneck, create_model
from densetasks.models.bottlenecks import ASPP_DROPOUT_LOPES2023_CODE

SPECS_AT = {
    8: [FeatureSpec(4, 4), FeatureSpec(16, 8)],
    16: [FeatureSpec(4, 4), FeatureSpec(16, 16)],
}


def _atrous_dilations(aspp: ASPP) -> list[int]:
    return [branch[0].dilation[0] for branch in aspp.branches[1:4]]


@pytest.mark.parametrize(
    ("output_stride", "rates"), [(8, (12, 24, 36)), (16, (6, 12, 18)), (32, (3, 6, 9))]
)
def test_aspp_rates_follow_the_paper_at_each_output_stride(output_stride, rates):
    aspp = ASPP([FeatureSpec(16, output_stride)])
    assert aspp.rates == rates
    assert _atrous_dilations(aspp) == list(rates)
    assert [branch[0].padding[0] for branch in aspp.branches[1:4]] == list(rates)
    assert aspp.branches[0][0].kernel_size == (1, 1)
    assert all(branch[0].kernel_size == (3, 3) for branch in aspp.branches[1:4])


@pytest.mark.parametrize("output_stride", [8, 16])
def test_aspp_concatenates_five_256_channel_branches(output_stride):
    torch.manual_seed(0)
    specs = SPECS_AT[output_stride]
    aspp = ASPP(specs)
    skip, deepest = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 5, 6)
    out_skip, out = aspp([skip, deepest])
    assert out.shape == (2, 1280, 5, 6)
    assert out_skip is skip  # shallower features pass through as skips
    assert aspp.feature_info == [FeatureSpec(4, 4), FeatureSpec(1280, output_stride)]
    assert (out >= 0).all()  # every branch ends in ReLU
    pooled = out[:, 1024:]  # the image-pooling branch is constant over space
    torch.testing.assert_close(pooled, pooled[:, :, :1, :1].expand_as(pooled))


def test_aspp_projection_is_optional_and_off_by_default():
    specs = SPECS_AT[16]
    assert isinstance(ASPP(specs).project, torch.nn.Identity)
    projected = ASPP(specs, project=True)
    assert projected.feature_info[-1] == FeatureSpec(256, 16)
    features = [torch.randn(2, 4, 8, 8), torch.randn(2, 16, 4, 4)]
    assert projected(features)[-1].shape == (2, 256, 4, 4)


def test_aspp_dropout_is_off_by_default_and_the_authors_half_is_an_option():
    specs = SPECS_AT[16]
    assert ASPP_DROPOUT_LOPES2023_CODE == 0.5
    features = [torch.randn(4, 4, 8, 8), torch.randn(4, 16, 6, 6)]
    torch.manual_seed(0)
    plain = ASPP(specs, project=True).train()
    torch.manual_seed(0)
    dropped = ASPP(specs, project=True, dropout=ASPP_DROPOUT_LOPES2023_CODE).train()
    assert isinstance(plain.dropout, torch.nn.Identity)
    assert dropped.dropout.p == 0.5
    reference = plain(features)[-1]
    torch.manual_seed(1)
    out = dropped(features)[-1]
    # the same weights and batch statistics: each element is dropped or scaled by 1 / (1 - p)
    kept = out != 0
    torch.testing.assert_close(out[kept], 2 * reference[kept])
    assert 0.4 < 1 - kept[reference > 0].float().mean() < 0.6
    plain.eval(), dropped.eval()
    torch.testing.assert_close(dropped(features)[-1], plain(features)[-1])  # off in evaluation


def test_aspp_dropout_reaches_three_ways_and_bad_values_name_the_key():
    options = {"decoder_widths": (16, 16, 8, 8, 8), "aspp_options": {"channels": 16}}
    model = create_model("three_ways", {"semseg": 3}, encoder="tiny", **options)
    assert isinstance(model.bottleneck.dropout, torch.nn.Identity)
    options["aspp_options"]["dropout"] = 0.5
    model = create_model("three_ways_mteb", {"semseg": 3, "depth": 1}, encoder="tiny", **options)
    assert model.bottleneck.dropout.p == 0.5
    with pytest.raises(ConfigError, match=r"model.options.aspp_options.dropout\) must be in"):
        create_bottleneck("aspp", SPECS_AT[16], dropout=1.0)


def test_none_bottleneck_passes_features_through():
    specs = SPECS_AT[8]
    bottleneck = create_bottleneck("none", specs)
    features = [torch.randn(1, 4, 8, 8), torch.randn(1, 16, 4, 4)]
    assert all(a is b for a, b in zip(bottleneck(features), features, strict=True))
    assert bottleneck.feature_info == specs
    assert list(bottleneck.parameters()) == []


@pytest.mark.parametrize("name", BOTTLENECKS.names())
def test_every_bottleneck_keeps_spatial_size_and_passes_gradients(name):
    torch.manual_seed(0)
    bottleneck = create_bottleneck(name, SPECS_AT[16])
    deepest = torch.randn(2, 16, 4, 4, requires_grad=True)
    out = bottleneck([torch.randn(2, 4, 8, 8), deepest])[-1]
    assert out.shape == (2, bottleneck.feature_info[-1].channels, 4, 4)
    out.square().mean().backward()
    assert deepest.grad is not None and deepest.grad.abs().sum() > 0
    assert all(p.grad is not None for p in bottleneck.parameters())


def test_unknown_bottleneck_or_option_raises_config_error():
    with pytest.raises(ConfigError, match="unknown bottleneck 'psp'; known: aspp, easpp, none"):
        create_bottleneck("psp", SPECS_AT[8])
    expected = r"does not take option\(s\) \['rate'\]; it takes: channels, project, dropout"
    with pytest.raises(ConfigError, match=expected):
        create_bottleneck("aspp", SPECS_AT[8], rate=3)


@pytest.mark.parametrize(("output_stride", "rates"), [(8, (6, 12, 24)), (16, (3, 6, 12))])
def test_easpp_has_the_adapnet_branches_with_rates_3_6_12_at_stride_16(output_stride, rates):
    easpp = create_bottleneck("easpp", [FeatureSpec(16, output_stride)])
    assert isinstance(easpp, EASPP) and easpp.rates == rates
    direct, *cascades, pooling = easpp.branches
    assert len(cascades) == 3
    assert (direct[0].in_channels, direct[0].out_channels, direct[0].kernel_size) == (
        16,
        256,
        (1, 1),
    )
    for cascade, rate in zip(cascades, rates, strict=True):
        convolutions = [unit[0] for unit in cascade]
        assert [(c.out_channels, c.kernel_size[0]) for c in convolutions] == [
            (64, 1),
            (64, 3),
            (64, 3),
            (256, 1),
        ]
        assert [c.dilation[0] for c in convolutions[1:3]] == [rate, rate]
        assert [c.padding[0] for c in convolutions[1:3]] == [rate, rate]
    assert pooling.project[0].out_channels == 256
    project = easpp.project
    assert (project[0].in_channels, project[0].out_channels) == (1280, 256)
    assert len(project) == 2  # conv + BN, no ReLU (the authors' code)


def test_easpp_returns_256_channels_not_rectified():
    torch.manual_seed(0)
    easpp = EASPP(SPECS_AT[16])
    skip, deepest = torch.randn(2, 4, 8, 8), torch.randn(2, 16, 5, 6)
    out_skip, out = easpp([skip, deepest])
    assert out_skip is skip
    assert out.shape == (2, 256, 5, 6)
    assert easpp.feature_info == [FeatureSpec(4, 4), FeatureSpec(256, 16)]
    assert (out < 0).any()  # no ReLU after the projection
