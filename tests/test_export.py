"""ONNX export: every exportable architecture, fp32 and fp16, matches eager PyTorch under
ONNX Runtime; the sidecar describes the graph; a dynamic batch runs; bad input is refused."""

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from densetasks.data.sample import LabelKind
from densetasks.engine.config import validate_config
from densetasks.engine.inference import load_run
from densetasks.engine.run import train
from densetasks.errors import ConfigError, DataError
from densetasks.export import (
    SCALE_SHIFT_TOLERANCE,
    TOLERANCES,
    ExportGraph,
    check_export,
    example_inputs,
    export_run,
    output_stride,
    scale_shift_difference,
    scaled_max_difference,
    scaled_mean_difference,
)

SMALL = {"decoder_widths": [16, 8, 8, 8, 8]}
EXPORTABLE = {
    "hard_sharing": ({"semseg": {}, "depth": {}, "normals": {}, "edges": {}, "instance": {}}, {}),
    "single_task": ({"depth": {}}, {}),
    "composite_tasking": ({"semseg": {}, "normals": {}, "edges": {}}, SMALL),
    "composite_stn": ({"normals": {}}, SMALL),
    "composite_mhn": ({"semseg": {}, "depth": {}}, SMALL),
    "composite_mn": ({"semseg": {}, "edges": {}}, SMALL),
    "fission": ({"normals": {}, "depth": {}}, {}),
    "three_ways_mteb": ({"semseg": {}, "depth": {}}, {"decoder_widths": [16, 16, 8, 8, 8]}),
    "padnet": ({"semseg": {}, "depth": {}}, {"channels": 8}),
}
"""Architecture -> (tasks, model options) of a tiny run; add an architecture here to have its
export tested."""


def train_tiny(
    out: Path,
    architecture: str,
    eval_size: list[int] | None = (32, 32),
    tasks: dict[str, dict] | None = None,
) -> Path:
    """A run of ``architecture`` (with its :data:`EXPORTABLE` tasks unless ``tasks``) trained
    2 steps on 32 px synthetic scenes, tiny encoder."""
    default_tasks, options = EXPORTABLE[architecture]
    tasks = tasks or default_tasks
    data = {"n_train": 4, "n_val": 2, "n_test": 2, "size": [32, 32]}
    config = validate_config(
        {
            "tasks": tasks,
            "data": {"options": data, "batch_size": 2, "eval_size": eval_size},
            "model": {"architecture": architecture, "encoder": "tiny", "options": options},
            "train": {"steps": 2, "optimizer": "adam", "lr": 1e-3, "eval_every": 2},
            "eval": {"num_images": 0},
        }
    )
    return train(config, out)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: the machine is shared, and tiny convolutions only lose from more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class _Cache(dict):
    """A dict that makes a missing value with ``make(key)``."""

    def __init__(self, make):
        super().__init__()
        self.make = make

    def __missing__(self, key):
        self[key] = self.make(key)
        return self[key]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Architecture -> its trained tiny run, trained on first use."""
    return _Cache(lambda architecture: train_tiny(tmp_path_factory.mktemp("run"), architecture))


@pytest.fixture(scope="module")
def exports(runs, tmp_path_factory) -> dict[tuple[str, str, bool], Path]:
    """``(architecture, precision, dynamic)`` -> the run's exported graph, made on first use."""

    def make(key: tuple[str, str, bool]) -> Path:
        architecture, precision, dynamic = key
        path = tmp_path_factory.mktemp("export") / "model.onnx"
        export_run(runs[architecture], path, precision=precision, dynamic=dynamic)
        return path

    return _Cache(make)


def session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("architecture", list(EXPORTABLE))
def test_onnx_runtime_matches_eager_pytorch(exports, architecture, precision) -> None:
    path = exports[architecture, precision, False]
    report = check_export(path)
    assert report.ok, report.table()
    tasks = list(EXPORTABLE[architecture][0])
    checked = {(row.images, row.output) for row in report.rows}
    assert {(images, task) for images in ("random", "test") for task in tasks} <= checked
    raw = {row.output for row in report.rows if row.output.endswith("_raw")}
    assert bool(raw) == (precision == "fp32")
    weights = {
        onnx.TensorProto.DataType.Name(tensor.data_type)
        for tensor in onnx.load(str(path)).graph.initializer
        if len(tensor.dims) == 4
    }
    assert weights == {"FLOAT16" if precision == "fp16" else "FLOAT"}


