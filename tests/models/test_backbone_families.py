"""Each family's tiny member trains, resumes bit for bit, evaluates, predicts and exports to
ONNX (fp32 and fp16) with parity; network fission and a model that branches inside the encoder
run on ConvNeXt, Swin and ViT."""

import pytest
import torch

from densetasks.engine.build import build_model, build_tasks, open_dataset
from densetasks.engine.config import validate_config
from densetasks.export import check_export, export_run
from densetasks.models import ARCHITECTURES, encoders_of

from .families import FAMILIES
from .test_contract import ToyBranch

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: fastest on one thread

DATA = {"options": {"n_train": 8, "n_val": 4, "n_test": 4, "size": [32, 32]}, "batch_size": 2}
EXPORTED = ["vit", "swin", "convnext", "efficientnet", "hrnet"]


def model_config(name: str, output_stride: int = 32, **options) -> dict:
    family = FAMILIES[name]
    return {
        "encoder": family.encoder,
        "encoder_options": dict(family.options),
        "output_stride": output_stride,
        **options,
    }


@pytest.mark.parametrize("name", EXPORTED)
def test_a_family_trains_resumes_evaluates_predicts_and_exports(name, run_end_to_end, tmp_path):
    result = run_end_to_end(
        {
            "tasks": {"semseg": {}, "depth": {}},
            "data": {**DATA, "eval_size": [32, 32]},
            "model": model_config(
                name, architecture="hard_sharing", options={"head": "multiscale"}
            ),
            "train": {
                "optimizer": "adamw",
                "selective_decay": True,
                "grad_checkpointing": name != "hrnet",
            },
        }
    )
    for precision in ("fp32", "fp16"):
        path = tmp_path / f"{precision}.onnx"
        export_run(result["run"], path, precision=precision)
        report = check_export(path)
        assert report.ok, report.table()


@pytest.mark.parametrize(
    ("name", "encoder_options"),
    [("convnext", {}), ("vit", {}), ("swin", {"out_indices": [0, 1, 2]})],  # Swin stops at 16
)
def test_network_fission_runs_on_the_family(name, encoder_options, run_end_to_end):
    model = model_config(name, 16, architecture="fission", options={"split": "mid"})
    model["encoder_options"] |= encoder_options
    result = run_end_to_end({"tasks": {"normals": {}, "depth": {}}, "data": DATA, "model": model})
    assert set(result["test"]["metrics"]) == {"normals", "depth"}


@pytest.mark.parametrize("name", ["convnext", "swin", "vit"])
def test_a_model_branching_inside_the_encoder_runs_on_the_family(name, register, run_end_to_end):
    register(ARCHITECTURES, "toy_branch", ToyBranch)
    model = model_config(name, architecture="toy_branch", options={"split": 2})
    result = run_end_to_end({"tasks": {"semseg": {}, "depth": {}}, "data": DATA, "model": model})
    assert set(result["test"]["metrics"]) == {"semseg", "depth"}


def test_build_model_passes_encoder_options_and_checkpointing():
    config = validate_config(
        {
            "tasks": {"depth": {}},
            "data": DATA,
            "model": model_config(
                "vit", 16, architecture="single_task", encoder_options={"drop_path_rate": 0.1}
            ),
            "train": {"grad_checkpointing": True},
        }
    )
    model = build_model(config, build_tasks(config, open_dataset(config, "train")))
    (encoder,) = encoders_of(model)
    assert encoder.grad_checkpointing
    rates = [getattr(block.drop_path1, "drop_prob", 0.0) for block in encoder.model.blocks]
    assert max(rates) == pytest.approx(0.1)  # timm: 0 at the first block, linear to the last
    assert torch.isfinite(model(torch.rand(2, 3, 32, 32))["depth"]).all()
