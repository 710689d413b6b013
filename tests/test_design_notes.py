"""The design notes' own "Test Commands" (PHASE_2A_VM_MANAGER.md, end), run as written.

Each command is copied verbatim below and run by bash in a child process, with the
virtual environment's ``python`` first on PATH and ``LIBVIRT_DEFAULT_URI=test:///default``
(the notes' commands take the default connection). Where the notes themselves are at hand
(../shared/design-notes beside a checkout), the copies are compared with them too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTES = Path(__file__).resolve().parents[2] / "shared" / "design-notes" / \
    "PHASE_2A_VM_MANAGER.md"

CREATION = '''python -c "
from vm_manager.core.vm_creator import VMCreator
from vm_manager.core.vm_config import VMConfig, VMType

config = VMConfig(
    name='test-vm',
    vm_type=VMType.LINUX,
    memory_mb=2048,
    vcpus=2,
)

creator = VMCreator()
# Note: This will actually create a VM!
# creator.create(config)
"'''

LIFECYCLE = '''python -c "
from vm_manager.core.vm_lifecycle import VMLifecycleManager
manager = VMLifecycleManager()
print('VMs:', [manager.get_state(n) for n in ['test-vm']])
"'''

LOOKING_GLASS = '''python -c "
from vm_manager.core.looking_glass import get_looking_glass_manager, LGClientConfig
lg = get_looking_glass_manager()
print('LG executable:', lg._find_lg_executable())
"'''


def run(command: str, **env) -> subprocess.CompletedProcess:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    full = dict(os.environ, PATH=path, LIBVIRT_DEFAULT_URI="test:///default", **env)
    full.pop("NEURONOS_LIBVIRT_URI", None)
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                          env=full, timeout=60)


def test_the_copies_are_the_notes_commands():
    if NOTES.is_file():  # beside a checkout; a clean CI clone has only the copies
        text = NOTES.read_text()
        for command in (CREATION, LIFECYCLE, LOOKING_GLASS):
            assert command in text
    for command in (CREATION, LIFECYCLE, LOOKING_GLASS):
        assert command.startswith('python -c "') and command.endswith('"')


def test_creation_command():
    result = run(CREATION)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_lifecycle_command_gives_a_state_for_a_missing_vm():
    result = run(LIFECYCLE)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "VMs: [<VMState.UNDEFINED: 'undefined'>]\n"


@pytest.mark.parametrize("client", [None, "fake"])
def test_looking_glass_command(client, tmp_path):
    env = {}
    if client == "fake":
        fake = Path(__file__).parent / "bin" / "looking-glass-client"
        env["NEURONOS_LG_CLIENT"] = str(fake)
        expected = f"LG executable: {fake}\n"
    else:
        env["NEURONOS_LG_CLIENT"] = str(tmp_path / "not-installed")
        expected = "LG executable: None\n"
    result = run(LOOKING_GLASS, **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected


def test_operations_on_a_missing_vm_still_raise_not_found():
    from vm_manager.cli import main
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.base.errors import VMNotFound
    from vm_manager.core.vm_lifecycle import VMLifecycleManager

    with LibvirtConnection("test:///default") as connection:
        manager = VMLifecycleManager(connection)
        for operation in ("start", "stop", "pause", "resume", "reboot", "reset"):
            with pytest.raises(VMNotFound):
                getattr(manager, operation)("test-vm")
        manager.close()
        import io

        for argv in (["start", "test-vm"], ["stop", "test-vm"], ["info", "test-vm"],
                     ["delete", "test-vm", "--yes"], ["display", "test-vm"]):
            err = io.StringIO()
            assert main(argv, connection=connection, out=io.StringIO(), err=err) == 3, argv
            assert "no VM named 'test-vm'" in err.getvalue()
