"""The devices of a domain as ``read_domain`` (base/domain_xml.py, the one reader of domain
XML) reports them: disks and their backing chains, NICs, displays, PCI and USB hostdevs,
shared memory, channels, shared folders, the TPM. Facts as in domain_xml's docstring."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

# libvirt's size units (docs "formatdomain", memory), in MiB
UNITS_MIB = {"b": 1 / 1048576, "bytes": 1 / 1048576, "k": 1 / 1024, "kib": 1 / 1024,
             "kb": 1000 / 1048576, "m": 1, "mib": 1, "mb": 1000000 / 1048576, "g": 1024,
             "gib": 1024, "gb": 1e9 / 1048576, "t": 1048576, "tib": 1048576, "tb": 1e12 / 1048576}


def size_mib(element: ET.Element | None, default_unit: str) -> float | None:
    """``<memory unit='KiB'>4194304</memory>`` -> 4096.0; None when missing or unreadable."""
    if element is None or element.text is None:
        return None
    unit = (element.get("unit") or default_unit).lower()
    try:
        return float(element.text) * UNITS_MIB[unit]
    except (KeyError, ValueError):
        return None


@dataclass(frozen=True)
class BackingImage:
    """One image below a disk's top image, as libvirt reports it in live XML."""

    path: str | None
    format: str | None
    type: str | None


@dataclass(frozen=True)
class Disk:
    device: str  # disk, cdrom, floppy, lun
    type: str  # file, block, volume, network, dir
    source: str | None  # the file, device, volume or network name
    target: str | None  # vda, sda, ...
    bus: str | None
    format: str | None  # the driver type: qcow2, raw, ...
    readonly: bool
    shareable: bool
    boot_order: int | None
    pool: str | None = None  # type='volume': the storage pool
    backing_chain: tuple[BackingImage, ...] = ()


@dataclass(frozen=True)
class PCIHostdev:
    address: str | None  # the host's DDDD:BB:SS.F; None when the XML's address is unusable
    managed: bool
    rom_file: str | None
    raw_address: tuple[str | None, ...]  # domain, bus, slot, function as written


@dataclass(frozen=True)
class USBHostdev:
    vendor_id: str | None  # 4 lowercase hex digits, e.g. "046d"
    product_id: str | None
    bus: int | None  # with device: exactly that plugged-in device
    device: int | None
    managed: bool
    startup_policy: str | None


@dataclass(frozen=True)
class Shmem:
    name: str | None
    model: str | None
    size_mib: float | None
    size_text: str | None  # as written, e.g. "32 M"


@dataclass(frozen=True)
class Graphics:
    type: str | None
    port: int | None  # the live port; None before the domain runs (-1 / autoport)
    autoport: bool
    listen: str | None
    listen_type: str | None = None  # address, none (reached through libvirt only), socket


@dataclass(frozen=True)
class Interface:
    type: str | None  # network, bridge, direct, user, ...
    source: str | None
    model: str | None
    mac: str | None


@dataclass(frozen=True)
class Channel:
    type: str | None  # unix, spicevmc, pty, ...
    target_type: str | None
    target_name: str | None  # org.qemu.guest_agent.0, com.redhat.spice.0
    state: str | None  # live: connected / disconnected


@dataclass(frozen=True)
class Filesystem:
    type: str | None
    driver: str | None  # virtiofs, path, ...
    source: str | None
    target: str | None  # the mount tag
    accessmode: str | None
    readonly: bool
    binary: str | None = None  # what libvirt runs as virtiofsd (<binary path>)


@dataclass(frozen=True)
class TPM:
    model: str | None
    backend: str | None
    version: str | None


def _int(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text.strip(), base) if text is not None else None
    except ValueError:
        return None


def _yes(value: str | None) -> bool | None:
    return None if value is None else value == "yes"


def _source(element: ET.Element | None, names: tuple[str, ...]) -> str | None:
    if element is None:
        return None
    return next((element.get(name) for name in names if element.get(name)), None)


_DISK_SOURCE = ("file", "dev", "volume", "name", "dir")


def _backing_chain(disk: ET.Element) -> tuple[BackingImage, ...]:
    chain = []
    current = disk.find("backingStore")
    while current is not None and current.find("source") is not None:
        fmt = current.find("format")
        chain.append(BackingImage(_source(current.find("source"), _DISK_SOURCE),
                                  fmt.get("type") if fmt is not None else None,
                                  current.get("type")))
        current = current.find("backingStore")
    return tuple(chain)


