"""Snapshots that are a VM's whole state: its disks, its UEFI variables (NVRAM) and its TPM
state together (DESIGN.md 8).

libvirt snapshots a shut-off VM's qcow2 disks (internal snapshots) but restores neither the
NVRAM vars file nor the swtpm state (up to 11.x at least), and a running UEFI VM gets only
external snapshots (revertible from libvirt 9.9 on). So here, on any libvirt:

- A snapshot is taken of a SHUT-OFF VM only: libvirt's offline internal snapshot of every
  disk (qcow2 only; a raw disk is refused with the reason) plus copies of the NVRAM file and
  the TPM state folder, in ``<images>/<vm>.snapshots/<snap>/`` with ``snapshot.json`` (name,
  time, description, files, method). A running VM is refused, by choice: its disks, memory
  and TPM state would have to be caught at one instant, and a TPM state that does not match
  its disk can make Windows ask for its BitLocker recovery key. A shut-off snapshot takes
  well under a second (bench/snapshots.py). A GPU VM is no different: no memory is saved.
- Revert (VM shut off) restores the disks (libvirt), then the NVRAM, then the TPM state. It
  first takes a safety snapshot of the current state the same way; if any step fails,
  everything is reverted to that, so a failed revert changes nothing. The safety snapshot
  is deleted at the end. An external snapshot made outside NeuronOS (``virsh
  snapshot-create-as --disk-only`` or ``--memspec``) is reverted by libvirt alone where it
  can (9.9 and newer: new overlays on the snapshot's images), keeping the VM's settings of
  now; an older libvirt is refused before anything changes, naming its version.
- Delete removes one snapshot (libvirt: an internal one from the qcow2, an external one
  merged back) and its folder; other snapshots and the current state are untouched.
- ``list`` shows libvirt's snapshots, those made with virsh too (marked "disks only").
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import threading
import time
import uuid as uuid_module
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

import libvirt

from ..base.connection import LibvirtConnection
from ..base.domain_xml import read_domain
from ..base.errors import InvalidConfig, LifecycleError, NotFound, OperationFailed, VMManagerError
from ..base.log import get_logger
from ..base.primitives import dotted_version
from ..base.values import parse_text
from .state_copies import (  # noqa: F401 (state_dirs, state_files: imported from here)
    LIBVIRT_STATE, copy_state, remove_state, restore_copy, size_of, state_dirs, state_files)

log = get_logger(__name__)

SNAPSHOT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
METHOD = "offline: internal qcow2 disk snapshots (libvirt) + NVRAM and TPM copies"
SAFETY_PREFIX = "neuronos-pre-revert-"
EXTERNAL_REVERT_SINCE = 9_009_000  # libvirt 9.9.0 reverts external snapshots (its NEWS)


@dataclass
class Snapshot:
    name: str
    created: str  # ISO time
    description: str = ""
    method: str = "disks only (made outside NeuronOS: no NVRAM or TPM copy)"
    files: list[str] = field(default_factory=list)
    size_bytes: int = 0  # of the NVRAM and TPM copies (the disk snapshots live in the qcow2)
    complete: bool = False  # disks, NVRAM and TPM together

    def to_dict(self) -> dict:
        return asdict(self)


def check_snapshot_name(name: str) -> str:
    if not isinstance(name, str) or not SNAPSHOT_NAME.fullmatch(name):
        raise InvalidConfig("SNAP", f"{name!r} is not a snapshot name: 1-64 of A-Z a-z 0-9 . _"
                            " -, starting with a letter or digit")
    if name.startswith(SAFETY_PREFIX) or name in (".", ".."):
        raise InvalidConfig("SNAP", f"{name!r} is reserved")
    return name


class SnapshotManager:
    def __init__(self, connection: LibvirtConnection, images_dir: Path,
                 state_root: Path = LIBVIRT_STATE):
        self.connection = connection
        self.images_dir = Path(images_dir)
        self.state_root = Path(state_root)
        self.nvram_dir, self.tpm_dir = state_dirs(connection.uri, self.state_root)
        self._held = threading.local()
        self._folders: dict[str, Path] = {}

    @contextlib.contextmanager
    def _serialized(self):
        """One snapshot operation at a time in this images folder, across processes (an
        flock on the folder; a name checked free stays free until the snapshot is taken,
        so an undo only ever removes what its own operation made). Re-entrant per thread."""
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        try:
            fd = os.open(self.images_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:  # no images folder: no snapshot files either
            fd = None
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            self._held.depth = 1
            try:
                yield
            finally:
                self._held.depth = 0
        finally:
            if fd is not None:
                os.close(fd)  # and the lock with it

    # --- reading ----------------------------------------------------------------------------

    def folder(self, vm: str) -> Path:
        """Where ``vm``'s NVRAM and TPM copies live: next to its disk (found from the VM,
        whatever NEURONOS_IMAGES_DIR says now; ``snapshots_folder``)."""
        if vm not in self._folders:
            self._domain(vm)
        return self._folders[vm]

    def _domain(self, vm: str):
        def read(conn):
            dom = self.connection.lookup(conn, vm)
            return (dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), bool(dom.isActive()),
                    [s.getXMLDesc(0) for s in dom.listAllSnapshots(0)])

        xml, active, snapshots = self.connection.execute(read, idempotent=True)
        domain = read_domain(xml)
        self._folders[vm] = snapshots_folder(domain, self.images_dir)
        return domain, active, snapshots

    def list(self, vm: str) -> list[Snapshot]:
        """Every snapshot libvirt knows for ``vm`` (virsh's too), oldest first."""
        _, _, snapshots = self._domain(vm)
        out = []
        for xml in snapshots:
            root = ET.fromstring(xml)
            name = root.findtext("name") or ""
            if name.startswith(SAFETY_PREFIX):
                continue
            stamp = int(root.findtext("creationTime") or 0)
            saved = self._saved(vm, name)
            memory = root.find("memory")
            held = "disks and memory" if memory is not None and memory.get("snapshot") == \
                "external" else "disks only"
            out.append(saved or Snapshot(
                name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(stamp)),
                root.findtext("description") or "",
                f"{held} (made outside NeuronOS: no NVRAM or TPM copy)"))
        return sorted(out, key=lambda snap: snap.created)

    def _saved(self, vm: str, name: str) -> Snapshot | None:
        path = self.folder(vm) / name / "snapshot.json"
        try:
            return Snapshot(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    # --- taking -----------------------------------------------------------------------------

    def create(self, vm: str, name: str, description: str = "") -> Snapshot:
        check_snapshot_name(name)
        parse_text(description, "--description", 1000)
        with self._serialized():
            return self._create(vm, name, description)

    def _create(self, vm: str, name: str, description: str) -> Snapshot:
        domain, active, snapshots = self._domain(vm)
        if active:
            raise LifecycleError(f"{vm} is running: shut it down first (a snapshot holds the"
                                 " disks, UEFI variables and TPM state together, which can be"
                                 " copied together only while the VM is off)")
        if any(ET.fromstring(x).findtext("name") == name for x in snapshots):
            raise InvalidConfig("SNAP", f"{vm} already has a snapshot named {name!r}")
        self._check_disks(domain)
        return self._take(vm, domain, name, description)

    def _check_disks(self, domain) -> None:
        from .host import host_for

        images = host_for(self.connection.uri, self.connection).image_formats(domain)
        if not any(disk.device == "disk" for disk in domain.disks):
            raise InvalidConfig("NAME", f"{domain.name} has no disks: there is nothing to take"
                                " a snapshot of")
        seed = domain.setup.medium if domain.setup is not None else None
        for disk in domain.disks:
            if disk.device != "disk":
                continue
            if seed and disk.source == seed:  # the cloud-init seed of a setup not finished
                raise InvalidConfig("NAME", f"the unattended setup of {domain.name} is not"
                                    " finished (its cloud-init seed is attached): take"
                                    " snapshots once `neuron-vm setup-status"
                                    f" {domain.name}` says ready")
            found = images.get(disk.source or "")
            if found is not None and found.format == "qcow2":  # the definition is wrong
                raise InvalidConfig("NAME", f"{disk.source} is a qcow2 file that the"
                                    f" definition of {domain.name} calls raw: `neuron-vm"
                                    f" configure {domain.name}` puts it back (see `neuron-vm"
                                    f" info {domain.name}`), then take the snapshot")
            if disk.type != "file" or disk.format != "qcow2":
                raise InvalidConfig("NAME", f"{disk.source} is a {disk.format or disk.type}"
                                    " disk: only qcow2 disks can hold snapshots (convert it"
                                    " with `qemu-img convert -O qcow2`)")

    def _state_files(self, domain) -> list[tuple[str, Path]]:
        return state_files(domain, self.nvram_dir, self.tpm_dir)

    def _take(self, vm: str, domain, name: str, description: str) -> Snapshot:
        target = self.folder(vm) / name
        files = self._state_files(domain)
        need = sum(size_of(path) for _, path in files) + (1 << 20)
        self.folder(vm).mkdir(mode=0o700, exist_ok=True)
        free = shutil.disk_usage(self.folder(vm)).free
        if free < need:
            self._drop_empty_folder(vm)
            raise OperationFailed(f"not enough space in {self.folder(vm)} for the snapshot's"
                                  f" NVRAM and TPM copies ({_mib(need)} needed, {_mib(free)}"
                                  " free); nothing was made")
        partial = target.with_name(f".{name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        try:
            partial.mkdir(mode=0o700)
            for kind, path in files:
                copy_state(path, partial / kind)
            xml = ET.Element("domainsnapshot")
            ET.SubElement(xml, "name").text = name
            ET.SubElement(xml, "description").text = description
            # A daemon that dies during this call may have made the snapshot: the undo below
            # deletes it by name either way (the name was free when this began).
            self.connection.execute(lambda c: self.connection.lookup(c, vm).snapshotCreateXML(
                ET.tostring(xml, encoding="unicode"), 0))
            snap = Snapshot(name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                            description, METHOD, [kind for kind, _ in files],
                            sum(size_of(partial / kind) for kind, _ in files), True)
            (partial / "snapshot.json").write_text(json.dumps(snap.to_dict(), indent=2))
            os.replace(partial, target)
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            self._delete_disk_snapshot(vm, name)
            self._drop_empty_folder(vm)
            raise
        log.info("snapshot %s of %s taken (%s)", name, vm, ", ".join(snap.files) or "disks")
        return snap

    # --- reverting --------------------------------------------------------------------------

    def revert(self, vm: str, name: str) -> Snapshot:
        """Disks, NVRAM and TPM state back to ``name`` (the VM shut off); all or nothing."""
        check_snapshot_name(name)
        with self._serialized():
            return self._revert(vm, name)

    def _revert(self, vm: str, name: str) -> Snapshot:
        domain, active, snapshots = self._domain(vm)
        if active:
            raise LifecycleError(f"{vm} is running: a snapshot is restored only while it is"
                                 " shut off (stop it, or give --force)")
        snap = next((s for s in self.list(vm) if s.name == name), None)
        if snap is None:
            raise NotFound("SNAP", f"{vm} has no snapshot {name!r}")
        if _external(snapshots, name):
            self._revert_external(vm, name)
            return snap
        _check_same_disks(domain, snapshots, name)
        missing = [kind for kind in snap.files if not (self.folder(vm) / name / kind).exists()]
        if missing:
            raise OperationFailed(f"the {' and '.join(missing)} copies of {name!r} are missing"
                                  f" from {self.folder(vm) / name}: nothing was changed (a"
                                  " revert brings disks, NVRAM and TPM back together or not"
                                  " at all)")
        safety = f"{SAFETY_PREFIX}{uuid_module.uuid4().hex[:8]}"
        self._take(vm, domain, safety, "taken before a revert; deleted after it")
        try:
            try:
                self._restore(vm, domain, name, snap)
            except BaseException as error:
                log.error("revert of %s to %s failed (%s); putting it back", vm, name, error)
                self._restore(vm, domain, safety, self._saved(vm, safety))
                raise OperationFailed(f"reverting {vm} to {name!r} failed ({error}); its"
                                      " disks, NVRAM and TPM state are as they were before"
                                      ) from error
        finally:
            self.delete(vm, safety, _safety=True)
        log.info("%s reverted to %s", vm, name)
        return snap

    def _restore(self, vm: str, domain, name: str, snap: Snapshot | None) -> None:
        # where the copies go, there now or not; a planted path is refused before any change
        files = state_files(domain, self.nvram_dir, self.tpm_dir, existing=False)

        def revert(conn):
            dom = self.connection.lookup(conn, vm)
            definition = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)
            # libvirt also puts back the definition the snapshot was taken with; a snapshot
            # holds the disks, UEFI variables and TPM state, never the settings (memory,
            # devices, shares stay as they are now, in step with the saved settings)
            conn.defineXML(definition)

        self.connection.execute(revert)
        saved = self.folder(vm) / name
        for kind, path in files:
            if snap is not None and kind in snap.files:
                restore_copy(saved / kind, path)
            elif snap is not None and snap.complete:  # none yet when it was taken: none now
                remove_state(path)

    def _revert_external(self, vm: str, name: str) -> None:
        """libvirt's own revert (new overlays on the snapshot's images); the VM keeps its
        settings of now, with the disks libvirt's revert gave it."""
        from ..base.domain_merge import disks_from

        version = self.connection.execute(lambda c: c.getLibVersion(), idempotent=True)
        if version < EXTERNAL_REVERT_SINCE:
            raise OperationFailed(
                f"{name!r} is an external snapshot, made outside NeuronOS (its disks went on"
                f" in new files): libvirt {dotted_version(version)} cannot revert those (9.9"
                " and newer can); nothing was changed")

        def revert(conn):
            dom = self.connection.lookup(conn, vm)
            definition = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            dom.revertToSnapshot(dom.snapshotLookupByName(name, 0), 0)
            conn.defineXML(disks_from(definition, dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))

        self.connection.execute(revert)
        log.info("%s reverted to its external snapshot %s by libvirt", vm, name)

    # --- deleting ---------------------------------------------------------------------------

    def delete(self, vm: str, name: str, _safety: bool = False) -> None:
        with self._serialized():
            self._delete(vm, name, _safety)

    def _delete(self, vm: str, name: str, _safety: bool = False) -> None:
        if not _safety:
            check_snapshot_name(name)
            if not any(s.name == name for s in self.list(vm)):
                raise NotFound("SNAP", f"{vm} has no snapshot {name!r}")
            self._check_no_newer_external(vm, name)
        self._delete_disk_snapshot(vm, name)
        shutil.rmtree(self.folder(vm) / name, ignore_errors=True)
        self._drop_empty_folder(vm)

    def _check_no_newer_external(self, vm: str, name: str) -> None:
        """libvirt merges an external snapshot away only when none is on top of it (else
        "could not find base disk source in disk source chain", seen in a walk)."""
        def children(conn):
            snap = self.connection.lookup(conn, vm).snapshotLookupByName(name, 0)
            return snap.getXMLDesc(0), [child.getName() for child in snap.listAllChildren(0)]

        xml, newer = self.connection.execute(children, idempotent=True)
        if newer and _external([xml], name):
            raise OperationFailed(f"{name!r} is an external snapshot with newer ones on top"
                                  f" ({', '.join(newer)}): delete those first, the newest"
                                  " first; nothing was changed")

    def _drop_empty_folder(self, vm: str) -> None:
        try:
            self.folder(vm).rmdir()  # gone with its last snapshot (or a refused first one)
        except OSError:
            pass

    def _delete_disk_snapshot(self, vm: str, name: str) -> None:
        def delete(conn):
            dom = self.connection.lookup(conn, vm)
            try:
                dom.snapshotLookupByName(name, 0).delete(0)
            except libvirt.libvirtError as error:
                if error.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise

        try:
            self.connection.execute_when_back(delete)  # an undo: it must finish
        except VMManagerError as error:
            log.warning("could not delete the disk snapshot %s of %s: %s", name, vm, error)
            raise


def _external(snapshots: list[str], name: str) -> bool:
    """Whether libvirt's snapshot ``name`` is an external one (new files for its disks or
    its memory), as ``virsh snapshot-create-as --disk-only`` makes them."""
    from ..base.snapshot_xml import read_snapshot

    return any(snap.name == name and bool(snap.overlays or snap.memory)
               for snap in map(read_snapshot, snapshots))


def _check_same_disks(domain, snapshots: list[str], name: str) -> None:
    """An internal snapshot lives in the disk files it was taken of: when an external
    snapshot (virsh) has since put a new file on top, reverting would rewrite the image
    under it and the guest would see then and now mixed. Refused, nothing changed."""
    from ..base.snapshot_xml import read_snapshot

    for snap in map(read_snapshot, snapshots):
        now = {disk.source for disk in domain.disks if disk.device == "disk"}
        if snap.name == name and snap.sources and not set(snap.sources) <= now:
            newer = [other.name for other in map(read_snapshot, snapshots)
                     if other.overlays or other.memory]
            raise OperationFailed(
                f"{name!r} is in {', '.join(snap.sources)}, which the VM's disk now builds on"
                f" (an external snapshot, {', '.join(newer) or 'made with virsh'}, put a new"
                " file on top): reverting would change the image under it; nothing was"
                " changed (delete the newer external snapshot first: `neuron-vm snapshot"
                " delete` merges it back)")


def snapshots_folder(domain, images_dir: Path) -> Path:
    """The folder of a VM's snapshot copies: ``NAME.snapshots`` next to its first disk file
    (where NeuronOS made it), else in ``images_dir``."""
    disk = next((d.source for d in domain.disks if d.device == "disk" and d.source
                 and d.type == "file"), None)
    folder = Path(disk).parent if disk else Path(images_dir)
    return folder / f"{domain.name}.snapshots"


def _mib(size: int) -> str:
    return f"{size / 1048576:.1f} MiB"  # 1.55 MiB is not "1 MiB"
