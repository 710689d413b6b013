"""The shape of the house: no import cycle between any two modules, no module over ~450
lines, and the layer contracts (pyproject's [tool.importlinter], run by `make test` as
`lint-imports`) really catch an upward import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "vm_manager"
MAX_LINES = 450


def test_no_module_is_too_long():
    long = {str(path.relative_to(SOURCE)): count for path in SOURCE.rglob("*.py")
            if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_no_import_cycle_between_modules():
    grimp = pytest.importorskip("grimp", reason="import-linter (test extra) brings grimp")
    graph = grimp.build_graph("vm_manager", exclude_type_checking_imports=True)
    modules = sorted(graph.modules)
    # Tarjan's strongly connected components: any component of two or more is a cycle.
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(module: str) -> None:
        index[module] = low[module] = counter[0]
        counter[0] += 1
        stack.append(module)
        on_stack.add(module)
        for other in graph.find_modules_directly_imported_by(module):
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))
    for module in modules:
        if module not in index:
            visit(module)
    assert cycles == []


def test_the_layer_contract_catches_an_upward_import(tmp_path):
    """A copy of the package where passthrough imports the creator (a manager) breaks the
    layers contract; the real package keeps it."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(SOURCE, copy / "vm_manager")
    pci = copy / "vm_manager" / "passthrough" / "pci.py"
    pci.write_text(pci.read_text() + "\nfrom ..core import vm_creator  # noqa\n")
    config = Path(__file__).resolve().parents[1] / "pyproject.toml"
    lint = Path(sys.executable).with_name("lint-imports")
    if not lint.exists():
        pytest.skip("lint-imports is not installed (the test extra has it)")
    env = {"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"}
    broken = subprocess.run([str(lint), "--config", str(config), "--no-cache"], cwd=tmp_path,
                            capture_output=True, text=True, env=env)
    assert broken.returncode != 0 and "BROKEN" in broken.stdout.upper(), broken.stdout
    kept = subprocess.run([str(lint), "--config", str(config), "--no-cache"],
                          capture_output=True, text=True,
                          env={"PYTHONPATH": str(SOURCE.parent), "PATH": "/usr/bin:/bin"})
    assert kept.returncode == 0, kept.stdout
