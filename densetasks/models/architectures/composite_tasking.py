"""The CompositeTasking network (CTN; Popovic et al., CVPR 2021, Sec. 3).

An unconditioned encoder (ResNet-34 in the paper) and one decoder made of task composition
blocks, conditioned per pixel by a Task Palette, predict one 3-channel output; every task
reads its own output from it (``Task.from_composite``) on the pixels the palette gives it.

:class:`PaletteArchitecture` holds what the CTN and its baselines (``palette_baselines``)
share: the palette input, drawn by a palette rule for every training batch, and the
evaluation plan (rule S, one pass per task, plus one pass per evaluation rule).
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from densetasks.data.palettes import create_palette_rule
from densetasks.data.sample import LabelKind
from densetasks.errors import ConfigError
from densetasks.models.adapters import CompositeAdapter
from densetasks.models.base import (
    Architecture,
    Batch,
    ConditionInput,
    Encoder,
    EvaluationPass,
    EvaluationPlan,
    UniformCondition,
)
from densetasks.models.composite_blocks import (
    DECODER_WIDTHS,
    CompositionDecoder,
    TaskRepresentation,
)

PALETTE = "palette"
"""Name of the palette conditioning input (and of its key in a batch)."""


@dataclass(frozen=True)
class PaletteDraw:
    """Draws a palette rule for a batch, over ``tasks`` (palette id = position in ``tasks``).

    Called with a generator (training: the engine seeds it per step) it uses it; called
    without (an evaluation pass) it seeds a fresh one with ``seed``, so every batch of
    every evaluation is painted alike and evaluations are reproducible.
    """

    rule: Any
    tasks: tuple[str, ...]
    seed: int = 0

    def __call__(self, batch: Batch, generator: torch.Generator | None = None) -> torch.Tensor:
        if generator is None:
            generator = torch.Generator().manual_seed(self.seed)
        return self.rule(batch, self.tasks, generator).to(batch["image"].device)


class PaletteArchitecture(Architecture):
    """A model conditioned (or supervised) by a Task Palette drawn from palette rules.

    ``train_rule`` (+ ``train_rule_options``) draws the palette of every training batch that
    does not carry one; ``eval_rules`` each add an evaluation pass over all tasks whose
    metrics are reported under the rule's name (``eval_rule_options``: ``{rule: options}``).
    ``palette_tasks`` is the task list the palette ids index (default: the model's tasks).
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        train_rule: str,
        train_rule_options: Mapping[str, Any] | None,
        eval_rules: Sequence[str],
        eval_rule_options: Mapping[str, Mapping[str, Any]] | None,
        seed: int,
        palette_tasks: Sequence[str] | None = None,
    ) -> None:
        if not task_channels:
            raise ConfigError(f"{type(self).__name__} needs at least one task")
        super().__init__(task_channels)
        self.palette_tasks = tuple(palette_tasks or task_channels)
        missing = sorted(set(task_channels) - set(self.palette_tasks))
        if missing or len(set(self.palette_tasks)) != len(self.palette_tasks):
            raise ConfigError(
                f"model.options.palette_tasks must list each task once and include the "
                f"model's tasks; got {list(self.palette_tasks)}, missing {missing}"
            )
        eval_rule_options = dict(eval_rule_options or {})
        unknown = sorted(set(eval_rule_options) - set(eval_rules))
        if unknown:
            raise ConfigError(
                f"model.options.eval_rule_options names rule(s) {unknown} that are not in "
                f"eval_rules {list(eval_rules)}"
            )
        train = _palette_rule(train_rule, "model.options.train_rule", train_rule_options)
        self.condition_inputs = (
            ConditionInput(PALETTE, LabelKind.MASK, sample=PaletteDraw(train, self.palette_tasks)),
        )
        self.eval_draws = {
            name: PaletteDraw(
                _palette_rule(name, "model.options.eval_rules", eval_rule_options.get(name)),
                self.palette_tasks,
                seed,
            )
            for name in eval_rules
        }

    def evaluation_plan(self) -> EvaluationPlan:
        """Rule S (one pass per task, the palette filled with its id), then one pass per
        evaluation rule scoring every task on the pixels the rule gives it."""
        return [
            *(
                EvaluationPass((task,), {PALETTE: UniformCondition(self.palette_tasks.index(task))})
                for task in self.task_channels
            ),
            *(
                EvaluationPass(tuple(self.task_channels), {PALETTE: draw}, rule=name)
                for name, draw in self.eval_draws.items()
            ),
        ]


def _palette_rule(name: str, config_path: str, options: Mapping[str, Any] | None) -> Any:
    """The palette rule ``name`` with its options, errors naming ``config_path``."""
    return create_palette_rule(name, config_path, **dict(options or {}))


class CompositeTasking(PaletteArchitecture):
    """Image + Task Palette -> ``{"composite": [B, 3, H, W]}`` raw (Sec. 3.1, Fig. 2).

    ``embedding_channels`` (128) and ``code_length`` (20) size the task representation;
    ``decoder_widths`` are the decoder's widths deepest first, the full-resolution block last
    (authors' code: 512, 256, 256, 128, 64); ``seed`` seeds the evaluation rules' palettes.
    """

    def __init__(
        self,
        task_channels: dict[str, int],
        encoder: Encoder,
        train_rule: str = "R1r",
        train_rule_options: Mapping[str, Any] | None = None,
        eval_rules: Sequence[str] = ("R1r",),
        eval_rule_options: Mapping[str, Mapping[str, Any]] | None = None,
        embedding_channels: int = 128,
        code_length: int = 20,
        decoder_widths: Sequence[int] = DECODER_WIDTHS,
        seed: int = 0,
    ) -> None:
        if "all" in (train_rule, *eval_rules):
            raise ConfigError(
                "model.options: palette rule 'all' asks for every task at every pixel; a "
                "CompositeTasking network predicts one task per pixel (use S, R1r, Rrnd, ...)"
            )
        super().__init__(
            task_channels, train_rule, train_rule_options, eval_rules, eval_rule_options, seed
        )
        self.output_adapter = CompositeAdapter(PALETTE)
        self.encoder = encoder
        self.task_representation = TaskRepresentation(
            len(task_channels), embedding_channels, code_length
        )
        self.decoder = CompositionDecoder(
            self.encoder.feature_info, embedding_channels, decoder_widths
        )

    def forward(self, image: torch.Tensor, palette: torch.Tensor) -> dict[str, torch.Tensor]:
        """``image [B, 3, H, W]``, ``palette int64 [B, H, W]`` (task ids, 255 = none)."""
        if palette.shape != (image.shape[0], *image.shape[-2:]):
            raise ValueError(
                f"the palette must be [B, H, W] like the image {tuple(image.shape)}, "
                f"got {tuple(palette.shape)}"
            )
        embedding = self.task_representation.embedding_map(palette)
        return {"composite": self.decoder(image, self.encoder(image), embedding)}

    def encoder_parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def shared_parameters(self) -> list[nn.Parameter]:
        """Everything: encoder, decoder and task net serve every task."""
        return list(self.parameters())
