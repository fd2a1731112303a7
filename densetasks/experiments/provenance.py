"""Where a benchmark's numbers came from: one commit, a clean tree, the library versions and
the CPU, recorded in the results file.

A long benchmark imports whatever code its process finds. Run from a tree that is being
edited, or resumed in a work folder whose runs an older commit trained, its results mix code
that no commit holds, and nobody can tell afterwards. :func:`start_benchmark` is the one call
a benchmark script makes first: it refuses a dirty checkout (``git status --porcelain``,
outside the benchmark's own output folders) and a work folder that another commit started,
unless the user says ``--allow-dirty``, and returns the record to write into the results:
commit, dirty flag, Python / torch / timm / NumPy versions, the CPU capability torch
dispatches its kernels for (``torch.backends.cpu.get_cpu_capability()``: AVX2 and AVX512
kernels round differently, so the same seed trains to different numbers on different CPUs),
torch's thread count, ``OMP_NUM_THREADS`` and the other variables that choose kernels, the
CPU model, the date and the command line. ``docs/benchmarks.md`` says how to use it.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy
import timm
import torch

from densetasks.data.io import write_json
from densetasks.errors import DenseTasksError
from densetasks.experiments.verify import VERIFICATIONS

KERNEL_VARIABLES = (
    "OMP_NUM_THREADS",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
)
"""Environment variables that choose the threads or the instruction set of torch's kernels
(each changes a run's last digits, and training carries them on)."""
WORK_RECORD = "provenance.json"
"""File in a benchmark's work folder: the record of every invocation that trained there."""


class DirtyTreeError(DenseTasksError):
    """The code a benchmark would run is not one commit (uncommitted changes, two checkouts,
    or runs left by another commit in its work folder)."""


def package_checkout() -> Path:
    """The folder that holds the ``densetasks`` package this process imported."""
    return Path(__file__).resolve().parents[2]  # densetasks/experiments/provenance.py


def git_root(path: Path) -> Path | None:
    """The top of the git checkout that holds ``path``, or None when it is not in one."""
    folder = path if path.is_dir() else path.parent
    result = _git(folder, "rev-parse", "--show-toplevel")
    return None if result is None else Path(result.strip()).resolve()


def git_commit(root: Path) -> str | None:
    """The commit checked out at ``root`` (full hash), or None without git."""
    result = _git(root, "rev-parse", "HEAD")
    return None if result is None else result.strip()


def changed_paths(root: Path, ignore: Sequence[Path] = ()) -> list[str]:
    """``git status --porcelain`` lines of ``root`` (untracked files included), except paths
    inside the ``ignore`` folders (a benchmark's own output) and ``verifications.json`` logs
    (what ``--verify`` of any benchmark appends; nothing reads them). Empty: a clean tree."""
    output = _git(root, "status", "--porcelain", "--untracked-files=all")
    if output is None:
        raise DirtyTreeError(f"{root}: git status failed: not a git checkout?")
    ignored = [path.resolve() for path in ignore]
    lines = []
    for line in output.splitlines():
        path = (root / line[3:].split(" -> ")[-1].strip('"')).resolve()
        inside = any(path == folder or folder in path.parents for folder in ignored)
        if not inside and path.name != VERIFICATIONS:
            lines.append(line)
    return lines


def environment() -> dict[str, Any]:
    """The software and the CPU that decide a run's floating-point results."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "kernel_environment": {
            name: os.environ[name] for name in KERNEL_VARIABLES if name in os.environ
        },
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def cpu_model() -> str:
    """The processor's name from ``/proc/cpuinfo`` (Linux), else what :mod:`platform` says."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def add_provenance_options(parser: argparse.ArgumentParser, verify: bool = True) -> None:
    """``--allow-dirty``, and ``--verify ROW`` and ``--tolerance`` unless ``verify`` is False
    (a benchmark that only times things has no row to retrain)."""
    parser.add_argument(
        "--allow-dirty",
        action="store_true",
        help="run although the checkout has uncommitted changes, the script and the package "
        "come from two checkouts, or the work folder holds runs of another commit (the "
        "results record it)",
    )
    parser.add_argument(
        "--verify",
        metavar="ROW",
        default=None,
        help="retrain one committed row in a temporary folder, print its numbers beside the "
        "committed ones and exit 1 if any differs by more than --tolerance",
    )
    parser.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="largest absolute difference --verify accepts, in the numbers' own units "
        "(Δm in percentage points; default 0.01)",
    )


