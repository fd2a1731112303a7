"""xTAM, mTEB and the 3-ways architectures of Lopes et al., WACV 2023: the exchange leaves
the features alone at init, attention rows are distributions, every parameter learns, every
option builds, bad options are named, and a short run goes through the engine."""

import math

import pytest
import torch
from torch import nn

from densetasks.engine.inference import Predictor
from densetasks.errors import ConfigError
from densetasks.models import ASPP, MTEB, CorrelationAttention, FeatureSpec, create_model
from densetasks.models.architectures.three_ways import DECODER_WIDTHS, TaskASPP
from densetasks.models.cross_task import ATTENTIONS, FUSIONS, ThreeWaysDecoder

TASKS = {"semseg": 5, "depth": 1, "normals": 3}
SMALL = {"decoder_widths": (32, 32, 16, 16, 8), "aspp_options": {"channels": 32}}
"""A narrow ASPP and narrow decoders on the tiny encoder keep every model here small."""


pytestmark = pytest.mark.usefixtures("one_thread")


def _features(tasks=("semseg", "depth", "normals"), channels=16, size=(12, 10), seed=0):
    generator = torch.Generator().manual_seed(seed)
    return {task: torch.randn(2, channels, *size, generator=generator) for task in tasks}


def test_without_self_branch_an_mteb_at_init_returns_every_task_feature_unchanged():
    """α = 0 zeroes the correlation branch; without the self branch every ``f_{j→i}`` is 0,
    ``F_{→i}(0) = ReLU(BN(conv(0))) = 0`` (no bias, BN shift 0) and ``add`` gives ``f_i``
    exactly, in training and in evaluation mode."""
    torch.manual_seed(0)
    block = MTEB(list(TASKS), 16, self_branch=False)
    features = _features()
    for mode in (True, False):
        refined = block.train(mode)(features)
        for task, feature in features.items():
            assert torch.equal(refined[task], feature), (task, mode)


@pytest.mark.parametrize("attention", ATTENTIONS)
def test_at_init_the_mteb_output_is_the_one_with_the_cross_task_part_zero(attention):
    """With the self branch: each xTAM's correlation channels are exactly 0 at init, and the
    refined ``f̃_i`` equals ``f_i + F_{→i}([0, self_{j→i}] over j)`` computed by hand."""
    torch.manual_seed(0)
    block = MTEB(list(TASKS), 16, attention=attention).eval()
    features = _features()
    with torch.no_grad():
        refined = block(features)
        for target, base in features.items():
            messages = []
            for source in block.sources[target]:
                xtam = block.xtams[f"{source}_to_{target}"]
                pair = xtam(base, features[source])
                zeros = pair.shape[1] - xtam.self_attention.features.out_channels
                assert torch.equal(pair[:, :zeros], torch.zeros_like(pair[:, :zeros]))
                directional = xtam.directional(features[source])
                self_part = xtam.self_attention(directional)
                messages.append(torch.cat([torch.zeros_like(pair[:, :zeros]), self_part], 1))
            expected = base + block.fuse[target](torch.cat(messages, dim=1))
            torch.testing.assert_close(refined[target], expected, rtol=0, atol=0)


@pytest.mark.parametrize(("kind", "shape"), [("spatial", (2, 36, 9)), ("channel", (2, 8, 8))])
def test_attention_rows_sum_to_one(kind, shape):
    """Spatial: ``[B, N_i, N_j]`` with the target ↓s and the source ↓s² (s = 2: 12×12 → 6×6
    and 3×3); channel: ``[B, d, d]``. Every row is a distribution."""
    torch.manual_seed(0)
    attention = CorrelationAttention(16, 16, 8, (2, 4), kind)
    target, source = _features(("i", "j"), size=(12, 12)).values()
    correlation = attention.correlation(target, source)
    assert correlation.shape == shape
    assert (correlation >= 0).all()
    torch.testing.assert_close(correlation.sum(-1), torch.ones(shape[:2]))
    assert attention(target, source).shape == (2, 8, 12, 12)


