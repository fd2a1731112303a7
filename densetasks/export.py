"""Export a trained run to ONNX, with a sidecar JSON, and check the graph against PyTorch.

:func:`export_run` writes ``model.onnx`` and ``model.onnx.json``. The graph is the run's
evaluation-mode model wrapped by :class:`ExportGraph`:

* **inputs**: ``image`` float32 ``[B, 3, H, W]``, RGB in ``[0, 1]`` — the run's ImageNet
  normalisation is *in the graph*, so a caller feeds pixels / 255 and nothing else — and
  the model's conditioning inputs (a Task Palette int64 ``[B, H, W]`` for CompositeTasking).
* **outputs**, per task in the run's order: ``<task>``, the decoded prediction
  (``Task.decode``: class ids int64, metres, unit normals, probabilities) — for a task whose
  output is defined only up to a per-image scale and shift (``ssi`` depth) there is nothing
  absolute to decode, and ``<task>`` is that output, as its metrics take it
  (``Task.metric_input``) — then ``<key>_raw`` per raw output of the network, before the
  model's output adapter (float32).
  A task whose prediction also needs other tasks' (instance grouping reads the semantic
  prediction) exports its decoded output too; the sidecar says that the rest runs in Python.

``fp16`` converts the network's weights and activations (``model.half()`` before export);
the image stays float32 and is cast after normalisation, and the output adapter and the
decoding run in float32 on the network's cast-back outputs, so every precision has the
same inputs and outputs. The graph comes from the TorchScript exporter (``dynamo=False``):
it needs neither ``onnxscript`` nor ``torch.export``-friendly models, and traces every
registered architecture as the engine runs it.

:func:`check_export` runs the graph with ONNX Runtime (CPU) and the same model eagerly in
float32 on random images and on images of the run's test split, and compares them with
:data:`TOLERANCES` (:data:`SCALE_SHIFT_TOLERANCE` for a scale-and-shift-invariant output).
"""

import importlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densetasks.data.palettes import ALL_TASKS
from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.data.transforms import Normalize, resize
from densetasks.engine import build
from densetasks.engine.inference import LoadedRun, load_run
from densetasks.errors import ConfigError, DataError, DenseTasksError
from densetasks.models import encoders_of
from densetasks.models.base import Architecture, Encoder
from densetasks.tasks.base import Task

PRECISIONS = ("fp32", "fp16")
_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
CHECKPOINTS = ("best", "last")
DEFAULT_OPSET = 17
SIDECAR_FORMAT = 1
RAW_SUFFIX = "_raw"
RAW_TOLERANCE = 1e-4
"""fp32: largest difference allowed between ONNX Runtime's and PyTorch's raw outputs, in units
of the output's scale (:func:`scaled_max_difference`)."""
RAW_MEASURE = "scaled max abs difference"


@dataclass(frozen=True)
class Tolerance:
    """How a decoded prediction of one label kind is compared: ``measure(onnx, eager)``
    must be at least (``higher_is_better``) or at most ``limit``."""

    measure: str
    limit: float
    higher_is_better: bool
    compute: Callable[[np.ndarray, np.ndarray], float]

    @property
    def limits(self) -> tuple[float, bool]:
        return self.limit, self.higher_is_better


def _agreement(onnx: np.ndarray, eager: np.ndarray) -> float:
    return float(np.mean(onnx == eager))


def _relative_difference(onnx: np.ndarray, eager: np.ndarray) -> float:
    return float(np.mean(np.abs(onnx - eager) / np.maximum(np.abs(eager), 1e-6)))


def _mean_angle_degrees(onnx: np.ndarray, eager: np.ndarray) -> float:
    """Mean angle between the unit vectors (channel axis 1); zero vectors are left out."""
    onnx, eager = onnx.astype(np.float64), eager.astype(np.float64)
    cosine = np.clip(np.sum(onnx * eager, axis=1), -1.0, 1.0)
    both = (np.linalg.norm(onnx, axis=1) > 0.5) & (np.linalg.norm(eager, axis=1) > 0.5)
    return float(np.degrees(np.arccos(cosine[both])).mean()) if both.any() else 0.0


def _mean_abs_difference(onnx: np.ndarray, eager: np.ndarray) -> float:
    return float(np.mean(np.abs(onnx - eager)))


