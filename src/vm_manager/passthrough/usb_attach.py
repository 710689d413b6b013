"""USB devices from sysfs, and attaching devices to VMs (hot-plug when they run).

Kernel layout (DESIGN.md 4.3): ``/sys/bus/usb/devices/<bus>-<port>[.<port>...]`` per device;
names with ``:`` are interfaces and ``usbN`` are root hubs (both skipped). Each device has
``idVendor``/``idProduct`` (``%04x``), ``busnum``/``devnum`` and optional ``manufacturer``,
``product`` and ``serial``. Names come from usb.ids when present.

A running VM gets a device with ``attachDeviceFlags(LIVE|CONFIG)``; a stopped one with
``CONFIG`` only. A live detach is confirmed by libvirt's device-removed event, waited for.
"""

from __future__ import annotations

import queue
import re
from dataclasses import dataclass
from pathlib import Path

import libvirt

from ..base.connection import EVENT_DEVICE_REMOVED, DomainEvent, LibvirtConnection
from ..base import guard
from ..base.errors import InvalidConfig, OperationTimedOut
from ..base.vm_config import parse_hex_id
from .pci import _parse_ids, host_root

USB_IDS_PATHS = ("usr/share/misc/usb.ids", "usr/share/hwdata/usb.ids",
                 "var/lib/usbutils/usb.ids", "usr/share/usb.ids")