def test_every_parameter_gets_a_gradient_and_alpha_learns():
    """At init α = 0, so the correlation projections receive zero gradients but α a nonzero
    one; after one optimiser step α ≠ 0 and the projections' gradients are nonzero too."""
    torch.manual_seed(0)
    model = create_model(
        "three_ways_mteb", TASKS, encoder="tiny", attention="both", mteb_scales=[1, 2], **SMALL
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    image = torch.randn(2, 3, 32, 32)
    alphas = {name: p for name, p in model.named_parameters() if name.endswith("alpha")}
    projections = {n: p for n, p in model.named_parameters() if "target_projection.0" in n}
    assert len(alphas) == 2 * 2 * 6  # 2 scales × (spatial, channel) × 6 ordered pairs
    for step in range(2):
        optimizer.zero_grad()
        outputs = model(image)
        assert set(outputs) == set(TASKS) | {f"{t}@scale{s}" for t in TASKS for s in (1, 2)}
        sum(output.square().mean() for output in outputs.values()).backward()
        assert [n for n, p in model.named_parameters() if p.grad is None] == []
        assert all(torch.isfinite(p.grad).all() for p in model.parameters())
        assert all(p.grad.abs().sum() > 0 for p in alphas.values())
        moved = [p.grad.abs().sum() > 0 for p in projections.values()]
        assert all(moved) if step else not any(moved)
        optimizer.step()


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("attention", ATTENTIONS)
def test_every_fusion_and_attention_builds_and_keeps_the_shapes(fusion, attention):
    torch.manual_seed(0)
    block = MTEB(["semseg", "depth"], 16, fusion=fusion, attention=attention)
    features = _features(("semseg", "depth"), size=(9, 7))
    refined = block(features)
    assert {task: value.shape for task, value in refined.items()} == {
        task: value.shape for task, value in features.items()
    }


@pytest.mark.parametrize(
    "options",
    [
        {"self_branch": False, "d": 8},
        {"downscale": "code", "s": 4},
        {"pair_projection": True},
    ],
)
def test_block_options_build_and_run(options):
    torch.manual_seed(0)
    block = MTEB(["semseg", "depth"], 16, **options)
    assert block(_features(("semseg", "depth")))["depth"].shape == (2, 16, 12, 10)


@pytest.mark.parametrize("scales", [[1], [4], [1, 2]])
def test_mteb_at_decoder_scales_supervises_those_scales(scales):
    torch.manual_seed(0)
    model = create_model("three_ways_mteb", TASKS, encoder="tiny", mteb_scales=scales, **SMALL)
    assert sorted(int(scale) for scale in model.exchanges) == sorted(scales)
    widths = dict(zip((4, 3, 2, 1, 0), SMALL["decoder_widths"], strict=True))
    for scale, block in model.exchanges.items():
        assert next(iter(block.fuse.values()))[0].out_channels == widths[int(scale)]
    assert {aux.key: aux.weight for aux in model.auxiliary_outputs} == {
        f"{task}@scale{scale}": 1 / len(scales) for task in TASKS for scale in scales
    }
    outputs = model.train()(torch.randn(2, 3, 48, 40))
    for scale in scales:
        size = (48 // 2**scale + (48 % 2**scale > 0), 40 // 2**scale + (40 % 2**scale > 0))
        assert outputs[f"depth@scale{scale}"].shape == (2, 1, *size)


@pytest.mark.parametrize(
    ("architecture", "options"),
    [
        ("three_ways", {}),
        ("three_ways_mteb", {"supervised_scales": [1, 3], "aux_weight": 0.5}),
        ("three_ways_mteb", {"aspp": "per_task", "downscale": "code", "upsample": "nearest"}),
        ("three_ways_padnet", {}),
        ("three_ways_padnet", {"aspp": "per_task"}),
        ("padnet", {"channels": 16}),
    ],
)
def test_auxiliary_outputs_in_training_only(architecture, options):
    torch.manual_seed(0)
    widths = {} if architecture == "padnet" else SMALL
    model = create_model(architecture, TASKS, encoder="tiny", **widths, **options)
    image = torch.randn(2, 3, 40, 36)
    outputs = model.train()(image)
    assert {key for key in outputs if "@" in key} == {a.key for a in model.auxiliary_outputs}
    assert model.auxiliary_outputs
    for task, channels in TASKS.items():
        assert outputs[task].shape == (2, channels, 40, 36)
    sum(output.mean() for output in outputs.values()).backward()
    assert [n for n, p in model.named_parameters() if p.grad is None] == []
    with torch.no_grad():
        assert set(model.eval()(image)) == set(TASKS)
    if "aux_weight" in options:
        assert {a.weight for a in model.auxiliary_outputs} == {0.25}


def test_three_ways_with_one_task_is_the_single_task_network():
    model = create_model("three_ways", {"depth": 1}, encoder="tiny", **SMALL)
    assert len(model.decoders) == 1 and not model.exchanges
    shared = {id(p) for p in model.shared_parameters()}
    assert shared == {id(p) for p in [*model.encoder.parameters(), *model.bottleneck.parameters()]}


@pytest.mark.parametrize(
    ("architecture", "options", "key"),
    [
        ("three_ways_mteb", {"fusion": "sum"}, "model.options.fusion"),
        ("three_ways_mteb", {"attention": "global"}, "model.options.attention"),
        ("three_ways_mteb", {"downscale": "bilinear"}, "model.options.downscale"),
        ("three_ways_mteb", {"upsample": "bicubic"}, "model.options.upsample"),
        ("three_ways", {"aspp": "both"}, "model.options.aspp"),
        (
            "three_ways",
            {"aspp": "per_task", "aspp_options": {"project": False}},
            "model.options.aspp_options",
        ),
        (
            "three_ways_mteb",
            {"aspp": "per_task", "aspp_options": {"channels": 128}},
            "model.options.aspp_options",
        ),
        ("three_ways_mteb", {"mteb_scales": [5]}, "model.options.mteb_scales"),
        ("three_ways_mteb", {"mteb_scales": [0]}, "model.options.mteb_scales"),
        ("three_ways_mteb", {"mteb_scales": []}, "model.options.mteb_scales"),
        ("three_ways_padnet", {"padnet_scales": [7]}, "model.options.padnet_scales"),
        ("three_ways", {"supervised_scales": [0]}, "model.options.supervised_scales"),
        ("three_ways", {"decoder_widths": [8] * 6}, "model.options.decoder_widths"),
        ("three_ways_mteb", {"gamma": 1}, r"model.options: .*\['gamma'\]"),
        # an option forwarded to ThreeWays is checked against ThreeWays' signature too
        ("three_ways_padnet", {"aux_wieght": 1}, r"\['aux_wieght'\]; it takes: .*aux_weight"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(architecture, options, key):
    with pytest.raises(ConfigError, match=key):
        create_model(architecture, TASKS, encoder="tiny", **options)


def _eval_projection(projection: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """1×1 conv (no bias) + BN in evaluation mode + ReLU, written out."""
    conv, norm = projection[0], projection[1]
    y = torch.einsum("oc,bchw->bohw", conv.weight[:, :, 0, 0], x)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    return torch.relu(
        (y - norm.running_mean[:, None, None]) * scale[:, None, None] + norm.bias[:, None, None]
    )


def test_code_options_compute_the_authors_correlation_branch_at_their_shapes():
    """``downscale: code, s: 4, upsample: nearest`` at the authors' mTEB shapes (scale 1:
    128 channels, d = 128, s = 4): the query from every 4th target pixel, keys and values from
    4×4 max-pooled source blocks, ``softmax(KᵀQ/√128)`` over source positions, the result
    repeated over 4×4 blocks and scaled by α — written out here with reshapes; their code
    computes the same (``tools/compare_densemtl.py``, docs/cross_task_attention.md)."""
    torch.manual_seed(0)
    attention = CorrelationAttention(128, 128, 128, (4, 4), "spatial", "nearest").double()
    with torch.no_grad():
        attention.alpha.normal_()
        for norm in attention.modules():
            if isinstance(norm, nn.BatchNorm2d):
                norm.running_mean.normal_(0, 0.1)
                norm.running_var.uniform_(0.5, 1.5)
                norm.weight.uniform_(0.5, 1.5)
                norm.bias.normal_(0, 0.1)
    attention.eval()
    target, source = (torch.randn(2, 128, 32, 24, dtype=torch.float64) for _ in range(2))
    blocks = (2, 128, 8, 4, 6, 4)
    query = _eval_projection(attention.target_projection, target.reshape(blocks)[:, :, :, 0, :, 0])
    pooled = source.reshape(blocks).amax(dim=(3, 5))
    keys = _eval_projection(attention.source_projection, pooled).flatten(2)
    values = _eval_projection(attention.value_projection, pooled).flatten(2)
    correlation = torch.softmax(query.flatten(2).transpose(1, 2) @ keys / math.sqrt(128), -1)
    coarse = (values @ correlation.transpose(1, 2)).reshape(2, 128, 8, 6)
    expected = attention.alpha * coarse.repeat_interleave(4, 2).repeat_interleave(4, 3)
    with torch.no_grad():
        torch.testing.assert_close(attention(target, source), expected, rtol=0, atol=1e-12)


def test_nearest_and_bilinear_upsampling_differ_once_alpha_moves():
    """Nearest repeats each attended value over its s×s block; bilinear blends neighbours.
    At init (α = 0) both are exactly 0."""
    torch.manual_seed(0)
    nearest = CorrelationAttention(16, 16, 8, (4, 4), "spatial", "nearest")
    bilinear = CorrelationAttention(16, 16, 8, (4, 4), "spatial")
    bilinear.load_state_dict(nearest.state_dict())
    target, source = _features(("i", "j"), size=(16, 12)).values()
    assert not nearest(target, source).any() and not bilinear(target, source).any()
    with torch.no_grad():
        for block in (nearest, bilinear):
            block.alpha.fill_(1.0)
    near, blend = nearest(target, source), bilinear(target, source)
    assert torch.equal(near, near[..., ::4, ::4].repeat_interleave(4, 2).repeat_interleave(4, 3))
    assert (near - blend).abs().max() > 1e-3


RESNET101 = [
    FeatureSpec(c, s) for c, s in zip((64, 256, 512, 1024, 2048), (2, 4, 8, 16, 16), strict=True)
]
"""ResNet-101 features with the last stage dilated (output stride 16), as the authors use."""


def _count(*modules: nn.Module) -> int:
    return sum(p.numel() for module in modules for p in module.parameters())


def test_parameter_counts_at_resnet101_widths_are_the_authors_for_two_tasks():
    """S-D (16 classes, 1 depth channel) at ResNet-101 widths: ``aspp: per_task`` has the
    authors' 44,126,178 decoder parameters, their mTEB with the code's options 773,120 (both
    printed by ``tools/compare_densemtl.py`` from their modules); the shared ASPP and its
    ``reduce`` convs give 15,535,104 + 14,236,130. Built on the meta device: no memory."""
    with torch.device("meta"):
        per_task = [
            ThreeWaysDecoder(
                RESNET101, DECODER_WIDTHS, c, (1,), TaskASPP(RESNET101, 256, {"dropout": 0.5})
            )
            for c in (16, 1)
        ]
        aspp = ASPP(RESNET101, project=True)
        shared = [ThreeWaysDecoder(aspp.feature_info, DECODER_WIDTHS, c, (1,)) for c in (16, 1)]
        code = MTEB(["semseg", "depth"], 128, s=4, downscale="code", pair_projection=True)
        paper = MTEB(["semseg", "depth"], 128)
    assert _count(*per_task) == 44_126_178
    assert _count(code) == 773_120 and _count(paper) == 739_840
    assert (_count(aspp), _count(*shared)) == (15_535_104, 14_236_130)
    assert [d.blocks["4"].reduce.aspp.rates for d in per_task] == [(6, 12, 18)] * 2


def test_per_task_aspp_belongs_to_its_task():
    """``aspp: per_task``: no shared bottleneck; each task's ASPP stands in its deepest
    block's first conv and learns from that task's loss only, the encoder from every task."""
    torch.manual_seed(0)
    model = create_model("three_ways", TASKS, encoder="tiny", aspp="per_task", **SMALL)
    assert _count(model.bottleneck) == 0
    assert {id(p) for p in model.shared_parameters()} == {id(p) for p in model.encoder.parameters()}
    aspps = {task: decoder.blocks["4"].reduce for task, decoder in model.decoders.items()}
    assert all(isinstance(aspp, TaskASPP) for aspp in aspps.values())
    model(torch.randn(2, 3, 32, 32))["depth"].square().mean().backward()
    for task, aspp in aspps.items():
        grads = [p.grad for p in aspp.parameters()]
        if task == "depth":
            assert all(g is not None and g.abs().sum() > 0 for g in grads)
        else:
            assert all(g is None for g in grads)
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_an_exchange_needs_two_tasks():
    with pytest.raises(ConfigError, match="two or more tasks"):
        create_model("three_ways_mteb", {"semseg": 5}, encoder="tiny", **SMALL)


def test_three_ways_mteb_goes_end_to_end(run_end_to_end):
    result = run_end_to_end(
        {
            "tasks": {"semseg": {}, "depth": {"loss": "berhu"}},
            "data": {
                "options": {"n_train": 8, "n_val": 4, "n_test": 4, "size": [32, 32]},
                "batch_size": 2,
            },
            "model": {
                "architecture": "three_ways_mteb",
                "encoder": "tiny",
                "options": {
                    "decoder_widths": [16, 16, 8, 8, 8],
                    "aspp_options": {"channels": 16},
                    "d": 8,
                },
            },
        }
    )
    model = Predictor.from_run_dir(result["run"]).run.model
    assert [a.key for a in model.auxiliary_outputs] == ["semseg@scale1", "depth@scale1"]
    assert all("@" not in key for key in result["prediction"].outputs)
    alphas = [p for name, p in model.named_parameters() if name.endswith("alpha")]
    assert alphas and all(alpha.abs().sum() > 0 for alpha in alphas)
