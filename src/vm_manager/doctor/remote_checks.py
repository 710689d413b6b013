"""``doctor`` for a remote host: readiness from what libvirt reports there (its
capabilities, its domain capabilities, its node devices), never from this machine's files.

What libvirt does not report is "unknown" with the command to run on that host, not a
guess from this computer: the kernel command line, the initramfs tool, vfio-pci, the desktop
user's groups. The checks about this computer's own programs (the console viewer, the Qt
libraries) stay local: they are what you use here to reach the remote VMs.
"""

from __future__ import annotations


import libvirt

from ..base.connection import LibvirtConnection
from ..base.domcaps import read_domain_capabilities
from ..base.errors import ConnectionFailed, OperationFailed
from ..base.primitives import dotted_version
from .host_check import FAIL, OK, WARN, Check, check_console_viewer, check_desktop_libraries

UNKNOWN = "unknown"


def run_remote_checks(uri: str, environ: dict | None = None) -> list[Check]:
    from pathlib import Path

    local = [check_console_viewer(Path("/"), environ), check_desktop_libraries()]
    connection = LibvirtConnection(uri, auto_reconnect=False)
    try:
        connection.open()
    except ConnectionFailed as error:
        return [Check("libvirtd", FAIL, str(error), f"check that you can log in to that host"
                      f" and that libvirtd runs there (virsh -c '{uri}' list)"), *local]
    try:
        facts = connection.execute(_read, idempotent=True)
        from ..passthrough.nodedev import read_pci_nodedev

        groups = read_pci_nodedev(connection).groups
    except OperationFailed as error:
        return [Check("libvirtd", FAIL, str(error)), *local]
    finally:
        connection.close()
    return [*_judge(uri, facts, groups), *local]


def _read(conn: libvirt.virConnect) -> dict:
    def caps(virttype: str) -> str | None:
        try:
            return conn.getDomainCapabilities(None, "x86_64", "q35", virttype, 0)
        except libvirt.libvirtError:
            if not conn.isAlive():
                raise
            return None

    try:
        network = conn.networkLookupByName("default")
        default_net = "active" if network.isActive() else "inactive"
    except libvirt.libvirtError:
        default_net = "missing"
    return {"version": conn.getLibVersion(), "host": conn.getHostname(), "kvm": caps("kvm"),
            "qemu": caps("qemu"), "default_net": default_net}


def _judge(uri: str, facts: dict, groups: dict) -> list[Check]:
    version = facts["version"]
    dotted = dotted_version(version)
    on = f"on {facts['host']}"
    checks = [Check("libvirtd", OK, f"reachable at {uri}: libvirt {dotted}")]
    domcaps = facts["kvm"] or facts["qemu"]
    if facts["kvm"]:
        checks.append(Check("CPU virtualization", OK, f"KVM is available {on}"))
    else:
        checks.append(Check("CPU virtualization", FAIL, f"libvirt {on} offers no KVM domains",
                            "enable VT-x / AMD-V in that computer's firmware setup, and load"
                            " kvm_intel or kvm_amd there"))
    if groups:
        checks.append(Check("IOMMU", OK, f"{len(groups)} IOMMU groups {on}"))
    else:
        checks.append(Check("IOMMU", FAIL, f"no IOMMU groups {on}: the IOMMU is off",
                            "enable VT-d / AMD-Vi in that computer's firmware setup"
                            " (and intel_iommu=on on Intel)"))
    checks.append(_firmware(domcaps, on))
    checks.append(_tpm(domcaps, on))
    if facts["default_net"] == "active":
        checks.append(Check("default network", OK, "active"))
    else:
        checks.append(Check("default network", WARN, f"{facts['default_net']} {on}: VMs on it"
                            " will not start (NeuronOS never starts it)", "create VMs with"
                            " --network none, or start it there"))
    for name, what, command in (
            ("vfio-pci", "whether that kernel has vfio-pci", "modinfo vfio-pci"),
            ("kernel command line", "the options that kernel booted with", "cat /proc/cmdline"),
            ("user groups", "the groups of the user you log in as", "id")):
        checks.append(Check(name, UNKNOWN, f"libvirt does not report {what}",
                            f"run `{command}` on {facts['host']}"))
    return checks


def _firmware(domcaps: str | None, on: str) -> Check:
    if domcaps is None:
        return Check("UEFI firmware (OVMF)", UNKNOWN, f"no domain capabilities {on}")
    caps = read_domain_capabilities(domcaps)
    if caps.firmware:
        return Check("UEFI firmware (OVMF)", OK, f"{len(caps.firmware)} firmware images {on}"
                     f"{', Secure Boot available' if caps.secure_boot else ''}")
    return Check("UEFI firmware (OVMF)", FAIL, f"no UEFI firmware {on}",
                 "install OVMF there (ovmf on Debian/Ubuntu, edk2-ovmf on Arch)")


def _tpm(domcaps: str | None, on: str) -> Check:
    if domcaps is None:
        return Check("swtpm (TPM 2.0)", UNKNOWN, f"no domain capabilities {on}")
    if "emulator" in read_domain_capabilities(domcaps).tpm_backends:
        return Check("swtpm (TPM 2.0)", OK, f"emulated TPMs available {on}")
    return Check("swtpm (TPM 2.0)", WARN, f"no emulated TPM {on}: Windows 11 VMs need one",
                 "install swtpm there")