def scale_shift_difference(onnx: np.ndarray, eager: np.ndarray) -> float:
    """Per image ``mean |onnx − eager| / mean |eager − median(eager)|``, averaged over the
    images: the difference in units of the eager output's spread, so a scale and shift of
    both leave it unchanged (the spread is MiDaS' scale normalisation, Ranftl et al., TPAMI
    2022, eq. 6). For outputs defined only up to scale and shift, where a relative
    difference of values near 0 measures nothing (docs/export.md)."""
    onnx, eager = (a.reshape(len(a), -1).astype(np.float64) for a in (onnx, eager))
    spread = np.mean(np.abs(eager - np.median(eager, axis=1, keepdims=True)), axis=1)
    difference = np.mean(np.abs(onnx - eager), axis=1)
    return float(np.mean(difference / np.maximum(spread, 1e-12))) if len(eager) else 0.0


def scaled_max_difference(onnx: np.ndarray, eager: np.ndarray) -> float:
    """``max |onnx − eager| / max(1, max |eager|)``: absolute for outputs within ±1, relative
    to the largest value beyond. Reordered float32 sums differ by a few ulp of the largest
    term: a run trained 150 steps has raw outputs above 100 and differences up to 5e-4
    (docs/export.md), which an absolute 1e-4 would call a failed export."""
    if not onnx.size:
        return 0.0
    return float(np.max(np.abs(onnx - eager)) / max(1.0, float(np.max(np.abs(eager)))))


TOLERANCES: dict[LabelKind, Tolerance] = {
    LabelKind.MASK: Tolerance("class agreement", 0.99, True, _agreement),
    LabelKind.DEPTH: Tolerance("mean relative difference", 1e-2, False, _relative_difference),
    LabelKind.NORMALS: Tolerance("mean angle (deg)", 1.0, False, _mean_angle_degrees),
    LabelKind.BINARY: Tolerance("mean abs difference", 1e-2, False, _mean_abs_difference),
    LabelKind.INSTANCE: Tolerance("mean abs difference (px)", 0.1, False, _mean_abs_difference),
}
"""Decoded predictions, by the task's label kind: classes, metres, unit normals, probabilities
and instance offsets (pixels)."""

SCALE_SHIFT_TOLERANCE = Tolerance(
    "mean abs difference / spread", 1e-2, False, scale_shift_difference
)
"""The output of a task defined only up to a per-image scale and shift (``ssi`` depth)."""


def tolerance(task: Task) -> Tolerance:
    """How the graph's ``<task>`` output is compared with PyTorch's."""
    return SCALE_SHIFT_TOLERANCE if task.scale_shift_invariant else TOLERANCES[task.label_kind]


class ExportGraph(nn.Module):
    """``[0, 1]`` RGB image (+ conditions) -> every task's decoded prediction (the raw output of
    a :attr:`~Task.scale_shift_invariant` task), then the network's raw outputs (before the
    output adapter), as a flat tuple in the order of :attr:`output_names`.

    The network runs in ``dtype``; normalisation, the output adapter and decoding in float32.
    """

    def __init__(
        self,
        model: Architecture,
        tasks: Mapping[str, Task],
        mean: Sequence[float],
        std: Sequence[float],
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.model = model.to(dtype)
        self.tasks = dict(tasks)
        self.dtype = dtype
        self.condition_names = [spec.name for spec in model.condition_inputs]
        self.raw_keys: list[str] = []
        """The keys of the network's raw outputs, as the last forward returned them."""
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32)[:, None, None])
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32)[:, None, None])
        self.eval()

    @property
    def input_names(self) -> list[str]:
        return ["image", *self.condition_names]

    @property
    def output_names(self) -> list[str]:
        """Task names (decoded), then ``<key>_raw`` per raw output (after a forward)."""
        return [*self.tasks, *(f"{key}{RAW_SUFFIX}" for key in self.raw_keys)]

    def forward(self, image: torch.Tensor, *conditions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(self.condition_names, conditions, strict=True))
        network_input = ((image - self.mean) / self.std).to(self.dtype)
        raw = {key: value.float() for key, value in self.model(network_input, **named).items()}
        self.raw_keys = list(raw)
        adapted = self.model.output_adapter(raw, self.tasks, named).outputs
        predictions = [
            task.metric_input(task.decode(adapted[name]), adapted[name])
            for name, task in self.tasks.items()
        ]
        return (*predictions, *raw.values())


