"""Multi-task unsupervised domain adaptation in the engine (Lopes et al., WACV 2023, Sec. 4.5)."""

import json

import pytest
import torch

from densetasks.cli.main import main
from densetasks.data.synthetic import SyntheticScenes
from densetasks.engine import build
from densetasks.engine.adversarial import AdaptationStep, aligned_outputs
from densetasks.engine.checkpoint import load_checkpoint
from densetasks.engine.config import validate_config
from densetasks.engine.distributed import ProcessInfo
from densetasks.engine.loop import TARGET_IMAGES, StepParts, train_step
from densetasks.engine.optim import build_optimizer
from densetasks.engine.passes import to_device
from densetasks.engine.run import train
from densetasks.errors import ConfigError

SIZE = [32, 32]
DATA = {"n_train": 6, "n_val": 2, "n_test": 2, "size": SIZE}
CONFIG = {
    "seed": 2,
    "tasks": {"semseg": {}, "depth": {"loss": "berhu", "far": 20.0}},
    "data": {
        "options": DATA,
        "crop_size": SIZE,
        "batch_size": 2,
        "target": {"options": {**DATA, "style": "night", "seed": 1}},
    },
    "model": {
        "architecture": "three_ways_mteb",
        "encoder": "tiny",
        "options": {"decoder_widths": [8, 8, 8, 8, 8]},
    },
    "balancer": {"name": "fixed", "weights": {"semseg": 50.0, "depth": 1.0}},
    "train": {
        "steps": 4,
        "optimizer": "adam",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "eval_every": 2,
        "log_every": 1,
        "checkpoint_every": 2,
        "images_every": 0,
        "device": "cpu",
    },
    "adaptation": {"enabled": True, "discriminator_width": 4},
}


pytestmark = pytest.mark.usefixtures("one_thread")


def step_parts(config):
    """Everything :func:`train_step` needs, built as the trainer builds it."""
    torch.manual_seed(0)
    source = build.open_training_dataset(config)
    tasks = build.build_tasks(config, source)
    model = build.build_model(config, tasks)
    balancer = build.build_balancer(config, tasks, model)
    optimizer = build_optimizer(
        config.train, model.encoder_parameters(), model.decoder_parameters()
    )
    parts = StepParts.on_cpu(
        model,
        tasks,
        balancer,
        optimizer,
        config.train,
        strategy=AdaptationStep(build.build_adversary(config, tasks, model)),
    )
    kinds = build.run_label_kinds(tasks, model)
    build.attach_transform(config, source, tasks, model, train=True)
    images = build.open_target_training_images(config)
    build.attach_transform(config, images, tasks, model, train=True)
    batch = next(iter(build.train_loader(config, source, kinds, 0, ProcessInfo())))
    target = next(iter(build.train_loader(config, images, kinds, 0, ProcessInfo(), seed=9)))
    assert set(target) == {"image", "meta"}
    batch[TARGET_IMAGES] = target["image"]
    return parts, to_device(batch, torch.device("cpu"))


def test_one_step_moves_the_discriminators_and_the_network():
    parts, batch = step_parts(validate_config(CONFIG))
    network = {k: v.clone() for k, v in parts.model.state_dict().items()}
    adversary = parts.strategy.adversary
    discriminators = {k: v.clone() for k, v in adversary.state_dict().items()}
    result = train_step(parts, batch, 0)
    assert set(result.adaptation) == {"adversarial", "discriminator"}
    # 4 discriminators at chance: L_D = 4 · 2 · ln 2; the adversarial loss is λ · Σ ln 2
    assert result.adaptation["discriminator"] == pytest.approx(8 * 0.6931, rel=0.05)
    assert result.adaptation["adversarial"] == pytest.approx(5e-3 * 4 * 0.6931, rel=0.05)
    moved = [k for k, v in adversary.state_dict().items() if not torch.equal(v, discriminators[k])]
    assert any(key.endswith("original") for key in moved)
    assert {key.split(".")[1] for key in moved} == {
        "semseg",
        "semseg@scale1",
        "depth",
        "depth@scale1",
    }
    changed = [k for k, v in parts.model.state_dict().items() if not torch.equal(v, network[k])]
    assert any(key.startswith("encoder") for key in changed)


