"""Every timm family as an encoder: features NCHW as ``feature_info`` says at any input size,
stages that split anywhere, output strides, options, weights files, the hub, layers for
learning-rate decay, activation checkpointing and bf16 autocast."""

import math
import re

import pytest
import timm
import torch
from huggingface_hub.constants import HF_HUB_CACHE
from safetensors.torch import save_file

from densetasks.errors import ConfigError
from densetasks.models import TimmEncoder, ViTPyramidEncoder, create_encoder
from densetasks.models.timm_network import timm_keys

from .families import FAMILIES

FEATURE_CASES = [
    (name, stride) for name, family in FAMILIES.items() for stride in family.output_strides
]
STAGE_CASES = [case for case in FEATURE_CASES if FAMILIES[case[0]].stages]


pytestmark = pytest.mark.usefixtures("one_thread")


def build(name: str, output_stride: int = 32, **extra):
    family = FAMILIES[name]
    return create_encoder(family.encoder, output_stride=output_stride, **family.options, **extra)


@pytest.mark.parametrize(("name", "output_stride"), FEATURE_CASES)
def test_feature_info_matches_nchw_outputs_at_any_size(name, output_stride):
    torch.manual_seed(0)
    encoder = build(name, output_stride).eval()
    assert encoder.feature_info[0].stride > 1  # never the input image
    assert encoder.feature_info[-1].stride == output_stride
    with torch.no_grad():
        square = encoder(torch.randn(1, 3, 64, 64))
        odd = encoder(torch.randn(1, 3, 100, 130))
    multiple = encoder.input_multiple
    for feature, other, spec in zip(square, odd, encoder.feature_info, strict=True):
        assert feature.shape == (1, spec.channels, 64 // spec.stride, 64 // spec.stride)
        assert other.shape[:2] == (1, spec.channels)
        for size, full in zip(other.shape[-2:], (100, 130), strict=True):
            padded = math.ceil(full / multiple) * multiple  # what the network saw
            assert full // spec.stride <= size <= math.ceil(padded / spec.stride), (size, spec)


def _assert_equal_lists(got, expected):
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("name", "output_stride"), STAGE_CASES)
def test_stages_split_anywhere_give_the_full_forward(name, output_stride):
    torch.manual_seed(1)
    encoder = build(name, output_stride).eval()
    image = torch.randn(1, 3, 100, 130)
    with torch.no_grad():
        full = encoder(image)
        for split in range(1, len(encoder.feature_info)):
            shared = encoder.forward_stages(image, 0, split)
            before = shared[-1].clone()
            branch = encoder.forward_stages(shared[-1], split, None)
            assert torch.equal(shared[-1], before)  # no stage writes into its input
            _assert_equal_lists(shared + branch, full)
        _assert_equal_lists(encoder.forward_stages(full[0], 1, 2), full[1:2])


@pytest.mark.parametrize("name", [name for name, family in FAMILIES.items() if not family.stages])
def test_a_family_without_stages_runs_whole_and_names_why_it_cannot_split(name):
    encoder = build(name).eval()
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        _assert_equal_lists(encoder.forward_stages(image, 0, None), encoder(image))
    why = "HRNet fuses parallel branches" if name == "hrnet" else "inside forward_intermediates"
    with pytest.raises(ConfigError, match=rf"cannot run stages 0\.\.1 on their own: .*{why}"):
        encoder.forward_stages(image, 0, 2)


def test_hierarchical_and_plain_families_get_their_encoder_class():
    assert isinstance(build("convnext"), TimmEncoder)
    assert isinstance(build("vit"), ViTPyramidEncoder)
    assert isinstance(build("eva"), ViTPyramidEncoder)


@pytest.mark.parametrize(
    ("name", "strides", "within"),
    [("swin", "4, 8, 16, 32", "[0, 1, 2]"), ("hrnet", "2, 4, 8, 16, 32", "[0, 1, 2, 3]")],
)
def test_an_output_stride_a_family_cannot_dilate_to_names_its_strides(name, strides, within):
    expected = (
        rf"model.output_stride: .*cannot dilate to output stride 16; its features have strides "
        rf"{strides}; use output stride 32, or stop at stride 16 with "
        rf"model.encoder_options.out_indices: {re.escape(within)}"
    )
    with pytest.raises(ConfigError, match=expected):
        build(name, 16)


