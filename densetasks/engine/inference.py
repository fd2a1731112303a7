"""One inference path: load a trained run, predict every task on an image, draw it.

:func:`load_run` rebuilds a run's model, tasks and evaluation transform from a checkpoint;
a :class:`Predictor` runs it on one image the way evaluation does (the architecture's
conditioning inputs and evaluation plan, its output adapter, AMP on CUDA when asked for)
and returns every task's raw output at the input size, its decoded prediction and its
picture. ``densetasks predict``, the prediction images a run writes while training and the
web page all go through here, so a conditioned or composite model predicts alike everywhere.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from densetasks.data.collate import collate_samples
from densetasks.data.palettes import create_palette_rule
from densetasks.data.transforms import Compose, resize
from densetasks.engine import build
from densetasks.engine.checkpoint import load_checkpoint
from densetasks.engine.config import RunConfig, validate_config
from densetasks.engine.passes import PlanOutputs, run_plan, to_device
from densetasks.errors import ConfigError
from densetasks.models.base import AdaptedOutputs, Architecture, EvaluationPass
from densetasks.tasks.base import Task, evaluation_inputs

AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class LoadedRun:
    """A trained run ready to predict: its model, tasks and evaluation transform."""

    run_dir: Path
    config: RunConfig
    model: Architecture
    tasks: dict[str, Task]
    transform: Compose
    step: int
    device: torch.device


def load_run(run_dir: str | Path, device: str = "cpu", checkpoint: str = "best") -> LoadedRun:
    """The model of a run's ``checkpoint`` ("best" or "last"), its tasks and eval transform."""
    run_dir = Path(run_dir)
    payload = load_checkpoint(run_dir / "checkpoints" / f"{checkpoint}.pt")
    config = validate_config(payload["config"], source=f"{run_dir} checkpoint {checkpoint}")
    tasks = build.rebuild_tasks(payload["task_options"])
    torch_device = build.resolve_device(device)
    model = build.build_model(config, tasks)
    model.load_state_dict(payload["model"])
    model.to(torch_device).eval()
    return LoadedRun(
        run_dir=run_dir,
        config=config,
        model=model,
        tasks=tasks,
        transform=build.eval_transform(config, tasks, model),
        step=int(payload["step"]),
        device=torch_device,
    )


@dataclass
class Prediction:
    """Every task's prediction for one image, at the image's size.

    ``outputs``: raw outputs ``[C_t, H, W]``; ``predictions``: each task's evaluation input
    (decoded, combined with its context tasks'); ``masks``: bool ``[H, W]`` where a task was
    asked for (conditioned models); ``rules``: the same per palette rule, when the model's
    evaluation plan has rules.
    """

    image: torch.Tensor
    outputs: dict[str, torch.Tensor]
    predictions: dict[str, Any]
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    rules: dict[str, "Prediction"] = field(default_factory=dict)

    def pictures(self, tasks: Mapping[str, Task]) -> dict[str, np.ndarray]:
        """``uint8 [H, W, 3]`` per task, drawn by the task (black outside its mask)."""
        pictures = {}
        for name, task in tasks.items():
            picture = task.visualize(self.predictions[name])
            if name in self.masks:
                picture = picture * self.masks[name].cpu().numpy()[..., None]
            pictures[name] = picture.astype(np.uint8)
        return pictures

    def composite_picture(self, tasks: Mapping[str, Task]) -> np.ndarray | None:
        """The composite output as the palette asks for it: every pixel drawn by the task its
        palette names (black where no task is asked); ``None`` for an unconditioned model."""
        if not self.masks:
            return None
        pictures = self.pictures(tasks)
        canvas = np.zeros_like(next(iter(pictures.values())))
        for name, mask in self.masks.items():
            canvas[mask.cpu().numpy()] = pictures[name][mask.cpu().numpy()]
        return canvas


