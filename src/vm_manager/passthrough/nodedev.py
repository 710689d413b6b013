"""PCI devices and IOMMU groups from libvirt's node-device API, for hosts whose /sys is not
ours to read (a ``qemu+ssh://`` URI): the same ``PCISnapshot`` the sysfs reader makes, so
the passthrough verdicts are the same functions of it (``gpu_attach.gpus_in``).

What libvirt does not report is unknown, never guessed from this machine: whether a GPU
is the boot VGA device (``boot_vga`` None), its reset methods (empty). Names come from the
remote host's own pci.ids, as libvirt read them there.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import libvirt

from ..base.connection import LibvirtConnection
from ..base.errors import InvalidConfig
from ..base.values import PCIAddress
from .pci import PCIDevice, PCISnapshot


def _int(text: str | None) -> int:
    return int(text, 0) if text else 0


def device_from_xml(xml: str) -> tuple[PCIDevice, int | None, list[PCIAddress]] | None:
    """One ``virsh nodedev-dumpxml`` of a PCI function -> (device, its IOMMU group, the
    group's members as libvirt lists them); None for what is not a PCI function."""
    root = ET.fromstring(xml)
    cap = root.find("capability[@type='pci']")
    if cap is None:
        return None
    try:
        address = PCIAddress.parse(
            f"{_int(cap.findtext('domain')):04x}:{_int(cap.findtext('bus')):02x}:"
            f"{_int(cap.findtext('slot')):02x}.{_int(cap.findtext('function')):x}")
    except InvalidConfig:
        return None
    vendor, product = cap.find("vendor"), cap.find("product")
    group = cap.find("iommuGroup")
    number = int(group.get("number")) if group is not None and group.get("number") else None
    members = []
    for item in group.findall("address") if group is not None else ():
        try:
            members.append(PCIAddress.parse(
                f"{_int(item.get('domain')):04x}:{_int(item.get('bus')):02x}:"
                f"{_int(item.get('slot')):02x}.{_int(item.get('function')):x}"))
        except InvalidConfig:
            continue
    device = PCIDevice(
        address=address,
        vendor_id=_int(vendor.get("id") if vendor is not None else None),
        device_id=_int(product.get("id") if product is not None else None),
        subsystem_vendor=0, subsystem_device=0,
        pci_class=_int(cap.findtext("class")),
        driver=root.findtext("driver/name"),
        iommu_group=number,
        boot_vga=None,  # libvirt does not say: unknown, not "no"
        reset_methods=(),
        vendor_name=(vendor.text or None) if vendor is not None else None,
        device_name=(product.text or None) if product is not None else None,
    )
    return device, number, members


def snapshot_from_xml(documents: list[str]) -> PCISnapshot:
    """Every PCI function's node-device XML -> the host's devices and IOMMU groups. A group
    holds every function that reports its number and every address libvirt lists in it."""
    devices: dict[PCIAddress, PCIDevice] = {}
    groups: dict[int, set[PCIAddress]] = {}
    for xml in documents:
        parsed = device_from_xml(xml)
        if parsed is None:
            continue
        device, number, members = parsed
        devices[device.address] = device
        if number is not None:
            groups.setdefault(number, set()).update([device.address, *members])
    return PCISnapshot(devices, {number: sorted(members) for number, members in groups.items()})


def usb_from_xml(documents: list[str]):
    """USB devices' node-device XML -> ``USBDevice``s as the sysfs reader makes them (the
    port from the device's sysfs path on that host; root hubs left out; names from that
    host's usb.ids as libvirt read them there)."""
    from .usb_attach import _DEVICE_NAME, USBDevice

    devices = []
    for xml in documents:
        root = ET.fromstring(xml)
        cap = root.find("capability[@type='usb_device']")
        if cap is None:
            continue
        match = _DEVICE_NAME.fullmatch((root.findtext("path") or "").rsplit("/", 1)[-1])
        if match is None:
            continue  # a root hub (usbN), or no path
        vendor, product = cap.find("vendor"), cap.find("product")
        if vendor is None or product is None:
            continue
        devices.append(USBDevice(
            bus=_int(cap.findtext("bus")), port=match.group(2),
            devnum=_int(cap.findtext("device")),
            vendor_id=f"{_int(vendor.get('id')):04x}", product_id=f"{_int(product.get('id')):04x}",
            vendor_name=vendor.text or None, product_name=product.text or None))
    return sorted(devices, key=lambda d: (d.bus, [int(p) for p in d.port.split(".")]))


def read_usb_nodedev(connection: LibvirtConnection):
    def read(conn: libvirt.virConnect) -> list[str]:
        found = conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_USB_DEV)
        return [device.XMLDesc(0) for device in found]

    return usb_from_xml(connection.execute(read, idempotent=True))


def read_pci_nodedev(connection: LibvirtConnection) -> PCISnapshot:
    """The host's PCI functions through libvirt (one listing, one XML each)."""

    def read(conn: libvirt.virConnect) -> list[str]:
        found = conn.listAllDevices(libvirt.VIR_CONNECT_LIST_NODE_DEVICES_CAP_PCI_DEV)
        documents = []
        for device in found:
            try:
                documents.append(device.XMLDesc(0))
            except libvirt.libvirtError:  # unplugged while we listed
                if not conn.isAlive():
                    raise
        return documents

    return snapshot_from_xml(connection.execute(read, idempotent=True))
