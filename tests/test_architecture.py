"""The shape of the house: no import cycle between any two modules, no module over ~450
lines, every module in exactly one layer, the faces' allow list complete, and the layer
contracts (pyproject's [tool.importlinter], run by `make test` as `lint-imports`) really
catch a wrong import (an upward one, a face reaching past the actions, a base module
reaching up)."""

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


def _contracts() -> list[dict]:
    import tomllib

    config = Path(__file__).resolve().parents[1] / "pyproject.toml"
    return tomllib.loads(config.read_text())["tool"]["importlinter"]["contracts"]


def _modules() -> list[str]:
    names = []
    for path in sorted(SOURCE.rglob("*.py")):
        parts = ("vm_manager", *path.relative_to(SOURCE).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_belongs_to_exactly_one_layer():
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    packages = [[name.strip() for name in layer.replace("|", ":").split(":")]
                for layer in layers]
    outside = []
    for module in _modules():
        if module == "vm_manager":
            continue  # the package itself: its __init__ holds only its version
        found = [n for n, layer in enumerate(packages)
                 if any(module == p or module.startswith(p + ".") for p in layer)]
        if len(found) != 1:
            outside.append((module, found))
    assert outside == []
    assert not [line for line in (SOURCE / "__init__.py").read_text().splitlines()
                if line.startswith(("import ", "from "))]


def test_the_faces_allow_list_forbids_every_other_package():
    """The faces may import the actions and base's value types: every other package of
    vm_manager is in their forbidden list (a new package must be placed there too)."""
    faces = next(c for c in _contracts() if c["type"] == "forbidden"
                 and "vm_manager.cli" in c["source_modules"])
    packages = {f"vm_manager.{path.name}" for path in SOURCE.iterdir()
                if (path / "__init__.py").exists()}
    allowed = {"vm_manager.actions", "vm_manager.base", "vm_manager.cli", "vm_manager.gui"}
    assert packages - allowed <= set(faces["forbidden_modules"])
    values = {"errors", "values", "primitives", "vm_config", "device_config", "guest_config",
              "log", "guard"}
    base = {f"vm_manager.base.{path.stem}" for path in (SOURCE / "base").glob("*.py")
            if path.stem != "__init__"}
    assert base - {f"vm_manager.base.{v}" for v in values} <= set(faces["forbidden_modules"])


@pytest.mark.parametrize("module, line", [
    ("passthrough/pci.py", "from ..core import vm_creator"),  # upwards, into the managers
    ("cli/vms.py", "from ..core import snapshots"),  # a face past the actions
    ("gui/widgets.py", "from ..base import store"),  # a face to settings files
    ("base/errors.py", "from ..core import planning"),  # base reaching up
    ("core/usage.py", "from ..gui import widgets"),  # a manager importing a face
])
def test_the_contracts_catch_a_wrong_import(tmp_path, module, line):
    """A copy of the package with one planted wrong import breaks a contract; the real
    package keeps them all."""
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(SOURCE, copy / "vm_manager")
    planted = copy / "vm_manager" / module
    planted.write_text(planted.read_text() + f"\n{line}  # noqa\n")
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


def test_the_readme_diagram_names_every_package_and_module():
    """The architecture diagram in the README is checked against the package: each
    package's folder and each of its modules is named in it."""
    import re

    readme = (SOURCE.parents[1] / "README.md").read_text()
    diagram = readme.split("```mermaid", 1)[1].split("```", 1)[0]
    missing = []
    for package in sorted(p for p in SOURCE.iterdir() if (p / "__init__.py").exists()):
        if f"{package.name}/" not in diagram:
            missing.append(f"{package.name}/")
        missing += [f"{package.name}/{module.name}" for module in sorted(package.glob("*.py"))
                    if module.stem != "__init__"
                    and not re.search(rf"\b{module.stem}\b", diagram)]
    assert missing == []
