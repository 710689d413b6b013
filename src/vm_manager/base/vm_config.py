"""Typed, validated VM settings.

Every value a user gives (CLI flag, GUI field, saved JSON) becomes a ``VMConfig`` here, and
this module is the one place that decides whether it is allowed: a bad value raises
``InvalidConfig`` naming the field and what is allowed. Nothing downstream (templates, file
paths, libvirt XML) ever sees an unchecked string.

Defaults that depend on the VM type are applied in one explicit step (``_apply_defaults``),
then ``validate()`` checks the whole object. Host limits (memory, CPUs) are checked
separately by ``check_host_limits`` because they need a connection.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

from .errors import InvalidConfig
from .guest_config import (  # noqa: F401 (re-exported)
    ShareConfig,
    UnattendedConfig,
    check_account_name,
    check_linux_user,
)
from .device_config import (  # noqa: F401 (re-exported)
    HUGEPAGE_SIZES,
    GPUPassthroughConfig,
    LookingGlassConfig,
    TuneConfig,
    USBDeviceConfig,
)
from .primitives import NAME_PATTERN, NAME_RULE, VMState, validate_name  # noqa: F401 (re-exported)
from .values import (  # noqa: F401 (PCIAddress, SIZE_RULE, parse_size_mb: re-exported)
    SIZE_RULE,
    PCIAddress,
    parse_bool,
    parse_enum,
    parse_hex_id,
    parse_int,
    parse_path,
    parse_size_mb,
)


DEFAULT_EDITION = {"windows11": "Windows 11 Pro", "windows10": "Windows 10 Pro"}
MAX_VCPUS = 512  # well above any desktop; QEMU's q35 limit is higher
MAX_MEMORY_MB = 16 * 1024 * 1024  # 16 TiB
MAX_DISK_GB = 64 * 1024  # 64 TiB


class VMType(str, Enum):
    """Guest operating system family; selects the template and the resource minimums."""

    WINDOWS11 = "windows11"
    WINDOWS10 = "windows10"
    LINUX = "linux"
    MACOS = "macos"

    @property
    def label(self) -> str:
        return _TYPE_LABELS[self]


_TYPE_LABELS = {
    VMType.WINDOWS11: "Windows 11",
    VMType.WINDOWS10: "Windows 10",
    VMType.LINUX: "Linux",
    VMType.MACOS: "macOS",
}


@dataclass(frozen=True)
class Resources:
    memory_mb: int
    vcpus: int
    disk_gb: int


# Minimums: Windows 11/10 from libosinfo (/usr/share/osinfo/os/microsoft.com/win-1[01].xml,
# DESIGN.md 5); Linux from the foundation issue; macOS from Apple's stated needs for recent
# releases. Defaults are what a desktop user gets when they give nothing.
MINIMUMS = {
    VMType.WINDOWS11: Resources(memory_mb=4096, vcpus=2, disk_gb=64),
    VMType.WINDOWS10: Resources(memory_mb=2048, vcpus=1, disk_gb=20),
    VMType.LINUX: Resources(memory_mb=512, vcpus=1, disk_gb=1),
    VMType.MACOS: Resources(memory_mb=4096, vcpus=2, disk_gb=64),
}
DEFAULTS = {
    VMType.WINDOWS11: Resources(memory_mb=8192, vcpus=4, disk_gb=128),
    VMType.WINDOWS10: Resources(memory_mb=4096, vcpus=2, disk_gb=64),
    VMType.LINUX: Resources(memory_mb=2048, vcpus=2, disk_gb=32),
    VMType.MACOS: Resources(memory_mb=8192, vcpus=4, disk_gb=128),
}


class DisplayMode(str, Enum):
    """How the user sees the VM's screen."""

    SPICE = "spice"  # a SPICE window (virt-viewer or the GUI)
    LOOKING_GLASS = "looking-glass"  # passed-through GPU, frames via shared memory
    NONE = "none"  # headless


class DomainType(str, Enum):
    KVM = "kvm"
    QEMU = "qemu"  # software emulation (TCG): slow but works without /dev/kvm


# --- the dataclasses ----------------------------------------------------------------------


@dataclass(frozen=True)
class HostResources:
    """What the host can give: total memory and logical CPUs (``virConnect.getInfo``)."""

    memory_mb: int
    cpus: int


