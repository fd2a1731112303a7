"""Instant test (detectron2 style): train 20 steps on synthetic data through the commands."""

import json

import pytest
import torch
import yaml

from densetasks.cli.main import main
from densetasks.data.folder import write_folder_dataset
from densetasks.engine import load_run
from densetasks.engine.checkpoint import load_checkpoint
from densetasks.errors import ConfigError, TrainingError
from densetasks.tasks.registry import label_kinds

CONFIG = {
    "seed": 3,
    "tasks": {"semseg": {}, "depth": {}},
    "data": {
        "options": {"n_train": 16, "n_val": 6, "n_test": 4, "size": [32, 32]},
        "batch_size": 4,
        "crop_size": [32, 32],
        "scale_range": [0.75, 1.25],
    },
    "model": {"architecture": "hard_sharing", "encoder": "tiny", "bottleneck": "none"},
    "balancer": {"name": "uncertainty"},
    "train": {
        "steps": 20,
        "optimizer": "adam",
        "lr": 3e-3,
        "weight_decay": 0.0,
        "eval_every": 10,
        "log_every": 1,
        "checkpoint_every": 5,
        "images_every": 20,
    },
    "eval": {"num_images": 2},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def command(argv: list[str]) -> int:
    """The ``densetasks`` command; ``--debug`` lets errors reach ``pytest.raises``."""
    return main(["--debug", *argv])


def write_config(tmp_path, config=CONFIG):
    path = tmp_path / "instant.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def events(run_dir, kind):
    lines = (run_dir / "events.jsonl").read_text().splitlines()
    return [event for event in map(json.loads, lines) if event["type"] == kind]


@pytest.fixture(scope="module")
def instant_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("instant")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    assert command(["train", str(write_config(tmp_path)), "--out", str(tmp_path / "run")]) == 0
    torch.set_num_threads(threads)
    return tmp_path / "run"


def test_instant_run_learns_and_writes_its_run_directory(instant_run):
    train_events = events(instant_run, "train")
    assert [event["step"] for event in train_events] == list(range(1, 21))
    first = sum(event["total"] for event in train_events[:5])
    last = sum(event["total"] for event in train_events[-5:])
    assert last < first
    assert set(train_events[0]["weights"]) == {"semseg", "depth"}
    assert set(train_events[0]["lr"]) == {"encoder", "decoder", "balancer"}
    assert [(e["split"], e["step"]) for e in events(instant_run, "eval")][:2] == [
        ("val", 10),
        ("val", 20),
    ]
    for name in (
        "config.yaml",
        "metrics_val.json",
        "metrics_test.json",
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "images/step_20/0_input.png",
        "images/step_20/1_semseg_pred.png",
        "images/step_20/1_depth_label.png",
    ):
        assert (instant_run / name).is_file(), name
    assert list((instant_run / "tensorboard").iterdir())


def test_metrics_file_is_the_best_validation_result(instant_run):
    stored = json.loads((instant_run / "metrics_val.json").read_text())
    at_best = [
        e
        for e in events(instant_run, "eval")
        if e["step"] == stored["step"] and e["split"] == "val"
    ]
    assert stored["metrics"] == at_best[0]["metrics"]
    assert stored["primary"] == {"semseg": "miou", "depth": "rmse"}
    assert stored["higher_is_better"]["depth"]["rmse"] is False


def test_checkpoint_round_trips(instant_run):
    payload = load_checkpoint(instant_run / "checkpoints" / "best.pt")
    loaded = load_run(instant_run)
    assert loaded.step == payload["step"]
    assert loaded.config.to_dict() == yaml.safe_load((instant_run / "config.yaml").read_text())
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value, payload["model"][name]), name
    assert set(loaded.tasks) == {"semseg", "depth"}
    assert loaded.tasks["semseg"].options() == payload["task_options"]["semseg"]


