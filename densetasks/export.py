"""Export a trained run to ONNX, with a sidecar JSON, and check the graph against PyTorch.

:func:`export_run` writes ``model.onnx`` and ``model.onnx.json``. The graph is the run's
evaluation-mode model wrapped by :class:`ExportGraph`:

* **inputs**: ``image`` float32 ``[B, 3, H, W]``, RGB in ``[0, 1]`` — the run's ImageNet
  normalisation is *in the graph*, so a caller feeds pixels / 255 and nothing else — and
  the model's conditioning inputs (a Task Palette int64 ``[B, H, W]`` for CompositeTasking).
* **outputs**, per task in the run's order: ``<task>``, the task's prediction values
  (``Task.prediction_values``: the decoded prediction — class ids int64, metres, unit normals,
  probabilities — or, for a task whose output is defined only up to a per-image scale and
  shift, ``ssi`` depth, that output, as its metrics take it), described in the sidecar by
  the task itself (``Task.meaning``: text, unit, channels, value range, class names) — then
  ``<key>_raw`` per raw output of the network, before the model's output adapter (float32).
  A task whose prediction also needs other tasks' (instance grouping reads the semantic
  prediction) exports its decoded output too; the sidecar says that the rest runs in Python.

``fp16`` converts the network's weights and activations (``model.half()`` before export);
the image stays float32 and is cast after normalisation, and the output adapter and the
decoding run in float32 on the network's cast-back outputs, so every precision has the
same inputs and outputs. The graph comes from the TorchScript exporter (``dynamo=False``):
it needs neither ``onnxscript`` nor ``torch.export``-friendly models, and traces every
registered architecture as the engine runs it.

The graph's size is the one ``densetasks predict`` runs the network at (:func:`default_size`:
``data.eval_size``, else the size of the run's test images), so that an image fed as the
sidecar's ``preprocessing`` says gives predict's outputs.

:func:`check_export` runs the graph with ONNX Runtime (CPU) against the same model run
eagerly in float32 on random images, and against ``densetasks predict``'s path on images of
the run's test split at their own size, and compares them with the tolerance of the task's
label kind (:data:`TOLERANCES`: the label kind fixes what a decoded prediction holds) or
:data:`SCALE_SHIFT_TOLERANCE` for a scale-and-shift-invariant output.
"""

import importlib
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densetasks.data.palettes import ALL_TASKS
from densetasks.data.sample import IGNORE_INDEX, LabelKind
from densetasks.data.transforms import Normalize, resize
from densetasks.engine import build
from densetasks.engine.inference import LoadedRun, Predictor, load_run
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


def scaled_mean_difference(onnx: np.ndarray, eager: np.ndarray) -> float:
    """``mean |onnx − eager| / max(1, mean |eager|)``: absolute for values within about ±1,
    relative to their typical size beyond, for values of any scale and sign (a relative
    difference per value measures nothing near 0)."""
    if not onnx.size:
        return 0.0
    scale = max(1.0, float(np.mean(np.abs(eager))))
    return float(np.mean(np.abs(onnx.astype(np.float64) - eager))) / scale


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
    LabelKind.REGRESSION: Tolerance(
        "mean abs difference / max(1, mean abs)", 1e-2, False, scaled_mean_difference
    ),
}
"""Decoded predictions, by the task's label kind: classes, metres, unit normals,
probabilities, instance offsets (pixels) and values of any scale (dense regression)."""

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
        predictions = [task.prediction_values(adapted[name]) for name, task in self.tasks.items()]
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

    ``size`` (H, W) defaults to the size ``densetasks predict`` runs the network at
    (:func:`default_size`); it must be divisible by the encoder's output stride. ``dynamic``
    makes the batch size dynamic (else it is 1); height and width are fixed.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    onnx = _import("onnx")
    run = _load(run_dir, checkpoint)
    size, source = _export_size(run, size)
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
    options = {
        "checkpoint": checkpoint,
        "precision": precision,
        "opset": opset,
        "size": size,
        "size_from": source,
    }
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


SIZE_IMAGES = 8
"""How many test images :func:`default_size` reads to find the size they share."""
SIZE_FROM_EVAL = "data.eval_size"
SIZE_FROM_TEST = "the run's test images"
SIZE_FROM_OPTION = "--size"


