"""The typed run configuration: one YAML file validated into strict pydantic models.

Every section forbids unknown keys, so a typo fails before anything starts, with the key's
dotted path in the message. ``--set a.b=value`` overrides are applied to the raw mapping
before validation (values are parsed as YAML scalars or lists). The meaning of every key is
documented in ``docs/config.md``.
"""

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from densetasks.data.io import write_text
from densetasks.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetSplits(_Section):
    """A registered dataset, its options and the names of its three splits."""

    dataset: str = "synthetic"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str | None = "test"


class TargetDataConfig(DatasetSplits):
    """The target domain of a domain-adaptation run (``data.target``): its training images
    (never its labels) are used by ``adaptation``, its labelled ``val_split`` /
    ``test_split`` score the best checkpoint at the end (``metrics_target_<split>.json``)."""


class DataConfig(DatasetSplits):
    crop_size: tuple[int, int] | None = None
    eval_size: tuple[int, int] | None = None
    scale_range: tuple[float, float] | None = (1.0, 1.0)
    flip: bool = True
    color_jitter: float = Field(0.0, ge=0.0)
    batch_size: int = Field(8, ge=1)
    workers: int = Field(0, ge=0)
    target: TargetDataConfig | None = None


MOVED_MODEL_KEYS = ("bottleneck", "head", "bottleneck_options", "head_options")
"""Keys that were common to every architecture before version 0.2 and are now options of the
architectures that have them (``hard_sharing``, ``single_task``)."""


class ModelConfig(_Section):
    """``architecture`` and what every architecture has (an encoder); the rest of an
    architecture's keyword arguments go in ``options``, checked against its signature."""

    architecture: str = "hard_sharing"
    encoder: str = "resnet18"
    pretrained: bool | str = False
    output_stride: int = 16
    encoder_options: dict[str, Any] = Field(default_factory=dict)
    init_from: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _move_architecture_keys(cls, raw: Any) -> Any:
        """Configs written before 0.2 set ``model.bottleneck`` / ``model.head``: move them
        into ``model.options`` (an error if ``options`` sets them too)."""
        if not isinstance(raw, dict) or not any(key in raw for key in MOVED_MODEL_KEYS):
            return raw
        raw = dict(raw)
        options = dict(raw.get("options") or {})
        for key in MOVED_MODEL_KEYS:
            if key not in raw:
                continue
            if key in options:
                raise ValueError(
                    f"{key} is set both as model.{key} and as model.options.{key}; "
                    f"keep model.options.{key} only"
                )
            options[key] = raw.pop(key)
        raw["options"] = options
        return raw

    @model_validator(mode="after")
    def _pretrained_file_is_named(self) -> "ModelConfig":
        if isinstance(self.pretrained, str) and not self.pretrained.strip():
            raise ValueError("pretrained must be true, false or the path of a weights file")
        return self


class BalancerConfig(_Section):
    name: str = "fixed"
    weights: dict[str, float] = Field(default_factory=dict)
    options: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(_Section):
    steps: int = Field(1000, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(1e-2, gt=0.0)
    encoder_lr: float | None = Field(None, gt=0.0)
    momentum: float = Field(0.9, ge=0.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1e-4, ge=0.0)
    schedule: Literal["poly", "step", "multistep", "plateau", "constant"] = "poly"
    power: float = 0.9
    step_size: int = Field(1000, ge=1)
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0.0)
    patience: int = Field(3, ge=0)
    warmup_steps: int = Field(0, ge=0)
    layer_decay: float | None = Field(None, gt=0.0, le=1.0)
    selective_decay: bool = False
    grad_checkpointing: bool = False
    clip_grad_norm: float | None = Field(None, gt=0.0)
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: bool = False
    eval_every: int = Field(500, ge=1)
    log_every: int = Field(20, ge=1)
    checkpoint_every: int = Field(500, ge=1)
    images_every: int | None = Field(None, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> "TrainConfig":
        if self.optimizer == "sgd" and self.nesterov and self.momentum <= 0:
            raise ValueError("nesterov needs momentum > 0")
        return self


class EvalConfig(_Section):
    batch_size: int | None = Field(None, ge=1)
    best: str = "mean_relative"
    num_images: int = Field(4, ge=0)

    @model_validator(mode="after")
    def _best_is_known(self) -> "EvalConfig":
        if self.best != "mean_relative" and self.best.count(".") != 1:
            raise ValueError("best must be 'mean_relative' or '<task>.<metric>'")
        return self


class AdaptationConfig(_Section):
    """Multi-task unsupervised domain adaptation (Lopes et al., WACV 2023, Sec. 4.5, Supp.
    B.3): per-task patch discriminators on the outputs, trained against the network on mixed
    source / target batches. Defaults are the paper's (λ_adv) and its code's (discriminator
    optimiser and schedule)."""

    enabled: bool = False
    lambda_adv: float = Field(5e-3, gt=0.0)
    discriminator_lr: float = Field(1e-4, gt=0.0)
    discriminator_betas: tuple[float, float] = (0.9, 0.99)
    discriminator_power: float = Field(0.9, ge=0.0)
    discriminator_width: int = Field(64, ge=1)


class RunConfig(_Section):
    seed: int = 0
    tasks: dict[str, dict[str, Any]]
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    balancer: BalancerConfig = Field(default_factory=BalancerConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    adaptation: AdaptationConfig = Field(default_factory=AdaptationConfig)

    @model_validator(mode="after")
    def _adaptation_needs_a_target(self) -> "RunConfig":
        if self.adaptation.enabled and self.data.target is None:
            raise ValueError("adaptation.enabled needs data.target (the unlabelled target dataset)")
        return self

    @model_validator(mode="after")
    def _names_refer_to_tasks(self) -> "RunConfig":
        if not self.tasks:
            raise ValueError("at least one task is needed")
        for name in self.balancer.weights:
            if name not in self.tasks:
                raise ValueError(
                    f"balancer.weights.{name}: not one of the tasks {list(self.tasks)}"
                )
        if self.eval.best != "mean_relative" and self.eval.best.split(".")[0] not in self.tasks:
            raise ValueError(f"eval.best {self.eval.best!r} names no task of {list(self.tasks)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-able data (tuples become lists), for run dirs and checkpoints."""
        return self.model_dump(mode="json")


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-3", "tasks.depth={}"]`` -> ``{"train.lr": 0.001, ...}`` (YAML values)."""
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, separator, text = item.partition("=")
        if not separator or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        try:
            parsed[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as error:
            raise ConfigError(f"override {key}: value {text!r} is not YAML: {error}") from None
    return parsed


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set every dotted key of ``overrides`` in a copy of ``raw``; creates missing mappings."""
    result = copy.deepcopy(raw)
    for dotted, value in overrides.items():
        node = result
        parts = dotted.split(".")
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                path = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {dotted}: {path} is not a mapping")
            node = child
        node[parts[-1]] = value
    return result


def validate_config(raw: Any, source: str = "config") -> RunConfig:
    """Validate a raw mapping; errors name every bad key by its dotted path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as error:
        problems = []
        for item in error.errors():
            path = ".".join(str(part) for part in item["loc"]) or "(top level)"
            problems.append(f"{path}: {item['msg']}")
        raise ConfigError(f"{source}: " + "; ".join(problems)) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> RunConfig:
    """Read a YAML config file, apply ``--set`` overrides, validate."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ConfigError(f"cannot read config {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    raw = apply_overrides(raw, parse_overrides(overrides or []))
    return validate_config(raw, source=str(path))


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML (what ``load_config`` reads back identically),
    atomically: a resumed run writes it again."""
    write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
