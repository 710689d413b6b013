"""Disks as libvirt storage volumes, so a disk is made (and removed) on the computer the VM
runs on, local or remote alike: libvirt's storage driver runs ``qemu-img`` there, not us.

The images folder is a ``dir`` pool: the pool whose target is that folder is found (started
if it is not running), or NeuronOS defines one (``neuronos-images``, another name if that
one is taken), builds it (makes the folder), starts it and marks it to start with libvirtd.
A new disk is a sparse qcow2 volume (mode 0600, lazy refcounts), an overlay names its
backing image; removing a disk that lies in a pool goes through the pool (``vol.delete``).

libvirt's test driver keeps its pools in memory and makes no files, so on ``test:///`` URIs
the creator keeps making the file itself (``uses_pools``): the logic tests check what is on
disk, the real daemon's tests check the pool.
"""

from __future__ import annotations

import errno
import io
import os
from collections import OrderedDict
from pathlib import Path
from typing import Callable

import libvirt

from ..base.connection import LibvirtConnection
from ..base.storage_xml import pool_folder, pool_xml, raw_volume_xml, volume_xml
from ..base.errors import VMCreationError
from ..base.log import get_logger

log = get_logger(__name__)
POOL_NAME = "neuronos-images"


def uses_pools(uri: str) -> bool:
    """Whether disks on ``uri`` are made through storage pools (every driver but test)."""
    return not uri.startswith("test:")


def _target(pool: libvirt.virStoragePool) -> str | None:
    return pool_folder(pool.XMLDesc(0))


def find_pool(conn: libvirt.virConnect, folder: Path | str) -> libvirt.virStoragePool | None:
    """The pool whose target is ``folder`` (compared as normalised paths), or None."""
    wanted = os.path.normpath(str(folder))
    for pool in conn.listAllStoragePools(0):
        try:
            if _target(pool) == wanted:
                return pool
        except libvirt.libvirtError:  # a pool undefined while we looked
            continue
    return None


def images_pool(conn: libvirt.virConnect, folder: Path | str) -> libvirt.virStoragePool:
    """The running pool of ``folder``: found (and started if needed), or defined, built,
    started and set to autostart. Inside an ``execute`` callback."""
    pool = find_pool(conn, folder)
    if pool is None:
        taken = set(conn.listStoragePools()) | set(conn.listDefinedStoragePools())
        name = POOL_NAME
        number = 1
        while name in taken:
            number += 1
            name = f"{POOL_NAME}-{number}"
        pool = conn.storagePoolDefineXML(pool_xml(name, str(folder)), 0)
        log.info("defined storage pool %s for %s", name, folder)
        try:
            pool.build(0)  # makes the folder (0711) where it is missing
        except libvirt.libvirtError as error:
            pool.undefine()
            raise VMCreationError(f"libvirt could not make the images folder {folder}:"
                                  f" {error.get_error_message()}", step="disk") from None
        pool.setAutostart(1)
    try:
        if pool.isActive():
            pool.refresh(0)  # fails when its folder was deleted since (and stops the pool)
        else:
            pool.create(0)
    except libvirt.libvirtError as error:
        _rebuild(pool, folder, error)
    return pool


def _rebuild(pool: libvirt.virStoragePool, folder: Path | str,
             error: libvirt.libvirtError) -> None:
    """A pool whose folder is gone (deleted by hand, a temporary folder): the folder is made
    again (0711, by libvirt's pool build, where the VM runs) and the pool started."""
    log.info("the folder %s of storage pool %s is not usable (%s): building it again",
             folder, pool.name(), error.get_error_message())
    try:
        if pool.isActive():
            pool.destroy()
        pool.build(0)
        pool.create(0)
    except libvirt.libvirtError as again:
        raise VMCreationError(f"the images folder {folder} (storage pool {pool.name()}) cannot"
                              f" be used: {error.get_error_message()}; making it again failed:"
                              f" {again.get_error_message()}", step="disk") from None