def _disk(disk: ET.Element) -> Disk:
    source, target, driver = disk.find("source"), disk.find("target"), disk.find("driver")
    boot = disk.find("boot")
    return Disk(
        device=disk.get("device", "disk"),
        type=disk.get("type", "file"),
        source=_source(source, _DISK_SOURCE),
        target=target.get("dev") if target is not None else None,
        bus=target.get("bus") if target is not None else None,
        format=driver.get("type") if driver is not None else None,
        readonly=disk.find("readonly") is not None,
        shareable=disk.find("shareable") is not None,
        boot_order=_int(boot.get("order")) if boot is not None else None,
        pool=source.get("pool") if source is not None else None,
        backing_chain=_backing_chain(disk),
    )


def _interface(iface: ET.Element) -> Interface:
    model, mac = iface.find("model"), iface.find("mac")
    return Interface(
        type=iface.get("type"),
        source=_source(iface.find("source"), ("network", "bridge", "dev", "name")),
        model=model.get("type") if model is not None else None,
        mac=mac.get("address") if mac is not None else None,
    )


def _graphics(graphics: ET.Element) -> Graphics:
    port, element = _int(graphics.get("port")), graphics.find("listen")
    listen = graphics.get("listen") or (element.get("address") if element is not None else None)
    kind = element.get("type") if element is not None else ("address" if listen else None)
    return Graphics(type=graphics.get("type"), port=port if port and port > 0 else None,
                    autoport=graphics.get("autoport") == "yes", listen=listen, listen_type=kind)


def _pci_hostdev(hostdev: ET.Element) -> PCIHostdev:
    address = hostdev.find("source/address")
    raw = tuple(address.get(key) if address is not None else None
                for key in ("domain", "bus", "slot", "function"))
    parts = [_int(value, 0) if value is not None else (0 if key == "domain" else None)
             for key, value in zip(("domain", "bus", "slot", "function"), raw)]
    text = None
    if all(part is not None for part in parts):
        domain, bus, slot, function = parts
        if domain <= 0xFFFF and bus <= 0xFF and slot <= 0x1F and function <= 7:
            text = f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"
    rom = hostdev.find("rom")
    return PCIHostdev(address=text, managed=hostdev.get("managed") == "yes",
                      rom_file=rom.get("file") if rom is not None else None, raw_address=raw)


def _usb_id(element: ET.Element | None) -> str | None:
    value = _int(element.get("id"), 0) if element is not None and element.get("id") else None
    return f"{value:04x}" if value is not None and 0 <= value <= 0xFFFF else None


def _usb_hostdev(hostdev: ET.Element) -> USBHostdev:
    source = hostdev.find("source")
    if source is None:
        source = ET.Element("source")
    address = source.find("address")
    return USBHostdev(
        vendor_id=_usb_id(source.find("vendor")),
        product_id=_usb_id(source.find("product")),
        bus=_int(address.get("bus"), 0) if address is not None and address.get("bus") else None,
        device=_int(address.get("device"), 0)
        if address is not None and address.get("device") else None,
        managed=hostdev.get("managed") == "yes",
        startup_policy=source.get("startupPolicy"),
    )


def _shmem(shmem: ET.Element) -> Shmem:
    model, size = shmem.find("model"), shmem.find("size")
    return Shmem(
        name=shmem.get("name"),
        model=model.get("type") if model is not None else None,
        size_mib=size_mib(size, "b"),
        size_text=f"{size.text} {size.get('unit', 'b')}" if size is not None else None,
    )


def _channel(channel: ET.Element) -> Channel:
    target = channel.find("target")
    if target is None:
        target = ET.Element("target")
    return Channel(type=channel.get("type"), target_type=target.get("type"),
                   target_name=target.get("name"), state=target.get("state"))


def _filesystem(filesystem: ET.Element) -> Filesystem:
    driver = filesystem.find("driver")
    return Filesystem(
        type=filesystem.get("type"), driver=driver.get("type") if driver is not None else None,
        source=_source(filesystem.find("source"), ("dir", "file", "name", "socket")),
        target=_source(filesystem.find("target"), ("dir",)),
        accessmode=filesystem.get("accessmode"), binary=_source(filesystem.find("binary"),
                                                                ("path",)),
        readonly=filesystem.find("readonly") is not None)


def _tpm(tpm: ET.Element | None) -> TPM | None:
    if tpm is None:
        return None
    backend = tpm.find("backend")
    return TPM(model=tpm.get("model"),
               backend=backend.get("type") if backend is not None else None,
               version=backend.get("version") if backend is not None else None)
