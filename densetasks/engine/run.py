"""Top level: ``train`` a run directory, ``evaluate_run`` its best checkpoint, ``load_run``.

Run directory layout (``docs/engine.md``)::

    RUN_DIR/config.yaml                 the resolved config
    RUN_DIR/checkpoints/last.pt         every ``checkpoint_every`` steps, at the end and on a stop
    RUN_DIR/checkpoints/last.prev.pt    the ``last.pt`` before, kept in case that one is damaged
    RUN_DIR/checkpoints/best.pt         the best validation result so far (eval.best)
    RUN_DIR/checkpoints/*.pt.json       each checkpoint's size and SHA-256 (checkpoint.py)
    RUN_DIR/metrics_<split>.json        the best checkpoint on val and test
    RUN_DIR/metrics_target_<split>.json the same on the target's val and test (``data.target``)
    RUN_DIR/events.jsonl                train and eval events, one JSON object per line
    RUN_DIR/tensorboard/                TensorBoard scalars
    RUN_DIR/images/step_<n>/            input, label and prediction pictures per evaluation

A run survives what clusters do to it (``docs/reliability.md``): a stop signal ends it after
the current step with ``last.pt`` written (:mod:`~densetasks.engine.signals`); ``resume``
continues it exactly, and starts afresh when there is no checkpoint yet, so a scheduler can
always pass it; an evaluation that cannot read a file saves the run as it was before that
evaluation, which a resumed run then repeats.
"""

import itertools
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from densetasks.data.dataset import DenseDataset
from densetasks.data.io import write_json
from densetasks.data.unlabelled import UnlabelledImages
from densetasks.engine import build
from densetasks.engine.adversarial import AdaptationStep, DomainAdversary
from densetasks.engine.checkpoint import (
    capture_rng_states,
    has_checkpoint,
    load_checkpoint,
    load_matching_weights,
    restore_rng_states,
    save_checkpoint,
)
from densetasks.engine.config import RunConfig, save_config, validate_config
from densetasks.engine.distributed import (
    ProcessInfo,
    barrier,
    cleanup_distributed,
    max_over_processes,
    setup_distributed,
)
from densetasks.engine.inference import load_run
from densetasks.engine.logs import RunLog, write_prediction_images
from densetasks.engine.loop import TARGET_IMAGES, Evaluation, StepParts, evaluate, train_step
from densetasks.engine.optim import LearningRateSchedule, build_optimizer
from densetasks.engine.passes import Batch, run_plan, to_device
from densetasks.engine.selection import best_reason, primary_values, selection_score
from densetasks.engine.signals import StopRequest, TrainingStopped, stop_signals
from densetasks.errors import ConfigError, DataError, DiskFullError, own_message
from densetasks.models import encoders_of
from densetasks.tasks.base import Task, evaluation_inputs


@dataclass
class Selection:
    """Best-checkpoint bookkeeping (``docs/engine.md``, "best checkpoint")."""

    baseline: dict[str, float] | None = None
    best_score: float | None = None
    best_step: int = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "best_score": self.best_score,
            "best_step": self.best_step,
        }


