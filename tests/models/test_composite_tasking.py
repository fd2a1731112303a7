"""CompositeTasking (Popovic et al., CVPR 2021): its blocks, the CTN, the STN / MHN / MN
baselines, palette-masked supervision and a short training run through the engine."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from densetasks.data.sample import IGNORE_INDEX
from densetasks.engine.config import validate_config
from densetasks.engine.loop import task_losses
from densetasks.engine.passes import condition_inputs
from densetasks.engine.run import train
from densetasks.errors import ConfigError
from densetasks.models import (
    EvaluationPass,
    TaskComposition,
    TaskRepresentation,
    UniformCondition,
    create_model,
)
from densetasks.models.composite_blocks import embedding_pyramid
from densetasks.tasks.registry import create_task

TASKS = {"semseg": 5, "normals": 3, "edges": 1}
SMALL = {"decoder_widths": (32, 16, 16, 16, 8)}


def make_tasks(names=TASKS):
    options = {"semseg": {"num_classes": TASKS["semseg"]}}
    return {name: create_task(name, **options.get(name, {})) for name in names}


def make_labels(count, size, generator):
    height, width = size
    normals = F.normalize(torch.randn(count, 3, height, width, generator=generator), dim=1)
    return {
        "semseg": torch.randint(0, TASKS["semseg"], (count, height, width), generator=generator),
        "normals": normals,
        "edges": torch.randint(0, 2, (count, height, width), generator=generator).to(torch.uint8),
    }


def ctn(encoder="tiny", tasks=TASKS, **options):
    return create_model(
        "composite_tasking", tasks, encoder=encoder, output_stride=32, **{**SMALL, **options}
    )


# ---------------------------------------------------------------- task composition block


def test_a_fresh_composition_block_is_conv_bn_leaky_relu_whatever_the_embedding():
    torch.manual_seed(0)
    block = TaskComposition(6, 10, 3, embedding_channels=16, hidden=12)
    features, embedding = torch.randn(2, 6, 8, 8), torch.randn(2, 16, 8, 8)
    expected = F.leaky_relu(F.batch_norm(block.conv(features), None, None, training=True))
    assert torch.equal(block(features, embedding), expected)
    assert torch.equal(block(features, torch.zeros_like(embedding)), expected)


def test_gamma_and_beta_change_the_output_after_a_step():
    torch.manual_seed(0)
    block = TaskComposition(6, 10, 1, embedding_channels=16, hidden=12)
    features, embedding = torch.randn(2, 6, 8, 8), torch.randn(2, 16, 8, 8)
    before = block(features, embedding).detach()
    block(features, embedding).square().mean().backward()
    assert block.gamma.weight.grad.abs().sum() > 0 and block.beta.weight.grad.abs().sum() > 0
    torch.optim.SGD(block.parameters(), lr=0.1).step()
    after = block(features, embedding).detach()
    assert not torch.allclose(after, before)
    other = block(features, -embedding).detach()  # now the embedding matters
    assert not torch.allclose(after, other)


def test_the_plain_block_has_an_affine_batch_norm_and_no_condition_net():
    block = TaskComposition(6, 10, 3, embedding_channels=None)
    assert block.norm.affine and block.shared is None
    assert block(torch.randn(2, 6, 4, 4)).shape == (2, 10, 4, 4)
    conditioned = TaskComposition(6, 10, 3, embedding_channels=16)
    assert not conditioned.norm.affine
    with pytest.raises(ValueError, match="needs the embedding map"):
        conditioned(torch.randn(2, 6, 4, 4))


# ---------------------------------------------------------------- task representation


def test_task_codes_are_l2_normalised_block_one_hots_through_six_linear_layers():
    net = TaskRepresentation(num_tasks=3)
    assert net.codes.shape == (3, 60)
    torch.testing.assert_close(net.codes.norm(dim=1), torch.ones(3))
    for task in range(3):
        block = net.codes[task, 20 * task : 20 * (task + 1)]
        assert torch.allclose(block, torch.full((20,), 20**-0.5))
        assert net.codes[task].count_nonzero() == 20
    linears = [m for m in net.net if isinstance(m, nn.Linear)]
    slopes = [m.negative_slope for m in net.net if isinstance(m, nn.LeakyReLU)]
    assert len(linears) == 6 and slopes == [0.2] * 6
    assert [m.out_features for m in linears] == [128] * 6
    embeddings = net()
    assert embeddings.shape == (3, 128)
    assert not torch.allclose(embeddings[0], embeddings[1])
    assert not torch.allclose(embeddings[1], embeddings[2])


def test_the_palette_is_broadcast_to_an_embedding_map_and_its_pyramid():
    torch.manual_seed(0)
    net = TaskRepresentation(num_tasks=2, channels=8)
    palette = torch.tensor([[[0, 1], [IGNORE_INDEX, 1]]]).repeat_interleave(4, 1)
    palette = palette.repeat_interleave(4, 2)  # [1, 8, 8]
    embedding = net.embedding_map(palette)
    assert embedding.shape == (1, 8, 8, 8)
    rows = net().detach()
    assert torch.equal(embedding[0, :, 0, 0].detach(), rows[0])
    assert torch.equal(embedding[0, :, 0, 7].detach(), rows[1])
    assert not embedding[0, :, 4:, :4].any()  # no task -> zeros
    pyramid = embedding_pyramid(embedding, [(8, 8), (4, 4), (2, 2), (1, 1)])
    assert [tuple(v.shape[-2:]) for v in pyramid.values()] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    torch.testing.assert_close(pyramid[(4, 4)], F.avg_pool2d(embedding, 2))  # halving
    with pytest.raises(ValueError, match="palette ids must be in 0..1"):
        net.embedding_map(torch.full((1, 2, 2), 2))


# ---------------------------------------------------------------- the networks


@pytest.mark.parametrize("encoder", ["tiny", "test_resnet"])
@pytest.mark.parametrize(
    ("size", "output_stride"), [((32, 32), 32), ((64, 48), 16), ((40, 36), 32)]
)
def test_the_ctn_returns_one_composite_output_at_the_image_size(encoder, size, output_stride):
    model = create_model(
        "composite_tasking", TASKS, encoder=encoder, output_stride=output_stride, **SMALL
    )
    palette = torch.randint(0, 3, (2, *size))
    outputs = model(torch.randn(2, 3, *size), palette)
    assert set(outputs) == {"composite"}
    assert outputs["composite"].shape == (2, 3, *size)
    adapted = model.output_adapter(outputs, make_tasks(), {"palette": palette})
    assert {name: out.shape[1] for name, out in adapted.outputs.items()} == TASKS


def test_the_decoder_follows_the_encoders_feature_info_and_the_authors_widths():
    model = create_model("composite_tasking", TASKS, encoder="resnet34")
    decoder = model.decoder
    assert [skip.conv.kernel_size for skip in decoder.skips] == [(1, 1)] * 5
    assert [skip.conv.out_channels for skip in decoder.skips] == [64, 64, 128, 256, 512]
    assert [f.conv.kernel_size for f in decoder.fusions] == [(3, 3)] * 4
    assert [f.conv.in_channels for f in decoder.fusions] == [512 + 256, 512 + 128, 256 + 64, 320]
    assert [f.conv.out_channels for f in decoder.fusions] == [512, 256, 256, 128]
    assert [b.conv.out_channels for b in decoder.image_skip] == [64, 64]
    assert (decoder.final.conv.in_channels, decoder.final.conv.out_channels) == (192, 64)
    assert decoder.head.out_channels == 3
    assert [f.shared[0].out_channels for f in decoder.fusions] == [256, 256, 128, 128]


@pytest.mark.parametrize("architecture", ["composite_mhn", "composite_mn"])
def test_baselines_return_a_composite_output_per_task_decoded_by_each_task(architecture):
    model = create_model(architecture, TASKS, encoder="tiny", **SMALL)
    outputs = model(torch.randn(2, 3, 32, 32))
    assert {name: tuple(out.shape) for name, out in outputs.items()} == {
        name: (2, 3, 32, 32) for name in TASKS
    }
    palette = torch.randint(0, 3, (2, 32, 32))
    adapted = model.output_adapter(outputs, make_tasks(), {"palette": palette})
    assert {name: out.shape[1] for name, out in adapted.outputs.items()} == TASKS
    for index, name in enumerate(TASKS):
        assert torch.equal(adapted.masks[name], palette == index)
    blocks = [m for m in model.modules() if isinstance(m, TaskComposition)]
    assert blocks and all(block.norm.affine and block.shared is None for block in blocks)


def test_the_stn_predicts_one_task_and_maps_it_to_its_id_in_palette_tasks():
    with pytest.raises(ConfigError, match="exactly one task"):
        create_model("composite_stn", TASKS, encoder="tiny")
    model = create_model(
        "composite_stn", {"normals": 3}, encoder="tiny", palette_tasks=list(TASKS), **SMALL
    )
    palette = torch.randint(0, 3, (1, 32, 32))
    adapted = model.output_adapter(
        model(torch.randn(1, 3, 32, 32)), make_tasks(["normals"]), {"palette": palette}
    )
    assert torch.equal(adapted.masks["normals"], palette == 1)
    plan = model.evaluation_plan()
    assert plan[0].conditions["palette"] == UniformCondition(1)
    with pytest.raises(ConfigError, match="palette_tasks"):
        create_model("composite_stn", {"normals": 3}, encoder="tiny", palette_tasks=["edges"])


def test_the_evaluation_plan_is_rule_s_then_each_rule_drawn_alike_for_every_batch():
    model = ctn(eval_rules=("R1r", "Rrnd"))
    plan = model.evaluation_plan()
    assert [p.tasks for p in plan[:3]] == [("semseg",), ("normals",), ("edges",)]
    assert [p.conditions["palette"] for p in plan[:3]] == [UniformCondition(i) for i in range(3)]
    assert [(p.tasks, p.rule) for p in plan[3:]] == [(tuple(TASKS), "R1r"), (tuple(TASKS), "Rrnd")]
    assert all(isinstance(p, EvaluationPass) for p in plan)
    batch = {"image": torch.zeros(2, 3, 16, 16)}
    draw = plan[4].conditions["palette"]
    assert torch.equal(draw(batch), draw(batch))
    assert torch.equal(
        draw(batch), ctn(eval_rules=("Rrnd",)).evaluation_plan()[3].conditions["palette"](batch)
    )
    assert set(draw(batch).unique().tolist()) == {0, 1, 2}


def test_unknown_rules_and_rule_options_raise_config_errors():
    with pytest.raises(ConfigError, match="palette rule .R9."):
        ctn(train_rule="R9")
    with pytest.raises(ConfigError, match="eval_rule_options names rule"):
        ctn(eval_rule_options={"Rrnd": {}})


# ---------------------------------------------------------------- supervision


def test_a_pixel_outside_a_tasks_palette_gets_no_gradient_from_its_loss():
    torch.manual_seed(0)
    model, tasks = ctn(), make_tasks()
    generator = torch.Generator().manual_seed(0)
    image, labels = torch.randn(2, 3, 32, 32), make_labels(2, (32, 32), generator)
    palette = torch.randint(0, 3, (2, 32, 32), generator=generator)
    palette[:, :4] = IGNORE_INDEX
    raw = model(image, palette)
    raw["composite"].retain_grad()
    adapted = model.output_adapter(raw, tasks, {"palette": palette})
    losses = task_losses(tasks, adapted, {"image": image, **labels})
    for index, name in enumerate(tasks):
        raw["composite"].grad = None
        losses[name].backward(retain_graph=True)
        gradient = raw["composite"].grad.abs().sum(dim=1)
        assert not gradient[palette != index].any(), name
        assert gradient[palette == index].any(), name


@pytest.mark.parametrize(
    ("architecture", "tasks"),
    [
        ("composite_tasking", TASKS),
        ("composite_mhn", TASKS),
        ("composite_mn", TASKS),
        ("composite_stn", {"normals": 3}),
    ],
)
def test_every_parameter_gets_a_gradient_under_the_random_rule(architecture, tasks):
    torch.manual_seed(0)
    model = create_model(architecture, tasks, encoder="tiny", train_rule="Rrnd", **SMALL)
    task_objects = make_tasks(tasks)
    generator = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(2, 3, 32, 32), **make_labels(2, (32, 32), generator)}
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(2):  # γ, β start at weight 0: the task net learns from the second step
        optimizer.zero_grad()
        conditions = condition_inputs(model, batch, generator)
        adapted = model.output_adapter(
            model(batch["image"], **conditions), task_objects, conditions
        )
        sum(task_losses(task_objects, adapted, batch).values()).backward()
        optimizer.step()
    no_grad = [name for name, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    zero = [name for name, p in model.named_parameters() if not p.grad.abs().sum() > 0]
    assert zero == []
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_parameter_groups():
    model = ctn()
    ids = lambda params: {id(p) for p in params}  # noqa: E731
    assert ids(model.encoder_parameters()) == ids(model.encoder.parameters())
    assert ids(model.shared_parameters()) == ids(model.parameters())
    assert ids(model.decoder_parameters()) == ids(model.decoder.parameters()) | ids(
        model.task_representation.parameters()
    )
    mhn = create_model("composite_mhn", TASKS, encoder="tiny", **SMALL)
    assert ids(mhn.shared_parameters()) == ids(mhn.encoder.parameters())
    assert create_model("composite_mn", TASKS, encoder="tiny", **SMALL).shared_parameters() == []


def _count(modules):
    return sum(p.numel() for module in modules for p in module.parameters())


def test_the_ctn_decoder_is_much_smaller_than_the_mhn_decoders_for_five_tasks():
    five = {"semseg": 21, "parts": 7, "edges": 1, "saliency": 1, "normals": 3}
    model = create_model("composite_tasking", five, encoder="resnet34")
    mhn = create_model("composite_mhn", five, encoder="resnet34")
    ctn_decoder = _count([model.decoder, model.task_representation])
    mhn_decoders = _count([mhn.decoders])
    print(
        f"\nResNet-34, 5 tasks: encoder {_count([model.encoder]):,}; CTN decoder + task net "
        f"{ctn_decoder:,} (task net {_count([model.task_representation]):,}); MHN decoders "
        f"{mhn_decoders:,} ({_count([mhn.decoders['semseg']]):,} each)"
    )
    assert 3 * ctn_decoder < mhn_decoders


# ---------------------------------------------------------------- through the engine


def test_a_short_training_run_through_the_engine_lowers_the_loss(tmp_path: Path, one_thread):
    torch.manual_seed(0)
    config = validate_config(
        {
            "tasks": {"semseg": {}, "normals": {}, "edges": {}},
            "data": {
                "options": {"n_train": 8, "n_val": 2, "n_test": 2, "size": [32, 32]},
                "batch_size": 4,
            },
            "model": {
                "architecture": "composite_tasking",
                "encoder": "tiny",
                "output_stride": 32,
                "options": {"decoder_widths": [32, 32, 32, 32, 16], "train_rule": "Rrnd"},
            },
            "train": {
                "steps": 30,
                "optimizer": "adam",
                "lr": 3e-3,
                "schedule": "constant",
                "eval_every": 30,
                "log_every": 1,
                "checkpoint_every": 30,
                "images_every": 1000,
            },
        }
    )
    run = train(config, tmp_path / "run")
    events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
    totals = [event["total"] for event in events if event["type"] == "train"]
    assert len(totals) == 30
    first, last = sum(totals[:5]) / 5, sum(totals[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    evaluation = [event for event in events if event["type"] == "eval"][-1]
    assert set(evaluation["metrics"]) >= set(config.tasks)


def test_rule_all_supervises_every_task_of_a_multi_head_baseline_everywhere():
    """MHN "trained on complete labels" (Table 1, rule S for the baselines): rule ``all``
    gives every task a full mask; a CTN, one output per pixel, refuses the rule."""
    model = create_model(
        "composite_mhn", {"semseg": 5, "edges": 1}, encoder="tiny", train_rule="all", **SMALL
    )
    batch = {"image": torch.rand(2, 3, 16, 16)}
    palette = condition_inputs(model, batch, torch.Generator().manual_seed(0))["palette"]
    adapted = model.output_adapter(
        model(batch["image"], palette), make_tasks(["semseg", "edges"]), {"palette": palette}
    )
    assert all(mask.all() for mask in adapted.masks.values())
    with pytest.raises(ConfigError, match="rule 'all'"):
        ctn(train_rule="all")
