"""The computer a VM runs on, asked one way whether it is this one or another.

``host_for(connection, root, qemu_img)`` chooses once, from the URI: ``LocalHost`` reads this
computer (sysfs under ``root``, the files themselves and their formats with qemu-img, the
UEFI firmware descriptors, the local doctor); ``RemoteHost`` asks that computer's libvirt
(node devices, storage volumes, domain capabilities, the remote doctor). Host facts, the
actions and the managers ask their Host; none of them decides by the URI which to read, and
two hosts' facts can be read side by side (what moving a VM will need).
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import InvalidConfig
from ..base.primitives import host_name, is_remote
from ..base.storage_xml import read_volume
from ..base.vm_config import VMConfig

if TYPE_CHECKING:  # libvirt stays unimported for a local host (`gpu list` needs none)
    import libvirt

    from ..base.connection import LibvirtConnection
    from ..base.domain_xml import DomainInfo
    from ..base.domcaps import DomainCapabilities
    from ..passthrough.pci import PCISnapshot
    from ..passthrough.usb_attach import USBDevice
    from .backing import ImageInfo

SYSTEM_IMAGES_DIR = Path("/var/lib/libvirt/images")
# the config's files that must exist (kind "file") when a VM is planned
INPUT_FILES = ("iso_path", "virtio_iso_path", "opencore_path", "kernel_path", "initrd_path",
               "cloud_image_path")


def images_dir(uri: str, environ: dict | None = None) -> Path:
    """Where new disks go: ``$NEURONOS_IMAGES_DIR``, else libvirt's pool folder for system
    URIs, ``~/.local/share/libvirt/images`` for session URIs."""
    env = os.environ if environ is None else environ
    if env.get("NEURONOS_IMAGES_DIR"):
        folder = env["NEURONOS_IMAGES_DIR"]
        if not folder.startswith("/"):  # relative to what? refused before anything is made
            raise InvalidConfig("NEURONOS_IMAGES_DIR", f"{folder!r} is not an absolute path"
                                " (start it with /)")
        return Path(folder)
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
    in_use: str | None = None  # a device the host holds (mounted, LVM), an image another VM's
    real: str | None = None  # the path with every symlink resolved
    unreadable: str | None = None  # why the desktop user may not use it (a share, a disk)
    why_missing: str | None = None  # said instead of "does not exist" (a remote host's file)


class LocalHost:
    """This computer: its sysfs (under ``root``: tests point it at a kernel-shaped tree),
    its files, qemu-img, its firmware descriptors and its doctor."""

    remote = False

    def __init__(self, uri: str, root: Path | str | None = None, qemu_img: str = "qemu-img"):
        from ..passthrough.pci import host_root

        self.uri, self.root, self.qemu_img = uri, host_root(root), qemu_img

    @property
    def name(self) -> str:
        return "this computer"

    def pci(self) -> PCISnapshot:
        from ..passthrough.pci import read_pci

        return read_pci(self.root)

    def usb(self) -> list[USBDevice]:
        from ..passthrough.usb_attach import list_usb

        return list_usb(self.root)

    def usb_present(self) -> frozenset[tuple[str, str]] | None:
        from ..passthrough.usb_attach import list_usb

        return frozenset((d.vendor_id, d.product_id) for d in list_usb(self.root, names=False))

    def firmware(self, caps: DomainCapabilities | None) -> tuple[str, ...]:
        from ..doctor.host_check import uefi_descriptors

        return uefi_descriptors(self.root)

    def kvm_problem(self) -> str | None:
        """Why KVM cannot run VMs here, in plain words (``doctor.kvm_probe``); None: it can."""
        from ..doctor.kvm_probe import kvm_problem

        return kvm_problem(self.root)

    def path_facts(self, config: VMConfig, folder: Path) -> dict[str, PathFact]:
        return _path_facts(config, folder, self.qemu_img, served=self.uri.startswith("qemu"))

    def opener(self):
        """How its files are read (None: opened here)."""
        return None

    def image_formats(self, definition: DomainInfo) -> dict[str, ImageInfo]:
        """What qemu-img reads in each file disk ``definition`` calls raw or names no format
        of (those a wrong format can hurt); left out where it cannot tell."""
        from .backing import ImageUnreadable, image_info

        found: dict[str, ImageInfo] = {}
        for disk in definition.disks:
            if (disk.device == "disk" and disk.type == "file" and disk.source
                    and disk.format in (None, "raw") and os.path.isfile(disk.source)):
                try:
                    found[disk.source] = image_info(disk.source, self.qemu_img)
                except ImageUnreadable:
                    continue
        return found

    def checks(self) -> list:
        from ..doctor.host_check import run_checks

        return run_checks(self.root, uri=self.uri)

    # --- files NeuronOS makes there (setup media) -----------------------------------------

    def has_file(self, path: str) -> bool:
        return os.path.lexists(path)

    def put_file(self, path: str, build, *, replace: bool = False, claim=None) -> None:
        """The file ``build(target)`` makes, at ``path`` (its folder 0711, as libvirt's
        images folder); ``build`` never writes over a file (``FileExistsError``), unless
        ``replace``. ``claim(("file", (dev, inode)))``: that very file is this call's."""
        from ..base.store import private_folder

        target = Path(path)
        private_folder(target.parent, 0o711)
        if replace:
            target.unlink(missing_ok=True)
        build(target)
        if claim is not None:
            info = target.stat()
            claim(("file", (info.st_dev, info.st_ino)))

    def remove_file(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)


