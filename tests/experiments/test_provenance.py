"""Provenance of benchmark results: a clean tree of one commit, and what is recorded."""

import argparse
import json
import os
import subprocess
from pathlib import Path

import numpy
import pytest
import timm
import torch

from densetasks.experiments import provenance
from densetasks.experiments.provenance import (
    DirtyTreeError,
    benchmark_provenance,
    changed_paths,
    start_benchmark,
)


def git(root: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *arguments], check=True, capture_output=True, text=True
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git checkout with a package file and a benchmark script, one commit; the code under
    test takes it for the checkout densetasks is imported from."""
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / "benchmarks" / "bench").mkdir(parents=True)
    (root / "pkg" / "code.py").write_text("x = 1\n")
    (root / "benchmarks" / "bench" / "run.py").write_text("print('bench')\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    monkeypatch.setattr(provenance, "package_checkout", lambda: root / "pkg")
    return root


def options(allow_dirty: bool = False, verify: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(allow_dirty=allow_dirty, verify=verify)


def script(root: Path) -> Path:
    return root / "benchmarks" / "bench" / "run.py"


def test_clean_tree_records_commit_versions_cpu_and_command(
    checkout: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    record = benchmark_provenance(script(checkout), options(), ["--steps", "5", "a b"])
    assert record["commit"] == git(checkout, "rev-parse", "HEAD")
    assert record["dirty"] is False
    assert record["torch"] == torch.__version__
    assert record["timm"] == timm.__version__
    assert record["numpy"] == numpy.__version__
    assert record["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert record["torch_threads"] == torch.get_num_threads()
    assert record["omp_num_threads"] == "1"
    assert record["kernel_environment"]["OMP_NUM_THREADS"] == "1"
    assert record["cpu_model"]
    assert record["python"].count(".") == 2
    assert record["date"].endswith("+00:00")
    assert record["command"] == ("OMP_NUM_THREADS=1 python benchmarks/bench/run.py --steps 5 'a b'")
    json.dumps(record)  # goes into a results file as it is


def test_uncommitted_change_is_refused_naming_the_file(checkout: Path) -> None:
    (checkout / "pkg" / "code.py").write_text("x = 2\n")
    with pytest.raises(DirtyTreeError, match=r"uncommitted changes: pkg/code.py"):
        benchmark_provenance(script(checkout), options(), [])


def test_untracked_file_is_refused_too(checkout: Path) -> None:
    (checkout / "pkg" / "new.py").write_text("y = 1\n")
    with pytest.raises(DirtyTreeError, match="pkg/new.py"):
        benchmark_provenance(script(checkout), options(), [])


def test_allow_dirty_runs_and_records_why(checkout: Path) -> None:
    (checkout / "pkg" / "code.py").write_text("x = 2\n")
    record = benchmark_provenance(script(checkout), options(allow_dirty=True), [])
    assert record["dirty"] is True
    assert "pkg/code.py" in record["dirty_reasons"][0]


def test_changes_in_the_output_folders_are_not_code(checkout: Path) -> None:
    output = checkout / "benchmarks" / "bench"
    (output / "results.json").write_text("{}")
    assert changed_paths(checkout, [output]) == []
    assert changed_paths(checkout) == ["?? benchmarks/bench/results.json"]
    assert benchmark_provenance(script(checkout), options(), [], [output])["dirty"] is False


def test_verification_logs_of_any_benchmark_are_not_code(checkout: Path) -> None:
    other = checkout / "benchmarks" / "other"
    other.mkdir()
    (other / "verifications.json").write_text("[]")
    (other / "results.json").write_text("{}")
    assert changed_paths(checkout) == ["?? benchmarks/other/results.json"]


def test_script_of_another_checkout_is_refused(checkout: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")
    (other / "run.py").write_text("")
    with pytest.raises(DirtyTreeError, match="densetasks is imported from"):
        benchmark_provenance(other / "run.py", options(), [])


def test_work_folder_of_another_commit_is_refused(checkout: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    first = benchmark_provenance(script(checkout), options(), [], work_dir=work)
    assert first["earlier_invocations"] == []
    again = benchmark_provenance(script(checkout), options(), [], work_dir=work)
    assert [entry["commit"] for entry in again["earlier_invocations"]] == [first["commit"]]
    (checkout / "pkg" / "code.py").write_text("x = 3\n")
    git(checkout, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "second")
    with pytest.raises(DirtyTreeError, match=f"another commit.*{first['commit']}"):
        benchmark_provenance(script(checkout), options(), [], work_dir=work)
    mixed = benchmark_provenance(script(checkout), options(allow_dirty=True), [], work_dir=work)
    assert mixed["dirty"] is True
    assert len(json.loads((work / "provenance.json").read_text())) == 3


def test_verify_leaves_the_work_folder_alone(checkout: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    benchmark_provenance(script(checkout), options(verify="row"), [], work_dir=work)
    assert not work.exists()


def test_script_entry_exits_with_one_line(checkout: Path) -> None:
    (checkout / "pkg" / "code.py").write_text("x = 2\n")
    with pytest.raises(SystemExit, match=r"^error: .*pkg/code.py.*--allow-dirty"):
        start_benchmark(script(checkout), options(), [])


def test_this_checkout_is_the_one_densetasks_comes_from() -> None:
    root = provenance.git_root(provenance.package_checkout())
    assert root is not None and (root / "densetasks" / "__init__.py").is_file()
    assert os.path.isdir(root / ".git") or (root / ".git").is_file()
