"""Changing a definition libvirt holds by exactly what a settings change asks, nothing else.

``merge_definition(current, before, after)`` takes two renderings of the templates, ``before``
from the VM's saved settings and ``after`` from the settings with the change, and applies
their difference to ``current``, the definition libvirt holds. What the change does not
touch stays as it is in ``current``: the disks with their formats and cache options, boot
order, CD-ROMs, NICs and their MACs, the setup record, what libvirt added (addresses,
controllers, firmware paths) and anything added outside NeuronOS. The templates stay the
one producer of every element; a change that renders the same XML changes nothing.

How the difference is applied (all pure, lxml; prefixes and other namespaces survive):
- an element whose children have distinct tags in both renderings (``<domain>``,
  ``<features>``, ``<cpu>``, ``<metadata>``) is merged child by child and attribute by
  attribute;
- a leaf that changed (``<memory unit='MiB'>4096</memory>``) takes the rendered text with
  the rendered attributes (its unit goes with its number); attributes only ``current`` has
  (a ``cpuset``) stay;
- ``<devices>`` is a multiset: a device the change drops is looked up in ``current`` (which
  holds at least what was rendered: libvirt adds addresses, aliases and defaults) and
  removed; a device it adds is appended unless ``current`` already has it (libvirt then
  gives it an address);
- an element whose children repeat a tag outside ``<devices>`` (``<clock>``'s timers) is
  replaced whole when its rendering changed.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from lxml import etree

from .domain_xml import UNITS_MIB, DomainXMLError

_PARSER = etree.XMLParser(remove_blank_text=False, resolve_entities=False, no_network=True)


@dataclass(frozen=True)
class DefinitionChange:
    xml: str  # the definition to define (``current`` itself when nothing changed)
    changes: tuple[str, ...]  # what changed, in words ("memory", "added hostdev ...")
    missing: tuple[str, ...] = ()  # devices the change removes that were already gone

    @property
    def changed(self) -> bool:
        return bool(self.changes)


def merge_definition(current: str, before: str, after: str) -> DefinitionChange:
    """``current`` with the difference ``before`` -> ``after`` applied (see the module)."""
    cur, old, new = _parse(current), _parse(before), _parse(after)
    changes: list[str] = []
    missing: list[str] = []
    _merge(cur, old, new, "", changes, missing)
    if not changes:
        return DefinitionChange(current, (), tuple(missing))
    return DefinitionChange(_text(cur), tuple(changes), tuple(missing))


def set_disk_format(current: str, source: str, fmt: str) -> str:
    """``current`` with the driver type of the file disk ``source`` set to ``fmt`` (the
    repair of a definition that names the wrong format); nothing else changes."""
    cur = _parse(current)
    for disk in cur.iterfind("devices/disk"):
        found = disk.find("source")
        if found is None or found.get("file") != source:
            continue
        driver = disk.find("driver")
        if driver is None:
            driver = etree.Element("driver", name="qemu")
            disk.insert(0, driver)
            driver.tail = disk.text
        driver.set("type", fmt)
    return _text(cur)


def disks_from(current: str, reverted: str) -> str:
    """``current`` with each disk's source, format and backing chain as ``reverted`` has
    them for the same target (what libvirt's revert of an external snapshot changes: new
    overlays); every other setting, the disk's cache mode too, stays as ``current`` has
    it."""
    cur, new = _parse(current), _parse(reverted)
    by_target = {disk.find("target").get("dev"): disk for disk in new.iterfind("devices/disk")
                 if disk.find("target") is not None}
    for disk in cur.iterfind("devices/disk"):
        target = disk.find("target")
        other = by_target.get(target.get("dev")) if target is not None else None
        if other is None or disk.get("device", "disk") != "disk":  # media stay as they are
            continue
        for tag in ("source", "backingStore"):
            mine, theirs = disk.find(tag), other.find(tag)
            if theirs is not None and mine is not None:
                _replace(disk, mine, copy.deepcopy(theirs))
            elif mine is not None:
                disk.remove(mine)
        driver, fmt = disk.find("driver"), other.find("driver")
        if driver is not None and fmt is not None and fmt.get("type"):
            driver.set("type", fmt.get("type"))  # the user's cache mode stays
    return _text(cur)


def disks_on_iothread(current: str) -> str:
    """``current`` with its virtio disks on I/O thread 1 when it has ``<iothreads>`` (a
    pinned VM: the thread is pinned beside QEMU's own), and without a disk ``iothread``
    when it has none (libvirt refuses a disk on a thread that is not there). A disk put on
    a thread by hand keeps it. Disks are never rendered with it: a change of pinning then
    leaves every disk where it is, but for this attribute."""
    cur = _parse(current)
    threads = cur.find("iothreads")
    has = threads is not None and (threads.text or "").strip() not in ("", "0")
    changed = False
    for disk in cur.iterfind("devices/disk"):
        driver, target = disk.find("driver"), disk.find("target")
        if driver is None or target is None:
            continue
        if not has and driver.get("iothread") is not None:
            driver.attrib.pop("iothread")
            changed = True
        elif has and driver.get("iothread") is None and target.get("bus") == "virtio" \
                and disk.get("device", "disk") == "disk":
            driver.set("iothread", "1")
            changed = True
    return _text(cur) if changed else current


def spice_without_port(current: str) -> str:
    """``current`` with every SPICE server's network port taken away (``<listen
    type='none'/>``: libvirt hands out its connections, issue 28); nothing else changes."""
    cur = _parse(current)
    for graphics in cur.iterfind("devices/graphics[@type='spice']"):
        for attribute in ("port", "tlsPort", "autoport", "listen", "passwd", "passwdValidTo"):
            graphics.attrib.pop(attribute, None)
        for listen in graphics.findall("listen"):
            graphics.remove(listen)
        listen = etree.Element("listen", type="none")
        graphics.insert(0, listen)
        listen.tail = graphics.text
    return _text(cur)


def shares_through(current: str, launcher: str) -> str:
    """``current`` with every virtiofs share served by ``launcher`` (NeuronOS's virtiofsd
    launcher: the folder's owner, never root, issue 28); nothing else changes."""
    cur = _parse(current)
    for share in cur.iterfind("devices/filesystem/driver[@type='virtiofs']/.."):
        binary = share.find("binary")
        if binary is None:
            binary = etree.Element("binary")
            share.find("driver").addnext(binary)
            binary.tail = share.find("driver").tail
        binary.set("path", launcher)
    return _text(cur)


def _parse(text: str) -> etree._Element:
    try:
        root = etree.fromstring(text.encode(), _PARSER)
    except etree.XMLSyntaxError as error:
        raise DomainXMLError(f"not well-formed domain XML: {error}") from None
    if root.tag != "domain":
        raise DomainXMLError(f"not a domain: <{root.tag}>")
    return root


def _text(root: etree._Element) -> str:
    return etree.tostring(root, encoding="unicode")


def _elements(parent: etree._Element) -> list[etree._Element]:
    return [child for child in parent if isinstance(child.tag, str)]  # no comments


def _label(element: etree._Element) -> str:
    tag = etree.QName(element).localname
    attrs = " ".join(f"{etree.QName(k).localname}={v}" for k, v in element.attrib.items())
    return f"{tag} {attrs}".strip()


def _canon(element: etree._Element | None):
    """A comparable form: tag, attributes, text (whitespace aside) and children."""
    if element is None:
        return None
    return (element.tag, tuple(sorted(element.attrib.items())), (element.text or "").strip(),
            tuple(_canon(child) for child in _elements(element)))


def _unique_tags(element: etree._Element) -> bool:
    tags = [child.tag for child in _elements(element)]
    return len(tags) == len(set(tags))


def _merge(cur, old, new, path: str, changes: list[str], missing: list[str]) -> None:
    here = f"{path}/{etree.QName(cur).localname}" if path or cur.tag != "domain" else ""
    for key in dict.fromkeys([*old.attrib, *new.attrib]):
        if old.get(key) != new.get(key):
            if new.get(key) is None:
                cur.attrib.pop(key, None)
            else:
                cur.set(key, new.get(key))
            changes.append(f"{here}/@{etree.QName(key).localname}".lstrip("/"))
    if cur.tag == "devices":
        _merge_devices(cur, old, new, changes, missing)
        return
    for tag in dict.fromkeys([child.tag for child in _elements(new)]
                             + [child.tag for child in _elements(old)]):
        before, after = old.find(tag), new.find(tag)
        if _canon(before) == _canon(after):
            continue
        mine = cur.find(tag)
        name = f"{here}/{etree.QName(tag).localname}".lstrip("/")
        if after is None:  # the change drops it
            if mine is not None:
                cur.remove(mine)
                changes.append(f"removed {name}")
            continue
        if mine is None:
            _insert(cur, copy.deepcopy(after), new, after)
            changes.append(f"added {name}")
        elif before is not None and not _elements(before) and not _elements(after):
            _rewrite_leaf(mine, before, after)
            changes.append(name)
        elif before is not None and (tag == "devices" or (
                _unique_tags(before) and _unique_tags(after)
                and (mine.text or "").strip() == (before.text or "").strip()
                == (after.text or "").strip())):
            _merge(mine, before, after, here, changes, missing)
        else:  # repeated tags inside, or NeuronOS renders what was made by hand: take it
            _replace(cur, mine, copy.deepcopy(after))
            changes.append(f"replaced {name}")


def _rewrite_leaf(mine, before, after) -> None:
    mine.text = after.text
    for key in before.attrib:
        if key not in after.attrib:
            mine.attrib.pop(key, None)
    for key, value in after.attrib.items():
        mine.set(key, value)


def _replace(parent, old_child, new_child) -> None:
    new_child.tail = old_child.tail
    parent.replace(old_child, new_child)


def _insert(cur, element, rendered_parent, rendered) -> None:
    """Put ``element`` where the rendering has it: before the first of its rendered next
    siblings that ``cur`` holds, else last."""
    siblings = _elements(rendered_parent)
    for following in siblings[siblings.index(rendered) + 1:]:
        anchor = cur.find(following.tag)
        if anchor is not None:
            anchor.addprevious(element)
            element.tail = _inner_indent(cur)
            return
    _append(cur, element)


def _append(cur, element) -> None:
    children = _elements(cur)
    if not children:
        cur.append(element)
        return
    last = children[-1]
    last.addnext(element)  # lxml moves no tail: the closing indentation goes to the new one
    element.tail, last.tail = last.tail, _inner_indent(cur)


def _inner_indent(parent) -> str:
    text = parent.text or ""
    return text if not text.strip() and text else "\n"


# --- devices ---------------------------------------------------------------------------------

def _merge_devices(cur, old, new, changes: list[str], missing: list[str]) -> None:
    before = _elements(old)
    after = _elements(new)
    remaining = [_canon(element) for element in after]
    dropped, kept = [], []
    for element in before:  # the multiset difference, order kept
        key = _canon(element)
        if key in remaining:
            remaining.remove(key)
            kept.append(element)
        else:
            dropped.append(element)
    added = []
    pending = [_canon(element) for element in before]
    for element in after:
        key = _canon(element)
        if key in pending:
            pending.remove(key)
        else:
            added.append(element)
    claimed: list = []  # the elements themselves: an lxml proxy's id() is reused once freed
    for element in kept:  # what stays is matched first, so a removal never takes it
        _claim(cur, element, claimed)
    macs = []  # a NIC moved to another network keeps its MAC: the guest sees the same card
    for element in dropped:
        mine = _claim(cur, element, claimed)
        if mine is None:
            missing.append(_label(element))
            continue
        if mine.tag == "interface" and mine.find("mac") is not None:
            macs.append(copy.deepcopy(mine.find("mac")))
        cur.remove(mine)
        changes.append(f"removed {_describe(element)}")
    for element in added:
        if _claim(cur, element, claimed) is not None:
            continue  # it is there already (attached by hand, say)
        fresh = copy.deepcopy(element)
        if fresh.tag == "interface" and fresh.find("mac") is None and macs:
            mac = macs.pop(0)
            fresh.insert(0, mac)
            mac.tail, fresh.text = fresh.text, fresh.text
        same = [child for child in _elements(cur) if child.tag == element.tag]
        if same and same[-1] is not _elements(cur)[-1]:  # beside its kind
            same[-1].addnext(fresh)
            fresh.tail = _inner_indent(cur)
        else:
            _append(cur, fresh)
        claimed.append(fresh)
        changes.append(f"added {_describe(element)}")


def _claim(cur, rendered, claimed: list):
    for child in _elements(cur):
        if not any(child is other for other in claimed) and _holds(child, rendered):
            claimed.append(child)
            return child
    return None


def _describe(device) -> str:
    """A device in a few words: its tag, type and what names it."""
    words = [_label(device)]
    for element in device.iter():
        if element is device or not isinstance(element.tag, str):
            continue
        local = etree.QName(element).localname
        if local in ("address", "vendor", "product", "source", "target", "model", "size"):
            attrs = ",".join(f"{k}={v}" for k, v in element.attrib.items())
            text = (element.text or "").strip()
            words.append(f"{local}({attrs}{' ' + text if text else ''})")
    return " ".join(words)


def _holds(mine, rendered) -> bool:
    """Whether ``mine`` (libvirt's) holds everything ``rendered`` says: the same tag, each
    rendered attribute, text and child (a size in any unit), whatever libvirt added."""
    if mine.tag != rendered.tag:
        return False
    unit = "unit" in rendered.attrib
    for key, value in rendered.attrib.items():
        if key == "unit":
            continue
        if mine.get(key) != value:
            return False
    text = (rendered.text or "").strip()
    if unit:
        if _mib(rendered) is None or _mib(rendered) != _mib(mine):
            return False
    elif text and (mine.text or "").strip() != text:
        return False
    used: list = []
    for want in _elements(rendered):
        match = next((child for child in _elements(mine) if not any(
            child is other for other in used) and _holds(child, want)), None)
        if match is None:
            return False
        used.append(match)
    return True


def _mib(element) -> float | None:
    try:
        number = float((element.text or "").strip())
    except ValueError:
        return None
    factor = UNITS_MIB.get((element.get("unit") or "KiB").lower())
    return None if factor is None else number * factor
