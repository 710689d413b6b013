"""Whether KVM can really run NeuronOS's VMs here, not only whether /dev/kvm exists.

A walk of the desktop app on a host where /dev/kvm existed but the CPU showed neither vmx
nor svm (a nested or limited hypervisor) found every VM failing at its start with QEMU's
"System Management Mode not supported by this hypervisor" (or a ``kvm_buf_set_msrs``
assertion), while the host check said "present and usable" (issue 29, item 2).

The probe asks the kernel what QEMU asks (``include/uapi/linux/kvm.h``): the API version
must be 12 (``KVM_GET_API_VERSION``), a VM must be made (``KVM_CREATE_VM``), and that VM
must offer System Management Mode (``KVM_CHECK_EXTENSION`` of ``KVM_CAP_X86_SMM``, 117):
the Secure Boot firmware of NeuronOS's q35 VMs needs it, and QEMU refuses ``smm=on``
without it. It also reads the CPU's flags: a KVM whose CPU shows neither VT-x nor AMD-V
is not one that runs VMs fully. Nothing is changed: the VM made is closed at once.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

KVMIO = 0xAE  # _IO(KVMIO, nr): no direction, no size
KVM_GET_API_VERSION = KVMIO << 8 | 0x00
KVM_CREATE_VM = KVMIO << 8 | 0x01
KVM_CHECK_EXTENSION = KVMIO << 8 | 0x03
KVM_CAP_X86_SMM = 117
KVM_API_VERSION = 12


def cpu_flags(root: Path) -> set[str]:
    """The first CPU's flags in ``root``/proc/cpuinfo (empty when unreadable)."""
    try:
        text = (root / "proc" / "cpuinfo").read_text(errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def kvm_problem(root: Path) -> str | None:
    """Why KVM cannot run NeuronOS's VMs on the host under ``root``, in plain words; None
    when it can."""
    if not cpu_flags(root) & {"vmx", "svm"}:
        return ("the processor shows neither VT-x (vmx) nor AMD-V (svm): it is off in the"
                " firmware setup, or this system runs inside another VM")
    try:
        kvm = os.open(root / "dev" / "kvm", os.O_RDWR | os.O_CLOEXEC)
    except OSError as error:
        return f"/dev/kvm cannot be opened ({error.strerror})"
    try:
        version = fcntl.ioctl(kvm, KVM_GET_API_VERSION)
        if version != KVM_API_VERSION:
            return f"/dev/kvm speaks KVM API {version}, not {KVM_API_VERSION}"
        vm = fcntl.ioctl(kvm, KVM_CREATE_VM, 0)
        try:
            if fcntl.ioctl(vm, KVM_CHECK_EXTENSION, KVM_CAP_X86_SMM) <= 0:
                return ("its KVM lacks System Management Mode, which the VMs' Secure Boot"
                        " firmware needs (this system runs inside another VM?)")
        finally:
            os.close(vm)
    except OSError as error:
        return f"/dev/kvm does not answer as KVM does ({error.strerror})"
    finally:
        os.close(kvm)
    return None


SOFTWARE_FIX = ("VMs still run, slowly: choose Speed \"Slow: software emulation\" (New VM,"
                " Settings), or --domain-type qemu (create, configure)")