def test_the_adversarial_gradient_reaches_the_network_only_through_target_rows():
    """With λ_adv large the network's gradient differs from a source-only step's, and the
    discriminator gets no gradient from the network's loss (it is frozen there)."""
    config = validate_config({**CONFIG, "adaptation": {**CONFIG["adaptation"], "lambda_adv": 1e3}})
    parts, batch = step_parts(config)
    maps = parts.strategy.adversary.maps(
        parts.model(torch.cat([batch["image"], batch[TARGET_IMAGES]])), batch, 2
    )
    assert (
        set(maps.source) == set(maps.target) == {"semseg", "semseg@scale1", "depth", "depth@scale1"}
    )
    assert all(
        value.shape[0] == 2 and value.shape[-2:] == (32, 32) for value in maps.target.values()
    )
    parts.strategy.adversary.generator_loss(maps).backward()
    assert all(p.grad is None for p in parts.strategy.adversary.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in parts.model.parameters())


def test_eq9_weights_final_outputs_one_and_each_scale_one_over_s():
    config = validate_config(
        {**CONFIG, "model": {**CONFIG["model"], "options": {"supervised_scales": [1, 2]}}}
    )
    source = build.open_training_dataset(config)
    tasks = build.build_tasks(config, source)
    model = build.build_model(config, tasks)
    weights = {out.key: out.weight for out in aligned_outputs(tasks, model)}
    assert weights == {
        "semseg": 1.0,
        "semseg@scale1": 0.5,
        "semseg@scale2": 0.5,
        "depth": 1.0,
        "depth@scale1": 0.5,
        "depth@scale2": 0.5,
    }


def _corrupt_target_labels(monkeypatch):
    """Every night-style sample gets random labels (the training split and the evaluation
    splits alike): training must not notice."""
    real_load = SyntheticScenes.load

    def load(self, index):
        sample = real_load(self, index)
        if self.style.name == "night":
            generator = torch.Generator().manual_seed(index)
            sample["semseg"] = torch.randint(0, 7, sample["semseg"].shape, generator=generator)
            sample["depth"] = torch.rand(sample["depth"].shape, generator=generator) * 9 + 1
        return sample

    monkeypatch.setattr(SyntheticScenes, "load", load)


def test_target_labels_never_reach_training(tmp_path, monkeypatch):
    config = validate_config(CONFIG)
    train(config, tmp_path / "clean")
    _corrupt_target_labels(monkeypatch)
    train(config, tmp_path / "corrupt")
    clean = load_checkpoint(tmp_path / "clean" / "checkpoints" / "last.pt")
    corrupt = load_checkpoint(tmp_path / "corrupt" / "checkpoints" / "last.pt")
    for section in ("model", "optimizer"):
        assert _equal(clean[section], corrupt[section]), section
    assert _equal(clean["adversary"], corrupt["adversary"])
    # ... but the target scores (the only reader of target labels) do see the corruption
    for split in ("val", "test"):
        name = f"metrics_{split}.json"
        assert _read(tmp_path / "clean" / name) == _read(tmp_path / "corrupt" / name)
    assert _read(tmp_path / "clean" / "metrics_target_test.json") != _read(
        tmp_path / "corrupt" / "metrics_target_test.json"
    )


def test_source_only_and_adapted_runs_compare_on_the_target_in_the_report(tmp_path):
    config = validate_config({**CONFIG, "adaptation": {"enabled": False}})
    train(config, tmp_path / "source_only")
    assert "adversary" not in load_checkpoint(tmp_path / "source_only" / "checkpoints" / "last.pt")
    for split in ("target_val", "target_test"):
        payload = _read(tmp_path / "source_only" / f"metrics_{split}.json")
        assert set(payload["metrics"]) == {"semseg", "depth"}
    train(validate_config(CONFIG), tmp_path / "adapted")
    runs = [str(tmp_path / "source_only"), str(tmp_path / "adapted")]
    out = tmp_path / "report"
    assert main(["--debug", "report", *runs, "--split", "target_test", "--out", str(out)]) == 0
    report = _read(out / "report.json")
    assert report["split"] == "target_test"
    target = _read(tmp_path / "adapted" / "metrics_target_test.json")["metrics"]
    assert report["runs"][1]["metrics"] == target