def start_benchmark(
    script: str | Path,
    args: argparse.Namespace,
    argv: Sequence[str] | None = None,
    outputs: Sequence[Path] = (),
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """:func:`benchmark_provenance` for a script's ``main``: a refusal exits with its one-line
    message instead of a traceback."""
    try:
        return benchmark_provenance(script, args, argv, outputs, work_dir)
    except DirtyTreeError as error:
        raise SystemExit(f"error: {error}") from None


def benchmark_provenance(
    script: str | Path,
    args: argparse.Namespace,
    argv: Sequence[str] | None = None,
    outputs: Sequence[Path] = (),
    work_dir: Path | None = None,
) -> dict[str, Any]:
    """Check that the benchmark runs one commit's code and return what to record.

    ``script`` is the benchmark's ``__file__`` and ``argv`` its arguments (default
    ``sys.argv[1:]``); ``outputs`` are the folders it writes (their changes are its own
    results, not code); ``work_dir`` is where its runs are kept across invocations: this
    invocation's record is added to ``work_dir/provenance.json``, and a folder that another
    commit (or a dirty tree) trained in is refused, since finished runs there are skipped, not
    retrained (``--verify`` trains in a temporary folder and leaves ``work_dir`` alone).
    Raises :class:`DirtyTreeError` unless ``args.allow_dirty``; the record says ``dirty``
    either way.
    """
    if getattr(args, "verify", None):
        work_dir = None
    root = git_root(package_checkout())
    commit = None if root is None else git_commit(root)
    earlier = [] if work_dir is None else _invocations(work_dir)
    ignored = [*outputs, *([work_dir] if work_dir is not None else [])]
    problems = [*_code_problems(script, root, ignored), *_work_problems(work_dir, earlier, commit)]
    if problems and not args.allow_dirty:
        raise DirtyTreeError("; ".join(problems) + " (--allow-dirty runs anyway)")
    record = {
        "commit": commit,
        "dirty": bool(problems),
        **({"dirty_reasons": problems} if problems else {}),
        **environment(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command_line(script, root, sys.argv[1:] if argv is None else argv),
    }
    if work_dir is not None:
        work_dir.mkdir(parents=True, exist_ok=True)
        write_json(work_dir / WORK_RECORD, [*earlier, record])
        record["earlier_invocations"] = [
            {key: entry.get(key) for key in ("commit", "dirty", "date", "command")}
            for entry in earlier
        ]
    return record


def _code_problems(script: str | Path, root: Path | None, ignored: Sequence[Path]) -> list[str]:
    """Why the code this process runs is not one commit's: no checkout, two checkouts
    (``root`` holds the package, the script is elsewhere), or uncommitted changes."""
    script_root = git_root(Path(script).resolve())
    if root is None or script_root is None:
        return [f"{package_checkout()} or {script} is not in a git checkout"]
    if root != script_root:
        return [
            f"the script is in {script_root} but densetasks is imported from {root} (set "
            "PYTHONPATH to the script's checkout)"
        ]
    changes = changed_paths(root, ignored)
    if not changes:
        return []
    more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
    return [f"{root} has uncommitted changes: {', '.join(c[3:] for c in changes[:5])}{more}"]


def _work_problems(
    work_dir: Path | None, earlier: list[dict[str, Any]], commit: str | None
) -> list[str]:
    """Why the runs kept in ``work_dir`` are not this commit's."""
    others = sorted({str(entry["commit"]) for entry in earlier if entry["commit"] != commit})
    if not others and not any(entry["dirty"] for entry in earlier):
        return []
    return [
        f"{work_dir} holds runs trained at another commit or from a dirty tree "
        f"({', '.join(others) or 'dirty'}): finished runs are skipped, not retrained; use a "
        "fresh work folder"
    ]


def provenance_line(record: dict[str, Any]) -> str:
    """The record as one Markdown line, for benchmarks whose output is a printed table."""
    state = "dirty: " + "; ".join(record["dirty_reasons"]) if record["dirty"] else "clean"
    return (
        f"Provenance: commit {record['commit']} ({state}), Python {record['python']}, torch "
        f"{record['torch']}, timm {record['timm']}, NumPy {record['numpy']}, "
        f"{record['cpu_model']} ({record['cpu_capability']}, {record['cpu_count']} CPUs), "
        f"{record['torch_threads']} torch thread(s), OMP_NUM_THREADS="
        f"{record['omp_num_threads']}, {record['date']}: `{record['command']}`\n"
    )


def command_line(script: str | Path, root: Path | None, argv: Sequence[str]) -> str:
    """``OMP_NUM_THREADS=.. python <script relative to the checkout> <argv>``."""
    path = Path(script).resolve()
    shown = path.relative_to(root) if root is not None and root in path.parents else path
    threads = os.environ.get("OMP_NUM_THREADS")
    prefix = [f"OMP_NUM_THREADS={threads}"] if threads is not None else []
    return shlex.join([*prefix, "python", str(shown), *argv])


def _invocations(work_dir: Path) -> list[dict[str, Any]]:
    path = work_dir / WORK_RECORD
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DirtyTreeError(f"{path}: not JSON ({error})") from None
    if not isinstance(entries, list) or not all(
        isinstance(entry, dict) and "commit" in entry and "dirty" in entry for entry in entries
    ):
        raise DirtyTreeError(f"{path}: expected a list of records with commit and dirty")
    return entries


def _git(folder: Path, *arguments: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), *arguments], capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return None
    return result.stdout if result.returncode == 0 else None