def seed_everything(seed: int) -> None:
    """Python, NumPy and torch (CPU and every GPU) random states from one seed."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def metrics_payload(
    step: int, split: str, evaluation: Evaluation, tasks: Mapping[str, Task]
) -> dict[str, Any]:
    """The content of ``metrics_<split>.json`` and of eval events.

    ``by_rule`` (only when the model's evaluation plan has palette rules) holds the same
    metrics per rule.
    """
    metrics = evaluation.metrics
    values = {name: metric.compute() for name, metric in metrics.items()}
    payload = {
        "step": step,
        "split": split,
        "metrics": values,
        "higher_is_better": {
            name: {key: bool(type(metrics[name]).higher_is_better[key]) for key in values[name]}
            for name in values
        },
        "primary": {name: task.primary_metric for name, task in tasks.items()},
        "units": {
            name: {
                key: unit for key, unit in type(metrics[name]).units.items() if key in values[name]
            }
            for name in values
        },
    }
    if evaluation.by_rule:
        payload["by_rule"] = {
            rule: {name: metric.compute() for name, metric in rule_metrics.items()}
            for rule, rule_metrics in evaluation.by_rule.items()
        }
    return payload


def _differing_keys(left: Any, right: Any, prefix: str = "") -> list[str]:
    if isinstance(left, dict) and isinstance(right, dict):
        keys = sorted(set(left) | set(right))
        return [
            found
            for key in keys
            for found in _differing_keys(left.get(key), right.get(key), f"{prefix}{key}.")
        ]
    return [] if left == right else [prefix.rstrip(".")]


SplitOpener = Callable[[RunConfig, str], DenseDataset]
"""Opens a split of a run's dataset without transform (``build.open_dataset`` or
``build.open_target_dataset``)."""


class _Trainer:
    """State of one training process; :func:`train` is its only user."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        resume: bool,
        device: torch.device,
        process: ProcessInfo,
        stop: StopRequest,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.checkpoints = run_dir / "checkpoints"
        self.last = self.checkpoints / "last.pt"
        self.device = device
        self.process = process
        self.stop = stop
        resuming = self._check_run_dir(resume)
        seed_everything(config.seed)

        train_set = build.open_training_dataset(config)
        self.tasks = build.build_tasks(config, train_set)
        self.model = build.build_model(config, self.tasks)
        init_report = self._initialise(config.model.init_from, resuming)
        self.model = self.model.to(self.device)
        self.kinds = build.run_label_kinds(self.tasks, self.model)
        self.train_set = build.attach_transform(
            config, train_set, self.tasks, self.model, train=True
        )
        val_set = build.open_dataset(config, config.data.val_split)
        self.val_set = build.attach_transform(config, val_set, self.tasks, self.model, train=False)
        if config.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.balancer = build.build_balancer(config, self.tasks, self.model).to(self.device)
        self.adversary, self.target_images = self._adaptation(train_set)
        self.optimizer = build_optimizer(
            config.train,
            self.model.encoder_parameters(),
            self.model.decoder_parameters(),
            self.balancer.parameters(),
            encoders=encoders_of(self.model),
        )
        self.schedule = LearningRateSchedule(self.optimizer, config.train)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )
        self.selection = Selection()
        self.step = 0
        self.saved_step = -1
        """The step ``last.pt`` holds (-1: none, or one saved before its step's evaluation)."""
        self.pending_validation = False
        """Resumed from a checkpoint saved when its step's evaluation failed: repeat it."""
        payload = load_checkpoint(self.last) if resuming else None
        if payload is not None:
            self._restore(payload)
        if self.process.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.run_dir / "config.yaml")
        self.log = RunLog(
            run_dir,
            config.train.steps,
            self.step,
            enabled=self.process.is_main,
            events_bytes=payload.get("events_bytes") if payload is not None else 0,
        )
        if payload is not None:
            self.log.message(f"resuming {run_dir} at step {self.step}")
        elif resume:
            self.log.message(f"--resume: {self.checkpoints} holds no checkpoint yet; starting")
        if init_report:
            self.log.message(init_report)
        balancer_note = build.single_task_balancer_note(config, self.tasks)
        if balancer_note:
            self.log.message(balancer_note)
        if config.train.amp != "none" and self.amp_dtype is None:
            self.log.message(f"train.amp={config.train.amp}: mixed precision is off on the CPU")

    def _adaptation(
        self, train_set: DenseDataset
    ) -> tuple[DomainAdversary | None, UnlabelledImages | None]:
        """With ``data.target``: check that the target labels every task (its val split is
        scored at the end); with ``adaptation.enabled`` also the discriminators and the
        target's training images (labels removed), with the training transform."""
        config = self.config
        if config.data.target is None:
            return None, None
        target_val = build.open_target_dataset(config, config.data.target.val_split)
        build.check_target_labels(config, self.tasks, train_set, target_val)
        if not config.adaptation.enabled:
            return None, None
        if self.process.distributed:
            raise ConfigError(
                "adaptation.enabled: domain adaptation runs in one process (not under torchrun)"
            )
        adversary = build.build_adversary(config, self.tasks, self.model).to(self.device)
        images = build.open_target_training_images(config)
        build.attach_transform(config, images, self.tasks, self.model, train=True)
        return adversary, images

    def _initialise(self, init_from: str | None, resuming: bool) -> str | None:
        """Weights from ``model.init_from`` (a fresh run only: a resumed one has its own)."""
        if init_from is None or resuming:
            return None
        loaded, skipped = load_matching_weights(self.model, Path(init_from))
        return (
            f"model.init_from {init_from}: loaded {len(loaded)} weights, kept "
            f"{len(skipped)} of this model's own (first: {', '.join(skipped[:5]) or 'none'})"
        )

    def _check_run_dir(self, resume: bool) -> bool:
        """Whether the run resumes from a checkpoint: with ``resume`` when there is one (else
        it starts afresh); without, a run directory with a checkpoint is an error."""
        found = has_checkpoint(self.last)
        if not resume and found:
            raise ConfigError(
                f"{self.run_dir} already holds a run; pass --resume to continue it or --out "
                "to start a new one"
            )
        return resume and found

    def _amp_dtype(self) -> torch.dtype | None:
        if self.config.train.amp == "none" or self.device.type != "cuda":
            return None
        return torch.bfloat16 if self.config.train.amp == "bf16" else torch.float16

    def _restore(self, payload: dict[str, Any]) -> None:
        saved = validate_config(payload["config"], source="the checkpoint's config").to_dict()
        changed = _differing_keys(saved, self.config.to_dict())
        if changed:
            raise ConfigError(
                f"cannot resume with a different config; changed keys: {', '.join(changed)}"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.schedule.load_state_dict(payload["schedule"])
        self.balancer.load_state_dict(payload["balancer"])
        if self.adversary is not None:
            self.adversary.load_state_dict_with_optimizer(payload["adversary"])
        self.scaler.load_state_dict(payload["scaler"])
        self.selection = Selection(**payload["selection"])
        self.step = int(payload["step"])
        self.pending_validation = bool(payload.get("pending_validation", False))
        self.saved_step = -1 if self.pending_validation else self.step
        restore_rng_states(payload["rng"])

    def _payload(self, pending_validation: bool = False) -> dict[str, Any]:
        """Everything a resumed run needs; ``pending_validation``: taken before this step's
        evaluation, which the resumed run then does first."""
        return {
            "step": self.step,
            "pending_validation": pending_validation,
            "events_bytes": self.log.events_bytes(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "balancer": self.balancer.state_dict(),
            **(
                {"adversary": self.adversary.state_dict_with_optimizer()}
                if self.adversary is not None
                else {}
            ),
            "scaler": self.scaler.state_dict(),
            "selection": self.selection.state_dict(),
            "rng": capture_rng_states(),
            "config": self.config.to_dict(),
            "task_options": {name: task.options() for name, task in self.tasks.items()},
        }

    def _save(self, name: str) -> None:
        """``last.pt`` (the previous one kept) or ``best.pt``, written by the main process."""
        if self.process.is_main:
            self.log.flush()
            save_checkpoint(
                self._payload(), self.checkpoints / f"{name}.pt", keep_previous=name == "last"
            )
        if name == "last":
            self.saved_step = self.step

    def run(self) -> None:
        """Train from ``self.step`` to the end, then score the best checkpoint; a full disk
        says that the run continues from its last checkpoint once there is room."""
        try:
            self._run()
        except DiskFullError as error:
            raise DiskFullError(
                f"{error}; once there is room, continue from the last checkpoint with --resume"
            ) from None

    def _run(self) -> None:
        config = self.config
        called = self.model
        if self.process.distributed:
            device_ids = [self.device.index] if self.device.type == "cuda" else None
            called = DistributedDataParallel(self.model, device_ids=device_ids)
        parts = StepParts(
            model=called,
            tasks=self.tasks,
            balancer=self.balancer,
            optimizer=self.optimizer,
            schedule=self.schedule,
            scaler=self.scaler,
            shared_parameters=self.model.shared_parameters(),
            device=self.device,
            amp_dtype=self.amp_dtype,
            channels_last=config.train.channels_last,
            clip_grad_norm=config.train.clip_grad_norm,
            process=self.process,
            seed=config.seed,
            strategy=None if self.adversary is None else AdaptationStep(self.adversary),
        )
        val_loader = build.eval_loader(config, self.val_set, self.kinds, self.process)
        images_per_step = config.data.batch_size * self.process.world_size
        window_start, window_steps = time.perf_counter(), 0
        loader = build.train_loader(config, self.train_set, self.kinds, self.step, self.process)
        if self.pending_validation:
            self._end_step(val_loader)
        for batch, target in zip(loader, self._target_batches(), strict=False):
            step_start = time.perf_counter()
            if target is not None:
                batch[TARGET_IMAGES] = target["image"]
            batch = to_device(batch, self.device, config.train.channels_last)
            result = train_step(parts, batch, self.step)
            self.step += 1
            window_steps += 1
            self.log.advance(result.total, images_per_step / (time.perf_counter() - step_start))
            if self.step % config.train.log_every == 0:
                speed = images_per_step * window_steps / (time.perf_counter() - window_start)
                self.log.train(
                    self.step,
                    {**result.losses, **result.adaptation},
                    result.total,
                    self.balancer.weights(),
                    self.schedule.learning_rates(),
                    speed,
                )
            self._end_step(val_loader)
            if self.step % config.train.log_every == 0:
                window_start, window_steps = time.perf_counter(), 0
            self._stop_if_asked()
        barrier(self.process)
        self._final_evaluations(val_loader)

    def _end_step(self, val_loader) -> None:
        """The evaluation and the checkpoint due after ``self.step``."""
        train = self.config.train
        last_step = self.step == train.steps
        if self.step % train.eval_every == 0 or last_step:
            self._validate_keeping_the_run(val_loader)
        if self.step % train.checkpoint_every == 0 or last_step:
            self._save("last")

    def _stop_if_asked(self) -> None:
        """After a step: if any process received a stop signal, every process stops here,
        with ``last.pt`` holding this step."""
        signum = max_over_processes(self.stop.signum, self.process)
        if not signum:
            return
        if self.saved_step != self.step:
            self._save("last")
        barrier(self.process)
        raise TrainingStopped(signum, self.step, self.last)

    def _validate_keeping_the_run(self, val_loader) -> None:
        """:meth:`_validate`; when it cannot read a file, ``last.pt`` is first written as
        the run was before this evaluation (which a resumed run repeats), so no step is
        lost to the bad file."""
        before = self._payload(pending_validation=True) if self.process.is_main else None
        try:
            self._validate(val_loader)
        except DataError as error:
            if before is not None:
                self.log.flush()
                save_checkpoint(before, self.last, keep_previous=True)
            raise DataError(
                f"evaluation at step {self.step}: {own_message(error)}; the run is saved as it "
                "was before this evaluation: fix the file and continue with --resume"
            ) from None

    def _target_batches(self) -> Iterator[Batch | None]:
        """The target images of steps ``self.step ..`` (adaptation), else ``None`` forever."""
        if self.target_images is None:
            return itertools.repeat(None)
        seed = self.config.seed + build.TARGET_SEED_OFFSET
        return iter(
            build.train_loader(
                self.config, self.target_images, self.kinds, self.step, self.process, seed
            )
        )

    def _validate(self, val_loader) -> None:
        evaluation = evaluate(
            self.model,
            self.tasks,
            val_loader,
            self.device,
            self.amp_dtype,
            self.config.train.channels_last,
            self.process,
        )
        payload = metrics_payload(self.step, self.config.data.val_split, evaluation, self.tasks)
        self.log.evaluation("val", self.step, payload["metrics"])
        if self.selection.baseline is None:
            self.selection.baseline = primary_values(payload["metrics"], payload["primary"])
        score = selection_score(
            self.config.eval.best,
            payload["metrics"],
            payload["higher_is_better"],
            payload["primary"],
            self.selection.baseline,
        )
        self.schedule.observe(score)
        first = self.selection.best_score is None
        if first or score > self.selection.best_score:
            self.selection.best_score, self.selection.best_step = score, self.step
            self._save("best")
            reason = best_reason(self.config.eval.best, score, payload["metrics"], first)
            self.log.message(f"step {self.step}: new best checkpoint ({reason})")
        if self.process.is_main and self._images_due():
            self._write_images(val_loader)

    def _images_due(self) -> bool:
        every = self.config.train.images_every
        return every is None or (every > 0 and self.step % every == 0)

    def _write_images(self, val_loader) -> None:
        count = self.config.eval.num_images
        if count == 0:
            return
        batch = to_device(next(iter(val_loader)), self.device, self.config.train.channels_last)
        plan = self.model.evaluation_plan()
        outputs = run_plan(self.model, self.tasks, batch, plan, self.device, self.amp_dtype)
        predictions = evaluation_inputs(self.tasks, outputs.main.outputs)
        folder = self.run_dir / "images" / f"step_{self.step}"
        write_prediction_images(folder, self.tasks, batch, predictions, count)

    def _final_evaluations(self, val_loader) -> None:
        """Best checkpoint on val and (if the dataset has one) test -> ``metrics_<split>.json``;
        with ``data.target`` also on the target's val and test -> ``metrics_target_<split>.json``
        (``densetasks report --split target_test`` compares runs on the target)."""
        best = load_checkpoint(self.checkpoints / "best.pt")
        self.model.load_state_dict(best["model"])
        splits = {"val": (self.config.data.val_split, val_loader)}
        for key, (split, open_split) in scored_splits(self.config).items():
            if key != "val":
                splits.update(self._final_loader(key, split, open_split))
        for split, (split_name, loader) in splits.items():
            self._stop_if_asked()
            evaluation = evaluate(
                self.model,
                self.tasks,
                loader,
                self.device,
                self.amp_dtype,
                self.config.train.channels_last,
                self.process,
            )
            payload = metrics_payload(int(best["step"]), split_name, evaluation, self.tasks)
            if self.process.is_main:
                write_json(self.run_dir / f"metrics_{split}.json", payload)
            if split != "val":
                self.log.evaluation(split, int(best["step"]), payload["metrics"])

    def _final_loader(
        self, key: str, split: str | None, open_split: SplitOpener
    ) -> dict[str, tuple[str, Any]]:
        """``{key: (split, loader)}`` for a final evaluation; empty without the split or when
        the dataset raises a data error for it (logged)."""
        if split is None:
            return {}
        try:
            dataset = open_split(self.config, split)
        except DataError as error:
            self.log.message(f"no {key} evaluation: {error}")
            return {}
        build.attach_transform(self.config, dataset, self.tasks, self.model, train=False)
        return {key: (split, build.eval_loader(self.config, dataset, self.kinds, self.process))}


def train(config: RunConfig, out_dir: str | Path, resume: bool = False) -> Path:
    """Train (or, with ``resume``, continue) the run in ``out_dir``; returns the run dir.

    Under ``torchrun`` every process calls this; only rank 0 writes files. SIGTERM, SIGINT
    and SIGUSR1 stop the run after the current step with ``last.pt`` written, raising
    :class:`~densetasks.engine.signals.TrainingStopped` (their previous handlers are back
    when this returns or raises).
    """
    device = build.resolve_device(config.train.device)
    process = setup_distributed(device.type)
    if device.type == "cuda":
        device = torch.device("cuda", process.local_rank)
        torch.cuda.set_device(device)
    try:
        with stop_signals(announce=process.is_main) as stop:
            trainer = _Trainer(config, Path(out_dir), resume, device, process, stop)
            try:
                trainer.run()
            finally:
                trainer.log.close()
    finally:
        cleanup_distributed(process)
    return Path(out_dir)


def scored_splits(config: RunConfig) -> dict[str, tuple[str | None, SplitOpener]]:
    """The splits a run is scored on, ``{key: (split name or None, opener)}``: ``val`` and
    ``test`` of ``data``, with ``data.target`` also ``target_val`` and ``target_test`` of the
    target; ``key`` names ``RUN_DIR/metrics_<key>.json`` (training and ``evaluate_run``)."""
    data = config.data
    splits = {
        "val": (data.val_split, build.open_dataset),
        "test": (data.test_split, build.open_dataset),
    }
    if data.target is not None:
        splits["target_val"] = (data.target.val_split, build.open_target_dataset)
        splits["target_test"] = (data.target.test_split, build.open_target_dataset)
    return splits


def evaluate_run(
    run_dir: str | Path, split: str = "val", device: str = "cpu", checkpoint: str = "best"
) -> dict[str, Any]:
    """Metrics of a run's checkpoint on ``split`` (a key of :func:`scored_splits`: "val",
    "test", or with ``data.target`` "target_val", "target_test").

    Also writes them to ``RUN_DIR/metrics_<split>.json``, the file training writes.
    """
    loaded = load_run(run_dir, device=device, checkpoint=checkpoint)
    splits = scored_splits(loaded.config)
    if split.startswith("target_") and loaded.config.data.target is None:
        raise ConfigError(
            f"split {split!r}: this run has no data.target (no target dataset in "
            f"{Path(run_dir) / 'config.yaml'})"
        )
    if split not in splits or splits[split][0] is None:
        known = [name for name, (value, _) in splits.items() if value]
        raise ConfigError(f"split {split!r}: this run has {known}")
    split_name, open_split = splits[split]
    dataset = open_split(loaded.config, split_name)
    dataset.transform = loaded.transform
    kinds = build.run_label_kinds(loaded.tasks, loaded.model)
    loader = build.eval_loader(loaded.config, dataset, kinds, ProcessInfo())
    evaluation = evaluate(loaded.model, loaded.tasks, loader, loaded.device)
    payload = metrics_payload(loaded.step, split_name, evaluation, loaded.tasks)
    write_json(loaded.run_dir / f"metrics_{split}.json", payload)
    return payload
