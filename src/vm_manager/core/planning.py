"""What creating (or redefining) a VM will do, decided from the config and the host facts
alone: ``plan_creation(config, facts)`` reads no file, runs no program and calls no libvirt.

The result is a ``CreationPlan`` holding a typed ``TemplateContext``: the values the domain
templates see, each one derived from the validated config and the facts in one place.
``InvalidConfig`` (naming the field) is raised for anything the host cannot do: a name in
use, a missing ISO, a GPU whose IOMMU group is not viable, more memory than the host has.
"""

from __future__ import annotations

import uuid as uuid_module
import posixpath
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..passthrough.gpu_attach import plan_passthrough_in
from ..passthrough.ivshmem import shm_name, shm_size_mb
from ..templates.names import template_name
from .disks import DiskPlan, image_format, plan_disk, regular_file
from ..base.errors import InvalidConfig
from ..base.primitives import plural
from .host import INPUT_FILES
from .firmware import check_firmware, secure_boot
from .host_facts import HostFacts
from .hyperv import HypervFeature, hyperv_features
from .cpu_plan import CPUPlan, check_hugepages, cpu_for
from .setup_plan import SetupPlan, ShareSpec, plan_setup, plan_shares  # noqa: F401
from ..base.vm_config import DomainType, PCIAddress, VMConfig, VMType
from ..base.log import get_logger

log = get_logger(__name__)



# --- the values the templates see -----------------------------------------------------------

@dataclass(frozen=True)
class DiskSpec:
    path: str
    format: str
    bus: str
    target: str
    boot_order: int | None
    type: str = "file"  # "block" for a whole device


@dataclass(frozen=True)
class CDROMSpec:
    path: str
    bus: str
    target: str
    boot_order: int | None


@dataclass(frozen=True)
class NetworkSpec:
    name: str
    model: str


@dataclass(frozen=True)
class KernelSpec:
    path: str
    initrd: str | None
    cmdline: str | None


@dataclass(frozen=True)
class USBSpec:
    vendor_id: str
    product_id: str
    bus: int | None = None  # with device: that exact plugged-in device
    device: int | None = None


@dataclass(frozen=True)
class GPUSpec:
    functions: tuple[PCIAddress, ...]  # every function of the card's slot
    rom_file: str | None
    nvidia_compat: bool


@dataclass(frozen=True)
class LookingGlassSpec:
    shm_name: str
    size_mb: int


@dataclass(frozen=True)
class SetupSpec:
    """An unattended setup, recorded in the domain's metadata at stage "created"."""

    kind: str  # windows, cloud-init
    medium: str
    looking_glass: bool
    stage: str = "created"
    steps: tuple[tuple[str, str, str], ...] = ()  # (stage, ISO time, note)
    timeout_s: int | None = None  # create --stage-timeout: every stage's deadline


