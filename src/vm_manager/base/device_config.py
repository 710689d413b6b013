"""The device settings of a ``VMConfig`` (base/vm_config.py re-exports them): the GPU to
pass through, USB devices, the Looking Glass display, and where the vCPUs and memory live
(``TuneConfig``). Each checks its own values and names the field it refuses."""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidConfig
from .values import PCIAddress, parse_bool, parse_hex_id, parse_int, parse_path, parse_size_mb

HUGEPAGE_SIZES = {"2M": 2048, "1G": 1048576}  # KiB: x86-64's two huge page sizes


@dataclass
class GPUPassthroughConfig:
    """The GPU to hand to the guest. Every function of its slot goes with it."""

    pci_address: str
    rom_file: str | None = None
    nvidia_compat: bool = False  # <kvm hidden>, Hyper-V vendor_id: harmless, rarely needed
    allow_boot_gpu: bool = False  # explicit single-GPU opt-in

    def __post_init__(self) -> None:
        self.pci_address = str(PCIAddress.parse(self.pci_address, "gpu.pci_address"))
        self.rom_file = parse_path(self.rom_file, "gpu.rom_file")
        self.nvidia_compat = parse_bool(self.nvidia_compat, "gpu.nvidia_compat")
        self.allow_boot_gpu = parse_bool(self.allow_boot_gpu, "gpu.allow_boot_gpu")

    @property
    def address(self) -> PCIAddress:
        return PCIAddress.parse(self.pci_address)


@dataclass
class USBDeviceConfig:
    """A USB device by vendor/product; bus and port tell two identical devices apart."""

    vendor_id: str
    product_id: str
    bus: int | None = None
    port: str | None = None  # sysfs port path, e.g. "1.4"
    name: str | None = None  # for display only

    def __post_init__(self) -> None:
        self.vendor_id = parse_hex_id(self.vendor_id, "usb.vendor_id")
        self.product_id = parse_hex_id(self.product_id, "usb.product_id")
        if self.bus is not None:
            self.bus = parse_int(self.bus, "usb.bus")
            if not 1 <= self.bus <= 255:
                raise InvalidConfig("usb.bus", f"{self.bus} is not a USB bus number (1-255)")
        if self.port is not None and not (
            isinstance(self.port, str) and re.fullmatch(r"\d{1,3}(\.\d{1,3}){0,6}", self.port)
        ):
            raise InvalidConfig("usb.port", f"{self.port!r} is not a port path (e.g. 1.4)")
        if self.name is not None and not isinstance(self.name, str):
            raise InvalidConfig("usb.name", f"expected text, got {self.name!r}")


@dataclass
class LookingGlassConfig:
    """Looking Glass display: shared-memory frames from the guest's GPU."""

    enabled: bool = False
    width: int = 2560
    height: int = 1440
    hdr: bool = False
    shm_size_mb: int | None = None  # None: computed from the resolution
    use_kvmfr: bool = False  # /dev/kvmfr0 instead of /dev/shm/looking-glass-<vm>

    def __post_init__(self) -> None:
        self.enabled = parse_bool(self.enabled, "looking_glass.enabled")
        self.hdr = parse_bool(self.hdr, "looking_glass.hdr")
        self.use_kvmfr = parse_bool(self.use_kvmfr, "looking_glass.use_kvmfr")
        for name in ("width", "height"):
            value = parse_int(getattr(self, name), f"looking_glass.{name}")
            if not 320 <= value <= 16384:
                raise InvalidConfig(f"looking_glass.{name}", f"{value} is outside 320-16384")
            setattr(self, name, value)
        if self.shm_size_mb is not None:
            size = parse_size_mb(self.shm_size_mb, "looking_glass.shm_size_mb")
            if size & (size - 1):  # QEMU requires a power of two (DESIGN.md 4.2)
                raise InvalidConfig(
                    "looking_glass.shm_size_mb", f"{size} MiB is not a power of two (32, 64, ...)"
                )
            self.shm_size_mb = size


@dataclass
class TuneConfig:
    """Where the vCPUs and memory live (issue 31; the plan: core/cpu_plan.py)."""

    pin: bool | None = None  # vCPUs pinned from the host's topology; None: GPU VMs only
    hugepages: str | None = None  # "2M" or "1G": the guest's memory in huge pages
    isolate: bool = False  # the host's own processes kept off the VM's cores while it runs

    def __post_init__(self) -> None:
        if self.pin is not None:
            self.pin = parse_bool(self.pin, "tune.pin")
        if self.hugepages is not None:
            size = self.hugepages.upper() if isinstance(self.hugepages, str) else None
            if size not in HUGEPAGE_SIZES:
                raise InvalidConfig("tune.hugepages", f"{self.hugepages!r}: expected 2M or 1G")
            self.hugepages = size
        self.isolate = parse_bool(self.isolate, "tune.isolate")

    def pins(self, has_gpu: bool) -> bool:
        """Whether the vCPUs are pinned: as asked, else for a GPU VM."""
        return self.pin if self.pin is not None else has_gpu
