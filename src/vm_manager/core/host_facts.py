"""Everything a plan needs to know about the host, read once per action.

``gather_host_facts`` does all the reading (libvirt's domain capabilities, node info and
version, the defined domain names, PCI devices and IOMMU groups from sysfs, the firmware
descriptors, and the files a config names); ``planning.plan_creation(config, facts)`` then
decides with no I/O at all, so it is tested with hand-made facts and no host.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import libvirt

from ..base.connection import LibvirtConnection
from ..base.domcaps import read_domain_capabilities
from ..base.storage_xml import read_volume
from ..base.primitives import host_name, is_remote
from ..base.vm_config import HostResources, VMConfig
from ..base.log import get_logger

if TYPE_CHECKING:
    from ..guest.windows import InstallerInfo, VirtioInfo
    from ..base.domain_xml import DomainInfo
    from ..passthrough.pci import PCISnapshot

log = get_logger(__name__)

SYSTEM_IMAGES_DIR = Path("/var/lib/libvirt/images")
# the config's files that must exist (kind "file") when a VM is planned
INPUT_FILES = ("iso_path", "virtio_iso_path", "opencore_path", "kernel_path", "initrd_path",
               "cloud_image_path")


def images_dir(uri: str, environ: dict | None = None) -> Path:
    """Where new disks go: ``$NEURONOS_IMAGES_DIR``, else libvirt's pool folder for system
    URIs, ``~/.local/share/libvirt/images`` for session URIs."""
    env = os.environ if environ is None else environ
    if env.get("NEURONOS_IMAGES_DIR"):
        return Path(env["NEURONOS_IMAGES_DIR"])
    if uri.rstrip("/").endswith("session") or "/session?" in uri:
        return Path(os.path.expanduser("~")) / ".local" / "share" / "libvirt" / "images"
    return SYSTEM_IMAGES_DIR


def setup_medium_path(folder: Path, name: str) -> Path:
    """Where an unattended setup's medium goes (next to the VM's disk)."""
    return folder / f"{name}-setup.iso"


@dataclass(frozen=True)
class PathFact:
    """What is at a path: ``file``, ``block``, ``dir``, ``other`` (a character device, a
    FIFO, a socket) or ``missing``, with the symlinks resolved; for a disk image also its
    format and backing file (``qemu-img info``, or a remote host's volume), or why the format
    could not be read (``format_problem``: planning refuses, it never guesses)."""

    kind: str
    format: str | None = None
    format_problem: str | None = None  # a disk image whose format could not be read: why
    backing: str | None = None  # a disk image's backing file (qemu-img)
    pseudo: bool = False  # it lies in /proc, /sys or /dev (not a file the user keeps)
    parent_writable: bool = False  # a missing file could be made there (a serial log)
    in_use: str | None = None  # a block device the host uses: mounted, or held (LVM, RAID)
    real: str | None = None  # the path with every symlink resolved
    unreadable: str | None = None  # a shared folder: why the desktop user cannot read it
    why_missing: str | None = None  # said instead of "does not exist" (a remote host's file)


@dataclass(frozen=True)
class GuestMediaFacts:
    """What an unattended setup's media hold (read from the ISOs, never mounted)."""

    installer: InstallerInfo | None = None  # None: the ISO is missing (planning says so)
    virtio: VirtioInfo | None = None
    lg_host_release: str | None = None  # of the Looking Glass host installer given
    lg_client_release: str | None = None  # of this host's client (None: none, or unknown)
    ssh_keys: tuple[str, ...] = ()  # Linux: the public keys the account logs in with
    winfsp_is_msi: bool | None = None  # the WinFsp installer given is a Windows Installer file


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
    usb_present: frozenset[tuple[str, str]] | None = None  # (vendor, product) plugged in now
    guest_media: GuestMediaFacts | None = None  # read for an unattended setup
    remote: bool = False  # another computer's libvirt: its files are known only as volumes
    definition: DomainInfo | None = None  # a VM being changed: the definition libvirt holds

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
) -> HostFacts:
    """Read everything planning ``config`` needs. ``pci``: read PCI devices and IOMMU
    groups (default: when the config passes a GPU). ``previous``: a VM's settings before a
    change; the files they name are read too (the plan of what it was)."""
    from ..doctor.host_check import uefi_descriptors
    from ..passthrough.pci import host_root as resolve_root
    from ..passthrough.pci import read_pci

    kvm_caps, any_caps, version, names, networks = connection.execute(_read_libvirt,
                                                                      idempotent=True)
    memory_mb, cpus = connection.host_info()
    caps = read_domain_capabilities(any_caps) if any_caps else None
    hyperv = caps.hyperv if caps is not None else None
    driver = connection.uri.split(":", 1)[0]
    remote = is_remote(connection.uri)  # its /sys and files are not ours: ask its libvirt
    folder = images or images_dir(connection.uri)
    root = resolve_root(host_root)
    wants_pci = pci if pci is not None else bool(
        (config and config.gpu_passthrough) or (previous and previous.gpu_passthrough))
    paths = {}
    for each in (previous, config):  # the config's own facts win
        if each is not None:
            paths.update(_remote_path_facts(connection, each, folder) if remote else
                         _path_facts(each, folder, qemu_img))
    return HostFacts(
        uri=connection.uri,
        kvm_usable=None if driver == "test" else kvm_caps is not None,
        hyperv_features=hyperv,
        resources=HostResources(memory_mb=memory_mb, cpus=cpus),
        libvirt_version=version,
        images_dir=folder,
        domain_names=frozenset(names),
        pci=(_remote_pci(connection) if remote else read_pci(root)) if wants_pci else None,
        uefi_firmware=(caps.firmware if caps else ()) if remote else uefi_descriptors(root),
        networks=networks,
        usb_present=(_usb_present(root) if config is not None and config.usb_devices
                     and not remote else None),  # remote: not known here
        paths=paths,
        guest_media=(_guest_media(config, paths, _remote_opener(connection) if remote
                                  else None) if config and config.unattended else None),
        remote=remote,
    )