_DEVICE_NAME = re.compile(r"(\d+)-(\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class USBDevice:
    bus: int
    port: str  # "1.4": the port path below the root hub
    devnum: int
    vendor_id: str  # 4 hex digits
    product_id: str
    manufacturer: str | None = None
    product: str | None = None
    serial: str | None = None
    device_class: int = 0
    vendor_name: str | None = None
    product_name: str | None = None

    @property
    def sysfs_name(self) -> str:
        return f"{self.bus}-{self.port}"

    @property
    def is_hub(self) -> bool:
        return self.device_class == 0x09

    @property
    def name(self) -> str:
        vendor = self.manufacturer or self.vendor_name
        product = self.product or self.product_name
        if vendor or product:
            return " ".join(part for part in (vendor, product) if part)
        return f"USB device {self.vendor_id}:{self.product_id}"

    def to_dict(self) -> dict:
        return {"bus": self.bus, "port": self.port, "devnum": self.devnum,
                "sysfs_name": self.sysfs_name, "vendor_id": self.vendor_id,
                "product_id": self.product_id, "name": self.name,
                "manufacturer": self.manufacturer, "product": self.product,
                "serial": self.serial, "hub": self.is_hub}


def _text(folder: Path, name: str) -> str | None:
    try:
        return (folder / name).read_text(errors="replace").strip() or None
    except OSError:
        return None


def list_usb(root: Path | str | None = None, names: bool = True) -> list[USBDevice]:
    """Every USB device (not root hubs, not interfaces), sorted by bus and port."""
    guard.check("sysfs")
    folder = host_root(root) / "sys" / "bus" / "usb" / "devices"
    try:
        entries = list(folder.iterdir())
    except OSError:
        return []
    devices = []
    for entry in entries:
        match = _DEVICE_NAME.fullmatch(entry.name)
        if not match:
            continue  # usbN root hubs and N-P:C.I interfaces
        vendor, product = _text(entry, "idVendor"), _text(entry, "idProduct")
        if not vendor or not product:
            continue
        try:
            devclass = int(_text(entry, "bDeviceClass") or "0", 16)
            devnum = int(_text(entry, "devnum") or "0")
        except ValueError:
            devclass, devnum = 0, 0
        devices.append(USBDevice(
            bus=int(match.group(1)), port=match.group(2), devnum=devnum,
            vendor_id=vendor.lower(), product_id=product.lower(),
            manufacturer=_text(entry, "manufacturer"), product=_text(entry, "product"),
            serial=_text(entry, "serial"), device_class=devclass,
        ))
    if names and devices:
        database = _usb_ids(root, {int(d.vendor_id, 16) for d in devices})
        if database:
            from dataclasses import replace

            named = []
            for device in devices:
                vendor_name, products = database.get(int(device.vendor_id, 16), (None, {}))
                named.append(replace(device, vendor_name=vendor_name,
                                     product_name=products.get(int(device.product_id, 16))))
            devices = named
    return sorted(devices, key=lambda d: (d.bus, [int(p) for p in d.port.split(".")]))


def _usb_ids(root, wanted: set[int]):
    base = host_root(root)
    for relative in USB_IDS_PATHS:
        path = base / relative
        if path.is_file():
            return _parse_ids(path, wanted)
    return None


def find_usb(spec: str, root: Path | str | None = None,
             devices: list[USBDevice] | None = None) -> USBDevice:
    """``VID:PID`` (must be unique) or ``BUS-PORT`` (e.g. ``1-1.4``) -> the device, among
    ``devices`` (default: this machine's, from sysfs)."""
    devices = list_usb(root) if devices is None else devices
    if _DEVICE_NAME.fullmatch(spec):
        for device in devices:
            if device.sysfs_name == spec:
                return device
        raise InvalidConfig("USB", f"no USB device at {spec}; `neuron-vm usb list` shows them")
    match = re.fullmatch(r"([0-9a-fA-F]{4}):([0-9a-fA-F]{4})", spec)
    if not match:
        raise InvalidConfig("USB", f"{spec!r} is neither VID:PID (046d:c52b) nor BUS-PORT (1-1.4)")
    vendor, product = match.group(1).lower(), match.group(2).lower()
    found = [d for d in devices if (d.vendor_id, d.product_id) == (vendor, product)]
    if not found:
        raise InvalidConfig("USB", f"no USB device {vendor}:{product} is plugged in")
    if len(found) > 1:
        where = ", ".join(d.sysfs_name for d in found)
        raise InvalidConfig("USB", f"{len(found)} devices are {vendor}:{product} ({where}):"
                                   " name one by BUS-PORT")
    return found[0]


def hostdev_xml(vendor_id: str, product_id: str, bus: int | None = None,
                devnum: int | None = None, loader=None) -> str:
    """``<hostdev type='usb'>`` by vendor/product; with ``bus``/``devnum`` it is that exact
    device (two identical devices told apart). Rendered by the templates' own
    ``usb_hostdev`` macro, the one producer of this element."""
    from ..templates.loader import TemplateLoader  # jinja2: not on `usb list`'s path

    vendor_id = parse_hex_id(vendor_id, "usb.vendor_id")
    product_id = parse_hex_id(product_id, "usb.product_id")
    exact = bus is not None and devnum is not None
    device = {"vendor_id": vendor_id, "product_id": product_id,
              "bus": int(bus) if exact else None, "device": int(devnum) if exact else None}
    return (loader or TemplateLoader()).render_fragment("usb_hostdev", device)


def device_xml_for(device: USBDevice, exact: bool, loader=None) -> str:
    return hostdev_xml(device.vendor_id, device.product_id,
                       device.bus if exact else None, device.devnum if exact else None,
                       loader=loader)


def _flags(dom: libvirt.virDomain) -> tuple[int, bool]:
    live = bool(dom.isActive())
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG | (libvirt.VIR_DOMAIN_AFFECT_LIVE if live else 0)
    return flags, live


def attach_device(connection: LibvirtConnection, vm_name: str, xml: str) -> bool:
    """Add a device to the VM: live and in its config when it runs, in its config when it
    is stopped. Returns True when it was hot-plugged."""

    def run(conn: libvirt.virConnect) -> bool:
        dom = connection.lookup(conn, vm_name)
        flags, live = _flags(dom)
        dom.attachDeviceFlags(xml, flags)
        return live

    return connection.execute(run)


def detach_device(connection: LibvirtConnection, vm_name: str, xml: str,
                  timeout: float = 10.0) -> bool:
    """Remove a device; from a running VM, wait for libvirt's device-removed event (the
    guest may take a moment to let go). Returns True when it was removed live."""
    removed: queue.Queue = queue.Queue()

    def on_event(event) -> None:
        if isinstance(event, DomainEvent) and event.name == vm_name and \
                event.event == EVENT_DEVICE_REMOVED:
            removed.put(event.device)

    token = connection.subscribe(on_event)  # before the request, so the event is not missed
    try:
        def run(conn: libvirt.virConnect) -> bool:
            dom = connection.lookup(conn, vm_name)
            flags, live = _flags(dom)
            dom.detachDeviceFlags(xml, flags)
            return live

        live = connection.execute(run)
        if live:
            try:
                removed.get(timeout=timeout)
            except queue.Empty:
                raise OperationTimedOut(
                    f"{vm_name!r} did not release the device within {timeout:.0f} s (the"
                    " guest may still be using it); it is removed from the config"
                ) from None
        return live
    finally:
        connection.unsubscribe(token)
