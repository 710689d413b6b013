"""Delete a VM without losing anything the user did not ask to lose.

``plan()`` says exactly what would be removed and what is kept (with the reason);
``destroy()`` carries it out: stop (only with ``force=True`` when running), undefine with
the right flags, remove the saved settings and the Looking Glass shared-memory file, and
the disks only with ``delete_disks=True``. Even then a disk is kept when it is a CD-ROM,
read-only, shareable, not a plain file, outside the managed images folder, or used by
another domain (directly or as a backing file). ``delete_disks=True`` also removes the
UEFI variables (NVRAM) and the TPM state: it means "delete everything".

Facts (DESIGN.md 5, virt-manager's delete dialog): undefine flags MANAGED_SAVE 1 |
SNAPSHOTS_METADATA 2 | NVRAM 4 | KEEP_NVRAM 8 | CHECKPOINTS_METADATA 16 | TPM 32 |
KEEP_TPM 64, the TPM ones from libvirt 8.9.0; the test driver takes only 1 | 2.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from ..base.connection import LibvirtConnection, _is_connection_error, get_connection
from ..base.domain_xml import Disk, read_domain
from .host import images_dir, setup_medium_path
from .backing import ChainFile, chain_files, paths_used_by
from ..base.snapshot_xml import read_snapshot
from ..base.errors import (ConnectionFailed, InvalidConfig, LifecycleError, OperationFailed,
                     StoreError, VMNotFound)
from ..base.primitives import VMState
from ..base.store import VMStore
from ..base.log import get_logger

log = get_logger(__name__)
DAEMON_WAIT_S = 30.0  # how long a deletion under way waits for a daemon that went away

UNDEFINE_MANAGED_SAVE = 1
UNDEFINE_SNAPSHOTS_METADATA = 2
UNDEFINE_NVRAM = 4
UNDEFINE_KEEP_NVRAM = 8
UNDEFINE_CHECKPOINTS_METADATA = 16
UNDEFINE_TPM = 32
UNDEFINE_KEEP_TPM = 64
TPM_FLAGS_SINCE = 8009000  # libvirt 8.9.0


@dataclass
class DiskDecision:
    path: str
    device: str  # "disk", "cdrom", ...
    delete: bool
    reason: str


@dataclass
class DestroyPlan:
    name: str
    state: VMState
    delete_disks: bool
    disks: list[DiskDecision]
    settings_file: str | None  # present and to be removed
    shm_file: str | None
    undefine_flags: int
    firmware_state: str  # what happens to NVRAM/TPM
    snapshots: list[str] = field(default_factory=list)
    snapshot_folder: str | None = None  # NeuronOS's NVRAM/TPM copies, removed with the disks
    shm_rule: str | None = None  # its tmpfiles rule: the next VM of this name is not theirs
    firmware_files: list[str] = field(default_factory=list)  # its NVRAM file, TPM folder
    chain_unread: list[str] = field(default_factory=list)  # images below that stay unknown
    has_firmware_state: bool = True  # UEFI variables or a TPM (a kernel-boot VM has none)

    @property
    def blocked_reason(self) -> str | None:
        if self.state.is_active:
            return (f"{self.name!r}: it is {self.state.label}; stop it first, or give --force"
                    " (a graceful stop, forced after the timeout)")
        return None

    @property
    def snapshots_block(self) -> str | None:
        if self.snapshots and not self.delete_disks:
            return (f"{self.name!r} has snapshots ({', '.join(self.snapshots)}): delete them"
                    " first (neuron-vm snapshot delete), or delete the VM with --delete-disks,"
                    " which takes them too")
        return None

    def describe(self, force: bool = True) -> list[str]:
        """The plan in words; ``force``: whether a running VM will be stopped first (else
        the deletion is refused, and this says so)."""
        lines = [f"delete VM {self.name!r} ({self.state.label})"]
        if self.state.is_active:
            lines.append("  stop it first (graceful, forced after the timeout)" if force else
                         f"  refused: it is {self.state.label}; --force stops it first"
                         " (graceful, forced after the timeout)")
        lines.append("  remove its libvirt definition (snapshot and checkpoint metadata too)")
        files = f" ({', '.join(self.firmware_files)})" if self.firmware_files else ""
        if self.has_firmware_state:
            lines.append(f"  UEFI variables and TPM state{files}: {self.firmware_state}")
        for disk in self.disks:
            action = "DELETE" if disk.delete else "keep  "
            lines.append(f"  {action} {disk.device} {disk.path} ({disk.reason})")
        for unread in self.chain_unread:
            lines.append(f"  keep   whatever is below: {unread}")
        if self.snapshots:
            lines.append(f"  {'DELETE' if self.delete_disks else 'refused:'} snapshots"
                         f" {', '.join(self.snapshots)}"
                         + ("" if self.delete_disks else " (needs --delete-disks)"))
        if self.settings_file:
            lines.append(f"  remove settings {self.settings_file}")
        if self.shm_file:
            lines.append(f"  remove shared memory {self.shm_file}")
        if self.shm_rule:
            lines.append(f"  remove shared memory rule {self.shm_rule}")
        return lines

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "state": self.state.value,
            "delete_disks": self.delete_disks,
            "disks": [disk.__dict__ for disk in self.disks],
            "settings_file": self.settings_file,
            "shm_file": self.shm_file,
            "shm_rule": self.shm_rule,
            "firmware_state": self.firmware_state,
            "snapshots": self.snapshots,
            "firmware_files": self.firmware_files,
            "chain_unread": self.chain_unread,
        }


@dataclass
class DestroyResult:
    name: str
    stopped: bool
    removed: list[str] = field(default_factory=list)
    kept: list[tuple[str, str]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "stopped": self.stopped, "removed": self.removed,
                "kept": [{"path": p, "reason": r} for p, r in self.kept],
                "failed": [{"path": p, "error": e} for p, e in self.failed]}


class VMDestroyer:
    def __init__(
        self,
        connection: LibvirtConnection | None = None,
        *,
        store: VMStore | None = None,
        lifecycle=None,
        images_dir: Path | str | None = None,
        shm_dir: Path | str = "/dev/shm",
        qemu_img: str = "qemu-img",
        rules_root: Path | str | None = None,  # stands for "/" (its etc/tmpfiles.d)
    ):
        self._connection = connection
        self.store = store or (VMStore.for_uri(connection.uri) if connection is not None
                               else VMStore())  # a remote host's settings in its own folder
        self._lifecycle = lifecycle
        self._images_dir = Path(images_dir) if images_dir else None
        self.shm_dir = Path(shm_dir)
        self.qemu_img = qemu_img
        self.rules_root = rules_root

    @property
    def connection(self) -> LibvirtConnection:
        if self._connection is None:
            self._connection = get_connection()
        return self._connection

    @property
    def lifecycle(self):
        if self._lifecycle is None:
            from .vm_lifecycle import VMLifecycleManager

            self._lifecycle = VMLifecycleManager(self.connection)
        return self._lifecycle

    # --- plan -------------------------------------------------------------------------------

    def plan(self, name: str, delete_disks: bool = False) -> DestroyPlan:
        """What ``destroy`` would do. Raises ``VMNotFound``. Changes nothing."""
        return self._plans(name, (delete_disks,))[0]

    def plan_both(self, name: str) -> tuple[DestroyPlan, DestroyPlan]:
        """The plan keeping the disks and the plan deleting them, from one read."""
        keep, full = self._plans(name, (False, True))
        return keep, full

    def _plans(self, name: str, choices: tuple[bool, ...]) -> list[DestroyPlan]:
        def read(conn: libvirt.virConnect):
            dom = self.connection.lookup(conn, name)
            others = {}
            for other in conn.listAllDomains(0):
                if other.name() != name:
                    others[other.name()] = other.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            snaps = [snap.getXMLDesc(0) for snap in dom.listAllSnapshots(0)]
            return (dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), dom.state()[0], others,
                    conn.getLibVersion(), snaps)

        xml, state_code, others, lib_version, snap_xmls = self.connection.execute(
            read, idempotent=True)
        snaps = [read_snapshot(snap).name for snap in snap_xmls]
        state = VMState.from_libvirt(state_code)
        managed = (self._images_dir or images_dir(self.connection.uri)).resolve()
        used_by, unread = paths_used_by(self.connection, others, self.qemu_img)
        domain = read_domain(xml)
        domain_disks = [disk for disk in domain.disks if disk.source]  # not empty
        given = self._given_images(name, domain.uuid)
        extra, chain_unread = chain_files(
            self.connection, [disk.source for disk in domain_disks if disk.type == "file"
                              and disk.device == "disk"], snap_xmls, self.qemu_img)
        tpm_flags = lib_version >= TPM_FLAGS_SINCE

        from ..base.primitives import is_remote
        from ..passthrough.ivshmem import shm_path, tmpfiles_path
        from ..passthrough.pci import host_root

        try:  # a domain made outside NeuronOS may have a name our files cannot carry
            settings: Path | None = self.store.path_for(name)
            shm: Path | None = shm_path(name, self.shm_dir)
            rule: Path | None = None if is_remote(self.connection.uri) else \
                tmpfiles_path(name, host_root(self.rules_root))
        except InvalidConfig:
            settings = shm = rule = None
        from .snapshots import snapshots_folder, state_dirs, state_files

        folder = snapshots_folder(domain, managed)
        try:  # this computer's libvirt folders; a remote VM's are the other machine's
            firmware_files = [] if is_remote(self.connection.uri) else [
                str(path) for _, path in state_files(domain, *state_dirs(self.connection.uri))]
        except InvalidConfig:  # an NVRAM path outside libvirt's folder: libvirt's business
            firmware_files = []
        plans = []
        for delete_disks in choices:
            flags = (UNDEFINE_MANAGED_SAVE | UNDEFINE_SNAPSHOTS_METADATA
                     | UNDEFINE_CHECKPOINTS_METADATA)
            if delete_disks:
                flags |= UNDEFINE_NVRAM | (UNDEFINE_TPM if tpm_flags else 0)
                firmware = "deleted"
            else:
                flags |= UNDEFINE_KEEP_NVRAM | (UNDEFINE_KEEP_TPM if tpm_flags else 0)
                firmware = "kept (delete them with --delete-disks)"
            plans.append(DestroyPlan(
                name=name, state=state, delete_disks=delete_disks,
                disks=[self._decide(disk, delete_disks, managed, used_by, name, unread,
                                    given) for disk in domain_disks]
                + [self._decide_file(file, delete_disks, managed, used_by, unread, given)
                   for file in extra],
                chain_unread=chain_unread,
                has_firmware_state=bool(domain.os.firmware == "efi" or domain.os.loader
                                        or domain.os.nvram or domain.tpm or firmware_files),
                settings_file=str(settings) if settings and self.store.belongs(
                    name, domain.uuid) else None,  # never another VM's of this name
                shm_file=str(shm) if shm and shm.exists() else None,
                shm_rule=str(rule) if rule and rule.exists() else None,
                undefine_flags=flags, firmware_state=firmware, snapshots=snaps,
                snapshot_folder=str(folder) if "/" not in name and folder.is_dir() else None,
                firmware_files=firmware_files,
            ))
        return plans

    def _given_images(self, name: str, uuid: str | None) -> dict[str, str]:
        """Real path -> why it stays: the boot images the user gave at creation (an OpenCore
        image boots every macOS VM made with it), from the VM's saved settings."""
        try:
            config = self.store.load(name, uuid)
        except (StoreError, InvalidConfig):
            return {}
        if config is None or not config.opencore_path:
            return {}
        return {os.path.realpath(config.opencore_path): "the OpenCore image you gave; it is"
                " yours (other macOS VMs can boot from it)"}

    def _decide(self, disk: Disk, delete_disks: bool, managed: Path,
                used_by: dict[str, str], name: str, unread: list[str],
                given: dict[str, str]) -> DiskDecision:
        path, device = disk.source, disk.device

        def keep(reason: str) -> DiskDecision:
            return DiskDecision(path, device, False, reason)

        if path and "/" not in name and Path(os.path.realpath(path)) == \
                setup_medium_path(managed, name) and str(Path(os.path.realpath(path))) \
                not in used_by:
            return DiskDecision(path, device, True, "the setup medium NeuronOS made for it"
                                " (it holds the account's password when one was given)")
        if device == "cdrom":
            return keep("a CD-ROM image is never deleted")
        if path and os.path.realpath(path) in given:
            return keep(given[os.path.realpath(path)])
        if disk.readonly:
            return keep("read-only")
        if disk.shareable:
            return keep("shareable")
        if disk.type != "file":
            return keep(f"not a plain file ({disk.type})")
        real = Path(os.path.realpath(path))
        if str(real) in used_by:
            return keep(f"also used by VM {used_by[str(real)]!r}")
        if managed not in real.parents:
            return keep(f"outside the managed images folder {managed}")
        if not delete_disks:
            return keep("disks are kept unless you ask to delete them (--delete-disks)")
        if unread:  # another VM's disk may build on this one: nothing says it does not
            return keep(f"{unread[0]}, so it may build on this disk")
        return DiskDecision(path, device, True, "owned by this VM")

    @staticmethod
    def _decide_file(file: ChainFile, delete_disks: bool, managed: Path,
                     used_by: dict[str, str], unread: list[str],
                     given: dict[str, str]) -> DiskDecision:
        """An image below a disk, or a snapshot's overlay or memory: deleted with the disks
        when this VM made it, in the managed folder, and nothing else uses it."""
        real = os.path.realpath(file.path)

        def keep(reason: str) -> DiskDecision:
            return DiskDecision(file.path, file.kind, False, reason)

        if real in used_by:
            return keep(f"also used by VM {used_by[real]!r}")
        if real in given:
            return keep(given[real])
        if managed not in Path(real).parents:
            return keep(f"outside the managed images folder {managed}")
        if file.made_by is None:
            return keep("its disk builds on it, but no snapshot of this VM made it (a cloud"
                        " or base image is yours)")
        if not delete_disks:
            return keep(f"{file.made_by}; kept unless you ask to delete the disks"
                        " (--delete-disks)")
        if unread:
            return keep(f"{unread[0]}, so it may build on this file")
        return DiskDecision(file.path, file.kind, True, file.made_by)

    # --- destroy ----------------------------------------------------------------------------

    def destroy(self, name: str, delete_disks: bool = False, force: bool = False,
                stop_timeout: float = 60.0) -> DestroyResult:
        plan = self.plan(name, delete_disks)
        if plan.snapshots_block:
            raise InvalidConfig("--delete-disks", plan.snapshots_block)
        stopped = False
        if plan.state.is_active:
            if not force:
                raise LifecycleError(f"cannot delete {plan.blocked_reason}")
            self.lifecycle.stop(name, timeout=stop_timeout)  # forced after the timeout
            stopped = True
        states = self.lifecycle.states
        ticket = states.begin(name, "delete", timeout=60)
        try:
            self._undefine(name, plan.undefine_flags)
        except BaseException as error:
            states.end(ticket, error=str(error))
            raise
        states.end(ticket)
        result = DestroyResult(name, stopped)
        result.removed.append(f"libvirt domain {name}")
        for disk in plan.disks:
            if not disk.delete:
                result.kept.append((disk.path, disk.reason))
                continue
            try:
                self._delete_disk(disk.path)
                result.removed.append(disk.path)
            except (OSError, OperationFailed, ConnectionFailed) as error:
                result.failed.append((disk.path, str(error)))
        if plan.snapshot_folder and delete_disks:
            shutil.rmtree(plan.snapshot_folder, ignore_errors=True)
            result.removed.append(plan.snapshot_folder)
        for path in (plan.settings_file, plan.shm_file, plan.shm_rule):
            if path is None:
                continue
            try:
                os.unlink(path)
                result.removed.append(path)
            except FileNotFoundError:
                pass
            except OSError as error:
                result.failed.append((path, error.strerror or str(error)))
        log.info("deleted VM %s: removed %s, kept %s", name, result.removed, result.kept)
        return result

    def _undefine(self, name: str, flags: int) -> None:
        def undefine(conn: libvirt.virConnect) -> None:
            dom = self.connection.lookup(conn, name)
            for attempt in (flags, flags & (UNDEFINE_MANAGED_SAVE | UNDEFINE_SNAPSHOTS_METADATA)):
                try:
                    dom.undefineFlags(attempt)
                    return
                except libvirt.libvirtError as error:
                    if error.get_error_code() not in (
                        libvirt.VIR_ERR_INVALID_ARG, libvirt.VIR_ERR_NO_SUPPORT
                    ):
                        raise
                    log.debug("undefine flags %#x refused: %s", attempt, error)
            dom.undefine()  # drivers that take no flags at all

        try:
            self.connection.execute(undefine)
        except ConnectionFailed:
            # The daemon went away: maybe before, maybe after it undefined the domain. Once
            # it is back, look again: still there, undefine it; gone, the reply was lost.
            try:
                self.connection.execute_when_back(undefine, DAEMON_WAIT_S)
            except VMNotFound:
                log.info("%s was undefined before the daemon went away", name)

    def _delete_disk(self, path: str) -> None:
        """Delete one disk: through its storage pool when libvirt manages it, else the file.
        A daemon that goes away meanwhile is waited for, and a deletion it finished before
        it went is not an error."""
        def delete(conn: libvirt.virConnect) -> bool:
            try:
                volume = conn.storageVolLookupByPath(path)
            except libvirt.libvirtError as error:
                if _is_connection_error(conn, error):
                    raise
                return False
            volume.delete(0)
            return True

        try:
            managed = self.connection.execute(delete)
        except ConnectionFailed:
            if not os.path.lexists(path):
                return  # deleted through its pool just before the daemon went away
            managed = self.connection.execute_when_back(delete, DAEMON_WAIT_S)
        if not managed:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # already gone: the plan saw it, so nothing is left to do
