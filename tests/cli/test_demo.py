"""``densetasks demo --quick``: the whole pipeline end to end in a few steps, then predict."""

import argparse
import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from densetasks.cli import demo as demo_command
from densetasks.cli import predict as predict_command
from densetasks.cli.demo import DEMO_TASKS, FULL, QUICK, demo_steps, training_threads
from densetasks.errors import ConfigError


def parse(module, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="densetasks")
    module.add_parser(parser.add_subparsers())
    return parser.parse_args(argv)


@pytest.fixture(scope="module")
def quick_demo(tmp_path_factory) -> tuple[Path, str]:
    """The quick demo's output folder and what it printed (run once for this file)."""
    out = tmp_path_factory.mktemp("demo")
    args = parse(demo_command, ["demo", "--quick", "--out", str(out)])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert args.func(args) == 0
    return out, printed.getvalue()


def test_quick_demo_trains_every_run_and_reports_delta_m(quick_demo) -> None:
    out, printed = quick_demo
    assert "[4/4] mtl_hard_sharing: done" in printed
    assert "Δm %" in printed
    report = json.loads((out / "report" / "report.json").read_text())
    assert set(report["baselines"]) == set(DEMO_TASKS)
    run = report["runs"][0]
    assert run["architecture"] == "hard_sharing" and run["tasks"] == list(DEMO_TASKS)
    assert isinstance(run["delta_m_percent"]["primary"], float)
    for name in ["mtl_hard_sharing", *(f"stl_{task}" for task in DEMO_TASKS)]:
        assert (out / "runs" / name / "checkpoints" / "best.pt").is_file()
    assert (out / "report" / "report.html").is_file()


def test_predict_on_the_demo_multi_task_run(quick_demo, tmp_path: Path) -> None:
    out, _ = quick_demo
    image = sorted((out / "data" / "images").glob("*.png"))[0]
    args = parse(
        predict_command,
        [
            "predict",
            str(out / "runs" / "mtl_hard_sharing"),
            str(image),
            "--out",
            str(tmp_path),
            "--checkpoint",
            "last",
        ],
    )
    assert args.func(args) == 0
    written = sorted(path.name for path in tmp_path.iterdir())
    assert written == sorted(f"{image.stem}_{name}.png" for name in [*DEMO_TASKS, "sheet"])


def test_steps_follow_the_time_budget() -> None:
    assert demo_steps(FULL, minutes=8, runs=4) == int(8 * FULL.steps_per_minute / 4)
    assert demo_steps(FULL, minutes=0.01, runs=4) == FULL.min_steps
    assert demo_steps(QUICK, minutes=8, runs=4) == QUICK.min_steps
    with pytest.raises(ConfigError, match="--minutes"):
        demo_steps(FULL, minutes=0, runs=4)


def test_refuses_to_overwrite_an_earlier_demo(quick_demo) -> None:
    out, printed = quick_demo
    assert "done, test semseg miou" in printed
    args = parse(demo_command, ["demo", "--quick", "--out", str(out)])
    with pytest.raises(ConfigError, match="already holds a demo"):
        args.func(args)


def test_a_busy_machine_trains_on_one_thread_unless_told() -> None:
    assert training_threads(load=0.3, cores=2, environ={}) is None
    assert training_threads(load=1.99, cores=2, environ={}) is None
    assert training_threads(load=2.0, cores=2, environ={}) == 1
    assert training_threads(load=19.0, cores=16, environ={}) == 1
    assert training_threads(load=19.0, cores=2, environ={"OMP_NUM_THREADS": "2"}) is None


def test_a_busy_machine_runs_the_demo_on_one_thread_then_gives_threads_back(
    monkeypatch, capsys, tmp_path: Path
) -> None:
    seen = []
    monkeypatch.setattr(
        demo_command, "_run_demo", lambda args: seen.append(torch.get_num_threads())
    )
    monkeypatch.setattr(os, "getloadavg", lambda: (99.0, 99.0, 99.0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    demo_command.run(parse(demo_command, ["demo", "--quick", "--out", str(tmp_path)]))
    assert seen == [1] and torch.get_num_threads() == before
    assert "the machine is busy (load average 99.0 on" in capsys.readouterr().out
