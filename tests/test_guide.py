"""Guided host setup (issue 16): the fixes for failing checks, their exact pkexec command
lines (pure), and the host check's buttons run on a fake host root through a stand-in
pkexec (tests/bin/pkexec) — never the real one, never on this machine's files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from support.fakes import arch_like_host  # noqa: E402
from vm_manager.actions import Context  # noqa: E402
from vm_manager.actions.guide import HELPER, PKEXEC, fixes, plan_fixes  # noqa: E402
from vm_manager.passthrough.gpu_attach import list_gpus  # noqa: E402
from vm_manager.doctor.host_check import Check  # noqa: E402

BIN = Path(__file__).parent / "bin"
FAILING = [Check("CPU virtualization", "fail", "neither vmx nor svm", "enable it"),
           Check("IOMMU", "fail", "no IOMMU groups", "enable VT-d"),
           Check("user groups", "warn", "anna is not in: kvm", "sudo usermod ..."),
           Check("Looking Glass shared memory", "warn", "root-owned 0644", "..."),
           Check("libvirtd", "ok", "running")]


@pytest.fixture
def host(tmp_path):
    return arch_like_host(tmp_path / "root")


def test_the_fixes_and_their_exact_command_lines(host):
    gpus = tuple(list_gpus(host))
    planned = plan_fixes(FAILING, user="anna", lg_vms=("gamer",), gpus=gpus)
    by_check = {}
    for fix in planned:
        by_check.setdefault(fix.check, []).append(fix)
    # the firmware setup: words only, nothing to run
    for name in ("CPU virtualization", "IOMMU"):
        [fix] = by_check[name]
        assert fix.argv is None and "firmware setup" in fix.says
    assert "VT-x" in by_check["CPU virtualization"][0].says
    # issue 28: /usr/bin/pkexec by its path, and only the root-owned helper's fixed
    # operations, for the user polkit asks about (never a user named on the command line)
    assert (PKEXEC, HELPER) == ("/usr/bin/pkexec", "/usr/libexec/neuronos/neuron-vm-helper")
    assert by_check["user groups"][0].argv == (PKEXEC, HELPER, "groups")
    assert "log out and back in" in by_check["user groups"][0].says
    assert "as powerful as root" in by_check["user groups"][0].says  # said in words
    assert by_check["Looking Glass shared memory"][0].argv == (PKEXEC, HELPER, "shm-rule",
                                                               "gamer")
    [gpu] = by_check["GPU passthrough"]  # the boot GPU (i915) is never offered
    assert gpu.argv == (PKEXEC, HELPER, "gpu-prepare", "0000:01:00.0")
    assert "restart the computer" in gpu.says
    assert "libvirtd" not in by_check  # passing checks get nothing
    # after `gpu prepare --apply`: before the reboot, then after it (vfio-pci holds it)
    [pending] = plan_fixes([], user="anna", gpus=gpus, prepared="0000:01:00.0")
    assert pending.argv is None and "restart the computer to finish" in pending.says
    (host / "sys/bus/pci/devices/0000:01:00.0/driver").unlink()
    vfio = host / "sys/bus/pci/drivers/vfio-pci"
    vfio.mkdir(parents=True)
    (host / "sys/bus/pci/devices/0000:01:00.0/driver").symlink_to(vfio)
    [ready] = plan_fixes([], user="anna", gpus=tuple(list_gpus(host)),
                         prepared="0000:01:00.0")
    assert ready.argv is None and ready.says.startswith("ready: vfio-pci holds it")
    assert "user groups" not in {f.check for f in plan_fixes(FAILING, user="root")}


@pytest.mark.usefixtures("ui_thread_never_blocks")
def test_the_host_check_buttons_run_the_fix_through_pkexec(qtbot, host, tmp_path,
                                                           monkeypatch, root_helper):
    """Pressing "Fix…" for the GPU runs `pkexec neuron-vm-helper gpu-prepare ADDR` (the
    root-owned helper, installed here into a temporary root): the files appear in the fake
    root, the row says done; the guide read again says a restart is due. A dismissed
    password dialog (exit 126) is told and changes nothing. Nothing runs before a button is
    pressed."""
    from vm_manager.gui.dialogs import ReadinessDialog

    log = tmp_path / "pkexec.log"
    monkeypatch.setenv("NEURONOS_PKEXEC", str(BIN / "pkexec"))
    monkeypatch.setenv("NEURONOS_HELPER", str(root_helper))
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(host))
    monkeypatch.setenv("NEURONOS_FAKE_PKEXEC_LOG", str(log))
    monkeypatch.setenv("NEURONOS_FAKE_PKEXEC", "deny")
    from vm_manager.base import guard

    with guard.allowed():
        found = fixes(Context("test:///default", host_root=host), FAILING)
    dialog = ReadinessDialog(FAILING, fixes=found)
    qtbot.addWidget(dialog)
    label = "Prepare NVIDIA device 1e87 (0000:01:00.0) for VMs"
    if label not in dialog.guide.buttons:  # the name depends on a pci.ids being there
        label = next(key for key in dialog.guide.buttons if "0000:01:00.0" in key)
    button = dialog.guide.buttons[label]
    assert not log.exists()  # nothing ran by itself
    assert button.toolTip() == f"{BIN / 'pkexec'} {root_helper} gpu-prepare 0000:01:00.0"
    button.click()
    qtbot.waitUntil(lambda: len(dialog.guide.done) == 1, timeout=10000)
    assert "not authorised" in dialog.guide.results[label].text()
    assert not (host / "etc/modprobe.d/neuronos-vfio.conf").exists() and button.isEnabled()
    monkeypatch.setenv("NEURONOS_FAKE_PKEXEC", "")
    button.click()
    qtbot.waitUntil(lambda: len(dialog.guide.done) == 2, timeout=20000)
    outcome = dialog.guide.done[-1]
    assert outcome.ok, outcome.output
    assert dialog.guide.results[label].text().startswith("done")
    assert "10de:1e87" in (
        host / "etc/modprobe.d/neuronos-vfio.conf").read_text()
    record = json.loads((host / "var/lib/neuronos/gpu-prepare.json").read_text())
    assert record["gpu"] == "0000:01:00.0"
    calls = log.read_text().splitlines()
    assert len(calls) == 2 and calls[-1] == f"{root_helper} gpu-prepare 0000:01:00.0"
    with guard.allowed():
        again = fixes(Context("test:///default", host_root=host), [])
    assert [f.says for f in again if f.check == "GPU passthrough"] == [
        "prepared: restart the computer to finish (vfio-pci takes it at boot)"]


def test_run_through_sudo_the_fixes_run_the_helper_without_pkexec():
    """Found by the walk: `sudo neuron-vm guide` offered `pkexec helper groups`; pkexec run
    by root hands the helper uid 0, which it refuses, while the fix named the user behind
    sudo. Root needs no polkit: the helper runs as it is and acts for SUDO_UID."""
    import os

    from vm_manager.actions.guide import elevation

    said = elevation({"SUDO_UID": "1000"})
    assert said == (("", HELPER) if os.geteuid() == 0 else (PKEXEC, HELPER))
    assert elevation({}) == (PKEXEC, HELPER)
    fixes = plan_fixes(FAILING, user="anna", lg_vms=("gamer",), elevate=("", HELPER))
    assert {fix.argv for fix in fixes if fix.argv and fix.check != "GPU passthrough"} == {
        (HELPER, "groups"), (HELPER, "shm-rule", "gamer")}