class RemoteHost:
    """Another computer, known only through its libvirt: node devices, storage pools and
    volumes, domain capabilities."""

    remote = True

    def __init__(self, uri: str, connection):
        """``connection``: a ``LibvirtConnection``, or a function that gives one (opened
        only when its libvirt is asked: the doctor reports a host that does not answer)."""
        self.uri = uri
        self._connection = connection

    @property
    def connection(self) -> LibvirtConnection:
        if callable(self._connection):
            self._connection = self._connection()
        return self._connection

    @property
    def name(self) -> str:
        return host_name(self.uri)

    def pci(self) -> PCISnapshot:
        from ..passthrough.nodedev import read_pci_nodedev

        return read_pci_nodedev(self.connection)

    def usb(self) -> list[USBDevice]:
        from ..passthrough.nodedev import read_usb_nodedev

        return read_usb_nodedev(self.connection)

    def usb_present(self) -> frozenset[tuple[str, str]] | None:
        return None  # not known here: planning does not refuse an unplugged device

    def firmware(self, caps: DomainCapabilities | None) -> tuple[str, ...]:
        return caps.firmware if caps is not None else ()

    def kvm_problem(self) -> str | None:  # another computer's: its libvirt's capabilities tell
        return None

    def path_facts(self, config: VMConfig, folder: Path) -> dict[str, PathFact]:
        return _remote_path_facts(self.connection, config, folder)

    def opener(self):
        """Its files are volumes, read through libvirt's download stream."""
        from .storage import volume_opener

        return volume_opener(self.connection)

    def image_formats(self, definition: DomainInfo) -> dict[str, ImageInfo]:
        return {}  # its files are the other machine's

    def checks(self) -> list:
        from ..doctor.remote_checks import run_remote_checks

        return run_remote_checks(self.uri)

    # --- files NeuronOS makes there: volumes of its pools --------------------------------

    def has_file(self, path: str) -> bool:
        from .storage import lookup_volume

        return self.connection.execute(lambda conn: lookup_volume(conn, path) is not None)

    def put_file(self, path: str, build, *, replace: bool = False, claim=None) -> None:
        """Built here in a private temporary folder, sent into the pool of its folder there
        (``storage.upload_file``); ``claim(("volume", path))`` just before libvirt makes
        the volume."""
        from .storage import upload_file

        upload_file(self.connection, path, build, replace=replace,
                    claim=(lambda: claim(("volume", path))) if claim is not None else None)

    def remove_file(self, path: str) -> None:
        from .storage import delete_volume

        delete_volume(self.connection, path)


