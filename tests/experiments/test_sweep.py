"""Sweep building blocks: grid parsing and expansion, names, planning, Pareto front, outputs."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from densetasks.errors import ConfigError, TrainingError
from densetasks.experiments import sweep as sweep_module
from densetasks.experiments.sweep import (
    add_seed_axis,
    collect_results,
    combination_name,
    expand_grid,
    format_sweep_table,
    is_finished,
    pareto_front,
    parse_grid,
    plan_grid,
    plan_runs,
    run_sweep,
    train_named_run,
    write_sweep,
)
from densetasks.experiments.sweep_plots import _staircase, sweep_figure_png

BASE = {
    "tasks": {"semseg": {}, "depth": {}},
    "balancer": {"name": "fixed"},
    "train": {"steps": 5},
}


def test_parse_grid_reads_yaml_scalars_in_order():
    grid = parse_grid(
        ["balancer.weights.semseg=1, 10,0.5", "model.pretrained=true,off", "x=a,null"]
    )
    assert grid == {
        "balancer.weights.semseg": [1, 10, 0.5],
        "model.pretrained": [True, False],
        "x": ["a", None],
    }


@pytest.mark.parametrize(
    "item, fragment",
    [
        ("balancer.weights.semseg", "not of the form"),
        ("=1,2", "not of the form"),
        ("train.lr=1e-3,,1e-2", "empty value"),
        ("train.lr=[1", "not YAML"),
        ("tasks={a: 1}", "not a scalar"),
    ],
)
def test_parse_grid_rejects_malformed_items(item, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_grid([item])


def test_parse_grid_rejects_a_repeated_key():
    with pytest.raises(ConfigError, match="train.lr: the key is given twice"):
        parse_grid(["train.lr=1", "train.lr=2"])


def test_expand_grid_is_the_cartesian_product_last_key_fastest():
    grid = {"a": [1, 2], "b": ["x", "y", "z"]}
    combos = expand_grid(grid)
    assert len(combos) == 6
    assert combos[:4] == [
        {"a": 1, "b": "x"},
        {"a": 1, "b": "y"},
        {"a": 1, "b": "z"},
        {"a": 2, "b": "x"},
    ]
    assert expand_grid({}) == [{}]


def test_combination_name_is_readable_and_file_system_safe():
    assert combination_name({"balancer.weights.semseg": 10, "train.lr": 0.01}) == (
        "balancer.weights.semseg=10,train.lr=0.01"
    )
    assert combination_name({"model.pretrained": True, "data.root": "/d a/t"}) == (
        "model.pretrained=true,data.root=_d_a_t"
    )
    assert combination_name({}) == "base"


def test_plan_grid_validates_every_combination(tmp_path):
    planned = plan_grid(BASE, {"balancer.weights.semseg": [1, 10], "train.lr": [0.1]}, tmp_path)
    assert [run.name for run in planned] == [
        "balancer.weights.semseg=1,train.lr=0.1",
        "balancer.weights.semseg=10,train.lr=0.1",
    ]
    assert planned[1].config.balancer.weights == {"semseg": 10.0}
    assert planned[1].config.train.lr == 0.1
    assert planned[1].run_dir == tmp_path / "balancer.weights.semseg=10,train.lr=0.1"
    assert BASE["balancer"] == {"name": "fixed"}  # the base config is not modified


def test_a_bad_key_fails_before_anything_trains_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.lrr"):
        plan_grid(BASE, {"train.lrr": [1, 2]}, tmp_path)
    with pytest.raises(ConfigError, match=r"balancer\.weights\.normals: not one of the tasks"):
        plan_grid(BASE, {"balancer.weights.normals": [1]}, tmp_path)
    assert not any(tmp_path.iterdir())


def test_plan_runs_rejects_a_name_that_is_not_a_folder(tmp_path):
    with pytest.raises(ValueError, match="not a folder name"):
        plan_runs(BASE, {"a/b": {}}, tmp_path)


def test_pareto_front_by_hand():
    points = [
        {"iou": 0.5, "err": 1.0},  # 0: front (best err)
        {"iou": 0.6, "err": 1.5},  # 1: front
        {"iou": 0.55, "err": 1.6},  # 2: dominated by 1
        {"iou": 0.7, "err": 3.0},  # 3: front (best iou)
        {"iou": 0.5, "err": 1.2},  # 4: dominated by 0 (equal iou, worse err)
        {"iou": 0.6, "err": 1.5},  # 5: equal to 1, so both stay
    ]
    assert pareto_front(points, {"iou": True, "err": False}) == [0, 1, 3, 5]
    # Flipping a direction changes the answer: now low iou and high err are good.
    assert pareto_front(points, {"iou": False, "err": True}) == [2, 3, 4]
    assert pareto_front(points, {"iou": True}) == [3]
    assert pareto_front([], {"iou": True}) == []


def test_pareto_front_rejects_a_point_without_an_objective():
    with pytest.raises(ValueError, match=r"point 1 lacks \['err'\]"):
        pareto_front([{"iou": 1.0, "err": 1.0}, {"iou": 1.0}], {"iou": True, "err": False})
    with pytest.raises(ValueError, match="at least one objective"):
        pareto_front([{"iou": 1.0}], {})


def fake_run(run_dir, tasks, metrics, split="val"):
    """A run directory as the engine leaves it, with just the files a sweep reads."""
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"tasks": {t: {} for t in tasks}}))
    payload = {
        "step": 5,
        "split": split,
        "metrics": {task: metrics[task] for task in tasks},
        "higher_is_better": {
            "semseg": {"miou": True, "pixel_acc": True},
            "depth": {"rmse": False},
        },
        "primary": {"semseg": "miou", "depth": "rmse"},
    }
    payload["higher_is_better"] = {t: payload["higher_is_better"][t] for t in tasks}
    payload["primary"] = {t: payload["primary"][t] for t in tasks}
    (run_dir / f"metrics_{split}.json").write_text(json.dumps(payload))


@pytest.fixture
def finished_sweep(tmp_path):
    grid = {"balancer.weights.semseg": [1, 10, 50]}
    planned = plan_grid(BASE, grid, tmp_path / "runs")
    values = [(0.40, 2.0), (0.50, 2.5), (0.45, 3.0)]
    for run, (miou, rmse) in zip(planned, values, strict=True):
        fake_run(
            run.run_dir,
            ["semseg", "depth"],
            {"semseg": {"miou": miou, "pixel_acc": 0.9}, "depth": {"rmse": rmse}},
        )
    fake_run(
        tmp_path / "uncertainty",
        ["semseg", "depth"],
        {"semseg": {"miou": 0.55, "pixel_acc": 0.9}, "depth": {"rmse": 2.2}},
    )
    return planned, grid, tmp_path


def test_collect_results_marks_the_pareto_front_including_marked_runs(finished_sweep):
    planned, grid, tmp_path = finished_sweep
    assert all(is_finished(run.run_dir) for run in planned)
    result = collect_results(planned, "val", marked=[tmp_path / "uncertainty"], keys=list(grid))
    names = [entry.name for entry in result.entries]
    assert names == [run.name for run in planned] + ["uncertainty"]
    assert [entry.marked for entry in result.entries] == [False, False, False, True]
    # (0.40, 2.0) has the best rmse; uncertainty (0.55, 2.2) dominates w=10 and w=50.
    assert [entry.pareto for entry in result.entries] == [True, False, False, True]
    assert result.primary == {"semseg": "miou", "depth": "rmse"}
    assert result.primary_directions() == {"semseg": True, "depth": False}


def test_collect_results_compares_only_the_tasks_every_run_has(finished_sweep):
    planned, _grid, tmp_path = finished_sweep
    fake_run(tmp_path / "stl_semseg", ["semseg"], {"semseg": {"miou": 0.6, "pixel_acc": 0.9}})
    result = collect_results(planned, "val", marked=[tmp_path / "stl_semseg"])
    assert result.primary == {"semseg": "miou"}
    assert [entry.pareto for entry in result.entries] == [False, False, False, True]
    assert result.keys == ["balancer.weights.semseg"]


def test_write_sweep_writes_json_table_and_figure(finished_sweep):
    planned, grid, tmp_path = finished_sweep
    result = collect_results(planned, "val", marked=[tmp_path / "uncertainty"], keys=list(grid))
    write_sweep(result, tmp_path / "out", render_png=sweep_figure_png)
    stored = json.loads((tmp_path / "out" / "sweep.json").read_text())
    assert [run["overrides"] for run in stored["runs"]] == [
        {"balancer.weights.semseg": 1},
        {"balancer.weights.semseg": 10},
        {"balancer.weights.semseg": 50},
        {},
    ]
    assert stored["runs"][1]["metrics"]["depth"] == {"rmse": 2.5}
    assert [run["pareto"] for run in stored["runs"]] == [True, False, False, True]
    table = format_sweep_table(result).splitlines()
    header = "| run | balancer.weights.semseg | semseg miou ↑ | depth rmse ↓ | Pareto |"
    assert table[0] == header
    assert table[2] == "| balancer.weights.semseg=1 | 1 | 0.4 | 2 | ✓ |"
    assert table[5] == "| uncertainty (marked) | — | 0.55 | 2.2 | ✓ |"
    assert "sweep.png" in (tmp_path / "out" / "sweep.md").read_text()
    assert (tmp_path / "out" / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_figure_with_two_swept_keys_and_the_pareto_staircase(tmp_path):
    """Several keys: one tick per run, labelled with its values."""
    grid = {"balancer.weights.semseg": [1, 2], "train.lr": [0.1, 0.2]}
    planned = plan_grid(BASE, grid, tmp_path)
    for index, run in enumerate(planned):
        metrics = {
            "semseg": {"miou": 0.1 * index, "pixel_acc": 0.5},
            "depth": {"rmse": 1.0 + index},
        }
        fake_run(run.run_dir, ["semseg", "depth"], metrics)
    result = collect_results(planned, "val")
    write_sweep(result, tmp_path / "out", render_png=sweep_figure_png)
    assert (tmp_path / "out" / "sweep.png").stat().st_size > 1000
    # Staircase through a front (higher a and lower b are better): best a first.
    front = [{"a": 0.5, "b": 1.0}, {"a": 0.7, "b": 3.0}, {"a": 0.6, "b": 2.0}]
    assert _staircase(front, "a", "b", {"a": True, "b": False}) == (
        [0.7, 0.6, 0.6, 0.5, 0.5],
        [3.0, 3.0, 2.0, 2.0, 1.0],
    )


def test_write_sweep_without_a_renderer_writes_no_figure(finished_sweep):
    planned, grid, tmp_path = finished_sweep
    write_sweep(collect_results(planned, "val", keys=list(grid)), tmp_path / "out")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["sweep.json", "sweep.md"]
    assert "sweep.png" not in (tmp_path / "out" / "sweep.md").read_text()


def imported_modules(path: Path) -> set[str]:
    """Every module an import statement anywhere in ``path`` names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_sweep_module_imports_neither_its_plots_nor_matplotlib():
    """One-way dependency: sweep_plots imports sweep's types, sweep never imports plots."""
    imported = imported_modules(Path(sweep_module.__file__))
    assert not {name for name in imported if "plots" in name or "matplotlib" in name}


