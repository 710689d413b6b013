"""The one reader and the one producer of libvirt's storage XML: pools and volumes.

Produced with ElementTree (every name and path escaped): a pool of a folder, a sparse qcow2
volume (an overlay on a backing image whose format must be known), a raw volume of a
given size (a setup medium). Read: a pool's folder, and what a volume's description says
(its path, format, backing image and that image's format). Facts from libvirt's storage
XML format docs ("formatstorage"), checked against ``virsh vol-dumpxml`` on libvirt 9.0.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass


@dataclass(frozen=True)
class VolumeInfo:
    path: str | None
    format: str | None  # None: the pool names none (never taken for raw)
    backing: str | None = None  # the image below it, if any
    backing_format: str | None = None


def pool_xml(name: str, folder: str) -> str:
    """A ``dir`` pool of ``folder`` (made 0711 where it is missing, as libvirt's own)."""
    pool = ET.Element("pool", type="dir")
    ET.SubElement(pool, "name").text = name
    target = ET.SubElement(pool, "target")
    ET.SubElement(target, "path").text = os.path.normpath(folder)
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0711"
    return ET.tostring(pool, encoding="unicode")


def volume_xml(name: str, size_gb: int, backing: str | None = None,
               backing_format: str | None = None) -> str:
    """A sparse qcow2 volume (0600, lazy refcounts), an overlay on ``backing`` if given,
    whose format must be known (read from the image: an overlay that calls a qcow2 base raw
    shows the guest the base's header)."""
    if backing and not backing_format:
        raise ValueError(f"the format of {backing} is not known; it is never guessed")
    volume = _volume(name, str(int(size_gb)), "G", "qcow2")
    target = volume.find("target")
    ET.SubElement(target, "compat").text = "1.1"
    ET.SubElement(ET.SubElement(target, "features"), "lazy_refcounts")
    if backing:
        store = ET.SubElement(volume, "backingStore")
        ET.SubElement(store, "path").text = os.path.abspath(backing)
        ET.SubElement(store, "format", type=backing_format)
    return ET.tostring(volume, encoding="unicode")


def raw_volume_xml(name: str, size_bytes: int) -> str:
    """A raw volume of exactly ``size_bytes`` (0600): a file sent into a pool."""
    return ET.tostring(_volume(name, str(int(size_bytes)), "B", "raw", allocation=False),
                       encoding="unicode")


def _volume(name: str, capacity: str, unit: str, fmt: str, allocation: bool = True):
    volume = ET.Element("volume")
    ET.SubElement(volume, "name").text = name
    ET.SubElement(volume, "capacity", unit=unit).text = capacity
    if allocation:
        ET.SubElement(volume, "allocation").text = "0"  # sparse
    target = ET.SubElement(volume, "target")
    ET.SubElement(target, "format", type=fmt)
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0600"
    return volume


def pool_folder(xml: str) -> str | None:
    """The folder a pool keeps its volumes in (normalised), or None."""
    path = ET.fromstring(xml).findtext("target/path")
    return os.path.normpath(path) if path else None


def read_volume(xml: str) -> VolumeInfo:
    root = ET.fromstring(xml)
    fmt = root.find("target/format")
    below = root.find("backingStore")
    below_format = below.find("format") if below is not None else None
    return VolumeInfo(root.findtext("target/path"),
                      fmt.get("type") if fmt is not None else None,
                      below.findtext("path") or None if below is not None else None,
                      below_format.get("type") if below_format is not None else None)