@dataclass(frozen=True)
class TemplateContext:
    """Every variable of the domain templates (user templates may use all of them)."""

    name: str
    uuid: str
    title: str
    vm_type: str
    template: str
    memory_mb: int
    vcpus: int
    domain_type: str
    cpu_mode: str
    disk: DiskSpec | None
    cdroms: tuple[CDROMSpec, ...]
    network: NetworkSpec | None
    video_model: str
    hyperv: tuple[HypervFeature, ...]
    kernel: KernelSpec | None
    serial_log: str | None
    opencore_path: str | None
    opencore_format: str | None  # the OpenCore image's own format (qemu-img), with its path
    usb: tuple[USBSpec, ...]
    gpu: GPUSpec | None
    looking_glass: LookingGlassSpec | None
    setup: SetupSpec | None = None
    seed: DiskSpec | None = None  # a cloud-init seed, a read-only virtio disk
    shares: tuple[ShareSpec, ...] = ()  # virtiofs folders (memory backing: shared memfd)
    secure_boot: bool = True  # False: UEFI without Secure Boot (Linux images without shim)
    cpu: CPUPlan | None = None  # topology and pinning (None: one socket of single cores)
    hugepages_kib: int | None = None  # the guest's memory in huge pages of this size

    def as_mapping(self) -> dict[str, Any]:
        """The template variables (nested values stay typed objects)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class CreationPlan:
    """Everything ``create`` will do, computed without side effects."""

    config: VMConfig
    template: str
    domain_type: str
    uuid: str
    disk: DiskPlan | None
    images_dir: Path
    context: TemplateContext
    warnings: list[str] = field(default_factory=list)
    setup: SetupPlan | None = None  # an unattended setup's medium and notes

    def describe(self) -> list[str]:
        ctx = self.context
        lines = [
            f"VM {self.config.name!r}: {self.config.vm_type.label}, template {self.template},"
            f" {self.config.memory_mb} MiB, {plural(self.config.vcpus, 'vCPU')}, domain type"
            f" {self.domain_type}",
        ]
        if self.disk is None:
            lines.append("disk: none")
        elif self.disk.create and self.disk.backing:
            lines.append(f"disk: create {self.disk.path} ({self.disk.size_gb} GiB qcow2) on"
                         f" {self.disk.backing}, which is never written")
        elif self.disk.create:
            lines.append(f"disk: create {self.disk.path} ({self.disk.size_gb} GiB qcow2, grows"
                         " as used)")
        else:
            lines.append(f"disk: use {self.disk.path} ({self.disk.format}); it is yours, never"
                         " deleted by NeuronOS unless you ask")
        lines.extend(f"cd-rom: {cdrom.path}" for cdrom in ctx.cdroms)
        lines.append(f"network: {ctx.network.name} ({ctx.network.model})" if ctx.network else
                     "network: none")
        if ctx.gpu:
            lines.append(f"GPU passthrough: {', '.join(str(f) for f in ctx.gpu.functions)}")
        if ctx.hugepages_kib:
            lines.append(f"memory: in huge pages of {ctx.hugepages_kib // 1024} MiB (taken at"
                         " each start)")
        if ctx.cpu and ctx.cpu.pinned:
            lines.append(f"CPU: vCPUs on host CPUs {ctx.cpu.host_cpus}, QEMU's own threads on"
                         f" {ctx.cpu.emulator_cpus} (`neuron-vm tune` says why)")
        lines.extend(f"USB: {usb.vendor_id}:{usb.product_id}" for usb in ctx.usb)
        lines.extend(f"shared folder: {share.source} as {share.tag!r} (virtiofs"
                     f"{', read-only' if share.readonly else ''})" for share in ctx.shares)
        if ctx.looking_glass:
            lines.append(f"Looking Glass: /dev/shm/{ctx.looking_glass.shm_name}"
                         f" ({ctx.looking_glass.size_mb} MiB)")
        if self.setup:
            lines.extend(self.setup.describe())
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return lines


# --- the plan -------------------------------------------------------------------------------

def plan_creation(config: VMConfig, facts: HostFacts, *, template: str | None = None,
                  force: bool = False, existing: bool = False, vm_uuid: str | None = None,
                  usb_later: bool = False, previous: VMConfig | None = None,
                  lenient: bool = False, product_key: str | None = None) -> CreationPlan:
    """Check everything and compute the plan. ``existing``: a new definition for a VM that
    exists (reconfigure): its name is taken by itself, its disk is reused, never made, and
    the disk's format is the one its definition (``facts.definition``) names; the files of
    ``previous`` (its settings before the change) that did not change are not checked
    again. ``lenient``: the plan of what a VM's saved settings made, to compare a change
    with; nothing the host must provide is checked (a GPU or file gone since stays in it).
    Raises ``InvalidConfig`` before anything is touched."""
    name = config.name
    if not existing and name in facts.domain_names:
        raise InvalidConfig("name", f"a VM named {name!r} already exists; pick another name")
    if not existing and config.cloud_image_path and config.disk_path:
        raise InvalidConfig("cloud_image_path", "a cloud image is the base of a new disk: not"
                            " with an existing one (--disk)")
    if existing and config.disk_path is None and config.disk_size_gb:
        raise InvalidConfig("disk_path", f"the saved settings of {name!r} name no disk")

    def changed(field_name: str) -> bool:  # checked again: new, or changed by this change
        return not lenient and (previous is None or getattr(config, field_name)
                                != getattr(previous, field_name))

    if facts.resources is not None:
        config.check_host_limits(facts.resources, force=force, which=tuple(
            name for name in ("memory_mb", "vcpus") if changed(name)))
    warnings: list[str] = []
    domain_type = config.domain_type.value
    if config.domain_type is DomainType.KVM and facts.kvm_usable is False:
        if existing and changed("domain_type"):  # asked for: never silently left as it was
            raise InvalidConfig("domain_type", f"KVM cannot run VMs on this host"
                                f" ({facts.kvm_problem or 'no KVM'}): keep software emulation")
        domain_type = DomainType.QEMU.value
        warnings.append(f"KVM cannot run VMs on this host ({facts.kvm_problem or 'no KVM'}):"
                        " this VM uses software emulation (slow)")
    if facts.uri.startswith("test:") and not existing:
        warnings.append("libvirt's test driver keeps this VM only while this connection is"
                        " open; the disk, setup medium and settings it makes are real files"
                        f" in {facts.images_dir} and your settings folder, left behind")

    for field_name in INPUT_FILES:
        path = getattr(config, field_name)
        if path is not None and changed(field_name):
            regular_file(field_name, path, facts.path(path))
    if config.serial_log_path is not None and changed("serial_log_path"):
        _serial_log(config.serial_log_path, facts.path(config.serial_log_path))
    absent = [f"{u.vendor_id}:{u.product_id}" for u in config.usb_devices
              if facts.usb_present is not None
              and (u.vendor_id, u.product_id) not in facts.usb_present]
    if absent and not (usb_later or existing):
        raise InvalidConfig("usb_devices", f"{', '.join(absent)} is not plugged in; plug it in,"
                            " or say it will be plugged later (--usb-later)")
    if absent:
        warnings.append(f"USB {', '.join(absent)} is not plugged in now: the VM starts"
                        " without it and gets it when it is")
    if (config.network != "none" and facts.networks is not None and changed("network")
            and config.network not in facts.networks):
        known = ", ".join(sorted(facts.networks)) or "none at all"
        raise InvalidConfig("network", f"there is no libvirt network {config.network!r} on"
                            f" this host (there are: {known}); or use none")
    if changed("network") and config.network in (facts.networks_stopped or ()):
        warnings.append(f"the network {config.network!r} is not running: {name} cannot start"
                        f" until it is (sudo virsh net-start {config.network}), or use none")
    check_firmware(config, facts, warnings)
    gpu = _plan_gpu(config, facts, warnings) if changed("gpu_passthrough") else \
        _gpu_as_made(config, facts)
    shares = plan_shares(config, facts, warnings) if changed("shares") else \
        _shares_as_made(config, facts)
    disk = plan_disk(config, facts, existing=existing, lenient=lenient)
    opencore_format = config.opencore_path and image_format(  # never from its name
        "opencore_path", config.opencore_path, facts, existing)
    setup = None if existing else plan_setup(config, facts, warnings, product_key)
    chosen = template or template_name(config.vm_type.value, gpu is not None)
    vm_uuid = vm_uuid or str(uuid_module.uuid4())
    context = replace(_context(config, chosen, domain_type, vm_uuid, disk, facts, gpu, setup),
                      shares=shares, opencore_format=opencore_format or None)
    if config.tune.pins(gpu is not None) and context.cpu.problem:
        warnings.append(f"the vCPUs are not pinned: {context.cpu.problem}")
    context = replace(context, hugepages_kib=check_hugepages(config, facts, context.cpu.node,
                                                             warnings))
    return CreationPlan(config, chosen, domain_type, vm_uuid, disk, facts.images_dir, context,
                        warnings, setup)


def _serial_log(path: str, fact) -> None:
    """A regular file to append to, or a new one in a folder that exists and may be
    written; never a device (the guest console would be written onto it)."""
    if posixpath.normpath(path).startswith(("/proc/", "/sys/", "/dev/")):  # as given: a
        fact = replace(fact, pseudo=True)  # /proc/self/fd/1 resolves to an ordinary file
    elif fact.unreadable:
        raise InvalidConfig("serial_log_path", f"{path}: {fact.unreadable}; give a file of"
                            " yours")
    if not fact.pseudo and (fact.kind == "file" or (fact.kind == "missing"
                                                    and fact.parent_writable)):
        return
    if fact.pseudo or fact.kind in ("block", "other"):
        why = "is a device or lies in /proc, /sys or /dev"
    elif fact.kind == "missing":
        why = "cannot be made: its folder is missing or not writable"
    else:
        why = "is a folder"
    raise InvalidConfig("serial_log_path", f"{path} {why}; give a file (existing or new)")


def _plan_gpu(config: VMConfig, facts: HostFacts, warnings: list[str]) -> GPUSpec | None:
    gpu = config.gpu_passthrough
    if gpu is None:
        return None
    if gpu.rom_file is not None:
        regular_file("gpu.rom_file", gpu.rom_file, facts.path(gpu.rom_file))
    if facts.pci is None:
        raise InvalidConfig("gpu.pci_address", "the host's PCI devices were not read")
    passthrough = plan_passthrough_in(facts.pci, gpu.pci_address,
                                      allow_boot_gpu=gpu.allow_boot_gpu)
    if not passthrough.ready:  # never a non-viable group, never the boot GPU unasked
        raise InvalidConfig("gpu.pci_address",
                            f"{gpu.pci_address}: {passthrough.refused_reason}")
    warnings.extend(passthrough.gpu.warnings)
    functions = tuple(function.address for function in passthrough.gpu.functions)
    return GPUSpec(functions, gpu.rom_file, gpu.nvidia_compat)


def _gpu_as_made(config: VMConfig, facts: HostFacts) -> GPUSpec | None:
    """The GPU of saved settings as its definition was made: every function of its card
    (from the host, else from the definition's hostdevs on that slot), nothing checked."""
    gpu = config.gpu_passthrough
    if gpu is None:
        return None
    functions: tuple[PCIAddress, ...] = ()
    if facts.pci is not None:
        try:
            functions = tuple(f.address for f in
                              plan_passthrough_in(facts.pci, gpu.pci_address).gpu.functions)
        except InvalidConfig:
            functions = ()  # the card is gone from the host
    if not functions and facts.definition is not None:
        slot = gpu.address.slot_address
        functions = tuple(address for address in (
            _parse_address(hostdev.address) for hostdev in facts.definition.pci_hostdevs)
            if address is not None and address.slot_address == slot)
    return GPUSpec(functions or (gpu.address,), gpu.rom_file,
                   gpu.nvidia_compat)


def _parse_address(text: str | None) -> PCIAddress | None:
    try:
        return PCIAddress.parse(text) if text else None
    except InvalidConfig:
        return None


def _shares_as_made(config: VMConfig, facts: HostFacts) -> tuple[ShareSpec, ...]:
    return tuple(ShareSpec((facts.path(share.path).real or share.path).rstrip("/") or "/",
                           share.tag, share.readonly) for share in config.shares)


def cpu_mode(domain_type: str) -> str:
    return "host-passthrough" if domain_type == "kvm" else "maximum"


def as_defined(plan: CreationPlan, domain_type: str) -> CreationPlan:
    """``plan`` rendering ``domain_type`` (what a VM's definition has, whatever the host
    can do now: a change of speed is then a change of its definition)."""
    return replace(plan, domain_type=domain_type, context=replace(
        plan.context, domain_type=domain_type, cpu_mode=cpu_mode(domain_type)))


def _context(config: VMConfig, template: str, domain_type: str, vm_uuid: str,
             disk: DiskPlan | None, facts: HostFacts, gpu: GPUSpec | None,
             setup: SetupPlan | None = None) -> TemplateContext:
    is_windows = config.vm_type in (VMType.WINDOWS11, VMType.WINDOWS10)
    virtio = config.vm_type is VMType.LINUX or bool(is_windows and config.virtio_iso_path)
    sata_letters = iter("abcdefghijklmnopqrstuvwxy")
    disk_spec = None
    if disk is not None:
        disk_spec = DiskSpec(
            disk.path, disk.format, "virtio" if virtio else "sata",
            "vda" if virtio else f"sd{next(sata_letters)}",
            None if config.vm_type is VMType.MACOS else 1,  # macOS boots via OpenCore
            "block" if disk.device else "file",
        )
    cdroms = []
    windows_medium = setup.medium if setup and setup.kind == "windows" else None
    for path, boots in ((config.iso_path, True), (config.virtio_iso_path, False),
                        (windows_medium, False)):
        if path:
            cdroms.append(CDROMSpec(path, "sata", f"sd{next(sata_letters)}",
                                    (2 if disk_spec else 1) if boots else None))
    network = None
    if config.network != "none":
        model = {VMType.LINUX: "virtio", VMType.MACOS: "vmxnet3"}.get(
            config.vm_type, "virtio" if virtio else "e1000e")
        network = NetworkSpec(config.network, model)
    looking_glass = None
    if config.looking_glass.enabled:
        lg = config.looking_glass
        looking_glass = LookingGlassSpec(shm_name(config.name),
                                         lg.shm_size_mb or shm_size_mb(lg.width, lg.height,
                                                                       lg.hdr))
    kernel = None
    if config.kernel_path:
        kernel = KernelSpec(config.kernel_path, config.initrd_path, config.kernel_cmdline)
    opencore = config.opencore_path
    return TemplateContext(
        name=config.name, uuid=vm_uuid, template=template, vm_type=config.vm_type.value,
        title=f"{config.name} ({config.vm_type.label}, NeuronOS)",  # viewers' window title
        memory_mb=config.memory_mb, vcpus=config.vcpus,
        domain_type=domain_type, cpu_mode=cpu_mode(domain_type),
        disk=disk_spec,
        cdroms=tuple(cdroms),
        network=network,
        video_model={VMType.LINUX: "virtio", VMType.MACOS: "vga"}.get(config.vm_type, "qxl"),
        hyperv=hyperv_features(config, facts.hyperv_features),
        kernel=kernel,
        serial_log=config.serial_log_path,
        opencore_path=opencore,
        opencore_format=None,  # plan_creation reads it from the image
        usb=tuple(USBSpec(usb.vendor_id, usb.product_id) for usb in config.usb_devices),
        gpu=gpu,
        looking_glass=looking_glass,
        setup=SetupSpec(setup.kind, setup.medium, looking_glass is not None and (
            setup.kind != "windows" or setup.looking_glass_host),  # no host: no stage
            timeout_s=config.unattended.stage_timeout_s if config.unattended else None)
        if setup else None,
        seed=DiskSpec(setup.medium, "raw", "virtio", "vdb", None)  # an ISO NeuronOS writes
        if setup and setup.kind == "cloud-init" else None,
        secure_boot=secure_boot(config),
        cpu=cpu_for(config, facts),
    )