def _remote_pci(connection: LibvirtConnection):
    from ..passthrough.nodedev import read_pci_nodedev

    return read_pci_nodedev(connection)


def _remote_opener(connection: LibvirtConnection):
    from .storage import volume_opener

    return volume_opener(connection)


def _guest_media(config: VMConfig, paths: dict[str, PathFact],
                 opener=None) -> GuestMediaFacts:
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
    return GuestMediaFacts(installer, virtio, host_release, client_release,
                           winfsp_is_msi=winfsp)


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


def _usb_present(root) -> frozenset[tuple[str, str]]:
    from ..passthrough.usb_attach import list_usb

    return frozenset((d.vendor_id, d.product_id) for d in list_usb(root, names=False))


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
        networks = frozenset(net.name() for net in conn.listAllNetworks(0))
    except libvirt.libvirtError:
        if not conn.isAlive():
            raise
        networks = None  # a driver without networks: not checked
    return kvm, kvm or caps("qemu"), conn.getLibVersion(), names, networks


def _path_facts(config: VMConfig, folder: Path, qemu_img: str) -> dict[str, PathFact]:
    paths = [getattr(config, name) for name in INPUT_FILES]
    if config.gpu_passthrough is not None:
        paths.append(config.gpu_passthrough.rom_file)
    new_disk = folder / f"{config.name}.qcow2"  # the name is validated: no "/" or ".."
    facts = {str(new_disk): _kind(new_disk)}  # first: a disk given at that path is read below
    facts.update({path: _kind(Path(path)) for path in paths if path})
    if config.serial_log_path is not None:
        facts[config.serial_log_path] = _kind(Path(config.serial_log_path))
    images = [config.cloud_image_path, config.opencore_path]  # disk images: their format too
    if config.disk_path is not None:
        facts[config.disk_path] = _kind(Path(config.disk_path))
        images.append(config.disk_path)
    for path in filter(None, images):
        kind = facts[path]
        if kind.kind == "block" and path == config.disk_path:
            facts[path] = replace(kind, format="raw")  # a whole device: the VM's raw disk
        elif kind.kind == "file" and not kind.pseudo:
            facts[path] = _with_format(kind, path, qemu_img)
    for share in config.shares:
        kind = _kind(Path(share.path))
        if kind.kind == "dir":
            kind = replace(kind, unreadable=_unreadable_to_desktop_user(Path(kind.real)))
        facts[share.path] = kind
    if config.unattended is not None:
        medium = setup_medium_path(folder, config.name)
        facts[str(medium)] = _kind(medium)
        for installer in (config.unattended.lg_host_installer,
                          config.unattended.winfsp_installer):
            if installer:
                facts[installer] = _kind(Path(installer))
    return facts


def _with_format(fact: PathFact, path: str, qemu_img: str) -> PathFact:
    """The image's format and backing file as qemu-img reads them, or why it could not."""
    from .backing import ImageUnreadable, image_info

    try:
        info = image_info(path, qemu_img)
    except ImageUnreadable as error:
        return replace(fact, format_problem=str(error))
    return replace(fact, format=info.format, backing=info.backing)