def test_eval_reproduces_the_stored_metrics(instant_run, capsys):
    stored = json.loads((instant_run / "metrics_val.json").read_text())
    assert command(["eval", str(instant_run), "--json", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == stored["step"]
    for task, values in stored["metrics"].items():
        assert printed["metrics"][task] == pytest.approx(values, rel=1e-6)
    assert command(["eval", str(instant_run), "--split", "test", "--device", "cpu"]) == 0
    table = capsys.readouterr().out
    assert "miou*" in table and "depth" in table


def test_resume_after_a_kill_matches_an_uninterrupted_run(tmp_path, kill_at_step):
    config = {
        **CONFIG,
        "train": {
            **CONFIG["train"],
            "steps": 8,
            "eval_every": 3,
            "checkpoint_every": 4,
            "log_every": 2,
            "images_every": 0,
        },
    }
    path = write_config(tmp_path, config)
    assert command(["train", str(path), "--out", str(tmp_path / "whole")]) == 0

    with kill_at_step(6):
        command(["train", str(path), "--out", str(tmp_path / "killed")])
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["step"] == 4
    with pytest.raises(ConfigError, match="--resume"):
        command(["train", str(path), "--out", str(tmp_path / "killed")])
    assert command(["train", str(path), "--out", str(tmp_path / "killed"), "--resume"]) == 0

    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    for name, value in whole["model"].items():
        assert torch.equal(value, resumed["model"][name]), name
    assert torch.equal(whole["balancer"]["log_variances"], resumed["balancer"]["log_variances"])
    for split in ("val", "test"):
        expected = json.loads((tmp_path / "whole" / f"metrics_{split}.json").read_text())
        assert json.loads((tmp_path / "killed" / f"metrics_{split}.json").read_text()) == expected
    assert events(tmp_path / "killed", "train") == [
        {**event, "images_per_s": resumed_event["images_per_s"]}
        for event, resumed_event in zip(
            events(tmp_path / "whole", "train"), events(tmp_path / "killed", "train"), strict=True
        )
    ]


def test_resume_refuses_a_changed_config(instant_run, tmp_path):
    path = write_config(tmp_path)
    with pytest.raises(ConfigError, match="train.lr"):
        command(
            ["train", str(path), "--out", str(instant_run), "--resume", "--set", "train.lr=0.1"]
        )


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.lrr=1", "train.lrr"),
        ("train.steps=many", "train.steps"),
        ("data.flip=[1]", "data.flip"),
    ],
)
def test_config_errors_name_the_key_before_anything_starts(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        command(
            ["train", str(write_config(tmp_path)), "--out", str(tmp_path / "r"), "--set", override]
        )
    assert not (tmp_path / "r").exists()


def test_the_command_prints_a_config_error_as_one_line(tmp_path, capsys):
    path = write_config(tmp_path)
    assert main(["train", str(path), "--out", str(tmp_path / "r"), "--set", "model.encodr=x"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("densetasks: error:") and "model.encodr" in error
    assert len(error.splitlines()) == 1


def test_a_nan_loss_stops_the_run_naming_the_task_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    import densetasks.engine.loop as loop_module

    real_losses = loop_module.task_losses
    calls = []

    def depth_goes_bad(tasks, outputs, batch, aux_weights):
        losses = real_losses(tasks, outputs, batch, aux_weights)
        calls.append(1)
        if len(calls) == 4:
            losses["depth"] = losses["depth"] * float("nan")
        return losses

    monkeypatch.setattr(loop_module, "task_losses", depth_goes_bad)
    config = {**CONFIG, "train": {**CONFIG["train"], "checkpoint_every": 2, "eval_every": 2}}
    with pytest.raises(TrainingError, match=r"step 4 for task\(s\) depth=nan"):
        command(["train", str(write_config(tmp_path, config)), "--out", str(tmp_path / "run")])
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2


def test_an_empty_training_split_is_one_line_naming_split_and_dataset(tmp_path, capsys):
    root = tmp_path / "data"
    sample = {
        "image": torch.rand(3, 32, 32),
        "semseg": torch.randint(0, 3, (32, 32)),
        "depth": torch.rand(1, 32, 32) + 1.0,
        "meta": {"name": "v0"},
    }
    write_folder_dataset(
        [sample], root, "val", label_kinds(), task_options={"semseg": {"num_classes": 3}}
    )
    (root / "splits" / "train.txt").write_text("")
    data = {key: value for key, value in CONFIG["data"].items() if key != "options"}
    config = {**CONFIG, "data": {**data, "dataset": "folder", "root": str(root)}}
    argv = ["train", str(write_config(tmp_path, config)), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith("densetasks: error: training split 'train' of dataset 'folder' at")
    assert str(root) in error
    assert not (tmp_path / "run").exists()
