"""PCI devices and IOMMU groups from sysfs under a host root (DESIGN.md 4.3).

Kernel layout: ``/sys/bus/pci/devices/DDDD:BB:SS.F`` (a symlink into /sys/devices) holds
``vendor``/``device``/``subsystem_vendor``/``subsystem_device`` (``0x%04x``), ``class``
(``0x%06x``), ``boot_vga`` (VGA-class devices only), ``reset_method`` (kernel 5.15+, only
when a reset exists), and the symlinks ``driver`` (absent: unbound) and ``iommu_group``.
Groups: ``/sys/kernel/iommu_groups/N/devices/*``; no groups at all means the IOMMU is off.
Names come from the system's pci.ids when present. Everything here only reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..base import guard
from ..base.errors import InvalidConfig
from ..base.vm_config import PCIAddress

PCI_IDS_PATHS = ("usr/share/misc/pci.ids", "usr/share/hwdata/pci.ids", "usr/share/pci.ids")

# (base class, subclass) -> words; base class alone as a fallback
CLASS_NAMES = {
    (0x01, 0x00): "SCSI controller", (0x01, 0x01): "IDE controller",
    (0x01, 0x04): "RAID controller", (0x01, 0x06): "SATA controller",
    (0x01, 0x08): "NVMe controller", (0x02, 0x00): "Ethernet controller",
    (0x02, 0x80): "network controller", (0x03, 0x00): "VGA controller",
    (0x03, 0x02): "3D controller", (0x03, 0x80): "display controller",
    (0x04, 0x03): "audio device", (0x06, 0x00): "host bridge", (0x06, 0x01): "ISA bridge",
    (0x06, 0x04): "PCI bridge", (0x0C, 0x03): "USB controller",
    (0x0C, 0x05): "SMBus controller", (0x0C, 0x80): "serial bus controller",
}
BASE_CLASS_NAMES = {0x01: "storage controller", 0x02: "network controller",
                    0x03: "display controller", 0x04: "multimedia device", 0x06: "bridge",
                    0x0C: "serial bus controller"}
VFIO_DRIVERS = frozenset({"vfio-pci", "pci-stub"})


def host_root(root: Path | str | None = None) -> Path:
    """The folder that stands for "/" (tests pass a temporary tree)."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("NEURONOS_HOST_ROOT") or "/")


def pci_devices_dir(root: Path | str | None = None) -> Path:
    return host_root(root) / "sys" / "bus" / "pci" / "devices"


@dataclass(frozen=True)
class PCIDevice:
    address: PCIAddress
    vendor_id: int
    device_id: int
    subsystem_vendor: int
    subsystem_device: int
    pci_class: int
    driver: str | None
    iommu_group: int | None
    boot_vga: bool | None
    reset_methods: tuple[str, ...]
    vendor_name: str | None = None
    device_name: str | None = None

    @property
    def base_class(self) -> int:
        return self.pci_class >> 16

    @property
    def subclass(self) -> int:
        return (self.pci_class >> 8) & 0xFF

    @property
    def is_gpu(self) -> bool:
        return self.base_class == 0x03

    @property
    def is_bridge(self) -> bool:
        return self.base_class == 0x06 and self.subclass == 0x04

    @property
    def class_name(self) -> str:
        return CLASS_NAMES.get((self.base_class, self.subclass)) or BASE_CLASS_NAMES.get(
            self.base_class, f"class {self.pci_class:06x}")

    @property
    def ids(self) -> str:
        return f"{self.vendor_id:04x}:{self.device_id:04x}"

    @property
    def name(self) -> str:
        """Vendor and device names from pci.ids, or the ids when the database is absent."""
        if self.vendor_name and self.device_name:
            return f"{self.vendor_name} {self.device_name}"
        if self.vendor_name:
            return f"{self.vendor_name} device {self.device_id:04x}"
        return f"{self.class_name} [{self.ids}]"

    def describe(self) -> str:
        """``SATA controller [1022:43b7]``, or ``SATA controller: <pci.ids name>``."""
        if self.vendor_name:
            return f"{self.class_name}: {self.name}"
        return f"{self.class_name} [{self.ids}]"

    def to_dict(self) -> dict:
        return {
            "address": str(self.address), "vendor_id": f"{self.vendor_id:04x}",
            "device_id": f"{self.device_id:04x}", "name": self.name,
            "class": f"{self.pci_class:06x}", "class_name": self.class_name,
            "driver": self.driver, "iommu_group": self.iommu_group, "boot_vga": self.boot_vga,
            "reset_methods": list(self.reset_methods),
        }


def _read_hex(folder: Path, name: str) -> int:
    try:
        return int((folder / name).read_text().strip(), 16)
    except (OSError, ValueError):
        return 0


def _link_name(path: Path) -> str | None:
    try:
        return os.path.basename(os.readlink(path))
    except OSError:
        return None


def read_device(folder: Path) -> PCIDevice:
    address = PCIAddress.parse(folder.name)
    group = _link_name(folder / "iommu_group")
    pci_class = _read_hex(folder, "class")
    try:
        boot_vga: bool | None = (folder / "boot_vga").read_text().strip() == "1"
    except OSError:  # the kernel has the file for VGA-class functions only: others are not
        boot_vga = None if (pci_class or 0) >> 8 == 0x0300 else False
    try:
        resets = tuple((folder / "reset_method").read_text().split())
    except OSError:
        resets = ()
    return PCIDevice(
        address=address,
        vendor_id=_read_hex(folder, "vendor"),
        device_id=_read_hex(folder, "device"),
        subsystem_vendor=_read_hex(folder, "subsystem_vendor"),
        subsystem_device=_read_hex(folder, "subsystem_device"),
        pci_class=pci_class,
        driver=_link_name(folder / "driver"),
        iommu_group=int(group) if group and group.isdigit() else None,
        boot_vga=boot_vga,
        reset_methods=resets,
    )