@pytest.mark.parametrize(
    ("name", "indices", "strides"),
    [("swin", [0, 1, 2], [4, 8, 16]), ("hrnet", [0, 1, 2, 3], [2, 4, 8, 16])],
)
def test_out_indices_stop_a_family_at_output_stride_16(name, indices, strides):
    encoder = build(name, 16, out_indices=indices).eval()
    assert [spec.stride for spec in encoder.feature_info] == strides
    with torch.no_grad():
        features = encoder(torch.randn(1, 3, 64, 64))
    assert features[-1].shape[-1] == 64 // 16


def test_an_unknown_name_lists_timms_close_matches():
    with pytest.raises(
        ConfigError, match="unknown encoder 'convnext_tny'; .*close matches: convnext_tiny"
    ):
        create_encoder("convnext_tny")


def test_an_unknown_option_names_the_options_the_network_takes():
    expected = (
        r"model.encoder_options: encoder 'test_convnext' \(timm ConvNeXt\) does not take "
        r"option\(s\) \['drop_path'\]; it takes: .*drop_path_rate"
    )
    with pytest.raises(ConfigError, match=expected):
        create_encoder("test_convnext", drop_path=0.1)
    with pytest.raises(
        ConfigError, match=r"encoder 'tiny' does not take option\(s\) \['drop_path_rate'\]"
    ):
        create_encoder("tiny", drop_path_rate=0.1)