def _remote_path_facts(connection: LibvirtConnection, config: VMConfig,
                       folder: Path) -> dict[str, PathFact]:
    """A remote host's files as its libvirt knows them: a path is a file when it is a
    volume of one of its storage pools (kind and format from the volume), else missing;
    only what goes onto a setup medium built here (the Looking Glass and WinFsp
    installers) is this computer's (planning refuses what needs that machine's files)."""
    paths = [getattr(config, name) for name in INPUT_FILES]
    if config.gpu_passthrough is not None:
        paths.append(config.gpu_passthrough.rom_file)
    paths += [config.disk_path, str(folder / f"{config.name}.qcow2")]
    local = {}
    if config.unattended is not None:  # its medium goes into that host's pool
        paths.append(str(setup_medium_path(folder, config.name)))
        for installer in (config.unattended.lg_host_installer,
                          config.unattended.winfsp_installer):
            if installer:  # this computer's files: they go onto the medium built here
                local[installer] = _kind(Path(installer))
    why = (f"is in no storage pool of {host_name(connection.uri)} (libvirt"
           " knows a remote host's files only as volumes: put it in a pool's folder there"
           f" and run `virsh -c {connection.uri} pool-refresh POOL`)")
    kinds = {0: "file", 1: "block", 2: "dir"}  # VIR_STORAGE_VOL_FILE, _BLOCK, _DIR

    def look(conn: libvirt.virConnect) -> dict[str, PathFact]:
        facts = {}
        for path in filter(None, paths):
            try:
                volume = conn.storageVolLookupByPath(path)
                kind = kinds.get(volume.info()[0], "other")
                described = read_volume(volume.XMLDesc(0))
            except libvirt.libvirtError:
                if not conn.isAlive():
                    raise
                facts[path] = PathFact("missing", real=path, why_missing=why)
                continue
            facts[path] = PathFact(  # a block volume's users are not known here
                kind, format=described.format, real=path, backing=described.backing,
                format_problem=None if described.format else "its storage pool names no"
                " format")
        return facts

    facts = {**connection.execute(look, idempotent=True), **local}
    if config.serial_log_path is not None:  # its folder is the other machine's: libvirt says
        facts[config.serial_log_path] = PathFact("missing", parent_writable=True,
                                                 real=config.serial_log_path)
    return facts


PSEUDO_ROOTS = ("/proc", "/sys", "/dev")


def _kind(path: Path) -> PathFact:
    real = os.path.realpath(path)
    pseudo = any(real == root or real.startswith(root + "/") for root in PSEUDO_ROOTS)
    try:
        info = os.stat(real)
    except OSError:
        parent = os.path.dirname(real)
        return PathFact("missing", pseudo=pseudo, parent_writable=os.path.isdir(parent)
                        and os.access(parent, os.W_OK | os.X_OK), real=real)
    if stat.S_ISREG(info.st_mode):
        return PathFact("file", pseudo=pseudo, real=real)
    if stat.S_ISBLK(info.st_mode):
        return PathFact("block", pseudo=pseudo, in_use=_block_in_use(real), real=real)
    return PathFact("dir" if stat.S_ISDIR(info.st_mode) else "other", pseudo=pseudo,
                    real=real)


def _unreadable_to_desktop_user(folder: Path) -> str | None:
    """Why the desktop user (the one behind sudo) could not open ``folder`` themselves (mode
    bits and ACLs, as the kernel judges them: ``base.access``); None when they can."""
    from ..doctor.host_check import desktop_user
    from ..base.access import unreadable_to

    return unreadable_to(folder, desktop_user())


def _block_in_use(real: str) -> str | None:
    """Why the host needs this block device: mounted (it or a partition of it), or held by
    another device (LVM, RAID, dm-crypt); None when it is free."""
    name = os.path.basename(real)
    sys_block = Path("/sys/class/block") / name
    family = {real} | {f"/dev/{child.name}" for child in sys_block.glob(f"{name}*")
                       if child.name != name}
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        mounts = []
    for line in mounts:
        source, target = (line.split() + ["", ""])[:2]
        if source.startswith("/dev/") and os.path.realpath(source) in family:
            return f"{source} is mounted on {target}"
    holders = [h.name for h in (sys_block / "holders").glob("*")] if sys_block.exists() else []
    if holders:
        return f"it is held by {', '.join(holders)}"
    return None
