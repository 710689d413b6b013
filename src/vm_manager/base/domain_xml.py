"""The one reader of libvirt domain XML: typed, read-only facts about a domain.

Every module that wants to know what a domain holds (its disks, GPU and USB devices, shared
memory, SPICE port, firmware, ...) asks ``read_domain(xml)`` instead of walking the XML
itself. It reads live XML (``XMLDesc(0)`` of a running domain: the SPICE port libvirt
picked, the backing chain libvirt probed) and inactive XML alike, domains NeuronOS made and
domains made by hand with virsh; what it does not know it leaves out, and an element it
does not understand is ignored, never an error.

Facts (libvirt's domain XML format, checked against ``virsh dumpxml`` on libvirt 9.0):
sizes default to KiB; a PCI hostdev's host address is ``<source><address>`` (the other
``<address>`` is where the guest sees it); the SPICE port is -1 or missing until the
domain runs; a live disk carries ``<backingStore>`` elements (an empty one ends the
chain); ``<metadata>`` holds NeuronOS's ``neuronos:vm`` block and a setup's progress.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field

from .errors import VMManagerError

NEURONOS_NS = "https://neuronos.org/xmlns/vm/1.0"
SETUP_NS = "https://neuronos.org/xmlns/setup/1.0"  # a guest setup's progress (its own key)
# libvirt's size units (docs "formatdomain", memory), in MiB
UNITS_MIB = {"b": 1 / 1048576, "bytes": 1 / 1048576, "k": 1 / 1024, "kib": 1 / 1024,
             "kb": 1000 / 1048576, "m": 1, "mib": 1, "mb": 1000000 / 1048576, "g": 1024,
             "gib": 1024, "gb": 1e9 / 1048576, "t": 1048576, "tib": 1048576, "tb": 1e12 / 1048576}


class DomainXMLError(VMManagerError):
    """The text is not a domain's XML (not well-formed, or not ``<domain>``)."""


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


@dataclass(frozen=True)
class OSInfo:
    type: str | None
    arch: str | None
    machine: str | None
    firmware: str | None  # "efi", "bios" or None (libvirt's default)
    loader: str | None
    loader_secure: bool | None
    nvram: str | None  # the UEFI variable store of this domain
    nvram_template: str | None
    secure_boot: bool | None  # asked for with <firmware><feature name='secure-boot'>
    kernel: str | None
    initrd: str | None
    cmdline: str | None


@dataclass(frozen=True)
class SetupInfo:
    """An unattended setup's progress, kept in the domain's metadata."""

    kind: str | None  # windows, cloud-init
    stage: str | None
    looking_glass: bool
    medium: str | None  # the setup medium NeuronOS made (removed at "ready")
    steps: tuple[tuple[str, str, str], ...] = ()  # (stage, ISO time, note)
    timeout_s: int | None = None  # the VM's own deadline for every stage (None: per OS)


@dataclass(frozen=True)
class DomainInfo:
    name: str | None
    uuid: str | None
    domain_type: str | None  # kvm, qemu, test, ...
    live: bool  # read from a running domain (it carries an id)
    title: str | None
    description: str | None
    memory_mib: float | None
    current_memory_mib: float | None
    vcpus: int | None
    vcpus_text: str | None  # as written, for messages about a bad value
    os: OSInfo
    neuronos_type: str | None  # from NeuronOS's metadata block, when NeuronOS made it
    neuronos_template: str | None
    tpm: TPM | None = None
    disks: tuple[Disk, ...] = ()
    interfaces: tuple[Interface, ...] = ()
    graphics: tuple[Graphics, ...] = ()
    pci_hostdevs: tuple[PCIHostdev, ...] = ()
    usb_hostdevs: tuple[USBHostdev, ...] = ()
    shmems: tuple[Shmem, ...] = ()
    channels: tuple[Channel, ...] = ()
    filesystems: tuple[Filesystem, ...] = field(default=())
    setup: SetupInfo | None = None
    serial_log: str | None = None  # <serial type='file'>: the guest's console, in a file

    @property
    def spice_port(self) -> int | None:
        """The live SPICE port (None: no SPICE, or not running)."""
        for graphics in self.graphics:
            if graphics.type == "spice" and graphics.port:
                return graphics.port
        return None

    def shmem(self, name: str) -> Shmem | None:
        return next((shmem for shmem in self.shmems if shmem.name == name), None)

    def to_dict(self) -> dict:
        """Plain JSON types (``neuron-vm info --json``)."""
        data = asdict(self)
        data["hostdevs"] = ([{"type": "pci", **item} for item in data.pop("pci_hostdevs")]
                            + [{"type": "usb", **item} for item in data.pop("usb_hostdevs")])
        for item in data["hostdevs"]:
            item.pop("raw_address", None)
        data["shmem"] = [dict(item, size=item["size_text"]) for item in data.pop("shmems")]
        return _lists(data)