def default_size(run: LoadedRun) -> tuple[tuple[int, int], str]:
    """The size ``densetasks predict`` runs the network at, and where it comes from: the
    run's ``data.eval_size`` (its evaluation transform resizes every image to it), else the
    size of the run's test images (predict runs an image at its own size; the first
    :data:`SIZE_IMAGES` must share it). A :class:`ConfigError` asks for ``--size`` when
    neither says it: never a training crop, at which predict does not run."""
    data = run.config.data
    if data.eval_size:
        return (int(data.eval_size[0]), int(data.eval_size[1])), SIZE_FROM_EVAL
    images, missing = test_split_images(run, SIZE_IMAGES)
    sizes = sorted({tuple(int(side) for side in image.shape[-2:]) for image in images})
    if not sizes:
        raise ConfigError(
            f"{run.run_dir} sets no data.eval_size and {missing}, so the size densetasks "
            "predict runs at is unknown here: give --size HxW, the size of your images"
        )
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise ConfigError(
            f"the test images of {run.run_dir} have several sizes ({listed}) and it sets no "
            "data.eval_size: give --size HxW and resize your images to it"
        )
    return sizes[0], SIZE_FROM_TEST


def _export_size(run: LoadedRun, size: tuple[int, int] | None) -> tuple[tuple[int, int], str]:
    """``size`` (from ``--size``), else :func:`default_size`, checked against the output
    stride; with where it comes from."""
    size, source = (tuple(size), SIZE_FROM_OPTION) if size else default_size(run)
    stride = output_stride(run.model)
    if any(side % stride for side in size):
        raise ConfigError(
            f"{source} {size[0]}x{size[1]} is not divisible by the encoder's output stride "
            f"{stride}; give --size with multiples of {stride}"
        )
    return (int(size[0]), int(size[1])), source


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
            meaning = run.tasks[name].meaning().as_dict()
            text = meaning.pop("text")
            described.append({**_describe(name, output, batch, text), **meaning, "task": name})
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
        "input_size_from": options["size_from"],
        "preprocessing": preprocessing(options["size"], options["size_from"]),
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


def preprocessing(size: Sequence[int], source: str) -> dict[str, str]:
    """How to turn an image file into the graph's ``image`` input, step by step, as the
    sidecar says it (``docs/export.md``, "Running the graph")."""
    height, width = size
    where = (
        "densetasks predict resizes every image to data.eval_size the same way"
        if source == SIZE_FROM_EVAL
        else "densetasks predict runs an image at its own size, so an image of another size "
        "gives outputs that differ from predict's"
    )
    return {
        "read": "the image file as 8-bit RGB (a grey image as RGB)",
        "scale": "float32 pixels / 255, in [0, 1], as [1, 3, H, W] (NCHW)",
        "resize": f"only an image that is not {height}x{width}: to {height}x{width}, "
        "bilinear with antialiasing on the [0, 1] floats (torch.nn.functional.interpolate("
        f"mode='bilinear', align_corners=False, antialias=True)); {where}",
        "normalise": "nothing: the mean and std below are applied inside the graph",
    }


