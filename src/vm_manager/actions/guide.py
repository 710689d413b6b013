"""Guided host setup: for each readiness check that fails, what fixes it.

What the app can fix it fixes with elevated rights through polkit (``/usr/bin/pkexec``), one
command per button, never without the user pressing it, and always through NeuronOS's
root-owned helper (``core/root_helper.py``, installed by the set-up under /usr/libexec; never
a program in the user's own folders, issue 28): the desktop user into the ``libvirt`` and
``kvm`` groups, the shared-memory rule of a Looking Glass VM, a GPU bound to vfio-pci at boot
(the result shows after the reboot). What needs the firmware
setup (VT-x/AMD-V, the IOMMU) is explained in words. ``plan_fixes`` is pure (the exact
command lines are tested); ``fixes`` reads what it needs; ``run_fix`` runs one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..passthrough.gpu_attach import GPUInfo
    from ..doctor.host_check import Check

PKEXEC = "/usr/bin/pkexec"  # by its path: never one found on a PATH the user controls
HELPER = "/usr/libexec/neuronos/neuron-vm-helper"  # scripts/install-helper.sh
FIRMWARE_SETUP = ("restart the computer and open its firmware setup (the key shown at power-on,"
                  " often Del, F2 or F10)")
NOT_ALLOWED = {126: "not authorised (the password dialog was closed or refused)",
               127: "not authorised (polkit could not ask for a password here)"}


@dataclass(frozen=True)
class Fix:
    check: str  # the check (or "GPU passthrough") it is about
    label: str  # the button's text, or the heading of an explanation
    says: str  # what it does and what comes after (log in again, reboot), in words
    argv: tuple[str, ...] | None = None  # the elevated command; None: explained only


@dataclass(frozen=True)
class FixResult:
    fix: Fix
    ok: bool
    output: str


def plan_fixes(checks: list[Check], *, user: str, lg_vms: tuple[str, ...] = (),
               gpus: tuple[GPUInfo, ...] = (), prepared: str | None = None,
               elevate: tuple[str, str] = (PKEXEC, HELPER)) -> list[Fix]:
    """The fixes for ``checks`` (pure). ``lg_vms``: the Looking Glass VMs; ``gpus``: the
    host's GPUs; ``prepared``: the GPU a ``gpu prepare --apply`` was written for (its undo
    record), if any; ``elevate``: pkexec and the helper (``elevation()``)."""
    pkexec, helper = elevate
    elevated = (pkexec, helper) if pkexec else (helper,)
    fixes: list[Fix] = []
    failing = {check.name: check for check in checks if check.status != "ok"}
    if "CPU virtualization" in failing:
        fixes.append(Fix("CPU virtualization", "Turn on CPU virtualization",
                         f"{FIRMWARE_SETUP}, turn on Intel VT-x (also called Virtualization"
                         " Technology) or AMD-V / SVM, save and start again."))
    if "IOMMU" in failing:
        fixes.append(Fix("IOMMU", "Turn on the IOMMU",
                         f"{FIRMWARE_SETUP}, turn on VT-d (Intel) or IOMMU / AMD-Vi (AMD), save"
                         " and start again. The kernel option it may need (intel_iommu=on) is"
                         " written when a GPU is prepared for a VM."))
    if "user groups" in failing and user != "root":
        fixes.append(Fix("user groups", f"Add {user} to the libvirt and kvm groups",
                         "lets you manage VMs without a password, which also makes you as"
                         " powerful as root on this computer (libvirt runs VMs as root); log"
                         " out and back in afterwards", (*elevated, "groups")))
    if "Looking Glass shared memory" in failing:
        fixes.extend(Fix("Looking Glass shared memory", f"Let {user} open {vm}'s shared memory",
                         f"writes the systemd-tmpfiles rule for /dev/shm/looking-glass-{vm}"
                         f" ({user}'s alone, 0600, plus QEMU) and applies it now",
                         (*elevated, "shm-rule", vm))
                     for vm in lg_vms)
    for gpu in gpus:
        address, device = str(gpu.address), gpu.device
        if prepared == address:
            done = device.driver == "vfio-pci"
            fixes.append(Fix("GPU passthrough", f"{device.name} ({address})",
                             "ready: vfio-pci holds it since this boot" if done else
                             "prepared: restart the computer to finish (vfio-pci takes it at"
                             " boot)"))
        elif gpu.viable and not device.boot_vga and device.driver != "vfio-pci" and \
                prepared is None:
            fixes.append(Fix("GPU passthrough", f"Prepare {device.name} ({address}) for VMs",
                             "binds it to vfio-pci from the next boot on (kernel options, the"
                             " initramfs; every file backed up, `gpu unprepare` undoes it);"
                             " restart the computer afterwards",
                             (*elevated, "gpu-prepare", address)))
    return fixes


def elevation(environ: dict | None = None) -> tuple[str, str]:
    """pkexec and the helper by their installed paths; ``NEURONOS_PKEXEC`` and
    ``NEURONOS_HELPER`` point the tests at their stand-in and a helper installed into a
    temporary folder (they change nothing a user could not do anyway: the helper checks
    every argument, and polkit asks for the password)."""
    env = os.environ if environ is None else environ
    if os.geteuid() == 0 and env.get("SUDO_UID") and not env.get("NEURONOS_PKEXEC"):
        return "", env.get("NEURONOS_HELPER") or HELPER  # root already (sudo): no pkexec
    return env.get("NEURONOS_PKEXEC") or PKEXEC, env.get("NEURONOS_HELPER") or HELPER


def fixes(ctx: Context, checks: list[Check], lg_vms: tuple[str, ...] = ()) -> list[Fix]:
    """The guide for this host (reads its GPUs and the isolation record). A remote host's
    fixes are run on that host, not from here: none are offered."""
    import json

    from ..base.primitives import is_remote

    if is_remote(ctx.uri):
        return []

    from ..passthrough.gpu_attach import list_gpus
    from ..doctor.host_check import desktop_user
    from ..passthrough.isolation import STATE_FILE
    from ..passthrough.pci import host_root

    try:
        record = json.loads((host_root(ctx.host_root) / STATE_FILE).read_text())
        prepared = record.get("gpu")
    except (OSError, ValueError):
        prepared = None
    return plan_fixes(checks, user=desktop_user(), lg_vms=tuple(lg_vms),
                      gpus=tuple(list_gpus(ctx.host_root)), prepared=prepared,
                      elevate=elevation())


def run_fix(fix: Fix) -> FixResult:
    """Run one fix's command (pkexec asks for the password itself). Blocks: a worker's."""
    from ..base import guard

    if fix.argv is None:
        return FixResult(fix, False, "nothing to run: " + fix.says)
    if shutil.which(fix.argv[0]) is None:
        return FixResult(fix, False, f"{fix.argv[0]} is not installed (Debian: apt install"
                         " pkexec; Arch: pacman -S polkit)")
    if not os.access(fix.argv[1], os.X_OK):
        return FixResult(fix, False, f"NeuronOS's helper {fix.argv[1]} is not installed: run"
                         " scripts/setup-host.sh (or scripts/install-helper.sh) as root")
    guard.check(fix.argv[0])
    result = subprocess.run(list(fix.argv), capture_output=True, text=True, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode in NOT_ALLOWED:
        return FixResult(fix, False, NOT_ALLOWED[result.returncode])
    if result.returncode != 0:
        return FixResult(fix, False, f"failed ({result.returncode}): {output}")
    return FixResult(fix, True, output)
