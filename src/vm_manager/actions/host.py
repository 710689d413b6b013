"""This host's readiness (``doctor``), its passthrough devices in one read, and the
shared-memory permission rule that lets the desktop user's Looking Glass client in."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..passthrough.gpu_attach import GPUInfo
    from ..doctor.host_check import Check
    from ..passthrough.usb_attach import USBDevice


def doctor(ctx: Context) -> list[Check]:
    """Every readiness check, each ok / warn / fail (remote: also unknown) with a one-line
    fix. Reads only. A remote URI is judged from what libvirt reports there."""
    host = ctx.host
    checks = host.checks()
    if host.remote:
        return checks  # its disks are its own files: not read from here
    disks = _disk_formats(ctx)
    return checks + [disks] if disks is not None else checks


def _disk_formats(ctx: Context) -> Check | None:
    """Every VM's disks defined with another format than their file has (a qcow2 file
    defined as raw is corrupted by its guest); None when libvirt cannot be asked (the
    libvirtd check says why)."""
    from ..base.errors import VMManagerError
    from ..doctor.host_check import FAIL, OK, Check

    try:
        from ..core.inventory import format_mismatches

        found = format_mismatches(ctx.connection, ctx.store)
    except (ImportError, VMManagerError):  # no libvirt-python here, or no libvirtd
        return None
    if not found:
        return Check("disk formats", OK, "every VM's disks are defined with their files'"
                     " formats")
    return Check("disk formats", FAIL, "; ".join(item.describe() for item in found),
                 "; ".join(item.fix() for item in found))


@dataclass
class HostDevices:
    """What a VM could be given: the GPUs with their verdicts and the USB devices; and what
    the create wizard offers and defaults to: the host's memory and CPUs, its networks
    (name, running) and whether libvirt can run KVM guests here (None: not known)."""

    gpus: list[GPUInfo]
    usb: list[USBDevice]
    memory_mb: int | None = None
    cpus: int | None = None
    networks: tuple[tuple[str, bool], ...] = ()
    kvm: bool | None = None
    kvm_problem: str | None = None  # why KVM cannot run VMs here (kvm False)


def devices(ctx: Context) -> HostDevices:
    """The host's GPUs and USB devices (a remote host's from libvirt's node devices), its
    size, networks and KVM."""
    from . import gpu, usb

    memory_mb, cpus = ctx.connection.host_info()
    networks, kvm = ctx.connection.execute(_networks_and_kvm, idempotent=True)
    problem = None if kvm is None else (ctx.host.kvm_problem() if kvm else
                                        "libvirt offers no KVM guests here")
    return HostDevices(gpu.list_gpus(ctx), usb.list_usb(ctx), memory_mb, cpus, networks,
                       None if kvm is None else problem is None, problem)


def _networks_and_kvm(conn) -> tuple[tuple[tuple[str, bool], ...], bool | None]:
    import libvirt

    try:
        networks = tuple(sorted((net.name(), bool(net.isActive()))
                                for net in conn.listAllNetworks(0)))
    except libvirt.libvirtError:
        networks = ()  # a driver without networks
    if conn.getURI().startswith("test:"):
        return networks, None  # the test driver has no domain capabilities
    try:
        conn.getDomainCapabilities(None, "x86_64", "q35", "kvm", 0)
        return networks, True
    except libvirt.libvirtError:
        return networks, False


def start_network(ctx: Context, name: str) -> tuple[tuple[str, bool], ...]:
    """Start libvirt's network ``name`` and mark it to start with the host (the Start
    button of a stopped network); the host's networks then. Raises ``OperationFailed``."""
    def start(conn) -> None:
        network = conn.networkLookupByName(name)
        if not network.isActive():
            network.create()
        network.setAutostart(1)

    ctx.connection.execute(start)
    return ctx.connection.execute(_networks_and_kvm, idempotent=True)[0]


def gpu_names(ctx: Context, addresses) -> dict[str, str]:
    """The pci.ids names of the GPUs at ``addresses`` (those not on this host are left out)."""
    from .gpu import snapshot

    wanted = set(addresses)
    if not wanted:
        return {}
    try:
        found = snapshot(ctx).devices  # a remote host's from its node devices
    except OSError:
        return {}
    return {str(address): device.name for address, device in found.items()
            if str(address) in wanted}


def looking_glass_size_mb(width: int, height: int, hdr: bool = False) -> int:
    """MiB of shared memory a Looking Glass VM gets for that resolution (pure)."""
    from ..passthrough.ivshmem import shm_size_mb

    return shm_size_mb(width, height, hdr)


@dataclass
class ShmPermissions:
    path: Path
    text: str
    applied: bool
    ran: str | None = None  # the command run to create the file now, if any


def shm_permissions(ctx: Context, vm: str, user: str | None = None,
                    apply: bool = False) -> ShmPermissions:
    """The systemd-tmpfiles rule for ``/dev/shm/looking-glass-<vm>``: the desktop user's,
    0600, plus an ACL entry for QEMU's user; written, and applied at once, only with
    ``apply``."""
    from ..base.domain_xml import read_domain
    from ..base.errors import InvalidConfig
    from ..doctor.host_check import desktop_user
    from ..passthrough.ivshmem import shm_name, write_tmpfiles_rule
    from ..passthrough.pci import host_root

    ctx.require_local("shm-permissions", "the rule goes into the other machine's"
                      " /etc/tmpfiles.d; run it there")
    connection = ctx.connection  # a rule for a VM that does not exist is an error (exit 3)
    xml = connection.execute(lambda conn: connection.lookup(conn, vm).XMLDesc(0),
                             idempotent=True)
    if read_domain(xml).shmem(shm_name(vm)) is None:  # (a walk got a rule for such a VM)
        raise InvalidConfig("NAME", f"{vm} has no Looking Glass shared memory: there is"
                            " nothing to give anyone (Looking Glass needs a passed-through"
                            " GPU: neuron-vm configure NAME --gpu ADDR --looking-glass)")
    root = host_root(ctx.host_root)
    path, text = write_tmpfiles_rule(vm, user or desktop_user(), root, apply=apply)
    ran = None
    if apply and shutil.which("systemd-tmpfiles") and str(root) == "/":
        from ..base import guard

        guard.check("systemd-tmpfiles")
        command = ["systemd-tmpfiles", "--create", str(path)]
        subprocess.run(command, check=False)
        ran = " ".join(command)
    return ShmPermissions(path, text, apply, ran)


def verdict(checks) -> str:
    """The host check in one line, for the CLI and the window alike: whether ordinary VMs
    run here (and how fast), then what GPU passthrough still needs (a walk read "3 failed"
    on a host where VMs run)."""
    from ..base.primitives import plural

    failed = sum(check.status == "fail" for check in checks)
    no_kvm = any(check.status == "fail" and check.name in ("CPU virtualization", "/dev/kvm",
                                                           "KVM") for check in checks)
    vms = ("VMs run here, but slowly (no KVM: software emulation, many times slower)."
           if no_kvm else "VMs run here with KVM.")
    if not failed:
        return f"{vms} Everything a GPU needs is in place too."
    need = "needs" if failed == 1 else "need"
    return f"{vms} {plural(failed, 'check')} {need} fixing before a VM can have a GPU."

