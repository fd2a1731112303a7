"""Optimiser parameter groups (encoder vs decoders) and learning-rate schedules.

The schedule is a multiplier of each group's base learning rate, a function of the step
(poly, step, multistep, constant; times an optional linear warm-up), times a factor that only
"plateau" changes when the validation score stops improving. Being one small object with
``state_dict`` it resumes exactly.
"""

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from densetasks.engine.config import TrainConfig


def build_optimizer(
    config: TrainConfig,
    encoder_parameters: Iterable[nn.Parameter],
    decoder_parameters: Iterable[nn.Parameter],
    balancer_parameters: Iterable[nn.Parameter] = (),
) -> torch.optim.Optimizer:
    """Groups "encoder" (``encoder_lr``, default ``lr``), "decoder" and "balancer" (``lr``).

    Balancer parameters (e.g. the log-variances of Kendall et al., CVPR 2018) get no weight
    decay: decay would pull them towards σ = 1, a prior the paper does not have.
    """
    encoder_lr = config.encoder_lr if config.encoder_lr is not None else config.lr
    groups = [
        {"name": "encoder", "params": list(encoder_parameters), "lr": encoder_lr},
        {"name": "decoder", "params": list(decoder_parameters), "lr": config.lr},
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