def test_eval_on_the_target_writes_what_training_wrote(tmp_path, capsys):
    steps = {**CONFIG["train"], "steps": 2}
    run = train(validate_config({**CONFIG, "train": steps}), tmp_path / "adapted")
    capsys.readouterr()  # the training log
    for split in ("target_val", "target_test"):
        written = (run / f"metrics_{split}.json").read_text()
        (run / f"metrics_{split}.json").unlink()
        argv = ["eval", str(run), "--split", split, "--device", "cpu", "--json"]
        assert main(argv) == 0
        assert json.loads(capsys.readouterr().out) == json.loads(written)
        assert (run / f"metrics_{split}.json").read_text() == written
    plain = {**CONFIG, "data": {**CONFIG["data"], "target": None}, "train": steps}
    plain = train(validate_config({**plain, "adaptation": {"enabled": False}}), tmp_path / "plain")
    capsys.readouterr()
    assert main(["eval", str(plain), "--split", "target_test", "--device", "cpu"]) == 2
    error = capsys.readouterr().err.strip()
    assert "data.target" in error and len(error.splitlines()) == 1
    assert not (plain / "metrics_target_test.json").exists()


def test_resume_of_an_adaptation_run_is_exact(tmp_path, kill_at_step):
    config = validate_config({**CONFIG, "train": {**CONFIG["train"], "steps": 5}})
    train(config, tmp_path / "whole")

    with kill_at_step(3):
        train(config, tmp_path / "killed")
    assert load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")["step"] == 2
    train(config, tmp_path / "killed", resume=True)

    whole = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")
    resumed = load_checkpoint(tmp_path / "killed" / "checkpoints" / "last.pt")
    for section in ("model", "optimizer", "adversary"):
        assert _equal(whole[section], resumed[section]), section
    for split in ("val", "test", "target_val", "target_test"):
        name = f"metrics_{split}.json"
        assert _read(tmp_path / "whole" / name) == _read(tmp_path / "killed" / name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"options": DATA}}, "adaptation.enabled needs data.target"),
        (
            {"data": {**CONFIG["data"], "target": {"datset": "synthetic"}}},
            "data.target.datset",
        ),
        ({"adaptation": {"enabled": True, "lambda_adv": 0}}, "adaptation.lambda_adv"),
        ({"adaptation": {"enabled": True, "discriminator_betas": [0.9]}}, "discriminator_betas"),
    ],
)
def test_config_errors_name_the_key(change, message):
    with pytest.raises(ConfigError, match=message):
        validate_config({**CONFIG, **change})


def test_a_target_without_a_task_s_labels_or_a_task_without_a_map_is_refused(tmp_path):
    target = {"options": {**DATA, "style": "night", "tasks": ["semseg"]}}
    config = validate_config({**CONFIG, "data": {**CONFIG["data"], "target": target}})
    with pytest.raises(ConfigError, match=r"data.target: dataset 'synthetic' has no \['depth'\]"):
        train(config, tmp_path / "no_depth")
    config = validate_config(
        {**CONFIG, "tasks": {"semseg": {}, "edges": {}}, "balancer": {"name": "equal"}}
    )
    with pytest.raises(ConfigError, match=r"adaptation.enabled: task\(s\) \['edges'\] define no"):
        train(config, tmp_path / "edges")


def _equal(left, right) -> bool:
    if isinstance(left, dict):
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(
            _equal(a, b) for a, b in zip(left, right, strict=True)
        )
    if isinstance(left, torch.Tensor):
        return torch.equal(left, right)
    return left == right


def _read(path):
    return json.loads(path.read_text())
