"""Comparing two definitions of one domain: which of its parts differ.

A part is a top-level element of ``<domain>`` by its tag (``memory``, ``vcpu``,
``metadata``...) or a kind of device (``disk``, ``hostdev:pci``, ``shmem``...). Devices are
compared as a multiset with their ``<address>`` and ``<alias>`` taken out: libvirt gives an
added device an address, never moving the others, so an address alone is no change.
"""

from __future__ import annotations

from collections import Counter

from lxml import etree


def _canon(element) -> tuple:
    return (element.tag, tuple(sorted(element.attrib.items())), (element.text or "").strip(),
            tuple(_canon(child) for child in element
                  if isinstance(child.tag, str) and child.tag not in ("address", "alias")))


def _kind(device) -> str:
    return f"hostdev:{device.get('type')}" if device.tag == "hostdev" else device.tag


def differences(before: str, after: str) -> set[str]:
    """The parts of the definition that differ between ``before`` and ``after``."""
    old, new = etree.fromstring(before.encode()), etree.fromstring(after.encode())
    parts = set()
    for tag in {child.tag for child in old} | {child.tag for child in new}:
        if not isinstance(tag, str) or tag == "devices":
            continue
        if [_canon(e) for e in old.findall(tag)] != [_canon(e) for e in new.findall(tag)]:
            parts.add(tag)
    devices = (Counter((_kind(d), _canon(d)) for d in old.find("devices")),
               Counter((_kind(d), _canon(d)) for d in new.find("devices")))
    parts |= {kind for kind, _ in (devices[0] - devices[1]) + (devices[1] - devices[0])}
    return parts


def devices(xml: str, tag: str) -> list[tuple]:
    """The devices of one tag, in a comparable form (addresses and aliases aside)."""
    return [_canon(d) for d in etree.fromstring(xml.encode()).find("devices").findall(tag)]


def setup_record(xml: str):
    from vm_manager.base.domain_xml import SETUP_NS

    record = etree.fromstring(xml.encode()).find(f"metadata/{{{SETUP_NS}}}setup")
    return None if record is None else etree.tostring(record)
