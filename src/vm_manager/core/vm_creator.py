"""Create a VM from a ``VMConfig``: a transaction that leaves nothing behind on failure.

Steps: check (nothing is touched) -> disk (``qemu-img create``, never over an existing
file) -> render (Jinja2 template, autoescaped) -> validate (libvirt's RNG schema and our
rules) -> define (``VIR_DOMAIN_DEFINE_VALIDATE``) -> save settings. A failure undoes every
step before it (domain undefined, disk removed) and raises ``VMCreationError`` naming the
step. Template values come from the validated config, never from raw strings.

    creator = VMCreator(get_connection())
    plan = creator.plan(config)          # what would happen; changes nothing
    result = creator.create(config)      # does it
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import libvirt

from .connection import LibvirtConnection, get_connection
from .errors import InvalidConfig, VMCreationError, VMManagerError, VMNotFound
from .store import VMStore
from .vm_config import DomainType, HostResources, VMConfig, VMType

log = logging.getLogger(__name__)

SYSTEM_IMAGES_DIR = Path("/var/lib/libvirt/images")

# Hyper-V enlightenments for Windows (DESIGN.md 5), in the order libvirt documents them.
HYPERV_WANTED: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("relaxed", ()),
    ("vapic", ()),
    ("spinlocks", (("retries", "8191"),)),
    ("vpindex", ()),
    ("runtime", ()),
    ("synic", ()),
    ("stimer", ()),
    ("frequencies", ()),
    ("tlbflush", ()),
    ("ipi", ()),
)
HYPERV_FALLBACK = frozenset({"relaxed", "vapic", "spinlocks"})  # safe when caps are unknown
NVIDIA_VENDOR_ID = "NeuronOS"  # Hyper-V vendor_id: at most 12 characters


def images_dir(uri: str, environ: dict | None = None) -> Path:
    """Where new disks go: ``$NEURONOS_IMAGES_DIR``, else libvirt's pool folder for system
    URIs, ``~/.local/share/libvirt/images`` for session URIs."""
    env = os.environ if environ is None else environ
    if env.get("NEURONOS_IMAGES_DIR"):
        return Path(env["NEURONOS_IMAGES_DIR"])
    if uri.rstrip("/").endswith("session") or "/session?" in uri:
        return Path(os.path.expanduser("~")) / ".local" / "share" / "libvirt" / "images"
    return SYSTEM_IMAGES_DIR


@dataclass(frozen=True)
class HostFacts:
    """What the host offers, read once per creation (None: unknown, e.g. test driver)."""

    kvm_usable: bool | None
    hyperv_features: frozenset[str] | None
    resources: HostResources | None


def probe_host(connection: LibvirtConnection) -> HostFacts:
    def caps(conn: libvirt.virConnect, virttype: str) -> str | None:
        try:
            return conn.getDomainCapabilities(None, "x86_64", "q35", virttype, 0)
        except libvirt.libvirtError:
            if not conn.isAlive():
                raise  # a lost connection is not "no KVM": let execute() report it
            return None  # this virt type (or capabilities at all) is not offered

    def read(conn: libvirt.virConnect):
        kvm = caps(conn, "kvm")
        return kvm, kvm or caps(conn, "qemu")

    kvm_caps, any_caps = connection.execute(read, idempotent=True)
    memory_mb, cpus = connection.host_info()
    hyperv = None
    if any_caps:
        root = ET.fromstring(any_caps)
        values = root.findall("features/hyperv/enum[@name='features']/value")
        hyperv = frozenset(value.text for value in values if value.text)
    driver = connection.uri.split(":", 1)[0]
    kvm_usable = None if driver == "test" else kvm_caps is not None
    return HostFacts(kvm_usable, hyperv, HostResources(memory_mb=memory_mb, cpus=cpus))


@dataclass
class DiskPlan:
    path: str
    format: str
    create: bool  # True: made by this creation (removed on failure); False: the user's
    size_gb: int | None = None


@dataclass
class CreationPlan:
    """Everything ``create`` will do, computed without side effects."""

    config: VMConfig
    template: str
    domain_type: str
    uuid: str
    disk: DiskPlan | None
    images_dir: Path
    context: dict[str, Any]
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [
            f"VM {self.config.name!r}: {self.config.vm_type.label}, template {self.template},"
            f" {self.config.memory_mb} MiB, {self.config.vcpus} vCPUs, domain type"
            f" {self.domain_type}",
        ]
        if self.disk is None:
            lines.append("disk: none")
        elif self.disk.create:
            lines.append(f"disk: create {self.disk.path} ({self.disk.size_gb} GiB qcow2, grows"
                         " as used)")
        else:
            lines.append(f"disk: use {self.disk.path} ({self.disk.format}); it is yours, never"
                         " deleted by NeuronOS unless you ask")
        for cdrom in self.context["cdroms"]:
            lines.append(f"cd-rom: {cdrom['path']}")
        network = self.context["network"]
        lines.append(f"network: {network['name']} ({network['model']})" if network else
                     "network: none")
        gpu = self.context["gpu"]
        if gpu:
            functions = ", ".join(_pci_text(f) for f in gpu["functions"])
            lines.append(f"GPU passthrough: {functions}")
        for usb in self.context["usb"]:
            lines.append(f"USB: {usb['vendor_id']}:{usb['product_id']}")
        lg = self.context["looking_glass"]
        if lg:
            lines.append(f"Looking Glass: /dev/shm/{lg['shm_name']} ({lg['size_mb']} MiB)")
        lines.extend(f"warning: {warning}" for warning in self.warnings)
        return lines


@dataclass
class CreationResult:
    name: str
    uuid: str
    template: str
    disk_path: str | None
    disk_created: bool
    settings_path: str
    xml: str

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "xml"}


def _pci_text(function: Any) -> str:
    return f"{function.domain:04x}:{function.bus:02x}:{function.slot:02x}.{function.function:x}"


class VMCreator:
    """Creates VMs on one connection. ``host_root`` points the sysfs readers elsewhere."""

    def __init__(
        self,
        connection: LibvirtConnection | None = None,
        *,
        store: VMStore | None = None,
        loader: Any = None,
        images_dir: Path | str | None = None,
        host_root: Path | str | None = None,
        qemu_img: str = "qemu-img",
    ):
        self._connection = connection
        self.store = store or VMStore()
        self._loader = loader
        self._images_dir = Path(images_dir) if images_dir else None
        self.host_root = host_root
        self.qemu_img = qemu_img

    @property
    def connection(self) -> LibvirtConnection:
        if self._connection is None:  # opened on first use: VMCreator() needs no daemon
            self._connection = get_connection()
        return self._connection

    @property
    def loader(self):
        if self._loader is None:
            from ..templates.loader import TemplateLoader

            self._loader = TemplateLoader()
        return self._loader

    # --- planning (no side effects) ---------------------------------------------------------

    def plan(self, config: VMConfig, *, force: bool = False, template: str | None = None,
             facts: HostFacts | None = None, existing: bool = False) -> CreationPlan:
        """Check everything and compute the plan. Raises ``InvalidConfig`` (bad input, a
        missing file, a name in use) before anything is touched. ``existing``: plan a new
        definition for a VM that exists (``reconfigure``): its disk is reused, never made."""
        from ..templates.loader import template_name

        name = config.name
        if not existing:
            try:
                self.connection.execute(lambda c: self.connection.lookup(c, name))
            except VMNotFound:
                pass
            else:
                raise InvalidConfig("name", f"a VM named {name!r} already exists; pick another"
                                    " name")
        elif config.disk_path is None and config.disk_size_gb:
            raise InvalidConfig("disk_path", f"the saved settings of {name!r} name no disk")
        facts = facts or probe_host(self.connection)
        if facts.resources is not None:
            config.check_host_limits(facts.resources, force=force)
        warnings: list[str] = []
        domain_type = config.domain_type.value
        if config.domain_type is DomainType.KVM and facts.kvm_usable is False:
            domain_type = DomainType.QEMU.value
            warnings.append("KVM is not usable on this host: using software emulation (slow)")
            log.warning("KVM is not usable here; %s will use software emulation", name)

        for field_name in ("iso_path", "virtio_iso_path", "opencore_path", "kernel_path",
                           "initrd_path"):
            path = getattr(config, field_name)
            if path is not None and not Path(path).is_file():
                raise InvalidConfig(field_name, f"{path} does not exist or is not a file")
        gpu = config.gpu_passthrough
        if gpu is not None and gpu.rom_file is not None and not Path(gpu.rom_file).is_file():
            raise InvalidConfig("gpu.rom_file", f"{gpu.rom_file} does not exist")
        if gpu is not None:
            from ..passthrough.gpu_attach import plan_passthrough

            gpu_plan = plan_passthrough(gpu.pci_address, self.host_root,
                                        allow_boot_gpu=gpu.allow_boot_gpu)
            if not gpu_plan.ready:  # never a non-viable group, never the boot GPU unasked
                raise InvalidConfig("gpu.pci_address", f"{gpu.pci_address}: {gpu_plan.refused_reason}")
            warnings.extend(gpu_plan.gpu.warnings)

        folder = self._images_dir or images_dir(self.connection.uri)
        disk = self._plan_disk(config, folder)
        chosen = template or template_name(config.vm_type.value, gpu is not None)
        self.loader.find(chosen)  # a missing template is an input error, found before work
        vm_uuid = str(uuid.uuid4())
        context = self._context(config, chosen, domain_type, vm_uuid, disk, facts)
        return CreationPlan(config, chosen, domain_type, vm_uuid, disk, folder, context, warnings)

    def _plan_disk(self, config: VMConfig, folder: Path) -> DiskPlan | None:
        if config.disk_path is not None:
            path = Path(config.disk_path)
            if not path.is_file() and not path.is_block_device():
                raise InvalidConfig("disk_path", f"{path} does not exist")
            return DiskPlan(str(path), self._image_format(path), create=False)
        if not config.disk_size_gb:
            return None
        path = folder / f"{config.name}.qcow2"  # the name is validated: no "/" or ".."
        if path.exists():
            raise InvalidConfig(
                "name", f"{path} already exists; NeuronOS never overwrites a disk (pick another"
                " name, or pass it as an existing disk)"
            )
        return DiskPlan(str(path), "qcow2", create=True, size_gb=config.disk_size_gb)

    def _image_format(self, path: Path) -> str:
        try:
            out = subprocess.run(
                [self.qemu_img, "info", "-U", "--output=json", str(path)],
                capture_output=True, text=True, check=True, timeout=30,
            ).stdout
            return json.loads(out).get("format", "raw")
        except (OSError, subprocess.SubprocessError, ValueError):
            return "qcow2" if path.suffix == ".qcow2" else "raw"

    def _context(
        self, config: VMConfig, template: str, domain_type: str, vm_uuid: str,
        disk: DiskPlan | None, facts: HostFacts,
    ) -> dict[str, Any]:
        from ..passthrough.ivshmem import shm_name, shm_size_mb
        from ..passthrough.pci import slot_functions

        is_windows = config.vm_type in (VMType.WINDOWS11, VMType.WINDOWS10)
        virtio = config.vm_type is VMType.LINUX or (is_windows and config.virtio_iso_path)
        sata_letters = iter("abcdefghijklmnopqrstuvwxy")
        disk_context = None
        if disk is not None:
            bus = "virtio" if virtio else "sata"
            target = "vda" if virtio else f"sd{next(sata_letters)}"
            boot = None if config.vm_type is VMType.MACOS else 1  # macOS boots via OpenCore
            disk_context = {"path": disk.path, "format": disk.format, "bus": bus,
                            "target": target, "boot_order": boot}
        cdroms = []
        for path, boots in ((config.iso_path, True), (config.virtio_iso_path, False)):
            if path:
                cdroms.append({"path": path, "bus": "sata", "target": f"sd{next(sata_letters)}",
                               "boot_order": (2 if disk_context else 1) if boots else None})
        network = None
        if config.network != "none":
            model = {VMType.LINUX: "virtio", VMType.MACOS: "vmxnet3"}.get(
                config.vm_type, "virtio" if virtio else "e1000e"
            )
            network = {"name": config.network, "model": model}
        hyperv = []
        if is_windows:
            available = facts.hyperv_features if facts.hyperv_features is not None else None
            chosen = {n for n, _ in HYPERV_WANTED if (available is None and n in HYPERV_FALLBACK)
                      or (available is not None and n in available)}
            # dependencies (QEMU): synic needs vpindex, stimer needs synic
            if "vpindex" not in chosen:
                chosen.discard("synic")
            if "synic" not in chosen:
                chosen.discard("stimer")
            hyperv = [{"name": n, "attrs": attrs} for n, attrs in HYPERV_WANTED if n in chosen]
            gpu_cfg = config.gpu_passthrough
            vendor_ok = available is None or "vendor_id" in available
            if gpu_cfg is not None and gpu_cfg.nvidia_compat and vendor_ok:
                hyperv.append({"name": "vendor_id", "attrs": (("value", NVIDIA_VENDOR_ID),)})
        gpu = None
        if config.gpu_passthrough is not None:
            functions = slot_functions(config.gpu_passthrough.pci_address, self.host_root)
            gpu = {"functions": functions, "rom_file": config.gpu_passthrough.rom_file,
                   "nvidia_compat": config.gpu_passthrough.nvidia_compat}
        looking_glass = None
        if config.looking_glass.enabled:
            lg = config.looking_glass
            size = lg.shm_size_mb or shm_size_mb(lg.width, lg.height, lg.hdr)
            looking_glass = {"shm_name": shm_name(config.name), "size_mb": size}
        kernel = None
        if config.kernel_path:
            kernel = {"path": config.kernel_path, "initrd": config.initrd_path,
                      "cmdline": config.kernel_cmdline}
        opencore = config.opencore_path
        return {
            "name": config.name,
            "uuid": vm_uuid,
            "title": f"{config.vm_type.label} (NeuronOS)",
            "vm_type": config.vm_type.value,
            "template": template,
            "memory_mb": config.memory_mb,
            "vcpus": config.vcpus,
            "domain_type": domain_type,
            "cpu_mode": "host-passthrough" if domain_type == "kvm" else "maximum",
            "disk": disk_context,
            "cdroms": cdroms,
            "network": network,
            "video_model": {VMType.LINUX: "virtio", VMType.MACOS: "vga"}.get(
                config.vm_type, "qxl"),
            "hyperv": hyperv,
            "kernel": kernel,
            "serial_log": config.serial_log_path,
            "opencore_path": opencore,
            "opencore_format": "qcow2" if opencore and opencore.endswith(".qcow2") else "raw",
            "usb": [
                {"vendor_id": usb.vendor_id, "product_id": usb.product_id, "bus": None,
                 "device": None}
                for usb in config.usb_devices
            ],
            "gpu": gpu,
            "looking_glass": looking_glass,
        }

    def render(self, plan: CreationPlan) -> str:
        return self.loader.render(plan.template, plan.context)

    def print_xml(self, config: VMConfig, *, force: bool = False,
                  template: str | None = None) -> str:
        """The XML ``create`` would define, validated; changes nothing."""
        from ..templates.validator import validate_xml

        xml = self.render(self.plan(config, force=force, template=template))
        validate_xml(xml)
        return xml

    # --- the transaction ------------------------------------------------------------------

    def create(self, config: VMConfig, *, force: bool = False, template: str | None = None,
               progress: Callable[[str], None] | None = None,
               plan: CreationPlan | None = None) -> CreationResult:
        """Create the VM. ``progress(step)`` is told each step as it starts. ``plan``: one
        this creator just made for ``config`` (shown to the user first), so the checks do
        not run twice."""
        from ..templates.validator import validate_xml

        undo: list[tuple[str, Callable[[], None]]] = []
        step = "check"

        def enter(name: str) -> None:
            nonlocal step
            step = name
            if progress is not None:
                progress(name)
            log.debug("create %s: %s", config.name, name)

        enter("check")
        if plan is None or plan.config is not config:
            plan = self.plan(config, force=force, template=template)  # InvalidConfig: no harm
        try:
            enter("disk")
            if plan.disk is not None and plan.disk.create:
                self._create_disk(plan.disk)
                undo.append(("remove disk", lambda: _unlink(plan.disk.path)))
            enter("render")
            xml = self.render(plan)
            enter("validate")
            validate_xml(xml)
            enter("define")
            self._define(xml)
            undo.append(("undefine", lambda: self._undefine(config.name)))
            enter("save settings")
            saved = config.to_dict()
            if plan.disk is not None:
                saved["disk_path"] = plan.disk.path
                saved["disk_size_gb"] = None if not plan.disk.create else plan.disk.size_gb
            settings_path = self.store.save(VMConfig.from_dict(saved))
        except BaseException as error:
            self._rollback(config.name, undo)
            if isinstance(error, VMCreationError) and getattr(error, "step", None):
                raise
            if isinstance(error, (VMManagerError, OSError, subprocess.SubprocessError)):
                raise VMCreationError(
                    f"creating {config.name!r} failed at step '{step}': {error}"
                    " (everything done before it was undone)",
                    step=step,
                ) from error
            raise
        log.info("created VM %s (%s)", config.name, plan.template)
        return CreationResult(
            name=config.name, uuid=plan.uuid, template=plan.template,
            disk_path=plan.disk.path if plan.disk else None,
            disk_created=bool(plan.disk and plan.disk.create),
            settings_path=str(settings_path), xml=xml,
        )

    def reconfigure(self, config: VMConfig, *, force: bool = False) -> CreationResult:
        """Rewrite a stopped VM's definition from ``config`` (memory, vCPUs, GPU, USB,
        Looking Glass...), keeping its UUID and disk, then save the settings. If saving
        fails, the old definition is put back."""
        from ..templates.validator import validate_xml
        from .errors import LifecycleError

        name = config.name

        def read(conn: libvirt.virConnect):
            dom = self.connection.lookup(conn, name)
            return (dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), dom.UUIDString(),
                    bool(dom.isActive()))

        old_xml, vm_uuid, active = self.connection.execute(read)
        if active:
            raise LifecycleError(f"{name!r} is running: stop it before changing its settings")
        plan = self.plan(config, force=force, existing=True)
        plan.uuid = plan.context["uuid"] = vm_uuid
        xml = self.render(plan)
        validate_xml(xml)
        self._define(xml)
        try:
            settings_path = self.store.save(config)
        except BaseException:
            self._define(old_xml)  # same UUID: libvirt replaces it back
            raise
        return CreationResult(name, vm_uuid, plan.template, config.disk_path, False,
                              str(settings_path), xml)

    def _create_disk(self, disk: DiskPlan) -> None:
        path = Path(disk.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL claims the name first, so an existing file is never overwritten (qemu-img
        # create itself would overwrite it).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        try:
            subprocess.run(
                [self.qemu_img, "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on",
                 str(path), f"{disk.size_gb}G"],
                capture_output=True, text=True, check=True, timeout=120,
            )
        except subprocess.CalledProcessError as error:
            _unlink(str(path))
            raise VMCreationError(
                f"qemu-img could not create {path}: {error.stderr.strip() or error}"
            ) from None
        except BaseException:
            _unlink(str(path))
            raise

    def _define(self, xml: str) -> None:
        self.connection.execute(
            lambda c: c.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        )

    def _undefine(self, name: str) -> None:
        def undefine(conn: libvirt.virConnect) -> None:
            dom = conn.lookupByName(name)
            try:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                                  | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                dom.undefine()  # the test driver refuses the NVRAM flag

        self.connection.execute(undefine)

    @staticmethod
    def _rollback(name: str, undo: list[tuple[str, Callable[[], None]]]) -> None:
        for label, action in reversed(undo):
            try:
                action()
                log.info("rolled back %s: %s", name, label)
            except Exception as error:  # report, and keep undoing the rest
                log.error("could not undo '%s' for %s: %s", label, name, error)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
