"""The plain-ViT pyramid: its levels are the chosen blocks' tokens (checked against timm's own
``forward_intermediates``), resampled as documented, and bad block choices or patch sizes fail
with the reason."""

import numpy as np
import pytest
import timm
import torch
from torch.nn import functional as F

from densetasks.errors import ConfigError
from densetasks.models import ViTPyramidEncoder, create_encoder
from densetasks.models.vit_pyramid import default_blocks

SMALL = {"depth": 4, "embed_dim": 32, "num_heads": 2}


def test_default_blocks_are_dpts_hooks():
    assert default_blocks(12) == [2, 5, 8, 11]  # ViT-B: blocks 3, 6, 9, 12 (DPT)
    assert default_blocks(24) == [5, 11, 17, 23]  # ViT-L: blocks 6, 12, 18, 24


def test_levels_are_the_blocks_tokens_with_the_class_token_resampled():
    torch.manual_seed(0)
    encoder = create_encoder("test_vit", out_indices=[0, 1, 3, -1]).eval()
    reference = timm.create_model("test_vit", dynamic_img_size=True, dynamic_img_pad=True).eval()
    reference.load_state_dict(encoder.model.state_dict(), strict=False)  # its head stays random
    image = torch.randn(2, 3, 96, 80)
    with torch.no_grad():
        levels = encoder(image)
        expected = reference.forward_intermediates(
            image, indices=[0, 1, 3, 5], return_prefix_tokens=True, intermediates_only=True
        )
    width = 64
    maps = []
    for (spatial, prefix), level in zip(expected, levels, strict=True):
        assert spatial.shape == (2, width, 6, 5) and prefix.shape == (2, 1, width)
        maps.append(torch.cat([spatial, prefix.reshape(2, width, 1, 1).expand(-1, -1, 6, 5)], 1))
        assert level.shape[1] == 2 * width  # patch tokens + the class token's readout
    torch.testing.assert_close(levels[0], maps[0].repeat_interleave(4, 2).repeat_interleave(4, 3))
    torch.testing.assert_close(levels[1], maps[1].repeat_interleave(2, 2).repeat_interleave(2, 3))
    torch.testing.assert_close(levels[2], maps[2])
    torch.testing.assert_close(levels[3], F.max_pool2d(maps[3], 2, 2, ceil_mode=True))


@pytest.mark.parametrize(
    "name, options",
    [("test_vit", {}), ("vit_medium_patch16_rope_reg1_gap_256", {**SMALL, "embed_dim": 32})],
)
def test_tokens_are_the_blocks_patch_tokens_unresampled(name, options):
    """``forward_tokens``: timm's ``forward_intermediates`` at the chosen blocks, without the
    prefix tokens, for a ``VisionTransformer`` (run block by block) and for EVA (run through
    timm), at a size that is not a multiple of the patch (padded)."""
    torch.manual_seed(0)
    encoder = create_encoder(name, **options).eval()
    reference = timm.create_model(name, dynamic_img_size=True, dynamic_img_pad=True, **options)
    reference.load_state_dict(encoder.model.state_dict(), strict=False)
    image = torch.randn(2, 3, 90, 70)
    with torch.no_grad():
        tokens = encoder.forward_tokens(image)
        expected = reference.eval().forward_intermediates(
            image, indices=encoder.blocks, intermediates_only=True
        )
    assert encoder.token_channels == (64 if name == "test_vit" else 32)
    assert len(tokens) == 4
    for ours, theirs in zip(tokens, expected, strict=True):
        assert ours.shape == (2, encoder.token_channels, 6, 5)
        torch.testing.assert_close(ours, theirs)


def test_an_encoder_without_tokens_says_so():
    encoder = create_encoder("tiny")
    assert encoder.token_channels is None
    with pytest.raises(ConfigError, match="TinyEncoder has no token grid .*InvPT"):
        encoder.forward_tokens(torch.randn(1, 3, 32, 32))


def test_a_vit_without_prefix_tokens_has_the_width_as_channels():
    encoder = create_encoder("test_vit", class_token=False, global_pool="avg")
    assert [spec.channels for spec in encoder.feature_info] == [64] * 4