def _free_name(conn: libvirt.virConnect, path: str, step: str, claim=None,
               replace: bool = False) -> libvirt.virStoragePool:
    """The running pool of ``path``'s folder, with ``path``'s name free in it: the pool is
    refreshed first, so a file of that name shows as a volume and is refused (or, with
    ``replace``, deleted); then ``claim()``, just before the caller has libvirt make it (a
    daemon that dies mid-call may have made it)."""
    pool = images_pool(conn, os.path.dirname(path))
    pool.refresh(0)
    name = os.path.basename(path)
    if name in pool.listVolumes():
        if not replace:
            raise VMCreationError(f"{path} already exists; NeuronOS never overwrites it"
                                  " (pick another name)", step=step)
        pool.storageVolLookupByName(name).delete(0)
    if claim is not None:
        claim()
    return pool


def create_volume(connection: LibvirtConnection, path: str, size_gb: int,
                  backing: str | None = None, backing_format: str | None = None,
                  claim=None) -> str:
    """Make the disk ``path`` as a volume of its folder's pool; returns the volume's path.
    An existing file of that name is never overwritten: the pool is refreshed first, so it
    shows as a volume and the name is refused. ``claim()`` is called once the name is known
    to be free, just before libvirt makes it: a daemon that dies mid-call may have made it."""
    name = os.path.basename(path)

    def make(conn: libvirt.virConnect) -> str:
        pool = _free_name(conn, path, "disk", claim)
        volume = pool.createXML(volume_xml(name, size_gb, backing, backing_format), 0)
        log.info("made volume %s in pool %s", volume.path(), pool.name())
        return volume.path()

    return connection.execute(make)


def lookup_volume(conn: libvirt.virConnect, path: str) -> libvirt.virStorageVol | None:
    """The volume at ``path``, its folder's pool refreshed first if libvirt does not know it
    (a daemon restarted mid-creation has not listed the file yet); None when there is none."""
    for attempt in (0, 1):
        try:
            return conn.storageVolLookupByPath(path)
        except libvirt.libvirtError:
            if not conn.isAlive():
                raise
        pool = find_pool(conn, os.path.dirname(path)) if attempt == 0 else None
        if pool is None or not pool.isActive():
            return None
        pool.refresh(0)
    return None


def remove_volume(conn: libvirt.virConnect, path: str) -> bool:
    """Remove ``path`` through its pool (inside an ``execute`` callback); False when no pool
    holds it (the caller decides)."""
    volume = lookup_volume(conn, path)
    if volume is None:
        return False
    volume.delete(0)
    log.info("deleted volume %s through its pool", path)
    return True


def delete_volume(connection: LibvirtConnection, path: str) -> bool:
    return connection.execute(lambda conn: remove_volume(conn, path))


UPLOAD_PREFIX = "neuronos-upload-"


