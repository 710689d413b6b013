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
from .domain_devices import (  # noqa: F401 (read_domain's types, imported from here)
    TPM, BackingImage, Channel, Disk, Filesystem, Graphics, Interface, PCIHostdev, Shmem,
    USBHostdev, _channel, _disk, _filesystem, _graphics, _int, _interface, _pci_hostdev,
    UNITS_MIB, _shmem, _tpm, _usb_hostdev, _yes, size_mib)

NEURONOS_NS = "https://neuronos.org/xmlns/vm/1.0"
SETUP_NS = "https://neuronos.org/xmlns/setup/1.0"  # a guest setup's progress (its own key)


class DomainXMLError(VMManagerError):
    """The text is not a domain's XML (not well-formed, or not ``<domain>``)."""


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
class CPUInfo:
    """Where the vCPUs run: ``<cpu><topology>`` and ``<cputune>``/``<numatune>``."""

    mode: str | None = None
    topology: tuple[int, int, int, int] | None = None  # sockets, dies, cores, threads
    pins: tuple[tuple[int, str], ...] = ()  # <vcpupin>: (vCPU, host cpuset)
    emulator: str | None = None  # <emulatorpin cpuset>
    memory_nodes: str | None = None  # <numatune><memory nodeset>
    io_threads: str | None = None  # <iothreadpin cpuset> (of the first pinned I/O thread)


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
    cpu: CPUInfo = CPUInfo()
    hugepages_kib: int | None = None  # <memoryBacking><hugepages>: the page size

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
        cpu=_cpu(root),
        hugepages_kib=_hugepages(root.find("memoryBacking/hugepages")),
    )


def _hugepages(element: ET.Element | None) -> int | None:
    """The huge page size in KiB (``<hugepages/>`` alone: the host's default, 2 MiB)."""
    if element is None:
        return None
    page = element.find("page")
    if page is None:
        return 2048
    size = _int(page.get("size"))
    factor = UNITS_MIB.get((page.get("unit") or "KiB").lower())
    return round(size * factor * 1024) if size is not None and factor else None


def _cpu(root: ET.Element) -> CPUInfo:
    cpu, topology = root.find("cpu"), root.find("cpu/topology")
    counts = None
    if topology is not None:
        counts = tuple(_int(topology.get(key, "1")) or 1
                       for key in ("sockets", "dies", "cores", "threads"))
    pins = tuple((_int(pin.get("vcpu")) or 0, pin.get("cpuset") or "")
                 for pin in root.findall("cputune/vcpupin"))
    emulator, memory = root.find("cputune/emulatorpin"), root.find("numatune/memory")
    io = root.find("cputune/iothreadpin")
    return CPUInfo(cpu.get("mode") if cpu is not None else None, counts, pins,
                   emulator.get("cpuset") if emulator is not None else None,
                   memory.get("nodeset") if memory is not None else None,
                   io.get("cpuset") if io is not None else None)


def _setup(element: ET.Element | None) -> SetupInfo | None:
    if element is None:
        return None
    steps = tuple((step.get("stage") or "", step.get("at") or "", step.text or "")
                  for step in element if step.tag.rsplit("}", 1)[-1] == "step")
    return SetupInfo(element.get("kind"), element.get("stage"),
                     element.get("looking-glass") == "yes", element.get("medium"), steps,
                     _int(element.get("timeout-s")))


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
