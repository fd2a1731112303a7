import pytest
import torch
from torch import nn

from densetasks.engine.config import TrainConfig
from densetasks.engine.optim import LearningRateSchedule, build_optimizer


def make(config: TrainConfig):
    encoder, decoder, balancer = nn.Linear(2, 2), nn.Linear(2, 2), nn.Parameter(torch.zeros(2))
    optimizer = build_optimizer(config, encoder.parameters(), decoder.parameters(), [balancer])
    return optimizer, LearningRateSchedule(optimizer, config)


def test_groups_have_their_own_learning_rates_and_sgd_settings():
    optimizer, _ = make(TrainConfig(lr=0.1, encoder_lr=0.01, nesterov=True, schedule="constant"))
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert groups["encoder"]["lr"] == pytest.approx(0.01)
    assert groups["decoder"]["lr"] == pytest.approx(0.1)
    assert groups["balancer"]["weight_decay"] == 0.0
    assert groups["decoder"]["weight_decay"] == pytest.approx(1e-4)
    assert isinstance(optimizer, torch.optim.SGD) and groups["decoder"]["nesterov"]


def test_adamw_gets_betas():
    optimizer, _ = make(TrainConfig(optimizer="adamw", betas=(0.9, 0.98)))
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.98)


def lrs(config: TrainConfig, steps: int) -> list[float]:
    _optimizer, schedule = make(config)
    seen = []
    for _ in range(steps):
        seen.append(schedule.learning_rates()["decoder"])
        schedule.step()
    return seen


def test_poly_follows_kendall2018_appendix():
    seen = lrs(TrainConfig(lr=2.5e-3, steps=10, schedule="poly", power=0.9), 10)
    expected = [2.5e-3 * (1 - step / 10) ** 0.9 for step in range(10)]
    assert seen == pytest.approx(expected)


def test_step_multistep_and_warmup():
    assert lrs(TrainConfig(lr=1.0, schedule="step", step_size=2, gamma=0.5), 5) == pytest.approx(
        [1, 1, 0.5, 0.5, 0.25]
    )
    assert lrs(TrainConfig(lr=1.0, schedule="multistep", milestones=[1, 3]), 4) == pytest.approx(
        [1, 0.1, 0.1, 0.01]
    )
    assert lrs(TrainConfig(lr=1.0, schedule="constant", warmup_steps=4), 6) == pytest.approx(
        [0.25, 0.5, 0.75, 1, 1, 1]
    )


def test_plateau_decays_after_patience_and_resumes_exactly():
    _optimizer, schedule = make(TrainConfig(lr=1.0, schedule="plateau", patience=1, gamma=0.5))
    for score in [1.0, 0.5, 0.4]:
        schedule.observe(score)
    assert schedule.learning_rates()["decoder"] == pytest.approx(0.5)
    _optimizer2, schedule2 = make(TrainConfig(lr=1.0, schedule="plateau", patience=1, gamma=0.5))
    schedule2.load_state_dict(schedule.state_dict())
    assert schedule2.learning_rates() == schedule.learning_rates()
    schedule.observe(0.9)
    schedule2.observe(0.9)
    schedule.observe(0.9)
    schedule2.observe(0.9)
    assert schedule2.learning_rates()["decoder"] == pytest.approx(0.25)
    assert schedule.learning_rates() == schedule2.learning_rates()


def test_non_plateau_schedules_ignore_scores():
    _, schedule = make(TrainConfig(lr=1.0, schedule="constant", patience=0))
    for score in [1.0, 0.0, 0.0]:
        schedule.observe(score)
    assert schedule.learning_rates()["decoder"] == 1.0


def _lr_of(optimizer, parameter):
    (group,) = [
        group for group in optimizer.param_groups if any(p is parameter for p in group["params"])
    ]
    return group["lr"], group["weight_decay"]


def test_layer_decay_scales_each_depth_as_beit():
    from densetasks.models import create_encoder

    encoder, decoder = create_encoder("test_vit"), nn.Linear(2, 2)
    config = TrainConfig(
        lr=1.0, encoder_lr=0.1, layer_decay=0.5, weight_decay=0.05, schedule="constant"
    )
    optimizer = build_optimizer(
        config, encoder.parameters(), decoder.parameters(), encoders=[encoder]
    )
    named = dict(encoder.named_parameters())
    # test_vit: stem at depth 0, blocks 0..5 at depths 1..6, the final norm (pruned) at 7 = top.
    assert _lr_of(optimizer, named["model.pos_embed"]) == (pytest.approx(0.1 * 0.5**7), 0.05)
    assert _lr_of(optimizer, named["model.patch_embed.proj.weight"])[0] == pytest.approx(
        0.1 * 0.5**7
    )
    for block in range(6):
        weight = named[f"model.blocks.{block}.mlp.fc1.weight"]
        assert _lr_of(optimizer, weight)[0] == pytest.approx(0.1 * 0.5 ** (6 - block))
    assert _lr_of(optimizer, decoder.weight) == (1.0, 0.05)
    assert sum(len(group["params"]) for group in optimizer.param_groups) == len(named) + 2


def test_layer_decay_on_the_tiny_encoder_goes_by_stage():
    from densetasks.models import create_encoder

    encoder = create_encoder("tiny")
    config = TrainConfig(lr=1.0, layer_decay=0.8, schedule="constant", warmup_steps=2)
    optimizer = build_optimizer(config, encoder.parameters(), [], encoders=[encoder])
    schedule = LearningRateSchedule(optimizer, config)
    named = dict(encoder.named_parameters())
    for stage in range(5):
        assert _lr_of(optimizer, named[f"stages.{stage}.0.weight"])[0] == pytest.approx(
            0.5 * 0.8 ** (5 - stage)
        )
    schedule.step()  # the warm-up multiplies every depth alike
    assert _lr_of(optimizer, named["stages.4.0.weight"])[0] == pytest.approx(0.8)
    assert schedule.learning_rates()["encoder.layer0"] == pytest.approx(0.8**5)


def test_selective_decay_spares_norms_biases_and_position_embeddings():
    from densetasks.models import create_encoder

    encoder, decoder = (
        create_encoder("test_vit"),
        nn.Sequential(nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2)),
    )
    config = TrainConfig(optimizer="adamw", weight_decay=0.05, selective_decay=True)
    optimizer = build_optimizer(
        config, encoder.parameters(), decoder.parameters(), encoders=[encoder]
    )
    named = dict(encoder.named_parameters())
    spared = [
        "model.cls_token",
        "model.pos_embed",
        "model.blocks.0.norm1.weight",
        "model.blocks.0.attn.qkv.bias",
    ]
    for name in spared:
        assert _lr_of(optimizer, named[name])[1] == 0.0, name
    assert _lr_of(optimizer, named["model.blocks.0.attn.qkv.weight"])[1] == 0.05
    assert _lr_of(optimizer, decoder[0].weight)[1] == 0.05
    assert _lr_of(optimizer, decoder[0].bias)[1] == 0.0
    assert _lr_of(optimizer, decoder[1].weight)[1] == 0.0


def test_layer_decay_needs_the_encoders():
    from densetasks.errors import ConfigError

    with pytest.raises(ConfigError, match="train.layer_decay"):
        build_optimizer(TrainConfig(layer_decay=0.9), nn.Linear(2, 2).parameters(), [])