def export_run(
    run_dir: str | Path,
    out: str | Path,
    precision: str = "fp32",
    size: tuple[int, int] | None = None,
    dynamic: bool = False,
    checkpoint: str = "best",
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Write the ONNX graph of a run's ``checkpoint`` to ``out`` and its sidecar to
    ``out + ".json"``; returns the sidecar.

    ``size`` (H, W) defaults to the run's ``data.eval_size``, else ``data.crop_size``;
    it must be divisible by the encoder's output stride. ``dynamic`` makes the batch size
    dynamic (else it is 1); height and width are fixed.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    onnx = _import("onnx")
    run = _load(run_dir, checkpoint)
    size = _export_size(run, size)
    for encoder in encoders_of(run.model):
        encoder.set_input_size(size)  # a ViT's position embeddings, resampled once
    graph = ExportGraph(run.model, run.tasks, *_normalisation(run), dtype=_DTYPES[precision])
    example = example_inputs(graph, 1, size, torch.Generator().manual_seed(0))
    with torch.no_grad():
        outputs = graph(*example)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    names = [*graph.input_names, *graph.output_names]
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo (see the module
        # docstring), and tracing warns about Python values taken from shapes
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        with torch.no_grad():
            torch.onnx.export(
                graph,
                example,
                str(out),
                input_names=graph.input_names,
                output_names=graph.output_names,
                opset_version=opset,
                dynamic_axes={name: {0: "batch"} for name in names} if dynamic else None,
                dynamo=False,
            )
    exported = onnx.load(str(out))
    onnx.checker.check_model(exported)
    options = {"checkpoint": checkpoint, "precision": precision, "opset": opset, "size": size}
    kept = [item.name for item in exported.graph.input]
    sidecar = _sidecar(run, graph, example, outputs, out, kept, dynamic, options)
    sidecar_path(out).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def sidecar_path(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.json``."""
    return Path(f"{onnx_path}.json")


def _load(run_dir: str | Path, checkpoint: str) -> LoadedRun:
    """The run's model on the CPU; a missing checkpoint is a :class:`DataError` naming it."""
    if checkpoint not in CHECKPOINTS:
        raise ConfigError(f"checkpoint must be one of {list(CHECKPOINTS)}, got {checkpoint!r}")
    path = Path(run_dir) / "checkpoints" / f"{checkpoint}.pt"
    if not path.is_file():
        raise DataError(f"{run_dir} has no checkpoint {checkpoint!r} ({path} does not exist)")
    return load_run(run_dir, device="cpu", checkpoint=checkpoint)


def output_stride(model: nn.Module) -> int:
    """The largest ``feature_info[-1].stride`` of the model's encoders (32 if it has none)."""
    strides = [m.feature_info[-1].stride for m in model.modules() if isinstance(m, Encoder)]
    return max(strides, default=32)


def _export_size(run: LoadedRun, size: tuple[int, int] | None) -> tuple[int, int]:
    """``size``, else the run's evaluation or crop size, checked against the output stride."""
    data = run.config.data
    source = "--size" if size else "data.eval_size" if data.eval_size else "data.crop_size"
    size = size or data.eval_size or data.crop_size
    if size is None:
        raise ConfigError(
            f"{run.run_dir} sets neither data.eval_size nor data.crop_size: give --size HxW"
        )
    stride = output_stride(run.model)
    if any(side % stride for side in size):
        raise ConfigError(
            f"{source} {size[0]}x{size[1]} is not divisible by the encoder's output stride "
            f"{stride}; use multiples of {stride}"
        )
    return (int(size[0]), int(size[1]))


def _normalisation(run: LoadedRun) -> tuple[list[float], list[float]]:
    """The mean and std of the run's evaluation transform (0 and 1 if it does not normalise)."""
    for transform in run.transform.transforms:
        if isinstance(transform, Normalize):
            return transform.mean.flatten().tolist(), transform.std.flatten().tolist()
    return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]


def example_inputs(
    graph: ExportGraph, batch: int, size: tuple[int, int], generator: torch.Generator
) -> tuple[torch.Tensor, ...]:
    """Random ``[0, 1]`` images and conditions for the graph: a conditioning input holds
    random ids among the model's tasks (a palette asking for a random task per pixel)."""
    image = torch.rand(batch, 3, *size, generator=generator)
    return (image, *(_random_ids(graph, image, generator) for _ in graph.condition_names))


def _random_ids(
    graph: ExportGraph, image: torch.Tensor, generator: torch.Generator
) -> torch.Tensor:
    shape = (image.shape[0], *image.shape[-2:])
    return torch.randint(0, len(graph.tasks), shape, generator=generator)


def _sidecar(
    run: LoadedRun,
    graph: ExportGraph,
    example: Sequence[torch.Tensor],
    outputs: Sequence[torch.Tensor],
    out: Path,
    kept: Sequence[str],
    dynamic: bool,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The sidecar: what the graph takes and returns, and where it comes from; only the
    inputs the graph kept (an architecture that ignores its palette loses it)."""
    mean, std = ([round(v, 6) for v in t.flatten().tolist()] for t in (graph.mean, graph.std))
    batch = "batch" if dynamic else 1
    inputs = [_describe("image", example[0], batch, "RGB in [0, 1] (pixels / 255)")]
    ids = list(getattr(run.model, "palette_tasks", run.tasks))
    for spec, tensor in zip(run.model.condition_inputs, example[1:], strict=True):
        if spec.name in kept:
            meaning = (
                f"{spec.kind.value}: per pixel the index of a task in 'ids' "
                f"({IGNORE_INDEX} = no task, {ALL_TASKS} = every task)"
            )
            inputs.append({**_describe(spec.name, tensor, batch, meaning), "ids": ids})
    adapter = type(run.model.output_adapter).__name__
    described = []
    for name, output in zip(graph.output_names, outputs, strict=True):
        if name in run.tasks:
            task = run.tasks[name]
            described.append({**_describe(name, output, batch, _meaning(task)), "task": name})
        else:
            key = name.removesuffix(RAW_SUFFIX)
            meaning = f"the network's raw output {key!r}, before the output adapter ({adapter})"
            described.append({**_describe(name, output, batch, meaning), "raw": key})
    return {
        "format": SIDECAR_FORMAT,
        "model": out.name,
        "run_dir": str(Path(run.run_dir).resolve()),
        "checkpoint": options["checkpoint"],
        "step": run.step,
        "architecture": run.config.model.architecture,
        "encoder": run.config.model.encoder,
        "tasks": list(run.tasks),
        "precision": options["precision"],
        "opset": options["opset"],
        "dynamic_batch": dynamic,
        "input_size": list(options["size"]),
        "normalisation": {"in_graph": True, "input_range": [0.0, 1.0], "mean": mean, "std": std},
        "inputs": inputs,
        "outputs": described,
        "python_postprocessing": {
            name: f"the graph gives its decoded output; its prediction (Task.evaluation_input, "
            f"e.g. instance grouping) combines it with {list(task.context_tasks)} in Python"
            for name, task in run.tasks.items()
            if task.context_tasks
        },
    }


def _describe(name: str, tensor: torch.Tensor, batch: int | str, meaning: str) -> dict[str, Any]:
    return {
        "name": name,
        "shape": [batch, *tensor.shape[1:]],
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "meaning": meaning,
    }


def _meaning(task: Task) -> str:
    """What the graph's ``<task>`` output holds, from the task's decoding docstring."""
    if task.scale_shift_invariant:
        return (
            "the raw output, defined only up to a per-image scale and shift (depth: a "
            "disparity): align it to a reference by least squares before use (and invert "
            "it for depth), as the task's metrics do"
        )
    return _first_sentence(type(task).decode.__doc__)


def _first_sentence(text: str | None) -> str:
    """The first sentence of a docstring on one line, without reST literal quotes."""
    return " ".join((text or "").replace("``", "").split()).split(". ")[0].rstrip(".")


@dataclass(frozen=True)
class ParityRow:
    """One comparison of an ONNX Runtime output with PyTorch's on one set of images."""

    images: str
    output: str
    measure: str
    value: float
    limit: float
    higher_is_better: bool = False

    @property
    def ok(self) -> bool:
        """Within the limit (a NaN never is)."""
        return self.value >= self.limit if self.higher_is_better else self.value <= self.limit


@dataclass
class ParityReport:
    """Every comparison of an exported graph with the eager model."""

    path: Path
    precision: str
    rows: list[ParityRow]

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    def table(self) -> str:
        """The rows as an aligned text table, failures marked ``FAIL``."""
        header = ("images", "output", "measure", "value", "limit", "")
        lines = [
            (
                row.images,
                row.output,
                row.measure,
                f"{row.value:.3g}",
                f"{'≥' if row.higher_is_better else '≤'} {row.limit:g}",
                "ok" if row.ok else "FAIL",
            )
            for row in self.rows
        ]
        widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
            for line in [header, *lines]
        )


def check_export(
    onnx_path: str | Path, random_images: int = 2, test_images: int = 4, seed: int = 0
) -> ParityReport:
    """Compare an exported graph (ONNX Runtime, CPU) with its run's model (PyTorch, float32)
    on ``random_images`` random images and up to ``test_images`` images of the run's test
    split (when the dataset can be opened), with random palettes for conditioned models.

    Raw outputs of an fp32 graph must be within :data:`RAW_TOLERANCE` of their scale; decoded
    predictions of any precision within :data:`TOLERANCES` (a scale-and-shift-invariant
    output within :data:`SCALE_SHIFT_TOLERANCE`).
    """
    onnx_path = Path(onnx_path)
    sidecar = read_sidecar(onnx_path)
    run = _load(sidecar["run_dir"], sidecar["checkpoint"])
    graph = ExportGraph(run.model, run.tasks, *_normalisation(run))
    session = _session(onnx_path)
    size = tuple(sidecar["input_size"])
    generator = torch.Generator().manual_seed(seed)
    image_sets = {"random": example_inputs(graph, random_images, size, generator)}
    split_images = _split_images(run, size, test_images)
    if split_images is not None:
        conditions = (_random_ids(graph, split_images, generator) for _ in graph.condition_names)
        image_sets["test"] = (split_images, *conditions)
    batch = None if sidecar["dynamic_batch"] else 1
    rows = []
    for label, inputs in image_sets.items():
        with torch.no_grad():
            eager = [output.numpy() for output in graph(*inputs)]
        onnx = _run_session(session, graph.input_names, inputs, batch)
        rows += _compare(label, run.tasks, graph.output_names, onnx, eager, sidecar["precision"])
    return ParityReport(onnx_path, sidecar["precision"], rows)


def read_sidecar(onnx_path: str | Path) -> dict[str, Any]:
    """The sidecar JSON of an exported graph; a missing one is a :class:`DataError`."""
    path = sidecar_path(onnx_path)
    if not path.is_file():
        raise DataError(f"{path} does not exist: export the graph with densetasks export")
    return json.loads(path.read_text())


def _import(module: str) -> Any:
    """``onnx`` or ``onnxruntime``, or a :class:`ConfigError` saying how to install them."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"export needs {module}: pip install 'densetasks[export]'") from None


def _session(onnx_path: Path) -> Any:
    onnxruntime = _import("onnxruntime")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: fp16 nodes it cannot constant-fold warn
    return onnxruntime.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])


def _split_images(run: LoadedRun, size: tuple[int, ...], count: int) -> torch.Tensor | None:
    """Up to ``count`` images of the run's test split resized to ``size``; ``None`` when the
    run has no test split or its dataset cannot be opened here."""
    split = run.config.data.test_split
    if split is None or count < 1:
        return None
    try:
        dataset = build.open_dataset(run.config, split)
    except DenseTasksError:
        return None
    images = [
        resize({"image": dataset[index]["image"]}, tuple(size), {})["image"]
        for index in range(min(count, len(dataset)))
    ]
    return torch.stack(images) if images else None


def _run_session(
    session: Any, names: Sequence[str], inputs: Sequence[torch.Tensor], batch: int | None
) -> list[np.ndarray]:
    """The session's outputs on ``inputs``, ``batch`` images at a time (all at once when
    ``None``); inputs that the graph pruned (unused by the network) are not fed."""
    kept = {item.name for item in session.get_inputs()}
    step = batch or len(inputs[0])
    chunks = []
    for start in range(0, len(inputs[0]), step):
        feed = {
            name: tensor[start : start + step].numpy()
            for name, tensor in zip(names, inputs, strict=True)
            if name in kept
        }
        chunks.append(session.run(None, feed))
    return [np.concatenate(parts) for parts in zip(*chunks, strict=True)]


def _compare(
    images: str,
    tasks: Mapping[str, Task],
    names: Sequence[str],
    onnx: Sequence[np.ndarray],
    eager: Sequence[np.ndarray],
    precision: str,
) -> list[ParityRow]:
    rows = []
    for name, ours, theirs in zip(names, onnx, eager, strict=True):
        if name in tasks:
            limit = tolerance(tasks[name])
            value = limit.compute(ours, theirs)
            rows.append(ParityRow(images, name, limit.measure, value, *limit.limits))
        elif precision == "fp32":
            difference = scaled_max_difference(ours, theirs)
            rows.append(ParityRow(images, name, RAW_MEASURE, difference, RAW_TOLERANCE))
    return rows