def test_sidecar_lists_tasks_inputs_outputs_and_python_postprocessing(runs, exports) -> None:
    path = exports["hard_sharing", "fp16", False]
    sidecar = json.loads(Path(f"{path}.json").read_text())
    assert sidecar["tasks"] == ["semseg", "depth", "normals", "edges", "instance"]
    assert (sidecar["precision"], sidecar["opset"], sidecar["step"]) == ("fp16", 17, 2)
    assert (sidecar["checkpoint"], sidecar["dynamic_batch"]) == ("best", False)
    assert sidecar["input_size"] == [32, 32]
    assert sidecar["run_dir"] == str(runs["hard_sharing"].resolve())
    assert sidecar["normalisation"]["in_graph"]
    assert sidecar["normalisation"]["mean"] == [0.485, 0.456, 0.406]
    assert sidecar["inputs"] == [
        {
            "name": "image",
            "shape": [1, 3, 32, 32],
            "dtype": "float32",
            "meaning": "RGB in [0, 1] (pixels / 255)",
        }
    ]
    outputs = {output["name"]: output for output in sidecar["outputs"]}
    assert outputs["semseg"]["dtype"] == "int64"
    assert outputs["semseg"]["shape"] == [1, 32, 32]
    assert outputs["semseg"]["meaning"].startswith("Class ids")
    assert outputs["depth"]["shape"] == [1, 1, 32, 32]
    assert outputs["normals"]["meaning"].startswith("Unit vectors")
    assert outputs["edges"]["dtype"] == "float32"
    assert outputs["semseg_raw"]["raw"] == "semseg"
    assert list(sidecar["python_postprocessing"]) == ["instance"]
    assert [output.name for output in session(path).get_outputs()] == list(outputs)


def test_a_composite_run_takes_its_palette_and_any_batch_size(runs, exports) -> None:
    path = exports["composite_tasking", "fp32", True]
    sidecar = json.loads(Path(f"{path}.json").read_text())
    image, palette = sidecar["inputs"]
    assert image["shape"] == ["batch", 3, 32, 32]
    assert (palette["name"], palette["dtype"]) == ("palette", "int64")
    assert palette["shape"] == ["batch", 32, 32]
    assert palette["ids"] == ["semseg", "normals", "edges"]
    assert sidecar["outputs"][-1]["name"] == "composite_raw"
    loaded = load_run(runs["composite_tasking"])
    normalisation = sidecar["normalisation"]
    graph = ExportGraph(loaded.model, loaded.tasks, normalisation["mean"], normalisation["std"])
    exported = session(path)
    for batch in (1, 3):
        inputs = example_inputs(graph, batch, (32, 32), torch.Generator().manual_seed(batch))
        outputs = exported.run(None, {"image": inputs[0].numpy(), "palette": inputs[1].numpy()})
        with torch.no_grad():
            expected = graph(*inputs)
        assert outputs[0].shape == (batch, 32, 32)
        np.testing.assert_allclose(outputs[-1], expected[-1].numpy(), atol=1e-4)
    normals = [
        exported.run(
            ["normals"],
            {"image": inputs[0].numpy(), "palette": torch.full_like(inputs[1], task).numpy()},
        )[0]
        for task in (0, 1)
    ]
    assert not np.allclose(*normals), "the palette must condition the network"
    assert check_export(path, random_images=3).ok


def test_a_changed_weight_fails_the_check(runs, tmp_path) -> None:
    path = tmp_path / "model.onnx"
    export_run(runs["single_task"], path, opset=18)
    assert json.loads(Path(f"{path}.json").read_text())["opset"] == 18
    model = onnx.load(str(path))
    weight = next(tensor for tensor in model.graph.initializer if len(tensor.dims) == 4)
    values = onnx.numpy_helper.to_array(weight) * 1.5
    weight.CopyFrom(onnx.numpy_helper.from_array(values, weight.name))
    onnx.save(model, str(path))
    report = check_export(path)
    assert not report.ok
    assert "FAIL" in report.table()


def test_tolerances_measure_what_they_say() -> None:
    angle = np.radians(1.0)
    up = np.zeros((1, 3, 2, 2))
    up[:, 2] = 1.0
    tilted = np.zeros_like(up)
    tilted[:, 0], tilted[:, 2] = np.sin(angle), np.cos(angle)
    assert TOLERANCES[LabelKind.NORMALS].compute(tilted, up) == pytest.approx(1.0)
    depth = np.full((1, 1, 2, 2), 2.0)
    assert TOLERANCES[LabelKind.DEPTH].compute(depth * 1.01, depth) == pytest.approx(0.01)
    classes = np.array([[0, 1, 2, 3]])
    assert TOLERANCES[LabelKind.MASK].compute(classes, np.array([[0, 1, 2, 0]])) == 0.75