def test_the_engine_never_imports_the_experiments():
    """Experiments drive the engine; the engine does not know about reports or sweeps."""
    engine_dir = Path(sweep_module.__file__).parents[1] / "engine"
    for path in sorted(engine_dir.glob("*.py")):
        experiments = {n for n in imported_modules(path) if n.startswith("densetasks.experiments")}
        assert not experiments, f"{path.name} imports {sorted(experiments)}"


def test_drawing_leaves_the_matplotlib_backend_and_pyplot_alone(tmp_path):
    """Importing and drawing must not switch the user's backend nor load pyplot."""
    script = """
import sys, matplotlib
matplotlib.use("svg")
from densetasks.experiments.report_plots import blank_figure, figure_png
figure = blank_figure((2, 2))
figure.subplots().plot([0, 1], [1, 0])
png = figure_png(figure, dpi=50)
assert png[:8] == b"\\x89PNG\\r\\n\\x1a\\n", png[:8]
assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
assert "matplotlib.pyplot" not in sys.modules
"""
    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stderr


def test_seed_axis_is_the_last_key_and_named_in_every_run_folder(tmp_path):
    grid = add_seed_axis({"balancer.weights.semseg": [1, 10]}, [0, 1])
    assert list(grid) == ["balancer.weights.semseg", "seed"]
    planned = plan_grid(BASE, grid, tmp_path)
    assert [run.name for run in planned] == [
        "balancer.weights.semseg=1,seed=0",
        "balancer.weights.semseg=1,seed=1",
        "balancer.weights.semseg=10,seed=0",
        "balancer.weights.semseg=10,seed=1",
    ]
    assert [run.config.seed for run in planned] == [0, 1, 0, 1]
    assert add_seed_axis({"train.lr": [0.1]}, []) == {"train.lr": [0.1]}


