"""Everything a plan needs to know about the host, read once per action.

``gather_host_facts`` does all the reading (libvirt's domain capabilities, node info and
version, the defined domain names, and from the ``Host``: PCI devices and IOMMU groups, the
firmware, the files a config names); ``planning.plan_creation(config, facts)`` then decides
with no I/O at all, so it is tested with hand-made facts and no host.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt

from ..base.connection import LibvirtConnection
from ..base.domcaps import read_domain_capabilities
from ..base.vm_config import HostResources, VMConfig
from ..base.log import get_logger
from .host import SYSTEM_IMAGES_DIR, Host, PathFact, host_for, images_dir

if TYPE_CHECKING:
    from ..guest.windows import InstallerInfo, VirtioInfo
    from ..base.domain_xml import DomainInfo
    from ..passthrough.cpu_topology import CPUTopology
    from ..passthrough.hugepages import HugePagePool
    from ..passthrough.pci import PCISnapshot

log = get_logger(__name__)

@dataclass(frozen=True)
class GuestMediaFacts:
    """What an unattended setup's media hold (read from the ISOs, never mounted)."""

    installer: InstallerInfo | None = None  # None: the ISO is missing (planning says so)
    virtio: VirtioInfo | None = None
    lg_host_release: str | None = None  # of the Looking Glass host installer given
    lg_client_release: str | None = None  # of this host's client (None: none, or unknown)
    ssh_keys: tuple[str, ...] = ()  # Linux: the public keys the account logs in with
    winfsp_is_msi: bool | None = None  # the WinFsp installer given is a Windows Installer file
    local_zone: str | None = None  # this computer's IANA time zone (the guest's default)


@dataclass(frozen=True)
class HostFacts:
    """A snapshot of the host for planning. None means unknown (e.g. the test driver has no
    domain capabilities); planning then takes the safe default."""

    uri: str
    kvm_usable: bool | None
    hyperv_features: frozenset[str] | None
    resources: HostResources | None
    libvirt_version: int | None = None
    images_dir: Path = SYSTEM_IMAGES_DIR
    domain_names: frozenset[str] = frozenset()
    pci: PCISnapshot | None = None  # read when the config passes a GPU
    uefi_firmware: tuple[str, ...] = ()
    paths: dict[str, PathFact] = field(default_factory=dict)
    networks: frozenset[str] | None = None  # libvirt's network names (None: not read)
    networks_stopped: frozenset[str] | None = None  # those of them that do not run now
    usb_present: frozenset[tuple[str, str]] | None = None  # (vendor, product) plugged in now
    guest_media: GuestMediaFacts | None = None  # read for an unattended setup
    remote: bool = False  # another computer's libvirt: its files are known only as volumes
    definition: DomainInfo | None = None  # a VM being changed: the definition libvirt holds
    kvm_problem: str | None = None  # why KVM cannot run VMs here, when it cannot
    # (Secure Boot, Microsoft's keys) pairs this host's UEFI builds offer; None: not known
    uefi_builds: frozenset[tuple[bool, bool]] | None = None
    cpu_topology: CPUTopology | None = None  # read for a pinned VM (GPU VMs by default)
    gpu_numa_node: int | None = None  # the NUMA node of that GPU (None: not said)
    hugepages: dict[int, HugePagePool] | None = None  # size (KiB) -> pool; read when asked

    def path(self, path: str | Path) -> PathFact:
        return self.paths.get(str(path), PathFact("missing"))


def gather_host_facts(
    connection: LibvirtConnection,
    config: VMConfig | None = None,
    *,
    images: Path | None = None,
    host_root: Path | str | None = None,
    qemu_img: str = "qemu-img",
    pci: bool | None = None,
    previous: VMConfig | None = None,
    host: Host | None = None,
) -> HostFacts:
    """Read everything planning ``config`` needs, from libvirt and from the ``host`` (this
    computer, or another one's libvirt: ``core.host``; chosen from the URI when not given).
    ``pci``: read PCI devices and IOMMU groups (default: when the config passes a GPU).
    ``previous``: a VM's settings before a change; the files they name are read too."""
    host = host or host_for(connection.uri, connection, host_root, qemu_img)
    kvm_caps, any_caps, version, names, (networks, stopped) = connection.execute(
        _read_libvirt, idempotent=True)
    memory_mb, cpus = connection.host_info()
    caps = read_domain_capabilities(any_caps) if any_caps else None
    driver = connection.uri.split(":", 1)[0]
    folder = images or images_dir(connection.uri)
    wants_pci = pci if pci is not None else bool(
        (config and config.gpu_passthrough) or (previous and previous.gpu_passthrough))
    paths = {}
    for each in (previous, config):  # the config's own facts win
        if each is not None:
            paths.update(host.path_facts(each, folder))
    if config is not None and config.disk_path and not config.disk_device:
        paths = _with_disk_users(connection, config, paths, qemu_img)
    cpu_topology = gpu_node = None
    pinned = [each for each in (config, previous)
              if each is not None and each.tune.pins(each.gpu_passthrough is not None)]
    if pinned and not host.remote:  # this computer's sysfs
        from ..passthrough.cpu_topology import device_numa_node, read_cpu_topology

        cpu_topology = read_cpu_topology(host.root)
        gpu = pinned[0].gpu_passthrough
        gpu_node = device_numa_node(gpu.pci_address, host.root) if gpu else None
    hugepages = None
    if config is not None and config.tune.hugepages and not host.remote:
        from ..passthrough.hugepages import read_hugepages

        hugepages = read_hugepages(host.root)
    kvm_problem = None
    if driver != "test":
        kvm_problem = (host.kvm_problem() if kvm_caps is not None else
                       "libvirt offers no KVM guests here (is /dev/kvm there?)")
    return HostFacts(
        uri=connection.uri,
        kvm_usable=None if driver == "test" else kvm_problem is None,
        kvm_problem=kvm_problem,
        hyperv_features=caps.hyperv if caps is not None else None,
        resources=HostResources(memory_mb=memory_mb, cpus=cpus),
        libvirt_version=version,
        images_dir=folder,
        domain_names=frozenset(names),
        pci=host.pci() if wants_pci else None,
        uefi_firmware=host.firmware(caps),
        uefi_builds=None if host.remote else _uefi_builds(host),
        networks=networks,
        networks_stopped=stopped,
        usb_present=host.usb_present() if config is not None and config.usb_devices else None,
        paths=paths,
        guest_media=(_guest_media(config, paths, host.opener(), host_root)
                     if config and config.unattended else None),
        remote=host.remote,
        cpu_topology=cpu_topology,
        gpu_numa_node=gpu_node,
        hugepages=hugepages,
    )