def test_every_label_kind_has_a_tolerance() -> None:
    assert set(TOLERANCES) == set(LabelKind)


def test_regression_values_are_compared_absolutely_near_zero_and_relatively_beyond() -> None:
    """Dense regression has no special value: values crossing 0 (where a relative
    difference per value explodes) and values in the hundreds are both measured fairly."""
    measure = TOLERANCES[LabelKind.REGRESSION].compute
    assert measure is scaled_mean_difference
    near_zero = np.array([[[[-0.01, 0.0], [0.02, 0.5]]]])
    assert measure(near_zero + 0.004, near_zero) == pytest.approx(0.004)
    large = np.array([[[[100.0, -300.0], [200.0, 400.0]]]])  # mean |value| 250
    assert measure(large + 5.0, large) == pytest.approx(5.0 / 250.0)
    assert measure(large[..., :0], large[..., :0]) == 0.0


def test_scale_shift_difference_is_in_units_of_the_spread_and_ignores_scale_and_shift() -> None:
    eager = np.array([[[[0.0, 1.0], [2.0, 4.0]]]])  # median 1.5, spread (1.5+0.5+0.5+2.5)/4
    assert scale_shift_difference(eager + 0.05, eager) == pytest.approx(0.05 / 1.25)
    noisy = eager + np.array([[[[0.01, -0.02], [0.0, 0.03]]]])
    expected = scale_shift_difference(noisy, eager)
    assert expected == pytest.approx(0.015 / 1.25)
    assert scale_shift_difference(-3 * noisy + 7, -3 * eager + 7) == pytest.approx(expected)
    two = np.concatenate([eager, 10 * eager])  # per image, then averaged
    assert scale_shift_difference(two + 0.05, two) == pytest.approx((0.04 + 0.004) / 2)


def test_scale_and_shift_invariant_depth_exports_its_disparity_and_passes_in_fp16(
    tmp_path,
) -> None:
    """An ``ssi`` depth head has no metric depth to decode (its output crosses 0, where
    1 / output jumps: docs/export.md); the graph gives the disparity, checked up to scale
    and shift."""
    tasks = {"normals": {}, "depth": {"loss": "ssi"}}
    run_dir = train_tiny(tmp_path / "run", "fission", tasks=tasks)
    for precision in ("fp32", "fp16"):
        path = tmp_path / f"{precision}.onnx"
        sidecar = export_run(run_dir, path, precision=precision)
        depth = next(output for output in sidecar["outputs"] if output["name"] == "depth")
        assert "up to a per-image scale and shift" in depth["meaning"]
        report = check_export(path)
        assert report.ok, report.table()
        rows = [row for row in report.rows if row.output == "depth"]
        assert {row.measure for row in rows} == {SCALE_SHIFT_TOLERANCE.measure}
        image = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
        depth, raw = session(path).run(["depth", "depth_raw"], {"image": image})
        np.testing.assert_array_equal(depth, raw)  # fission's output adapter: identity


def test_raw_outputs_are_compared_on_their_scale() -> None:
    """5e-4 apart on logits of ~150 is float32 summation order (a fission run trained 150
    steps, docs/export.md), not a broken export; on logits within ±1 it is."""
    logits = np.array([[150.0, -3.0, 0.5]], dtype=np.float32)
    assert scaled_max_difference(logits + 5e-4, logits) == pytest.approx(5e-4 / 150, rel=0.01)
    small = np.array([[0.5, -0.25]], dtype=np.float32)
    assert scaled_max_difference(small + 5e-4, small) == pytest.approx(5e-4, rel=0.01)
    assert scaled_max_difference(small[:, :0], small[:, :0]) == 0.0


def test_the_output_stride_is_the_deepest_encoder_feature(runs) -> None:
    assert output_stride(load_run(runs["single_task"]).model) == 16  # model.output_stride
    assert output_stride(torch.nn.Conv2d(3, 3, 1)) == 32


def test_bad_input_is_refused_with_one_clear_message(runs, tmp_path) -> None:
    with pytest.raises(DataError, match="has no checkpoint 'best'"):
        export_run(tmp_path, tmp_path / "model.onnx")
    with pytest.raises(ConfigError, match=r"precision must be one of \['fp32', 'fp16'\]"):
        export_run(runs["single_task"], tmp_path / "model.onnx", precision="int8")
    with pytest.raises(ConfigError, match="--size 40x32 is not divisible by .* stride 16"):
        export_run(runs["single_task"], tmp_path / "model.onnx", size=(40, 32))
    assert not (tmp_path / "model.onnx").exists()
