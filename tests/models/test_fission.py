"""Network fission (Hickson et al., network fission, supplementary): which parameters each split
point shares, the auxiliary outputs, initialisation from a single-task run, bad options, and a
short run through the engine."""

import pytest
import torch

from densetasks.engine.checkpoint import load_matching_weights
from densetasks.engine.config import validate_config
from densetasks.engine.loop import task_losses
from densetasks.engine.run import train
from densetasks.errors import ConfigError, DataError
from densetasks.models import AdaptedOutputs, Fission, create_model
from densetasks.models.architectures.fission import STAGES
from densetasks.tasks.registry import create_task

TASKS = {"normals": 3, "depth": 1}
SMALL = {"encoder": "tiny", "decoder_channels": 16}
"""A fast fission network: the tiny encoder and a 16-channel decoder (eASPP keeps 256)."""
DATA = {"options": {"n_train": 4, "n_val": 2, "n_test": 2, "size": [32, 32]}, "batch_size": 2}

SHARED = {
    "early": ("encoder.", "skips.", "bottleneck."),
    "early_mid": ("encoder.", "skips.", "bottleneck.", "decoder.stage1."),
    "mid": ("encoder.", "skips.", "bottleneck.", "decoder.stage1.", "decoder.stage2."),
    "late": ("encoder.", "skips.", "bottleneck.", "decoder.", "heads.fused."),
}
"""Parameter name prefixes every task's loss reaches, per split point (the authors' code)."""
PER_TASK = {
    "early": ("task_decoders.{}.stage1.", "task_decoders.{}.stage2.", "heads.{}.", "aux_heads.{}."),
    "early_mid": ("task_decoders.{}.stage2.", "heads.{}.", "aux_heads.{}."),
    "mid": ("heads.{}.", "aux_heads.{}."),
    "late": ("aux_heads.{}.",),
}
"""Parameter name prefixes only one task's loss reaches ({} is the task)."""


def _model(split="mid", tasks=TASKS, **options) -> Fission:
    torch.manual_seed(0)
    return create_model("fission", tasks, **{**SMALL, **options, "split": split})


def _reached_by(model: Fission, task: str, image: torch.Tensor) -> set[str]:
    """Names of the parameters that get a non-zero gradient from ``task``'s outputs (its
    main output and its auxiliary outputs) against a target of ones."""
    model.zero_grad(set_to_none=True)
    outputs = model(image)
    mine = [value for key, value in outputs.items() if key.split("@")[0] == task]
    sum((value - 1).square().mean() for value in mine).backward()  # not 0 for a BN's shift
    return {
        name
        for name, parameter in model.named_parameters()
        if parameter.grad is not None and parameter.grad.abs().sum() > 0
    }


def _numel(model: Fission, names: set[str]) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if name in names)


@pytest.mark.parametrize("split", list(SHARED))
def test_each_split_point_shares_exactly_the_documented_parameters(split):
    model = _model(split).train()
    image = torch.randn(2, 3, 32, 32)
    reached = {task: _reached_by(model, task, image) for task in TASKS}
    names = {name for name, _ in model.named_parameters()}
    shared = reached["normals"] & reached["depth"]
    assert reached["normals"] | reached["depth"] == names  # every parameter gets a gradient
    assert shared == {name for name in names if name.startswith(SHARED[split])}
    ids = {id(p) for p in model.shared_parameters()}
    assert shared == {name for name, p in model.named_parameters() if id(p) in ids}
    for task in TASKS:
        own = reached[task] - shared
        assert own == {
            name
            for name in names
            if name.startswith(tuple(p.format(task) for p in PER_TASK[split]))
        }
        task_ids = {id(p) for module in model.task_modules(task) for p in module.parameters()}
        assert _numel(model, own) == sum(p.numel() for p in model.parameters() if id(p) in task_ids)
    assert _numel(model, shared) + sum(_numel(model, reached[t] - shared) for t in TASKS) == sum(
        p.numel() for p in model.parameters()
    )


@pytest.mark.parametrize(
    ("split", "layer"),
    [
        ("early", "bottleneck.project.0.weight"),
        ("early_mid", "decoder.stage1.refine.1.0.weight"),
        ("mid", "decoder.stage2.refine.1.0.weight"),
        ("late", "heads.fused.upsample.0.weight"),
    ],
)
def test_the_last_shared_layer_follows_the_split_point(split, layer):
    model = _model(split)
    (weight,) = model.last_shared_layer()
    assert weight is model.get_parameter(layer)
    assert any(weight is p for p in model.shared_parameters())


def test_per_task_parameters_grow_from_late_to_early():
    per_task = {
        split: sum(p.numel() for m in _model(split).task_modules("depth") for p in m.parameters())
        for split in SHARED
    }
    assert per_task["late"] < per_task["mid"] < per_task["early_mid"] < per_task["early"]


@pytest.mark.parametrize("split", list(SHARED))
def test_outputs_at_input_size_and_auxiliary_outputs_only_in_training(split):
    model = _model(split, {"semseg": 5, "depth": 1, "normals": 3})
    image = torch.randn(2, 3, 40, 36)  # not a multiple of 16: the decoder fits the skips
    outputs = model.train()(image)
    assert {key: tuple(v.shape) for key, v in outputs.items() if "@" not in key} == {
        "semseg": (2, 5, 40, 36),
        "depth": (2, 1, 40, 36),
        "normals": (2, 3, 40, 36),
    }
    assert outputs["semseg@stage1"].shape == (2, 5, 5, 5)  # the /8 decoder map
    assert outputs["normals@stage2"].shape == (2, 3, 10, 9)  # the /4 decoder map
    declared = {aux.key: aux.weight for aux in model.auxiliary_outputs}
    assert declared == {
        f"{t}@{s}": w
        for t in ("semseg", "depth", "normals")
        for s, w in zip(STAGES, (0.6, 0.5), strict=True)
    }
    assert {key for key in outputs if "@" in key} == set(declared)
    with torch.no_grad():
        assert set(model.eval()(image)) == {"semseg", "depth", "normals"}


