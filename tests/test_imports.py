"""The package layout's promises: no import cycle, and the node runtime needs nothing of the controller."""

from __future__ import annotations

import ast
import graphlib
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
MODULES = {
    ".".join(path.relative_to(SRC).with_suffix("").parts[:-1] if path.name == "__init__.py"
             else path.relative_to(SRC).with_suffix("").parts): path
    for path in (SRC / "zerolab").rglob("*.py")
}
CONTROLLER = ("zerolab.lab", "zerolab.pxe")
RUNTIME = ("zerolab.sandbox", "zerolab.zerocloud")


def _under(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def imports(name: str) -> set[str]:
    """The zerolab modules that module `name` imports, from its source."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            base = ".".join(filter(None, (base, node.module)))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in found if m in MODULES and m != name}


def test_no_module_imports_a_module_that_imports_it_back():
    graph = {name: imports(name) for name in MODULES}
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as error:
        pytest.fail(f"import cycle: {' -> '.join(error.args[1])}")
    assert set(order) == set(MODULES)


def test_the_node_runtime_imports_nothing_of_the_controller():
    wrong = {name: sorted(m for m in imports(name) if _under(m, CONTROLLER))
             for name in MODULES if _under(name, RUNTIME)}
    assert {name: found for name, found in wrong.items() if found} == {}


@pytest.mark.parametrize("name", sorted(n for n in MODULES if _under(n, CONTROLLER) and not n.endswith("__main__")))
def test_each_controller_module_imports_first_in_a_fresh_interpreter(name):
    result = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
