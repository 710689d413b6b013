"""Disk images as the tools that know them say: an image's format and backing file
(``image_info``, qemu-img), and what other VMs' disks build on, for the destroyer's "another
VM uses this disk" rule: a disk, and every image below it in its backing chain. The chain
comes from libvirt's volume descriptions when a pool holds the image (local and remote alike), else from the image
itself (``qemu-img``, this machine only). A chain that cannot be read is said so
(``ChainUnknown``), never taken for an empty one: the destroyer then keeps the disks it
would have deleted. ``chain_files`` lists the rest of a VM's own files for its delete plan:
the images below its disks and what the snapshots libvirt knows made (overlays, memory).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass

import libvirt

from ..base import guard
from . import storage
from ..base.connection import LibvirtConnection
from ..base.storage_xml import read_volume
from ..base.domain_xml import read_domain
from ..base.primitives import is_remote


class ImageUnreadable(Exception):
    """qemu-img could not read an image (the reason is the message, in qemu-img's words)."""


class ChainUnknown(ImageUnreadable):
    """The backing chain of an image could not be read (the reason is the message)."""


@dataclass(frozen=True)
class ImageInfo:
    """An image as qemu-img reads it from its own header: ``raw`` only when no format's
    header is there (qemu-img's own verdict), never a default for a failure."""

    format: str
    backing: str | None = None  # the file below it (full path), if any
    backing_format: str | None = None  # as the image records it (None: not recorded)


def image_info(path: str, qemu_img: str = "qemu-img") -> ImageInfo:
    """What ``path`` is, from ``qemu-img info`` (this machine). Raises ``ImageUnreadable``
    when qemu-img is missing or fails: the caller refuses, it never guesses."""
    info = _qemu_img_info(path, qemu_img, chain=False)
    fmt = info.get("format") if isinstance(info, dict) else None
    if not fmt:
        raise ImageUnreadable("qemu-img named no format")
    return ImageInfo(fmt, info.get("full-backing-filename") or info.get("backing-filename"),
                     info.get("backing-filename-format"))


def _qemu_img_info(path: str, qemu_img: str, chain: bool):
    guard.check("qemu-img")
    try:
        out = subprocess.run(
            [qemu_img, "info", "-U", *(["--backing-chain"] if chain else []),
             "--output=json", path],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout
        return json.loads(out)
    except FileNotFoundError:
        raise ImageUnreadable(f"{qemu_img} is not installed (package qemu-utils)") from None
    except subprocess.CalledProcessError as error:
        lines = (error.stderr or "").strip().splitlines()
        text = lines[-1] if lines else str(error)
        raise ImageUnreadable(text if text.startswith("qemu-img") else f"qemu-img: {text}"
                              ) from None
    except (OSError, subprocess.SubprocessError, ValueError) as error:
        raise ImageUnreadable(str(error) or type(error).__name__) from None


def paths_used_by(connection: LibvirtConnection, others: dict[str, str],
                  qemu_img: str = "qemu-img") -> tuple[dict[str, str], list[str]]:
    """Real path -> name of another domain that uses it (a disk or a backing file), and
    what could not be read: the other VMs' disks whose backing chain is unknown."""
    used: dict[str, str] = {}
    unread: list[str] = []
    for other_name, xml in others.items():
        for disk in read_domain(xml).disks:
            if disk.type != "file" or not disk.source:
                continue
            # libvirt reports the chain only for running domains; qemu-img reads it
            # from the images themselves (an inactive domain's overlay has one too)
            reported = [image.path for image in disk.backing_chain if image.path]
            try:
                below = backing_chain(connection, disk.source, qemu_img)
            except ChainUnknown as error:
                unread.append(f"the backing chain of VM {other_name!r}'s disk"
                              f" {disk.source} could not be read ({error})")
                below = []
            for path in [disk.source, *reported, *below]:
                used.setdefault(os.path.realpath(path), other_name)
    return used, unread


def backing_chain(connection: LibvirtConnection, path: str,
                  qemu_img: str = "qemu-img") -> list[str]:
    """The images below ``path``: from libvirt's volume descriptions when a pool holds it
    (local and remote alike), else from the image itself (qemu-img, this machine).
    Raises ``ChainUnknown`` when neither can tell."""
    chain = _volume_chain(connection, path)
    if chain is not None:
        return chain
    if is_remote(connection.uri):
        raise ChainUnknown("no storage pool on that host holds it")
    if not os.path.lexists(path):
        return []  # a missing file builds on nothing
    try:
        images = _qemu_img_info(path, qemu_img, chain=True)
    except ImageUnreadable as error:
        raise ChainUnknown(str(error)) from None
    if isinstance(images, dict):
        images = [images]
    chain = []
    for image in images:
        backing = image.get("full-backing-filename") or image.get("backing-filename")
        if backing:
            chain.append(backing)
    return chain


def _volume_chain(connection: LibvirtConnection, path: str) -> list[str] | None:
    """The backing chain through libvirt's volumes (None: no pool holds ``path``)."""
    if not storage.uses_pools(connection.uri):
        return None

    def walk(conn: libvirt.virConnect) -> list[str] | None:
        chain: list[str] = []
        current = path
        for _ in range(16):  # deeper chains than this are not NeuronOS's
            volume = storage.lookup_volume(conn, current)
            if volume is None:
                return None if current == path else chain
            below = read_volume(volume.XMLDesc(0)).backing
            if not below:
                return chain
            chain.append(below)
            current = below
        return chain

    return connection.execute(walk, idempotent=True)


@dataclass(frozen=True)
class ChainFile:
    """A file of a VM that is not one of its disks: an image below a disk, an overlay an
    external snapshot (or a revert to one) made, a snapshot's saved memory."""

    path: str
    kind: str  # "image below", "snapshot overlay", "snapshot memory"
    made_by: str | None  # what of this VM made it; None: nothing says this VM did


def chain_files(connection: LibvirtConnection, disks: list[str], snapshot_xmls: list[str],
                qemu_img: str = "qemu-img") -> tuple[list[ChainFile], list[str]]:
    """Every file of a VM's disk chains and of the snapshots libvirt knows for it, but its
    disks (``disks``: their sources), each once; and what could not be read. An image below
    a disk that no snapshot of this VM names (a cloud image, a base image the user gave) is
    listed with ``made_by`` None: it is not this VM's to delete."""
    from ..base.snapshot_xml import read_snapshot

    own: dict[str, tuple[str, str]] = {}
    snaps = [read_snapshot(xml) for xml in snapshot_xmls]
    for snap in snaps:  # what a snapshot made names a file first, what it stood on after
        for path in snap.overlays:
            own.setdefault(os.path.realpath(path), (
                "snapshot overlay", f"made by its snapshot {snap.name!r} (or a revert to it)"))
        if snap.memory:
            own.setdefault(os.path.realpath(snap.memory), (
                "snapshot memory", f"the memory its snapshot {snap.name!r} saved"))
    for snap in snaps:  # an internal snapshot lives in the disk itself: nothing below
        for path in (snap.sources if snap.overlays or snap.memory else ()):
            own.setdefault(os.path.realpath(path), (
                "image below", f"its disk as it was when its snapshot {snap.name!r} was taken"))
    seen = {os.path.realpath(path) for path in disks}
    files: list[ChainFile] = []
    unread: list[str] = []
    for disk in disks:
        try:
            below = backing_chain(connection, disk, qemu_img)
        except ChainUnknown as error:
            unread.append(f"the images below {disk} could not be read ({error})")
            below = []
        for path in below:
            real = os.path.realpath(path)
            if real not in seen:
                seen.add(real)
                kind, made_by = own.get(real, ("image below", None))
                files.append(ChainFile(path, kind, made_by))
    for real, (kind, made_by) in own.items():
        if real not in seen and _exists(connection, real):
            seen.add(real)
            files.append(ChainFile(real, kind, made_by))
    return files, unread


def _exists(connection: LibvirtConnection, path: str) -> bool:
    """Whether the file is there: on this machine, or in a pool of the remote host."""
    if not is_remote(connection.uri):
        return os.path.lexists(path)
    return connection.execute(lambda conn: storage.lookup_volume(conn, path) is not None,
                              idempotent=True)
