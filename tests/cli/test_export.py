"""``densetasks export``: writes the graph and its sidecar, prints the parity table with
``--check`` (exit 1 on a failed comparison), and refuses bad input with one line."""

import json
from pathlib import Path

import pytest
import torch

import densetasks.export
from densetasks.cli.main import main
from densetasks.engine.config import validate_config
from densetasks.engine.run import train


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A single-task depth run, tiny encoder, 2 steps on 32 px scenes, no data.eval_size."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    config = validate_config(
        {
            "tasks": {"depth": {}},
            "data": {"options": {"n_train": 4, "n_val": 2, "n_test": 2, "size": [32, 32]}},
            "model": {"architecture": "single_task", "encoder": "tiny", "output_stride": 32},
            "train": {"steps": 2, "optimizer": "adam", "lr": 1e-3, "eval_every": 2},
            "eval": {"num_images": 0},
        }
    )
    yield train(config, tmp_path_factory.mktemp("run"))
    torch.set_num_threads(threads)


def export(run_dir: Path, out: Path, *options: str) -> int:
    return main(["export", str(run_dir), "--out", str(out), *options])


def test_export_with_check_prints_the_parity_table(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "depth.onnx"
    code = export(run_dir, out, "--precision", "fp16", "--dynamic", "--check")
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert (
        f"wrote {out} and {out}.json (fp16, 32x32 from the run's test images, step 2, tasks depth)"
    ) in printed
    assert "random  depth   mean relative difference" in printed
    assert "test    depth" in printed
    assert printed.rstrip().endswith("parity: ok")
    sidecar = json.loads(Path(f"{out}.json").read_text())
    assert (sidecar["input_size"], sidecar["dynamic_batch"]) == ([32, 32], True)
    assert sidecar["checkpoint"] == "best"


def test_a_size_predict_does_not_run_at_fails_the_check(run_dir, tmp_path, capsys) -> None:
    """The test images are 32 x 32 and the run has no data.eval_size: predict runs them at
    32 x 32, so a 64 x 32 graph fed them resized does not give predict's depths."""
    code = export(run_dir, tmp_path / "depth.onnx", "--size", "64x32", "--check")
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "wrote" in printed and "64x32 from --size" in printed
    test_row = next(line for line in printed.splitlines() if line.startswith("test    depth"))
    assert test_row.endswith("FAIL")
    assert printed.rstrip().endswith("parity: FAILED")


def test_a_failed_comparison_exits_1(run_dir, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setattr(densetasks.export, "RAW_TOLERANCE", -1.0)
    code = export(
        run_dir, tmp_path / "depth.onnx", "--size", "32", "--checkpoint", "last", "--check"
    )
    printed = capsys.readouterr().out
    assert code == 1
    assert "depth_raw" in printed and "FAIL" in printed
    assert printed.rstrip().endswith("parity: FAILED")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--size", "32", "--precision", "int8"], "precision must be one of ['fp32', 'fp16']"),
        (["--size", "48x32"], "--size 48x32 is not divisible by the encoder's output stride 32"),
        (["--checkpoint", "middle"], "checkpoint must be one of ['best', 'last']"),
    ],
)
def test_bad_input_is_one_error_line(run_dir, tmp_path, capsys, options, message) -> None:
    assert export(run_dir, tmp_path / "model.onnx", *options) == 2
    error = capsys.readouterr().err
    assert error.startswith("densetasks: error: ") and message in error
    assert error.count("\n") == 1
    assert not (tmp_path / "model.onnx").exists()


def test_a_run_without_checkpoint_is_one_error_line(tmp_path, capsys) -> None:
    assert export(tmp_path, tmp_path / "model.onnx") == 2
    error = capsys.readouterr().err
    assert error == (
        f"densetasks: error: {tmp_path} has no checkpoint 'best' "
        f"({tmp_path}/checkpoints/best.pt does not exist)\n"
    )
