"""Where a benchmark's numbers come from: the commit, the library versions, the CPU and its
load. (A shared helper for this is planned under ``densetasks/experiments/``; until it is on
main, the backbone benchmarks record the same fields with this function.)"""

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy
import timm
import torch

ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def provenance() -> dict[str, Any]:
    """The commit (and whether the tree had changes), versions, CPU, threads and load."""
    return {
        "commit": _git("rev-parse", "HEAD"),
        "clean": _git("status", "--porcelain") == "",
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
    }