@pytest.mark.parametrize(
    "grid, seeds, fragment",
    [({"seed": [0, 1]}, [2], "use one"), ({}, [0, 1, 0], "seed 0 is given twice")],
)
def test_seed_axis_rejects_double_seeds(grid, seeds, fragment):
    with pytest.raises(ConfigError, match=fragment):
        add_seed_axis(grid, seeds)


def test_a_failed_run_is_named_with_its_error_after_the_others_train(tmp_path, monkeypatch):
    planned = plan_grid(BASE, {"train.lr": [0.1, 0.2]}, tmp_path)
    trained = []

    def fake_train(config, run_dir, threads):
        if config["train"]["lr"] == 0.1:
            raise TrainingError("the semseg loss is nan")
        trained.append(run_dir)

    monkeypatch.setattr(sweep_module, "train_one", fake_train)
    lines: list[str] = []
    with pytest.raises(TrainingError, match=r"1 of 2 sweep runs failed: train\.lr=0\.1 \("):
        run_sweep(planned, log=lines.append)
    assert "sweep: train.lr=0.1 failed: TrainingError: the semseg loss is nan" in lines
    assert trained == [str(planned[1].run_dir)]


TINY = {
    **BASE,
    "data": {"options": {"n_train": 4, "n_val": 2, "n_test": 2, "size": [32, 32]}, "batch_size": 2},
    "model": {"architecture": "hard_sharing", "encoder": "tiny", "bottleneck": "none"},
    "train": {"steps": 2, "images_every": 0},
}


@pytest.mark.usefixtures("one_thread")
def test_train_named_run_trains_that_run_alone_and_exits_on_a_name_the_plan_lacks(tmp_path):
    """What a benchmark's --verify retrains: the one named run, evaluated on test."""
    planned = plan_runs(TINY, {"a": {}, "b": {"train.steps": 1}}, tmp_path)
    assert train_named_run(planned, "b", "no b") == tmp_path / "b"
    assert (tmp_path / "b" / "metrics_test.json").is_file()
    assert not (tmp_path / "a").exists()
    with pytest.raises(SystemExit, match="^no c$"):
        train_named_run(planned, "c", "no c")