@pytest.mark.parametrize(
    ("indices", "shown"),
    [
        ([1, 1, 2, 3], r"\[1, 1, 2, 3\]"),
        ([0, 1, 2], r"\[0, 1, 2\]"),
        ([0, 1, 2, 6], r"\[0, 1, 2, 6\]"),
    ],
)
def test_bad_block_choices_are_refused(indices, shown):
    expected = (
        rf"out_indices: encoder 'test_vit' needs 4 increasing block indices in 0\.\.5 .*got {shown}"
    )
    with pytest.raises(ConfigError, match=expected):
        create_encoder("test_vit", out_indices=indices)


def test_a_patch_size_that_is_not_a_power_of_two_is_refused():
    with pytest.raises(ConfigError, match=r"patch size 14×14 is not a square power of two"):
        create_encoder("vit_small_patch14_dinov2", **SMALL)


def test_a_level_pooled_from_the_patch_grid_cannot_start_a_stage():
    # Patch 8: stride 8 is the grid, 16 and 32 are pooled; a split after level 1 works.
    encoder = create_encoder("vit_small_patch8_224", **SMALL).eval()
    assert isinstance(encoder, ViTPyramidEncoder) and encoder.patch == 8
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        full = encoder(image)
        branch = encoder.forward_stages(encoder.forward_stages(image, 0, 2)[-1], 2, None)
        assert all(torch.equal(a, b) for a, b in zip(branch, full[2:], strict=True))
        with pytest.raises(
            ConfigError, match="stage 3 cannot start from level 2, which is max-pooled"
        ):
            encoder.forward_stages(full[2], 3, None)


def _big_vision_npz(network, path):
    """``network``'s weights in the layout of Google's original ViT ``.npz`` checkpoints (the
    inverse of what timm's ``load_pretrained`` reads)."""
    heads = network.blocks[0].attn.num_heads
    arrays = {
        "embedding/kernel": network.patch_embed.proj.weight.permute(2, 3, 1, 0),
        "embedding/bias": network.patch_embed.proj.bias,
        "cls": network.cls_token,
        "Transformer/posembed_input/pos_embedding": network.pos_embed,
        "Transformer/encoder_norm/scale": network.norm.weight,
        "Transformer/encoder_norm/bias": network.norm.bias,
    }
    for index, block in enumerate(network.blocks):
        prefix = f"Transformer/encoderblock_{index}/"
        attention = prefix + "MultiHeadDotProductAttention_1/"
        width = block.attn.qkv.weight.shape[1]
        for part, (weight, bias) in zip(
            ("query", "key", "value"),
            zip(block.attn.qkv.weight.chunk(3), block.attn.qkv.bias.chunk(3), strict=True),
            strict=True,
        ):
            arrays[f"{attention}{part}/kernel"] = weight.T.reshape(width, heads, -1)
            arrays[f"{attention}{part}/bias"] = bias.reshape(heads, -1)
        arrays[f"{attention}out/kernel"] = block.attn.proj.weight.reshape(width, heads, -1).permute(
            1, 2, 0
        )
        arrays[f"{attention}out/bias"] = block.attn.proj.bias
        for norm, name in ((block.norm1, "LayerNorm_0"), (block.norm2, "LayerNorm_2")):
            arrays[f"{prefix}{name}/scale"], arrays[f"{prefix}{name}/bias"] = norm.weight, norm.bias
        for index_fc, fc in enumerate((block.mlp.fc1, block.mlp.fc2)):
            arrays[f"{prefix}MlpBlock_3/Dense_{index_fc}/kernel"] = fc.weight.T
            arrays[f"{prefix}MlpBlock_3/Dense_{index_fc}/bias"] = fc.bias
    np.savez(path, **{key: value.detach().numpy() for key, value in arrays.items()})


def test_a_big_vision_npz_checkpoint_loads_through_timm(tmp_path):
    torch.manual_seed(6)
    network = timm.create_model("test_vit")
    _big_vision_npz(network, tmp_path / "vit.npz")
    encoder = create_encoder("test_vit", pretrained=tmp_path / "vit.npz")
    expected = network.state_dict()
    for key, value in encoder.model.state_dict().items():
        assert torch.equal(value, expected[key]), key