Host = LocalHost | RemoteHost


def host_for(uri: str, connection, root: Path | str | None = None,
             qemu_img: str = "qemu-img") -> Host:
    """The Host of ``uri``: this computer's, or a remote one's (asked through
    ``connection``, a ``LibvirtConnection`` or a function that gives one)."""
    if is_remote(uri):
        return RemoteHost(uri, connection)
    return LocalHost(uri, root, qemu_img)


# --- what is at a path ------------------------------------------------------------------------

def _path_facts(config: VMConfig, folder: Path, qemu_img: str,
                served: bool = False) -> dict[str, PathFact]:
    """``served``: QEMU's libvirt, where NeuronOS's launcher serves shared folders (as
    their owner: never a folder of root's)."""
    from ..base.access import root_owned

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
            kind = replace(kind, unreadable=_unreadable_to_desktop_user(Path(kind.real))
                           or (root_owned(kind.real) if served else None))
        facts[share.path] = kind
    if config.unattended is not None:
        medium = setup_medium_path(folder, config.name)
        facts[str(medium)] = _kind(medium)
        for installer in (config.unattended.lg_host_installer,
                          config.unattended.winfsp_installer,
                          config.unattended.gpu_driver_installer):
            if installer:
                facts[installer] = _kind(Path(installer))
                paths.append(installer)
    return _as_desktop_user(facts, config, paths, (str(folder), str(SYSTEM_IMAGES_DIR)))


def _as_desktop_user(facts: dict[str, PathFact], config: VMConfig,
                     inputs: list[str | None], images: tuple[str, ...] = ()
                     ) -> dict[str, PathFact]:
    """Each file the user gave, marked with why the desktop user could not use it as the VM
    will (read an ISO, read and write a disk, write the serial log): the VM must never be a
    way to a file they could not open themselves (issue 28: ``--serial-log /etc/passwd``),
    nor to the system's own files whoever asks (``images``: the VMs' folders among them)."""
    from ..base.access import READ, WRITE, EXECUTE, denied_to, desktop_user, \
        system_file_problem

    user = desktop_user()
    wants = [(path, READ) for path in inputs if path]
    if config.disk_path is not None:
        wants.append((config.disk_path, READ | WRITE))
    if config.serial_log_path is not None:
        wants.append((config.serial_log_path, WRITE))
    for path, want in wants:
        fact = facts.get(path)
        if fact is None or fact.pseudo or fact.kind not in ("file", "block", "missing"):
            continue  # refused for what it is already
        target = Path(fact.real or path)
        system = system_file_problem(str(target), want, images)
        if system:
            facts[path] = replace(fact, unreadable=system)
            continue
        if fact.kind == "missing":  # a new serial log: its folder must let them make it
            if want != WRITE or not target.parent.is_dir():
                continue
            target, want = target.parent, WRITE | EXECUTE
        denied = denied_to(target, user, want)
        if denied:
            facts[path] = replace(fact, unreadable=denied)
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
    import libvirt

    paths = [getattr(config, name) for name in INPUT_FILES]
    if config.gpu_passthrough is not None:
        paths.append(config.gpu_passthrough.rom_file)
    paths += [config.disk_path, str(folder / f"{config.name}.qcow2")]
    local = {}
    if config.unattended is not None:  # its medium goes into that host's pool
        paths.append(str(setup_medium_path(folder, config.name)))
        for installer in (config.unattended.lg_host_installer,
                          config.unattended.winfsp_installer,
                          config.unattended.gpu_driver_installer):
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
    """Why the desktop user (the one behind sudo) may not share ``folder``: the same
    answer every start asks again (``base.access.share_problem``: not theirs, not theirs to
    open, or holding what they could not open); None when they may."""
    from ..base.access import desktop_user, share_problem

    return share_problem(str(folder), desktop_user())


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
