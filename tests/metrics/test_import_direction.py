"""The metrics never import the tasks (the tasks import the metrics): no import cycle.

``densetasks/__init__.py`` imports the tasks itself, so importing a metric module still
loads ``densetasks.tasks``; what is checked is that no metric module asks for it.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import densetasks.metrics

METRICS_DIR = Path(densetasks.metrics.__file__).parent


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` statement in ``path`` names, wherever the statement is
    (top level, inside functions, under ``TYPE_CHECKING``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(METRICS_DIR.glob("*.py")), ids=lambda path: path.name)
def test_metric_module_does_not_import_the_tasks(path: Path) -> None:
    tasks = {name for name in imported_modules(path) if name.startswith("densetasks.tasks")}
    assert not tasks, f"{path.name} imports {sorted(tasks)}"


def test_instance_metrics_import_first_in_a_fresh_interpreter() -> None:
    code = (
        "import densetasks.metrics.offsets, densetasks.metrics.instance_segmentation; "
        "import densetasks.tasks.instance_grouping"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
