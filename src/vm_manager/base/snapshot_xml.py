"""Reading libvirt's snapshot XML (``virsh snapshot-dumpxml``): the files a snapshot made or
stands on, so that deleting a VM can name every one of them.

Facts (libvirt's "formatsnapshot" docs; checked with ``virsh snapshot-dumpxml`` on libvirt
9.0 and 11.3):

- ``<disks><disk name='vda' snapshot='external'><source file='...'/>`` is the overlay an
  external snapshot made; the disk went on in that file from then on.
- ``<memory snapshot='external' file='...'/>`` is the saved memory of a running VM's
  external snapshot.
- ``<revertDisks>`` (libvirt 9.9 and newer, which revert external snapshots) holds the
  overlays a revert made on top of the snapshot's images, in the same form as ``<disks>``.
- The ``<domain>`` inside is the VM as it was when the snapshot was taken: its disks' sources
  are the images the snapshot's overlays build on.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from .domain_xml import read_domain


@dataclass(frozen=True)
class SnapshotFiles:
    name: str
    overlays: list[str] = field(default_factory=list)  # made by the snapshot or a revert
    memory: str | None = None  # the saved memory state
    sources: list[str] = field(default_factory=list)  # the VM's own disks at that time


def read_snapshot(xml: str) -> SnapshotFiles:
    """The files of one snapshot. Only files count: a block device or a network disk is
    never a file to delete, and a CD-ROM, read-only or shareable disk is nobody's own."""
    root = ET.fromstring(xml)
    overlays = []
    for section in ("disks", "revertDisks"):
        for disk in root.findall(f"{section}/disk"):
            source = disk.find("source")
            if disk.get("snapshot") == "external" and source is not None \
                    and disk.get("type", "file") == "file" and source.get("file"):
                overlays.append(source.get("file"))
    memory = root.find("memory")
    memory_file = memory.get("file") if memory is not None and \
        memory.get("snapshot") == "external" else None
    sources = []
    inner = root.find("domain")
    if inner is not None:
        for disk in read_domain(ET.tostring(inner, encoding="unicode")).disks:
            if disk.type == "file" and disk.device == "disk" and disk.source \
                    and not disk.readonly and not disk.shareable:
                sources.append(disk.source)
    return SnapshotFiles(root.findtext("name") or "", overlays, memory_file or None, sources)
