import pytest
import timm
import torch
from safetensors.torch import save_file

from densetasks.errors import ConfigError
from densetasks.models import ENCODERS, TimmEncoder, TinyEncoder, create_encoder
from densetasks.models import encoders as encoders_module

FAST_ENCODERS = ["tiny", "test_resnet", "resnet18", "mobilenetv3_small_100"]
FEATURE_INFO_CASES = [(name, 8) for name in ENCODERS.names()] + [
    (name, output_stride) for name in FAST_ENCODERS for output_stride in (16, 32)
]
SMALL_ENCODERS = ["tiny", "test_resnet", "resnet18", "resnet34"]
BIG_ENCODERS = {  # one output stride each keeps the file fast (small ones test all three)
    "resnet50": 16,
    "resnet101": 32,
    "mobilenetv3_large_100": 16,
    "mobilenetv3_small_100": 8,
}
STAGE_CASES = [
    (name, output_stride) for name in SMALL_ENCODERS for output_stride in (8, 16, 32)
] + list(BIG_ENCODERS.items())
TIMM_NAMES = [name for name in ENCODERS.names() if name != "tiny"]


def test_stage_cases_cover_every_registered_encoder():
    assert {name for name, _ in STAGE_CASES} == set(ENCODERS.names())


@pytest.mark.parametrize(("name", "output_stride"), FEATURE_INFO_CASES)
def test_feature_info_matches_real_outputs(name, output_stride):
    # On the meta device the forward propagates shapes only: big ResNets cost no compute.
    with torch.device("meta"):
        encoder = create_encoder(name, output_stride=output_stride)
        features = encoder(torch.empty(1, 3, 64, 64))
    assert len(features) == len(encoder.feature_info)
    for feature, spec in zip(features, encoder.feature_info, strict=True):
        assert feature.shape[1] == spec.channels
        assert feature.shape[-2:] == (64 // spec.stride, 64 // spec.stride)
    assert encoder.feature_info[0].stride > 1  # never the input image as feature 0
    assert encoder.feature_info[-1].stride == output_stride


def test_tiny_encoder_dilates_instead_of_striding_below_output_stride():
    encoder = TinyEncoder(output_stride=8)
    convs = [stage[0] for stage in encoder.stages]
    assert [conv.stride[0] for conv in convs] == [2, 2, 2, 1, 1]
    assert [conv.dilation[0] for conv in convs] == [1, 1, 1, 2, 4]
    assert [spec.stride for spec in encoder.feature_info] == [2, 4, 8, 8, 8]


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
def test_unsupported_output_stride_raises(name):
    with pytest.raises(ConfigError, match="output_stride"):
        create_encoder(name, output_stride=4)


def test_channels_last_gives_the_same_features():
    torch.manual_seed(0)
    encoder = create_encoder("test_resnet", output_stride=16).eval()
    image = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = encoder(image)
        encoder = encoder.to(memory_format=torch.channels_last)
        got = encoder(image.to(memory_format=torch.channels_last))
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _assert_same_weights(module, state_dict):
    own = module.state_dict()
    for key, value in own.items():
        torch.testing.assert_close(value, state_dict[key], rtol=0, atol=0)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_encoder_loads_a_timm_checkpoint_with_its_classifier(tmp_path, suffix):
    torch.manual_seed(1)
    classifier_net = timm.create_model("test_resnet", pretrained=False)  # has the fc head
    state_dict = classifier_net.state_dict()
    assert any(key.startswith("fc.") for key in state_dict)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(state_dict, str(path))
    else:
        torch.save(state_dict, path)
    encoder = TimmEncoder("test_resnet", pretrained=path, output_stride=16)
    _assert_same_weights(encoder.model, state_dict)
    first_weight = next(iter(state_dict))
    fresh = TimmEncoder("test_resnet", output_stride=16)
    assert not torch.equal(fresh.model.state_dict()[first_weight], state_dict[first_weight])


def test_tiny_encoder_loads_its_own_state_dict(tmp_path):
    torch.manual_seed(2)
    source = TinyEncoder()
    path = tmp_path / "tiny.pt"
    torch.save(source.state_dict(), path)
    _assert_same_weights(TinyEncoder(pretrained=str(path)), source.state_dict())


def test_weights_of_another_network_raise_naming_the_file_and_keys(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    expected = r"resnet18\.pth.*does not fit encoder 'test_resnet': missing keys \[conv1\.0\.w"
    with pytest.raises(ConfigError, match=expected):
        TimmEncoder("test_resnet", pretrained=path)


def test_missing_keys_are_reported(tmp_path):
    state_dict = TinyEncoder().state_dict()
    del state_dict["stages.4.0.weight"]
    path = tmp_path / "partial.pt"
    torch.save(state_dict, path)
    with pytest.raises(ConfigError, match=r"missing keys \[stages\.4\.0\.weight\]"):
        TinyEncoder(pretrained=path)


def test_unreadable_and_absent_files_raise(tmp_path):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="cannot read pretrained weights file .*garbage.pth"):
        TinyEncoder(pretrained=garbage)
    with pytest.raises(ConfigError, match="absent.pth.*does not exist"):
        TimmEncoder("test_resnet", pretrained=tmp_path / "absent.pth")


def test_hub_weights_that_cannot_be_downloaded_raise_config_error(monkeypatch):
    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("Name or service not known")
        return timm.create_model(*args, pretrained=pretrained, **kwargs)

    monkeypatch.setattr(encoders_module.timm, "create_model", offline)
    with pytest.raises(ConfigError, match="cannot download.*local weights file"):
        create_encoder("resnet18", pretrained=True)
    with pytest.raises(ConfigError, match="no hub weights"):
        create_encoder("tiny", pretrained=True)


def test_unknown_encoder_lists_known_ones():
    with pytest.raises(ConfigError, match="unknown encoder 'resnet7'; known: .*resnet18"):
        create_encoder("resnet7")


def _assert_equal_lists(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("name", "output_stride"), STAGE_CASES)
def test_forward_stages_split_anywhere_gives_the_full_forward(name, output_stride):
    torch.manual_seed(3)
    encoder = create_encoder(name, output_stride=output_stride).eval()
    image = torch.randn(1, 3, 32, 32)
    stages = len(encoder.feature_info)
    with torch.no_grad():
        full = encoder(image)
        if isinstance(encoder, TimmEncoder):  # the timm network's own forward, unchanged
            _assert_equal_lists(full, list(encoder.model(image)))
        for feature, spec in zip(full, encoder.feature_info, strict=True):
            assert feature.shape == (1, spec.channels, 32 // spec.stride, 32 // spec.stride)
        for split in range(1, stages):
            shared = encoder.forward_stages(image, 0, split)
            branch_input = shared[-1].clone()
            branch = encoder.forward_stages(shared[-1], split, None)
            assert torch.equal(shared[-1], branch_input)  # no stage writes into its input
            _assert_equal_lists(shared + branch, full)
        _assert_equal_lists(encoder.forward_stages(full[1], 2, 3), full[2:3])


@pytest.mark.parametrize("name", ["tiny", "test_resnet"])
@pytest.mark.parametrize(("start", "end"), [(-1, None), (0, 0), (3, 2), (0, 6), (5, None)])
def test_invalid_stage_range_raises_naming_it(name, start, end):
    encoder = create_encoder(name)
    expected = rf"start={start}, end={end}: need 0 <= start < end <= 5 \(the encoder has 5"
    with pytest.raises(ValueError, match=expected):
        encoder.forward_stages(torch.zeros(1, 3, 32, 32), start, end)


@pytest.mark.parametrize("name", TIMM_NAMES)
def test_timm_encoder_state_dict_keys_are_the_timm_networks(name):
    # Checkpoints and local weights files are keyed like the timm network: stages add no keys.
    with torch.device("meta"):
        expected = list(timm.create_model(name, features_only=True).state_dict())
        encoder = TimmEncoder(name)
    assert list(encoder.model.state_dict()) == expected
    assert list(encoder.state_dict()) == [f"model.{key}" for key in expected]


def test_timm_stages_run_a_module_replaced_after_construction():
    # Stages are module names resolved at call time, so a conversion that swaps modules
    # (SyncBatchNorm, quantisation) is what forward runs.
    encoder = create_encoder("test_resnet").eval()
    encoder.model.layer4 = torch.nn.Identity()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = encoder(image)
    assert torch.equal(features[-1], features[-2])