@dataclass
class VMConfig:
    """Everything the manager knows about one VM's intended setup."""

    name: str
    vm_type: VMType = VMType.LINUX
    memory_mb: int | None = None  # None: the type's default
    vcpus: int | None = None
    disk_size_gb: int | None = None
    disk_path: str | None = None  # an existing disk to use instead of a new one
    disk_device: bool = False  # disk_path is a whole block device (asked for explicitly)
    iso_path: str | None = None  # installer
    virtio_iso_path: str | None = None  # virtio-win drivers (Windows)
    opencore_path: str | None = None  # macOS: the user's OpenCore boot image (required)
    cloud_image_path: str | None = None  # Linux: the disk is a qcow2 overlay on this image
    kernel_path: str | None = None  # Linux direct kernel boot (no bootloader, no firmware)
    initrd_path: str | None = None
    kernel_cmdline: str | None = None
    serial_log_path: str | None = None  # the guest's serial console, appended to this file
    # the design notes' switch for Looking Glass: given LOOKING_GLASS, it turns
    # ``looking_glass.enabled`` on; afterwards it only mirrors that (never saved on its own)
    display_mode: DisplayMode = DisplayMode.SPICE
    domain_type: DomainType = DomainType.KVM
    network: str = "default"  # libvirt network name, or "none"
    gpu_passthrough: GPUPassthroughConfig | None = None
    usb_devices: list[USBDeviceConfig] = field(default_factory=list)
    shares: list[ShareConfig] = field(default_factory=list)  # virtiofs folders
    looking_glass: LookingGlassConfig = field(default_factory=LookingGlassConfig)
    unattended: UnattendedConfig | None = None  # set the guest up without questions
    secure_boot: bool = True  # False: Linux only, for an image that does not boot via shim
    tune: TuneConfig = field(default_factory=TuneConfig)  # pinning, huge pages, isolation

    def __post_init__(self) -> None:
        self._normalize()
        self._apply_defaults()
        self.validate()
        self.display_mode = DisplayMode.LOOKING_GLASS if self.looking_glass.enabled else \
            DisplayMode.SPICE

    def _normalize(self) -> None:
        self.name = validate_name(self.name)
        self.vm_type = parse_enum(VMType, self.vm_type, "vm_type")
        self.display_mode = parse_enum(DisplayMode, self.display_mode, "display_mode")
        self.domain_type = parse_enum(DomainType, self.domain_type, "domain_type")
        if self.memory_mb is not None:
            self.memory_mb = parse_size_mb(self.memory_mb, "memory_mb", default_unit="M")
        if self.vcpus is not None:
            self.vcpus = parse_int(self.vcpus, "vcpus")
        if isinstance(self.disk_size_gb, str) and self.disk_size_gb.strip() in ("0", "0G"):
            self.disk_size_gb = 0  # as typed on a command line
        if self.disk_size_gb == 0 and not isinstance(self.disk_size_gb, bool):
            self.disk_size_gb = 0  # no disk at all (a direct-kernel-boot Linux guest)
        elif self.disk_size_gb is not None:
            disk_mb = parse_size_mb(self.disk_size_gb, "disk_size_gb", default_unit="G")
            if disk_mb % 1024:
                raise InvalidConfig("disk_size_gb", f"{self.disk_size_gb!r} is not whole GiB")
            self.disk_size_gb = disk_mb // 1024
        self.disk_device = parse_bool(self.disk_device, "disk_device")
        self.secure_boot = parse_bool(self.secure_boot, "secure_boot")
        for name in ("disk_path", "iso_path", "virtio_iso_path", "opencore_path", "kernel_path",
                     "initrd_path", "serial_log_path", "cloud_image_path"):
            setattr(self, name, parse_path(getattr(self, name), name))
        if self.kernel_cmdline is not None:
            if not isinstance(self.kernel_cmdline, str) or len(self.kernel_cmdline) > 4096 or any(
                ord(ch) < 32 or ord(ch) == 127 for ch in self.kernel_cmdline
            ):
                raise InvalidConfig(
                    "kernel_cmdline", "expected one line of text (at most 4096 characters)"
                )
        if self.network != "none":
            self.network = validate_name(self.network, "network")
        if isinstance(self.gpu_passthrough, dict):
            self.gpu_passthrough = _from_mapping(
                GPUPassthroughConfig, self.gpu_passthrough, "gpu"
            )
        elif self.gpu_passthrough is not None and not isinstance(
            self.gpu_passthrough, GPUPassthroughConfig
        ):
            raise InvalidConfig("gpu_passthrough", "expected a GPU setting or nothing")
        if not isinstance(self.usb_devices, list):
            raise InvalidConfig("usb_devices", "expected a list of USB devices")
        self.usb_devices = [
            _from_mapping(USBDeviceConfig, item, "usb") if isinstance(item, dict) else item
            for item in self.usb_devices
        ]
        if not all(isinstance(item, USBDeviceConfig) for item in self.usb_devices):
            raise InvalidConfig("usb_devices", "expected a list of USB devices")
        for name, kind, what in (("looking_glass", LookingGlassConfig, "Looking Glass settings"),
                                 ("tune", TuneConfig, "CPU and memory tuning settings")):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, _from_mapping(kind, getattr(self, name), name))
            elif not isinstance(getattr(self, name), kind):
                raise InvalidConfig(name, f"expected {what}")
        if not isinstance(self.shares, list):
            raise InvalidConfig("shares", "expected a list of shared folders")
        self.shares = [_from_mapping(ShareConfig, item, "shares") if isinstance(item, dict)
                       else item for item in self.shares]
        tags = [share.tag for share in self.shares]
        if len(set(tags)) != len(tags):
            raise InvalidConfig("shares.tag", "two shared folders have the same tag")
        if isinstance(self.unattended, dict):
            self.unattended = _from_mapping(UnattendedConfig, self.unattended, "unattended")
        elif self.unattended is not None and not isinstance(self.unattended, UnattendedConfig):
            raise InvalidConfig("unattended", "expected unattended setup settings or nothing")

    def _apply_defaults(self) -> None:
        default = DEFAULTS[self.vm_type]
        if self.memory_mb is None:
            self.memory_mb = default.memory_mb
        if self.vcpus is None:
            self.vcpus = default.vcpus
        if self.disk_size_gb is None and self.disk_path is None:
            self.disk_size_gb = default.disk_gb
        if self.display_mode is DisplayMode.LOOKING_GLASS:
            self.looking_glass.enabled = True

    def validate(self) -> None:
        """Check the rules that span fields. Raises ``InvalidConfig``."""
        minimum = MINIMUMS[self.vm_type]
        label = self.vm_type.label
        _check_range("memory_mb", self.memory_mb, minimum.memory_mb, MAX_MEMORY_MB, "MiB",
                     label, gib=True)
        _check_range("vcpus", self.vcpus, minimum.vcpus, MAX_VCPUS, "vCPUs", label)
        if self.tune.isolate and not self.tune.pins(self.gpu_passthrough is not None):
            raise InvalidConfig("tune.isolate", "keeps the host's processes off the VM's cores:"
                                " its vCPUs must be pinned (a GPU VM is, any VM with --tune)")
        if self.disk_size_gb == 0:
            if self.vm_type is not VMType.LINUX or self.kernel_path is None:
                raise InvalidConfig(
                    "disk_size_gb", "0 (no disk) is only for a Linux VM booted straight from a"
                    " kernel file (kernel_path)"
                )
        elif self.disk_size_gb is not None:
            _check_range("disk_size_gb", self.disk_size_gb, minimum.disk_gb, MAX_DISK_GB, "GiB",
                         label)
        if self.disk_device and self.disk_path is None:
            raise InvalidConfig("disk_device", "a block device disk needs its path")
        if self.vm_type is VMType.MACOS and self.opencore_path is None:
            raise InvalidConfig("opencore_path", "macOS VMs boot through OpenCore: give the"
                                " path of your OpenCore image")
        if self.vm_type is not VMType.LINUX:
            for name in ("kernel_path", "initrd_path", "kernel_cmdline"):
                if getattr(self, name) is not None:
                    raise InvalidConfig(name, "direct kernel boot is for Linux VMs only")
        if self.kernel_path is None and (self.initrd_path or self.kernel_cmdline):
            raise InvalidConfig("kernel_path", "an initrd or a kernel command line needs the"
                                " kernel file they go with")
        if self.looking_glass.enabled and self.gpu_passthrough is None:
            raise InvalidConfig("looking_glass.enabled", "Looking Glass shows a passed-through"
                                " GPU's screen; choose a GPU first")
        if not self.secure_boot and self.vm_type is not VMType.LINUX:
            raise InvalidConfig("secure_boot", f"only a Linux VM boots without Secure Boot"
                                f" ({label} boots with it: Windows 11 needs it)")
        if self.cloud_image_path is not None and self.vm_type is not VMType.LINUX:
            raise InvalidConfig("cloud_image_path", "a cloud image is for a Linux VM")
        if self.unattended is not None:
            self._validate_unattended()
        seen: set[tuple] = set()
        for usb in self.usb_devices:
            key = (usb.vendor_id, usb.product_id, usb.bus, usb.port)
            if key in seen:
                raise InvalidConfig("usb_devices",
                                    f"{usb.vendor_id}:{usb.product_id} is listed twice")
            seen.add(key)

    def _validate_unattended(self) -> None:
        setup = self.unattended
        if self.vm_type is VMType.LINUX:
            check_linux_user(setup.user)
            if self.cloud_image_path is None:
                raise InvalidConfig("cloud_image_path", "unattended Linux setup starts from a"
                                    " cloud image (cloud-init): give it")
            windows_only = [name for name in ("edition", "lg_host_installer", "lg_host_release",
                                              "winfsp_installer", "gpu_driver_installer")
                            if getattr(setup, name) is not None]
            if windows_only or setup.bypass_hardware_checks:
                name = (windows_only or ["bypass_hardware_checks"])[0]
                raise InvalidConfig(f"unattended.{name}", "goes with a Windows template")
            return
        if self.vm_type not in (VMType.WINDOWS11, VMType.WINDOWS10):
            raise InvalidConfig("unattended", f"unattended setup is for Windows and Linux;"
                                f" {self.vm_type.label} is not (yet)")
        check_account_name(setup.user)
        if setup.ssh_key_path is not None:
            raise InvalidConfig("unattended.ssh_key_path", "goes with a Linux cloud image")
        if self.iso_path is None:
            raise InvalidConfig("iso_path", "unattended setup needs the Windows installer ISO")
        if self.virtio_iso_path is None:
            raise InvalidConfig("virtio_iso_path", "unattended setup needs the virtio-win ISO:"
                                " setup loads its disk and network drivers, and installs the"
                                " guest tools from it")
        if setup.edition is None:
            setup.edition = DEFAULT_EDITION[self.vm_type.value]
        if setup.lg_host_release is not None and setup.lg_host_installer is None:
            raise InvalidConfig("unattended.lg_host_release", "goes with --lg-host-installer")
        if setup.lg_host_installer is not None and not self.looking_glass.enabled:
            raise InvalidConfig("unattended.lg_host_installer", "the Looking Glass host goes"
                                " with --looking-glass")

    @staticmethod
    def defaults_within(vm_type: Any, host: HostResources | None) -> tuple[int, int]:
        """The system's default memory (MiB) and vCPUs, within this host: a quarter of its
        memory (whole GiB) left to it and no more vCPUs than its CPUs, never below the
        system's minimum. What the CLI and the wizard fill in when nothing is given."""
        kind = parse_enum(VMType, vm_type, "vm_type")
        default, least = DEFAULTS[kind], MINIMUMS[kind]
        memory, vcpus = default.memory_mb, default.vcpus
        if host is not None and host.memory_mb:
            memory = max(least.memory_mb, min(memory, host.memory_mb * 3 // 4 // 1024 * 1024))
        if host is not None and host.cpus:
            vcpus = max(least.vcpus, min(vcpus, host.cpus))
        return memory, vcpus

    def check_host_limits(self, host: HostResources, force: bool = False,
                          which: tuple[str, ...] = ("memory_mb", "vcpus")) -> None:
        """Refuse more memory or vCPUs than the host has, unless ``force``; ``which``: the
        fields to check (a change checks only what it changes)."""
        if force:
            return
        if "memory_mb" in which and self.memory_mb > host.memory_mb:
            raise InvalidConfig(
                "memory_mb",
                f"{self.memory_mb} MiB is more than the host has ({host.memory_mb} MiB);"
                " give less, or allow it with --force",
            )
        if "vcpus" in which and self.vcpus > host.cpus:
            raise InvalidConfig(
                "vcpus",
                f"{self.vcpus} is more than the host's {host.cpus} CPUs; give fewer, or allow"
                " it with --force",
            )

    # --- (de)serialization: plain JSON types only ----------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types; ``display_mode`` is left out (``looking_glass`` says it)."""
        data = _to_plain(self)
        data.pop("display_mode", None)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> VMConfig:
        return _from_mapping(cls, data, "")


def _check_range(field_name: str, value: int, low: int, high: int, unit: str, label: str,
                 gib: bool = False) -> None:
    def of(count: int) -> str:  # "1 vCPU", "2 vCPUs"; MiB stays MiB
        return f"{count} {unit[:-1] if unit.endswith('s') and count == 1 else unit}"

    if value < low:
        extra = f" ({low // 1024} GiB)" if gib and low >= 1024 else ""
        raise InvalidConfig(
            field_name, f"{of(value)} is below the minimum for {label}: {of(low)}{extra}"
        )
    if value > high:
        raise InvalidConfig(field_name, f"{of(value)} is above the maximum of {of(high)}")


def _to_plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, list):
        return [_to_plain(item) for item in value]
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _to_plain(getattr(value, f.name)) for f in fields(value)}
    return value


def _from_mapping(cls: type, data: Any, prefix: str) -> Any:
    where = prefix or "config"
    if not isinstance(data, dict):
        raise InvalidConfig(where, f"expected an object with settings, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    for key in data:
        if key not in known:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise InvalidConfig(full, f"unknown setting; allowed: {', '.join(sorted(known))}")
    if "name" in known and cls is VMConfig and "name" not in data:
        raise InvalidConfig("name", "missing; every VM needs a name")
    try:
        return cls(**data)
    except TypeError as error:  # a required field is missing
        raise InvalidConfig(where, f"incomplete settings: {error}") from None
