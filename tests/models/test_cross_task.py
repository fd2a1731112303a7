"""xTAM, mTEB and the 3-ways architectures of Lopes et al., WACV 2023: the exchange leaves
the features alone at init, attention rows are distributions, every parameter learns, every
option builds, bad options are named, and a short run goes through the engine."""

import pytest
import torch

from densetasks.engine.inference import Predictor
from densetasks.errors import ConfigError
from densetasks.models import MTEB, CorrelationAttention, create_model
from densetasks.models.cross_task import ATTENTIONS, FUSIONS

TASKS = {"semseg": 5, "depth": 1, "normals": 3}
SMALL = {"decoder_widths": (32, 32, 16, 16, 8), "aspp_options": {"channels": 32}}
"""A narrow ASPP and narrow decoders on the tiny encoder keep every model here small."""


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions run fastest on one thread, and far faster than on a loaded CPU's
    two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
        ("three_ways_padnet", {}),
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
        ("three_ways_mteb", {"mteb_scales": [5]}, "model.options.mteb_scales"),
        ("three_ways_mteb", {"mteb_scales": [0]}, "model.options.mteb_scales"),
        ("three_ways_mteb", {"mteb_scales": []}, "model.options.mteb_scales"),
        ("three_ways_padnet", {"padnet_scales": [7]}, "model.options.padnet_scales"),
        ("three_ways", {"supervised_scales": [0]}, "model.options.supervised_scales"),
        ("three_ways", {"decoder_widths": [8] * 6}, "model.options.decoder_widths"),
        ("three_ways_mteb", {"gamma": 1}, r"model.options: .*\['gamma'\]"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(architecture, options, key):
    with pytest.raises(ConfigError, match=key):
        create_model(architecture, TASKS, encoder="tiny", **options)


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