def test_options_reach_the_timm_network():
    encoder = create_encoder("test_convnext", drop_path_rate=0.3)
    rates = [
        module.drop_prob for module in encoder.modules() if type(module).__name__ == "DropPath"
    ]
    assert rates and max(rates) == pytest.approx(0.3)  # timm's linear rule, deepest block
    vit = create_encoder("test_vit", img_size=64)
    assert vit.model.pos_embed.shape[1] == 1 + (64 // 16) ** 2
    assert vit.rebuild().model.pos_embed.shape == vit.model.pos_embed.shape


# ---------------------------------------------------------------- weights files and the hub


def _checkpoint(tmp_path, name, suffix, **options):
    """The full timm network's state dict (classifier included), as timm distributes it."""
    family = FAMILIES[name]
    torch.manual_seed(7)
    network = timm.create_model(family.encoder, **{**family.options, **options})
    state_dict = {key: value.contiguous() for key, value in network.state_dict().items()}
    path = tmp_path / f"{name}{suffix}"
    if suffix == ".safetensors":
        save_file(state_dict, str(path))
    else:
        torch.save({"state_dict": state_dict}, path)
    return path, network


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
@pytest.mark.parametrize("name", list(FAMILIES))
def test_a_timm_checkpoint_of_every_family_loads_into_its_encoder(tmp_path, name, suffix):
    path, network = _checkpoint(tmp_path, name, suffix)
    encoder = build(name, pretrained=path)
    saved = network.state_dict()
    names = timm_keys(encoder.model, network)
    own = encoder.model.state_dict()
    for key, value in own.items():
        assert torch.equal(value, saved[names[key]]), key
    weight = next(key for key, value in own.items() if value.dim() > 1)
    assert not torch.equal(build(name).model.state_dict()[weight], own[weight])  # not random


def test_a_vit_checkpoint_at_another_size_is_resampled_by_timms_filter(tmp_path):
    path, network = _checkpoint(tmp_path, "vit", ".safetensors")  # img_size 160: 10 × 10 grid
    encoder = create_encoder("test_vit", pretrained=path, img_size=64)
    expected = timm.layers.resample_abs_pos_embed(
        network.pos_embed.detach(), (4, 4), num_prefix_tokens=1
    )
    torch.testing.assert_close(encoder.model.pos_embed, expected)


def test_weights_of_another_family_raise_naming_the_file_and_timms_keys(tmp_path):
    path, _ = _checkpoint(tmp_path, "convnext", ".safetensors")
    expected = (
        r"convnext\.safetensors.*does not fit encoder 'swin_tiny_patch4_window7_224': "
        r"missing keys \[layers\.0\.blocks"
    )
    with pytest.raises(ConfigError, match=expected):
        build("swin", pretrained=path)


def test_npz_is_refused_where_timm_cannot_read_it(tmp_path):
    path = tmp_path / "convnext.npz"
    path.write_bytes(b"")
    with pytest.raises(
        ConfigError,
        match=r"\.npz checkpoints only into networks with load_pretrained .*not ConvNeXt",
    ):
        build("convnext", pretrained=path)


@pytest.mark.parametrize("name", ["convnext", "vit"])
def test_offline_hub_weights_say_what_to_download_and_where(monkeypatch, name):
    real = timm.create_model

    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("Name or service not known")
        return real(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    hub_id = f"timm/{FAMILIES[name].encoder}.r160_in1k"
    expected = (
        rf"cannot download timm's pretrained weights .*Name or service not known.*"
        rf"https://huggingface.co/{hub_id} .*`hf download {hub_id}`.*"
        rf"{re.escape(HF_HUB_CACHE)}.*HF_HOME"
        ".*local weights file"
    )
    with pytest.raises(ConfigError, match=expected):
        build(name, pretrained=True)


# ------------------------------------------------ layers, decay exemptions, checkpointing, bf16


def test_vit_layers_are_numbered_as_beit_numbers_them():
    encoder = build("vit")
    layers, top = encoder.parameter_layers()
    assert top == len(timm.create_model("test_vit").blocks) + 1  # stem 0, blocks 1..6, norm 7
    assert {
        layers[name]
        for name in ("model.cls_token", "model.pos_embed", "model.patch_embed.proj.weight")
    } == {0}
    for index in range(6):
        assert layers[f"model.blocks.{index}.attn.qkv.weight"] == index + 1
    assert encoder.no_weight_decay() == {"model.cls_token", "model.pos_embed"}


def test_swin_layers_count_blocks_across_stages_and_exempt_position_tables():
    encoder = build("swin")
    layers, top = encoder.parameter_layers()
    blocks = [layers[f"model.layers_{stage}.blocks.0.mlp.fc1.weight"] for stage in range(4)]
    assert layers["model.patch_embed.proj.weight"] == 0
    assert blocks == sorted(blocks) and len(set(blocks)) == 4 and blocks[-1] < top
    assert encoder.no_weight_decay() == {
        f"model.layers_{stage}.blocks.0.attn.relative_position_bias_table" for stage in range(4)
    }


def _gradients(encoder, image):
    torch.manual_seed(4)  # the same drop-path draws (Swin's default rate is 0.1)
    encoder.zero_grad()
    sum(feature.square().mean() for feature in encoder(image)).backward()
    return {name: p.grad.clone() for name, p in encoder.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["vit", "swin", "convnext", "efficientnet", "eva"])
def test_grad_checkpointing_recomputes_and_gives_the_same_gradients(name):
    torch.manual_seed(2)
    encoder = build(name).train()
    image = torch.randn(2, 3, 64, 64)
    calls = []
    handles = [
        m.register_forward_hook(lambda *_: calls.append(1))
        for m in encoder.modules()
        if not list(m.children())
    ]
    expected = _gradients(encoder, image)
    plain_calls, calls[:] = len(calls), []
    encoder.set_grad_checkpointing(True)
    got = _gradients(encoder, image)
    for handle in handles:
        handle.remove()
    assert len(calls) > plain_calls  # activations were recomputed in the backward pass
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value, rtol=1e-5, atol=1e-6, msg=key)


def test_grad_checkpointing_where_timm_has_none_is_refused():
    with pytest.raises(ConfigError, match="HighResolutionNetFeatures has no gradient checkpoint"):
        build("hrnet").set_grad_checkpointing(True)


@pytest.mark.parametrize("name", ["vit", "swin", "convnext"])
def test_bf16_autocast_trains(name):
    torch.manual_seed(3)
    encoder = build(name).train()
    dtypes = set()
    handles = [
        module.register_forward_hook(lambda _m, _i, output: dtypes.add(output.dtype))
        for module in encoder.modules()
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d)
    ]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = encoder(torch.randn(2, 3, 64, 64))
        loss = sum(feature.float().square().mean() for feature in features)
    for handle in handles:
        handle.remove()
    assert dtypes == {torch.bfloat16}  # every matrix product ran in bf16
    loss.backward()
    grads = [p.grad for p in encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(grad).all() for grad in grads)
