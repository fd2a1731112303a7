"""The package is layered: every import points down (or sideways within one layer), and no
two modules import each other, directly or through others.

Checked from the source with :mod:`ast`, every ``import`` wherever it stands (top level,
inside a function, under ``TYPE_CHECKING``), so a lazy import "to dodge a cycle" counts as
what it is. Importing the package and reading ``sys.modules`` could not tell: the package
root imports every subpackage first.
"""

import ast
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import densetasks

PACKAGE = Path(densetasks.__file__).parent

LAYERS: tuple[frozenset[str], ...] = tuple(
    frozenset(names.split())
    for names in (
        "errors _registry",
        "data",
        "metrics",
        "pictures",
        "tasks",
        "models",
        "balancers",
        "engine",
        "experiments export serve",
        "cli",
    )
)
"""Bottom to top. A unit (a subpackage, or a module at the package root) imports only units
of its own layer or of layers below; the package root ``__init__`` re-exports the public API
and may import anything."""


@dataclass(frozen=True)
class Import:
    source: str
    """The importing module, dotted (``densetasks.data.folder``)."""
    target: str
    """The imported module or name, dotted (``densetasks.tasks.registry``)."""
    line: int

    @property
    def where(self) -> str:
        return f"{self.source.replace('.', '/')}.py:{self.line}"


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports(root: Path) -> Iterator[Import]:
    """Every import of the package by the package, relative ones resolved."""
    for path in sorted(root.rglob("*.py")):
        source = module_name(root, path)
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = source.split(".")
                    anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] == root.name:
                    yield Import(source, target, node.lineno)


def unit(name: str) -> str:
    """``densetasks.data.folder`` -> ``data``; the root package itself -> ``__init__``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer(name: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit(name) in units:
            return index
    raise AssertionError(f"{name}: unit {unit(name)!r} is in no layer of tests/test_layering.py")


def upward_imports(root: Path) -> list[str]:
    """``file:line: a -> b`` for every import of a higher layer."""
    return [
        f"{found.where}: {unit(found.source)} imports {found.target} ({unit(found.target)})"
        for found in package_imports(root)
        if unit(found.source) != "__init__" and layer(found.target) > layer(found.source)
    ]


def import_cycles(root: Path) -> list[list[str]]:
    """Cycles of the module graph (an import of a name counts as one of its module)."""
    modules = {module_name(root, path) for path in root.rglob("*.py")}
    graph: dict[str, set[str]] = {module: set() for module in modules}
    for found in package_imports(root):
        target = found.target if found.target in modules else found.target.rpartition(".")[0]
        if target in modules and target != found.source:
            graph[found.source].add(target)
    return _cycles(graph)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_every_unit_has_a_layer():
    units = {unit(module_name(PACKAGE, path)) for path in PACKAGE.rglob("*.py")}
    assert units - {"__init__"} <= set().union(*LAYERS)


def test_no_import_points_up():
    assert upward_imports(PACKAGE) == []


def test_no_two_modules_import_each_other():
    assert import_cycles(PACKAGE) == []


@pytest.fixture
def planted(tmp_path: Path):
    """A copy of the package in which a test plants an import."""
    copy = tmp_path / PACKAGE.name
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))

    def plant(relative: str, line: str) -> Path:
        path = copy / relative
        path.write_text(path.read_text(encoding="utf-8") + line, encoding="utf-8")
        return copy

    return plant


def test_a_lazy_upward_import_is_found(planted):
    """The checks can fail: a function-local import of the tasks in the data package (the
    cycle this layering removed) is reported with its file and line."""
    root = planted("data/folder.py", "\n\ndef _kinds():\n    from densetasks.tasks import TASKS\n")
    [found] = upward_imports(root)
    assert found.startswith("densetasks/data/folder.py:") and "densetasks.tasks.TASKS" in found


def test_a_cycle_within_a_layer_is_found(planted):
    root = planted("data/io.py", "\nfrom densetasks.data.folder import read_split\n")
    assert upward_imports(root) == []
    assert ["densetasks.data.folder", "densetasks.data.io"] in import_cycles(root)