def test_a_head_reduces_without_relu_unless_head_relu_asks_for_the_codes():
    """The authors' code puts a ReLU on the task's few channels before the last upsampling,
    which left depth's single channel at 0 on 95 % of the pixels (docs/fission.md)."""
    image = torch.randn(2, 3, 32, 32)
    reduced = {}
    for relu in (False, True):
        model = _model("mid", head_relu=relu).train()
        head = model.heads["depth"]
        head.reduce.register_forward_hook(lambda m, i, o, relu=relu: reduced.update({relu: o}))
        model(image)
        names = [name for name, _ in model.named_parameters()]
        assert names == [name for name, _ in _model("mid").named_parameters()]  # same weights
    assert (reduced[False] < 0).float().mean() > 0.2  # BN-centred, signed
    assert (reduced[True] >= 0).all()


@pytest.mark.parametrize(
    ("aux_weights", "expected"),
    [((0.6, 0.0), {"depth@stage1": 0.6}), ((0.0, 0.25), {"depth@stage2": 0.25}), ((0, 0), {})],
)
def test_aux_weights_set_the_weights_and_zero_disables_a_head(aux_weights, expected):
    model = _model(tasks={"depth": 1}, aux_weights=aux_weights).train()
    assert {aux.key: aux.weight for aux in model.auxiliary_outputs} == expected
    outputs = model(torch.randn(2, 3, 32, 32))
    assert set(outputs) == {"depth", *expected}
    assert {f"depth@{stage}" for stage in model.aux_heads["depth"]} == set(expected)


def test_the_engine_adds_the_weighted_auxiliary_losses():
    model = _model(tasks={"normals": 3}).train()
    task = create_task("normals")
    outputs = model(torch.randn(2, 3, 32, 32))
    label = torch.nn.functional.normalize(torch.randn(2, 3, 32, 32), dim=1)
    losses = task_losses(
        {"normals": task},
        AdaptedOutputs(outputs),
        {"normals": label},
        model.auxiliary_outputs,
    )

    def loss(key):
        return task.loss(task.resize_output(outputs[key], (32, 32)), label)

    expected = loss("normals") + 0.6 * loss("normals@stage1") + 0.5 * loss("normals@stage2")
    torch.testing.assert_close(losses["normals"], expected)


def _train_normals_run(run_dir):
    config = validate_config(
        {
            "tasks": {"normals": {}},
            "data": DATA,
            "model": {
                "architecture": "fission",
                "encoder": "tiny",
                "options": {"decoder_channels": 16},
            },
            "train": {"steps": 2, "optimizer": "adam", "lr": 1e-3, "eval_every": 2},
        }
    )
    return train(config, run_dir)


def test_init_from_a_single_task_normals_run_loads_the_shared_weights(tmp_path):
    run = _train_normals_run(tmp_path / "normals")
    source = torch.load(run / "checkpoints" / "best.pt", weights_only=False)["model"]
    for split, shared_loaded in [("mid", True), ("early", False)]:
        model = _model(split)
        loaded, skipped = load_matching_weights(model, run)
        state = model.state_dict()
        assert all(torch.equal(state[key], source[key]) for key in loaded)
        assert any(key.startswith("encoder.") for key in loaded)
        assert any(key.startswith("bottleneck.") for key in loaded)
        assert any(key.startswith("decoder.stage2.") for key in loaded) is shared_loaded
        assert any(key.startswith("heads.normals.") for key in loaded)
        assert any(key.startswith("heads.depth.") for key in skipped)
        assert not any(key.startswith("task_decoders.depth.") for key in loaded)
    other_encoder = create_model("fission", TASKS, encoder="test_resnet", decoder_channels=16)
    with pytest.raises(DataError, match="weights of another shape: bottleneck"):
        load_matching_weights(other_encoder, run)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"split": "middle"}, r"model.options.split: unknown split point 'middle'; known: early"),
        ({"aux_weights": [0.6]}, r"model.options.aux_weights: two weights >= 0"),
        ({"aux_weights": [0.6, -1]}, r"model.options.aux_weights"),
        ({"output_stride": 8}, r"model.output_stride: .* output stride 16"),
    ],
)
def test_bad_options_are_config_errors_naming_the_key(options, message):
    with pytest.raises(ConfigError, match=message):
        create_model("fission", TASKS, **{**SMALL, **options})


def test_mobilenetv3_builds_and_every_parameter_gets_a_gradient():
    torch.manual_seed(0)
    model = create_model("fission", TASKS, encoder="mobilenetv3_small_100", decoder_channels=16)
    outputs = model.train()(torch.randn(2, 3, 32, 32))
    assert outputs["normals"].shape == (2, 3, 32, 32)
    sum(value.square().mean() for value in outputs.values()).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def test_fission_goes_end_to_end_through_the_engine(run_end_to_end):
    result = run_end_to_end(
        {
            "tasks": {"normals": {}, "depth": {}},
            "data": DATA,
            "model": {
                "architecture": "fission",
                "encoder": "tiny",
                "options": {"decoder_channels": 16, "split": "early_mid"},
            },
            "balancer": {"name": "fixed", "weights": {"normals": 10.0, "depth": 1.0}},
        }
    )
    assert set(result["test"]["metrics"]) == {"normals", "depth"}
    assert set(result["prediction"].outputs) == {"normals", "depth"}