def _lists(value):
    """asdict() keeps tuples; JSON and comparisons want lists."""
    if isinstance(value, (list, tuple)):
        return [_lists(item) for item in value]
    return {k: _lists(v) for k, v in value.items()} if isinstance(value, dict) else value


def read_domain(xml: str) -> DomainInfo:
    """Parse one domain's XML. Raises ``DomainXMLError`` for text that is not one."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as error:
        raise DomainXMLError(f"the domain XML is not well-formed: {error}") from None
    if root.tag != "domain":
        raise DomainXMLError(f"expected a <domain> element, got <{root.tag}>")
    devices = root.find("devices")
    if devices is None:
        devices = ET.Element("devices")
    metadata = root.find(f"metadata/{{{NEURONOS_NS}}}vm")
    metadata = ET.Element("vm") if metadata is None else metadata
    vcpu_text = root.findtext("vcpu")
    return DomainInfo(
        name=root.findtext("name"),
        uuid=root.findtext("uuid"),
        domain_type=root.get("type"),
        live=root.get("id") is not None,
        title=root.findtext("title"),
        description=root.findtext("description"),
        memory_mib=size_mib(root.find("memory"), "KiB"),
        current_memory_mib=size_mib(root.find("currentMemory"), "KiB"),
        vcpus=_int(vcpu_text),
        vcpus_text=vcpu_text,
        os=_os(root),
        neuronos_type=metadata.findtext(f"{{{NEURONOS_NS}}}type"),
        neuronos_template=metadata.findtext(f"{{{NEURONOS_NS}}}template"),
        tpm=_tpm(devices.find("tpm")),
        disks=tuple(_disk(disk) for disk in devices.findall("disk")),
        interfaces=tuple(_interface(iface) for iface in devices.findall("interface")),
        graphics=tuple(_graphics(item) for item in devices.findall("graphics")),
        pci_hostdevs=tuple(_pci_hostdev(item) for item in devices.findall("hostdev")
                           if item.get("type") == "pci"),
        usb_hostdevs=tuple(_usb_hostdev(item) for item in devices.findall("hostdev")
                           if item.get("type") == "usb"),
        shmems=tuple(_shmem(item) for item in devices.findall("shmem")),
        channels=tuple(_channel(item) for item in devices.findall("channel")),
        serial_log=next((source.get("path") for serial in devices.findall("serial")
                         if serial.get("type") == "file"
                         for source in serial.findall("source")), None),
        filesystems=tuple(_filesystem(item) for item in devices.findall("filesystem")),
        setup=_setup(root.find(f"metadata/{{{SETUP_NS}}}setup")),
    )


def _setup(element: ET.Element | None) -> SetupInfo | None:
    if element is None:
        return None
    steps = tuple((step.get("stage") or "", step.get("at") or "", step.text or "")
                  for step in element if step.tag.rsplit("}", 1)[-1] == "step")
    return SetupInfo(element.get("kind"), element.get("stage"),
                     element.get("looking-glass") == "yes", element.get("medium"), steps,
                     _int(element.get("timeout-s")))


def size_mib(element: ET.Element | None, default_unit: str) -> float | None:
    """``<memory unit='KiB'>4194304</memory>`` -> 4096.0; None when missing or unreadable."""
    if element is None or element.text is None:
        return None
    unit = (element.get("unit") or default_unit).lower()
    try:
        return float(element.text) * UNITS_MIB[unit]
    except (KeyError, ValueError):
        return None


def _int(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text.strip(), base) if text is not None else None
    except ValueError:
        return None


def _yes(value: str | None) -> bool | None:
    return None if value is None else value == "yes"


def _os(root: ET.Element) -> OSInfo:
    os_elem = root.find("os")
    if os_elem is None:
        os_elem = ET.Element("os")
    os_type, loader, nvram = os_elem.find("type"), os_elem.find("loader"), os_elem.find("nvram")
    secure = None
    for feature in os_elem.findall("firmware/feature"):
        if feature.get("name") == "secure-boot":
            secure = feature.get("enabled") == "yes"
    if secure is None and loader is not None and loader.get("secure") is not None:
        secure = loader.get("secure") == "yes"
    return OSInfo(
        type=os_type.text if os_type is not None else None,
        arch=os_type.get("arch") if os_type is not None else None,
        machine=os_type.get("machine") if os_type is not None else None,
        firmware=os_elem.get("firmware"),
        loader=loader.text if loader is not None else None,
        loader_secure=_yes(loader.get("secure")) if loader is not None else None,
        nvram=nvram.text if nvram is not None else None,
        nvram_template=nvram.get("template") if nvram is not None else None,
        secure_boot=secure,
        kernel=os_elem.findtext("kernel"),
        initrd=os_elem.findtext("initrd"),
        cmdline=os_elem.findtext("cmdline"),
    )


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