def read_devices(root: Path | str | None = None, names: bool = True) -> dict[PCIAddress, PCIDevice]:
    """Every PCI function on the host, by address. ``names``: look them up in pci.ids."""
    guard.check("sysfs")
    folder = pci_devices_dir(root)
    devices = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return {}
    for entry in entries:
        try:
            device = read_device(entry)
        except InvalidConfig:
            continue  # not a DDDD:BB:SS.F name
        devices[device.address] = device
    if names and devices:
        database = PCIIds.load(root, wanted={dev.vendor_id for dev in devices.values()})
        if database is not None:
            devices = {addr: database.name(dev) for addr, dev in devices.items()}
    return devices


def iommu_groups(root: Path | str | None = None) -> dict[int, list[PCIAddress]]:
    """Group number -> member addresses. Empty: the IOMMU is off (or absent)."""
    guard.check("sysfs")
    folder = host_root(root) / "sys" / "kernel" / "iommu_groups"
    groups: dict[int, list[PCIAddress]] = {}
    try:
        entries = list(folder.iterdir())
    except OSError:
        return {}
    for entry in entries:
        if not entry.name.isdigit():
            continue
        members = []
        try:
            for member in (entry / "devices").iterdir():
                try:
                    members.append(PCIAddress.parse(member.name))
                except InvalidConfig:
                    continue
        except OSError:
            pass
        groups[int(entry.name)] = sorted(members)
    return groups


@dataclass(frozen=True)
class PCISnapshot:
    """Every PCI function and IOMMU group of a host, read once (``read_pci``): what the
    passthrough verdicts and plans are pure functions of."""

    devices: dict[PCIAddress, PCIDevice]
    groups: dict[int, list[PCIAddress]]  # empty: the IOMMU is off

    def slot_functions(self, address: PCIAddress) -> list[PCIAddress]:
        """Every function of the card at ``address`` (all ``DDDD:BB:SS.*``), sorted."""
        return sorted(a for a in self.devices if a.slot_address == address.slot_address)


def read_pci(root: Path | str | None = None) -> PCISnapshot:
    return PCISnapshot(read_devices(root), iommu_groups(root))


def slot_functions(address: PCIAddress | str, root: Path | str | None = None) -> list[PCIAddress]:
    """Every function of the card at ``address`` (all ``DDDD:BB:SS.*``), sorted.

    A GPU goes to the guest whole: VGA, HD audio, and on Turing+ NVIDIA cards also the USB
    controller and the UCSI function. Raises ``InvalidConfig`` if the device is not there.
    """
    address = PCIAddress.parse(address, "gpu.pci_address")
    devices = pci_devices_dir(root)
    if not (devices / str(address)).exists():
        raise InvalidConfig(
            "gpu.pci_address",
            f"no PCI device {address} on this host (looked in {devices}); "
            "`neuron-vm gpu list` shows the GPUs",
        )
    prefix = address.slot_address + "."
    found = [PCIAddress.parse(entry.name) for entry in devices.iterdir()
             if entry.name.startswith(prefix)]
    return sorted(found)


class PCIIds:
    """Vendor and device names from pci.ids (the format of pciutils' database)."""

    def __init__(self, vendors: dict[int, tuple[str, dict[int, str]]]):
        self.vendors = vendors

    @classmethod
    def load(cls, root: Path | str | None = None, wanted: set[int] | None = None) -> PCIIds | None:
        base = host_root(root)
        for relative in PCI_IDS_PATHS:
            path = base / relative
            if path.is_file():
                return cls(_parse_ids(path, wanted))
        return None

    def name(self, device: PCIDevice) -> PCIDevice:
        entry = self.vendors.get(device.vendor_id)
        if entry is None:
            return device
        vendor_name, devices = entry
        from dataclasses import replace

        return replace(device, vendor_name=vendor_name,
                       device_name=devices.get(device.device_id))


def _parse_ids(path: Path, wanted: set[int] | None = None) -> dict[int, tuple[str, dict[int, str]]]:
    """Parse ``VVVV  name`` lines and their tab-indented ``DDDD  name`` device lines; the
    class section (``C xx``) at the end is skipped."""
    vendors: dict[int, tuple[str, dict[int, str]]] = {}
    current: dict[int, str] | None = None
    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if not line.strip() or line.startswith("#"):
                continue
            if line.startswith("C "):
                break
            if not line.startswith("\t"):
                head, _, rest = line.partition("  ")
                try:
                    vendor = int(head, 16)
                except ValueError:
                    current = None
                    continue
                if wanted is not None and vendor not in wanted:
                    current = None
                    continue
                current = {}
                vendors[vendor] = (rest.strip(), current)
            elif current is not None and not line.startswith("\t\t"):
                head, _, rest = line.strip().partition("  ")
                try:
                    current[int(head, 16)] = rest.strip()
                except ValueError:
                    continue
    return vendors