def sweep_uploads(folder: str | None = None) -> list[str]:
    """Remove the upload folders (``UPLOAD_PREFIX<pid>-...``) of NeuronOS processes that no
    longer run: one killed while it sent a medium left the medium there (issue 28). Only
    this account's folders; those of a running process stay. What was removed."""
    import shutil
    import tempfile

    removed = []
    for path in Path(folder or tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*-*"):
        pid = path.name[len(UPLOAD_PREFIX):].split("-", 1)[0]
        try:
            if not pid.isdigit() or path.lstat().st_uid != os.geteuid():
                continue
            os.kill(int(pid), 0)
            continue  # still running: its own
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(str(path))
        except OSError:
            continue  # another account's process, or the folder went meanwhile
    if removed:
        log.info("removed %s, left by a NeuronOS that was killed", ", ".join(removed))
    return removed


def upload_file(connection: LibvirtConnection, path: str, build: Callable[[Path], object], *,
                replace: bool = False, claim=None) -> str:
    """The file ``build(target)`` makes here (a setup medium), as the raw volume ``path`` of
    its folder's pool on the computer the VM runs on (0600), streamed there by libvirt; the
    copy here lives in a private temporary folder only until it is sent. An existing volume
    of that name is refused, or with ``replace`` deleted first (a medium made again).
    ``claim()`` is called just before libvirt makes the volume. A folder a killed NeuronOS
    left behind (its medium holds the account's password) is removed first
    (``sweep_uploads``)."""
    import tempfile

    name = os.path.basename(path)
    sweep_uploads()
    with tempfile.TemporaryDirectory(prefix=f"{UPLOAD_PREFIX}{os.getpid()}-") as scratch:
        local = Path(scratch) / name
        build(local)
        size = local.stat().st_size

        def send(conn: libvirt.virConnect) -> str:
            pool = _free_name(conn, path, "setup medium", claim, replace)
            volume = pool.createXML(raw_volume_xml(name, size), 0)
            stream = conn.newStream(0)
            try:
                volume.upload(stream, 0, size, 0)
                with open(local, "rb") as source:
                    while chunk := source.read(1 << 20):
                        view = memoryview(chunk)
                        while view:  # a blocking stream may take part of a chunk
                            view = view[stream.send(bytes(view)):]
                stream.finish()
            except BaseException:
                try:
                    stream.abort()
                except libvirt.libvirtError:
                    pass
                raise
            log.info("sent %s (%d bytes) to volume %s", name, size, volume.path())
            return volume.path()

        return connection.execute(send)


class VolumeFile(io.RawIOBase):
    """A volume of a (remote) host's pool read like a local file: seekable, fetched in
    blocks through libvirt's download stream (``vol.download``), the last few kept. What an
    ISO reader needs of a remote installer (its directory, an image's header, a few driver
    files) without copying the whole image here."""

    BLOCK = 256 * 1024
    KEEP = 64  # blocks (16 MiB)

    def __init__(self, connection: LibvirtConnection, path: str):
        super().__init__()
        self._connection, self.name = connection, path

        def size(conn: libvirt.virConnect) -> int:
            volume = lookup_volume(conn, path)
            if volume is None:
                raise FileNotFoundError(errno.ENOENT, "no volume of any pool is there", path)
            return int(volume.info()[1])

        self._size = connection.execute(size, idempotent=True)
        self._position = 0
        self._blocks: OrderedDict[int, bytes] = OrderedDict()
        self.fetched = 0  # bytes downloaded so far (bench/remote_media.py reports it)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._position = base + offset
        return self._position

    def readinto(self, buffer) -> int:
        wanted = min(len(buffer), self._size - self._position)
        done = 0
        while done < wanted:
            index, skip = divmod(self._position, self.BLOCK)
            piece = self._block(index)[skip:skip + wanted - done]
            if not piece:
                break
            buffer[done:done + len(piece)] = piece
            done += len(piece)
            self._position += len(piece)
        return done

    def _block(self, index: int) -> bytes:
        if index in self._blocks:
            self._blocks.move_to_end(index)
            return self._blocks[index]
        offset = index * self.BLOCK
        length = min(self.BLOCK, self._size - offset)

        def fetch(conn: libvirt.virConnect) -> bytes:
            stream = conn.newStream(0)
            conn.storageVolLookupByPath(self.name).download(stream, offset, length, 0)
            chunks = []
            while data := stream.recv(length):  # b"" at the end of the range
                chunks.append(data)
            stream.finish()
            return b"".join(chunks)

        data = self._connection.execute(fetch, idempotent=True)
        self.fetched += len(data)
        self._blocks[index] = data
        if len(self._blocks) > self.KEEP:
            self._blocks.popitem(last=False)
        return data


def volume_opener(connection: LibvirtConnection) -> Callable[[str], VolumeFile]:
    """Opens files of the host behind ``connection`` by their path there (its volumes)."""
    return lambda path: VolumeFile(connection, path)