def preprocess(image: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """A ``[3, H, W]`` image in ``[0, 1]`` as the graph's ``image`` input ``[1, 3, h, w]``:
    resized to ``size`` as :func:`preprocessing` says (and the evaluation transform does),
    unchanged when it has that size."""
    if tuple(image.shape[-2:]) != tuple(size):
        image = resize({"image": image}, tuple(size), {})["image"]
    return image[None]


def _describe(name: str, tensor: torch.Tensor, batch: int | str, meaning: str) -> dict[str, Any]:
    return {
        "name": name,
        "shape": [batch, *tensor.shape[1:]],
        "dtype": str(tensor.dtype).removeprefix("torch."),
        "meaning": meaning,
    }


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
    notes: list[str] = field(default_factory=list)
    """What could not be compared, and why (no test images here)."""

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
    """Compare an exported graph (ONNX Runtime, CPU) with its run under PyTorch (float32):

    * ``random``: ``random_images`` random images at the graph's size, against the same
      model and decoding run eagerly (:class:`ExportGraph`), raw outputs too;
    * ``test``: up to ``test_images`` images of the run's test split at their own size
      (when the dataset can be opened here), against ``densetasks predict``'s path
      (:class:`~densetasks.engine.inference.Predictor`, the image as it is): the graph
      takes the image preprocessed as the sidecar says (:func:`preprocess`), and its
      outputs are brought back to the image's size (nearest) where they differ. A graph
      exported at another size than predict runs at fails here, not in use.

    Conditioned models get random palettes. Raw outputs of an fp32 graph must be within
    :data:`RAW_TOLERANCE` of their scale; predictions of any precision within
    :data:`TOLERANCES` (a scale-and-shift-invariant output within
    :data:`SCALE_SHIFT_TOLERANCE`), on test images per image and averaged.
    """
    onnx_path = Path(onnx_path)
    sidecar = read_sidecar(onnx_path)
    run = _load(sidecar["run_dir"], sidecar["checkpoint"])
    graph = ExportGraph(run.model, run.tasks, *_normalisation(run))
    session = _session(onnx_path)
    size = tuple(sidecar["input_size"])
    generator = torch.Generator().manual_seed(seed)
    inputs = example_inputs(graph, random_images, size, generator)
    with torch.no_grad():
        eager = [output.numpy() for output in graph(*inputs)]
    batch = None if sidecar["dynamic_batch"] else 1
    onnx = _run_session(session, graph.input_names, inputs, batch)
    rows = _compare("random", run.tasks, graph.output_names, onnx, eager, sidecar["precision"])
    images, missing = test_split_images(run, test_images)
    if images:
        rows += _predict_rows(session, graph, run, images, size, generator)
    notes = [] if images else [f"no test images compared: {missing}"]
    return ParityReport(onnx_path, sidecar["precision"], rows, notes)


def _predict_rows(
    session: Any,
    graph: ExportGraph,
    run: LoadedRun,
    images: Sequence[torch.Tensor],
    size: tuple[int, ...],
    generator: torch.Generator,
) -> list[ParityRow]:
    """One ``test`` row per task: the graph against ``densetasks predict`` on each image at
    its own size, measured per image and averaged (images may differ in size)."""
    predictor = Predictor(run)
    measured: dict[str, list[float]] = {name: [] for name in run.tasks}
    for image in images:
        shape = (1, *image.shape[-2:])
        conditions = {
            name: torch.randint(0, len(graph.tasks), shape, generator=generator)[0]
            for name in graph.condition_names
        }
        with torch.no_grad():
            prediction = predictor(image, conditions or None)
            expected = {
                name: task.prediction_values(prediction.outputs[name][None]).numpy()
                for name, task in run.tasks.items()
            }
        feed = [preprocess(image, size)]
        feed += [
            torch.from_numpy(_nearest(conditions[name][None].numpy(), size))
            for name in graph.condition_names
        ]
        outputs = _run_session(session, graph.input_names, feed, 1)
        for name, output in zip(graph.output_names, outputs, strict=True):
            if name in run.tasks:
                output = _nearest(output, image.shape[-2:])
                measured[name].append(tolerance(run.tasks[name]).compute(output, expected[name]))
    return [
        ParityRow("test", name, limit.measure, float(np.mean(values)), *limit.limits)
        for name, values in measured.items()
        for limit in [tolerance(run.tasks[name])]
    ]


def _nearest(array: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """``array [..., h, w]`` at ``size`` by the nearest pixel centre (``floor((i + 0.5) · h /
    H)``, as labels are resized); ``array`` itself at its own size."""
    height, width = array.shape[-2:]
    if (height, width) == tuple(size):
        return array
    rows = np.floor((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64)
    columns = np.floor((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64)
    return array[..., rows, :][..., columns]


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


def test_split_images(run: LoadedRun, count: int) -> tuple[list[torch.Tensor], str]:
    """Up to ``count`` images ``[3, H, W]`` in ``[0, 1]`` of the run's test split at their
    own size, and why there are none when there are none."""
    split = run.config.data.test_split
    if split is None:
        return [], "the run has no test split (data.test_split)"
    if count < 1:
        return [], "none were asked for"
    try:
        dataset = build.open_dataset(run.config, split)
    except DenseTasksError as error:
        return [], f"its test split cannot be opened here ({error})"
    images = [dataset[index]["image"] for index in range(min(count, len(dataset)))]
    return images, "" if images else f"its test split {split!r} is empty"


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