def _guest_media(config: VMConfig, paths: dict[str, PathFact],
                 opener=None, root: Path | str | None = None) -> GuestMediaFacts:
    """Read the installer, the virtio-win ISO and the Looking Glass host installer (an ISO
    that is not one raises ``InvalidConfig`` on its field). ``opener``: the ISOs are a
    remote host's volumes, read through libvirt; the installers, SSH keys and the Looking
    Glass client are this computer's (the medium is built here)."""
    from ..guest.windows import inspect_installer, inspect_virtio, lg_host_release

    def usable(path: str | None) -> bool:
        return bool(path) and paths.get(path, PathFact("missing")).kind == "file"

    setup = config.unattended
    if config.vm_type.value == "linux":
        from ..guest.cloud_init import read_ssh_keys

        keys = read_ssh_keys(setup.ssh_key_path) if setup.ssh_key_path else []
        return GuestMediaFacts(ssh_keys=tuple(keys))
    installer = inspect_installer(config.iso_path, opener) if usable(config.iso_path) \
        else None
    virtio = (inspect_virtio(config.virtio_iso_path, config.vm_type.value, opener)
              if usable(config.virtio_iso_path) else None)
    host_release = client_release = None
    if setup.lg_host_installer:
        host_release = lg_host_release(setup.lg_host_installer, setup.lg_host_release)
    if config.looking_glass.enabled:
        client_release = _client_release()
    winfsp = None
    if usable(setup.winfsp_installer):
        with open(setup.winfsp_installer, "rb") as file:  # an OLE compound file, as MSIs are
            winfsp = file.read(8) == bytes.fromhex("d0cf11e0a1b11ae1")
    from ..guest.windows_answers import host_zone
    from ..passthrough.pci import host_root

    return GuestMediaFacts(installer, virtio, host_release, client_release,
                           winfsp_is_msi=winfsp, local_zone=host_zone(host_root(root)))


def _client_release() -> str | None:
    """This host's Looking Glass client release, read as the desktop user (it tells root
    nothing); None when it is not installed or cannot be read."""
    from ..doctor.host_check import desktop_user
    from ..display.lg_client import client_release, find_client

    client = find_client()
    if client is None:
        return None
    user = desktop_user() if os.geteuid() == 0 else None
    return client_release(client, user=user if user and user != "root" else None)


def _with_disk_users(connection: LibvirtConnection, config: VMConfig,
                     paths: dict[str, PathFact], qemu_img: str) -> dict[str, PathFact]:
    """The disk image given, marked ``in_use`` when another VM uses it (its disk, or an
    image its disk builds on): two VMs writing one image corrupt it, and only QEMU's lock
    stopped the second at its start (walk of issue 28)."""
    from dataclasses import replace

    from .backing import paths_used_by

    fact = paths.get(config.disk_path)
    if fact is None or fact.kind != "file":
        return paths
    others = connection.execute(lambda conn: {
        dom.name(): dom.XMLDesc(0) for dom in conn.listAllDomains(0)
        if dom.name() != config.name}, idempotent=True)
    used, _ = paths_used_by(connection, others, qemu_img)
    user = used.get(os.path.realpath(fact.real or config.disk_path))
    if user is None:
        return paths
    return {**paths, config.disk_path: replace(fact, in_use=f"VM {user!r} uses it")}


def _uefi_builds(host) -> frozenset[tuple[bool, bool]]:
    from ..doctor.host_check import uefi_builds

    return uefi_builds(host.root)


def _read_libvirt(conn: libvirt.virConnect):
    def caps(virttype: str) -> str | None:
        try:
            return conn.getDomainCapabilities(None, "x86_64", "q35", virttype, 0)
        except libvirt.libvirtError:
            if not conn.isAlive():
                raise  # a lost connection is not "no KVM": let execute() report it
            return None  # this virt type (or capabilities at all) is not offered

    kvm = caps("kvm")
    names = [dom.name() for dom in conn.listAllDomains(0)]
    try:
        listed = conn.listAllNetworks(0)
        networks = frozenset(net.name() for net in listed)
        stopped = frozenset(net.name() for net in listed if not net.isActive())
    except libvirt.libvirtError:
        if not conn.isAlive():
            raise
        networks = stopped = None  # a driver without networks: not checked
    return kvm, kvm or caps("qemu"), conn.getLibVersion(), names, (networks, stopped)


