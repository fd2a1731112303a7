"""Optimiser parameter groups (encoder vs decoders) and learning-rate schedules.

The schedule is a multiplier of each group's base learning rate, a function of the step
(poly, step, multistep, constant; times an optional linear warm-up), times a factor that only
"plateau" changes when the validation score stops improving. Being one small object with
``state_dict`` it resumes exactly.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from densetasks.engine.config import TrainConfig
from densetasks.errors import ConfigError
from densetasks.models.base import Encoder


def build_optimizer(
    config: TrainConfig,
    encoder_parameters: Iterable[nn.Parameter],
    decoder_parameters: Iterable[nn.Parameter],
    balancer_parameters: Iterable[nn.Parameter] = (),
    encoders: Sequence[Encoder] = (),
) -> torch.optim.Optimizer:
    """Groups "encoder" (``encoder_lr``, default ``lr``), "decoder" and "balancer" (``lr``).

    Balancer parameters (e.g. the log-variances of Kendall et al., CVPR 2018) get no weight
    decay: decay would pull them towards σ = 1, a prior the paper does not have.

    ``train.layer_decay`` (layer-wise learning-rate decay; Bao et al., BEiT, ICLR 2022,
    Sec. 2.6 and App. for fine-tuning; Clark et al., ELECTRA, ICLR 2020) splits the encoder
    group by depth: a parameter at depth ``d`` of an encoder whose layers go up to ``top``
    (``Encoder.parameter_layers``: 0 the patch embedding, one per block) learns at
    ``encoder_lr · layer_decay^(top − d)``, so the last block at ``encoder_lr · layer_decay``
    and the embeddings the least. ``train.selective_decay`` gives no weight decay to
    normalisation weights and biases (every parameter with one dimension) and to what the
    encoder names (``Encoder.no_weight_decay``: position embeddings, class and register
    tokens, relative position tables), as BEiT, Swin and ConvNeXt fine-tune. Both need the
    ``encoders`` the encoder parameters belong to.
    """
    encoder_lr = config.encoder_lr if config.encoder_lr is not None else config.lr
    encoder_parameters = list(encoder_parameters)
    if config.layer_decay is None and not config.selective_decay:
        encoder_groups = [{"name": "encoder", "params": encoder_parameters, "lr": encoder_lr}]
        decoder_groups = [{"name": "decoder", "params": list(decoder_parameters), "lr": config.lr}]
    else:
        encoder_groups = _encoder_groups(config, encoder_parameters, encoder_lr, encoders)
        decoder_groups = _decay_split(config, "decoder", list(decoder_parameters), config.lr, set())
    groups = [
        *encoder_groups,
        *decoder_groups,
        {
            "name": "balancer",
            "params": list(balancer_parameters),
            "lr": config.lr,
            "weight_decay": 0.0,
        },
    ]
    groups = [group for group in groups if group["params"]]
    for group in groups:
        group["initial_lr"] = group["lr"]
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            groups,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov,
            weight_decay=config.weight_decay,
        )
    optimizer_class = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return optimizer_class(
        groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
    )


def _encoder_groups(
    config: TrainConfig,
    parameters: list[nn.Parameter],
    encoder_lr: float,
    encoders: Sequence[Encoder],
) -> list[dict[str, Any]]:
    """The encoder parameters grouped by depth (with ``layer_decay``) and by decay."""
    if not encoders:
        raise ConfigError(
            "train.layer_decay / train.selective_decay: the model's encoders are needed"
        )
    depth: dict[int, tuple[int, int]] = {}
    exempt: set[int] = set()
    for encoder in encoders:
        named = dict(encoder.named_parameters())
        exempt |= {id(named[name]) for name in encoder.no_weight_decay()}
        if config.layer_decay is not None:
            layers, top = encoder.parameter_layers()
            depth |= {id(parameter): (layers[name], top) for name, parameter in named.items()}
    by_depth: dict[int | None, list[nn.Parameter]] = {}
    scale: dict[int | None, float] = {None: 1.0}
    for parameter in parameters:
        level, top = depth.get(id(parameter), (None, None))
        if level is not None and level < top:
            scale[level] = config.layer_decay ** (top - level)
        else:
            level = None
        by_depth.setdefault(level, []).append(parameter)
    groups = []
    for level in sorted(by_depth, key=lambda key: -1 if key is None else key):
        name = "encoder" if level is None else f"encoder.layer{level}"
        groups += _decay_split(config, name, by_depth[level], encoder_lr * scale[level], exempt)
    return groups


def _decay_split(
    config: TrainConfig,
    name: str,
    parameters: list[nn.Parameter],
    lr: float,
    exempt: set[int],
) -> list[dict[str, Any]]:
    """One group of ``parameters`` at ``lr``, or, with ``selective_decay``, two: those with
    weight decay, and those without (one-dimensional, or listed in ``exempt`` by id)."""
    if not config.selective_decay:
        return [{"name": name, "params": parameters, "lr": lr}]
    plain = [p for p in parameters if p.dim() <= 1 or id(p) in exempt]
    decayed = [p for p in parameters if not (p.dim() <= 1 or id(p) in exempt)]
    return [
        {"name": name, "params": decayed, "lr": lr, "weight_decay": config.weight_decay},
        {"name": name, "params": plain, "lr": lr, "weight_decay": 0.0},
    ]


class LearningRateSchedule:
    """Sets every group's ``lr = initial_lr · warmup(step) · decay(step) · plateau``.

    ``poly`` is ``(1 − step/steps)^power`` (Kendall et al., CVPR 2018, App. A.1); ``step``
    multiplies by ``gamma`` every ``step_size`` steps; ``multistep`` at each of ``milestones``;
    ``plateau`` multiplies by ``gamma`` when :meth:`observe` has seen no better validation
    score for ``patience`` evaluations in a row. Warm-up ramps linearly from
    ``1/warmup_steps`` to 1 over the first ``warmup_steps`` steps.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig) -> None:
        self.optimizer = optimizer
        self.config = config
        self.step_count = 0
        self.plateau_factor = 1.0
        self.best_score: float | None = None
        self.bad_evaluations = 0
        self._apply()

    def factor(self, step: int) -> float:
        """The multiplier of the base learning rates at ``step`` (0-based)."""
        config = self.config
        if config.schedule == "poly":
            decay = max(0.0, 1.0 - step / config.steps) ** config.power
        elif config.schedule == "step":
            decay = config.gamma ** (step // config.step_size)
        elif config.schedule == "multistep":
            decay = config.gamma ** sum(step >= milestone for milestone in config.milestones)
        else:
            decay = 1.0
        warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        return warmup * decay * self.plateau_factor

    def step(self) -> None:
        """Advance one optimisation step."""
        self.step_count += 1
        self._apply()

    def observe(self, score: float) -> None:
        """A validation score (higher is better); only ``plateau`` reacts."""
        if self.config.schedule != "plateau":
            return
        if self.best_score is None or score > self.best_score:
            self.best_score = score
            self.bad_evaluations = 0
            return
        self.bad_evaluations += 1
        if self.bad_evaluations > self.config.patience:
            self.plateau_factor *= self.config.gamma
            self.bad_evaluations = 0
            self._apply()

    def learning_rates(self) -> dict[str, float]:
        return {group["name"]: group["lr"] for group in self.optimizer.param_groups}

    def _apply(self) -> None:
        factor = self.factor(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = group["initial_lr"] * factor

    def state_dict(self) -> dict[str, Any]:
        return {
            "step_count": self.step_count,
            "plateau_factor": self.plateau_factor,
            "best_score": self.best_score,
            "bad_evaluations": self.bad_evaluations,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step_count"])
        self.plateau_factor = float(state["plateau_factor"])
        self.best_score = state["best_score"]
        self.bad_evaluations = int(state["bad_evaluations"])
        self._apply()