class Predictor:
    """Predicts every task of a trained run on single images.

    ``amp`` ("none", "bf16", "fp16") applies on CUDA only, as in training. Images are float
    ``[3, H, W]`` in ``[0, 1]`` (:func:`densetasks.data.io.read_image`); ``conditions``
    (a palette ``[H, W]``, ...) replace the evaluation plan by one pass with them.
    """

    def __init__(self, run: LoadedRun, amp: str = "none") -> None:
        if amp not in AMP_DTYPES:
            raise ConfigError(f"amp must be one of {sorted(AMP_DTYPES)}, got {amp!r}")
        self.run = run
        self.amp_dtype = AMP_DTYPES[amp] if run.device.type == "cuda" else None

    @classmethod
    def from_run_dir(
        cls,
        run_dir: str | Path,
        device: str = "cpu",
        checkpoint: str = "best",
        amp: str = "none",
    ) -> "Predictor":
        return cls(load_run(run_dir, device=device, checkpoint=checkpoint), amp=amp)

    @property
    def tasks(self) -> dict[str, Task]:
        return self.run.tasks

    def __call__(
        self,
        image: torch.Tensor,
        conditions: Mapping[str, torch.Tensor] | None = None,
        size: tuple[int, int] | None = None,
        rules: bool = True,
        stack: bool = False,
    ) -> Prediction:
        """Predict every task on ``image`` (optionally resized to ``size`` first).

        ``rules=False`` leaves out the evaluation plan's palette-rule passes (one forward
        each; :attr:`Prediction.rules` is then empty) for a caller that shows the tasks only;
        ``stack=True`` runs the other passes as one forward (``run_plan``'s ``stack``).
        """
        sample: dict[str, Any] = {"image": image, **(conditions or {}), "meta": {"name": ""}}
        if size is not None:
            sample = resize(sample, size, build.run_label_kinds(self.tasks, self.run.model))
        batch = self.batch([sample])
        plan = self._plan(conditions, rules)
        outputs = self.run_batch(batch, plan, stack)
        shown = sample["image"]
        return self._prediction(shown, outputs.main, outputs.by_rule)

    def batch(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Samples through the run's evaluation transform, collated, on the run's device."""
        kinds = build.run_label_kinds(self.tasks, self.run.model)
        transformed = [self.run.transform(sample) for sample in samples]
        return to_device(collate_samples(transformed, kinds), self.run.device)

    def run_batch(
        self,
        batch: Mapping[str, Any],
        plan: list[EvaluationPass] | None = None,
        stack: bool = False,
    ) -> PlanOutputs:
        """Raw outputs of a transformed batch, following the model's evaluation plan."""
        plan = self.run.model.evaluation_plan() if plan is None else plan
        return run_plan(
            self.run.model, self.tasks, batch, plan, self.run.device, self.amp_dtype, stack
        )

    def rule_palette(
        self, image: torch.Tensor, rule: str, seed: int = 0, **options: Any
    ) -> torch.Tensor:
        """The Task Palette ``[H, W]`` that palette rule ``rule`` (``S``, ``R1r``, ``Rrnd``,
        ``file``, ...; :mod:`densetasks.data.palettes`) draws for ``image`` with ``seed``, in
        the run's task order. Semantic rules (``R2``, ``R3``) need a class map and fail here
        with an error naming it."""
        palette_rule = create_palette_rule(rule, config_path=f"rule {rule}", **options)
        generator = torch.Generator().manual_seed(seed)
        return palette_rule({"image": image[None]}, list(self.tasks), generator)[0]

    def _plan(
        self, conditions: Mapping[str, torch.Tensor] | None, rules: bool
    ) -> list[EvaluationPass]:
        """With user conditions: one pass with them (from the batch) scoring every task;
        else the model's evaluation plan, without its rule passes unless ``rules``."""
        if conditions:
            return [EvaluationPass(tuple(self.tasks))]
        plan = self.run.model.evaluation_plan()
        return plan if rules else [each for each in plan if each.rule is None]

    def _prediction(
        self,
        image: torch.Tensor,
        adapted: AdaptedOutputs,
        by_rule: Mapping[str, AdaptedOutputs] | None = None,
    ) -> Prediction:
        size = tuple(image.shape[-2:])
        outputs = {
            name: task.resize_output(adapted.outputs[name], size)
            for name, task in self.tasks.items()
        }
        predictions = evaluation_inputs(self.tasks, outputs)
        masks = {name: _resize_mask(mask, size)[0].cpu() for name, mask in adapted.masks.items()}
        return Prediction(
            image=image,
            outputs={name: output[0].cpu() for name, output in outputs.items()},
            predictions={name: value[0].cpu() for name, value in predictions.items()},
            masks=masks,
            rules={
                rule: self._prediction(image, rule_outputs)
                for rule, rule_outputs in (by_rule or {}).items()
            },
        )


def _resize_mask(mask: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """Nearest resize of a bool ``[B, h, w]`` mask to ``size``."""
    if tuple(mask.shape[-2:]) == size:
        return mask
    resized = torch.nn.functional.interpolate(mask[:, None].float(), size=size, mode="nearest")
    return resized[:, 0].bool()
