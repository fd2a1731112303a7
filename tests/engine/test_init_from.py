"""Rule transfer (Popovic et al., CVPR 2021, Sec. 6.4): a CompositeTasking run under R3 starts
from the weights of a run under R2 (``model.init_from`` / ``train --init-from``), and the
starting points that cannot be one are refused with errors that say why."""

from pathlib import Path

import pytest
import torch
import yaml

import densetasks.engine.run as run_module
from densetasks.cli.main import main
from densetasks.engine import build
from densetasks.engine.checkpoint import load_checkpoint, load_matching_weights, save_checkpoint
from densetasks.engine.config import validate_config
from densetasks.engine.run import train
from densetasks.errors import DataError

TASKS = ["semseg", "parts", "edges", "saliency", "normals"]


def composite_config(rule: str, encoder: str = "tiny", **model) -> dict:
    """A 3-step CTN on 32-px synthetic scenes trained under ``rule`` with its synthetic table."""
    return {
        "tasks": {name: {} for name in TASKS},
        "data": {
            "options": {"n_train": 4, "n_val": 2, "size": [32, 32]},
            "batch_size": 2,
            "test_split": None,
        },
        "model": {
            "architecture": "composite_tasking",
            "encoder": encoder,
            "output_stride": 32,
            "options": {
                "decoder_widths": [16, 16, 16, 16, 8],
                "train_rule": rule,
                "train_rule_options": {"table": f"synthetic_{rule.lower()}"},
                "eval_rules": [],
            },
            **model,
        },
        "train": {
            "steps": 3,
            "optimizer": "adam",
            "lr": 1e-3,
            "eval_every": 3,
            "checkpoint_every": 3,
            "images_every": 0,
        },
    }


@pytest.fixture
def r2_run(tmp_path: Path) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield train(validate_config(composite_config("R2")), tmp_path / "r2")
    torch.set_num_threads(threads)


def fresh_model(config: dict) -> torch.nn.Module:
    """The model of ``config`` as a run builds it, before any weight is loaded."""
    config = validate_config(config)
    return build.build_model(config, build.build_tasks(config, build.open_training_dataset(config)))


def test_an_r3_run_starts_from_the_r2_runs_weights(
    r2_run: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    config_file = tmp_path / "r3.yaml"
    config_file.write_text(yaml.safe_dump(composite_config("R3")))
    started: dict[str, torch.Tensor] = {}
    real_step = run_module.train_step

    def recording_step(parts, batch, step):
        if step == 0:
            state = parts.architecture.state_dict()
            started.update({key: value.clone() for key, value in state.items()})
        return real_step(parts, batch, step)

    monkeypatch.setattr(run_module, "train_step", recording_step)
    command = ["--debug", "train", str(config_file), "--out", str(tmp_path / "r3")]
    assert main([*command, "--init-from", str(r2_run)]) == 0

    source = load_checkpoint(r2_run / "checkpoints" / "best.pt")["model"]
    assert started.keys() == source.keys()
    for key, value in source.items():
        assert torch.equal(started[key], value), key
    fresh = fresh_model(composite_config("R3"))
    loaded, kept = load_matching_weights(fresh, r2_run)
    assert (loaded, kept) == (sorted(source), [])
    for key, value in fresh.state_dict().items():
        assert torch.equal(value, started[key]), key
    output = capsys.readouterr()
    expected = f"model.init_from {r2_run}: loaded {len(source)} weights, kept 0"
    assert expected in output.out + output.err
    saved = yaml.safe_load((tmp_path / "r3" / "config.yaml").read_text())
    assert saved["model"]["init_from"] == str(r2_run)


def test_a_run_with_another_encoder_is_refused_naming_the_keys(tmp_path: Path) -> None:
    other = fresh_model(composite_config("R2", encoder="test_resnet"))
    save_checkpoint({"model": other.state_dict()}, tmp_path / "other" / "checkpoints" / "best.pt")
    own = fresh_model(composite_config("R3")).state_dict()
    mismatched = [
        key
        for key, value in other.state_dict().items()
        if key in own and value.shape != own[key].shape
    ]
    assert mismatched
    config = composite_config("R3", init_from=str(tmp_path / "other"))
    with pytest.raises(DataError, match="weights of another shape") as error:
        train(validate_config(config), tmp_path / "r3")
    assert mismatched[0] in str(error.value) and str(tmp_path / "other") in str(error.value)


def test_a_run_dir_without_a_checkpoint_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    config = composite_config("R3", init_from=str(tmp_path / "empty"))
    with pytest.raises(DataError, match=r"empty/checkpoints/best.pt does not exist"):
        train(validate_config(config), tmp_path / "r3")
