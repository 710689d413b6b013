"""Create a VM from a ``VMConfig``: a transaction that leaves nothing behind on failure.

Steps: check (host facts read once, then a pure plan, ``planning.plan_creation``: nothing
is touched) -> disk (``qemu-img create``, never over an existing file) -> render (Jinja2 template, autoescaped) -> validate (libvirt's RNG schema and our
rules) -> define (``VIR_DOMAIN_DEFINE_VALIDATE``) -> save settings. A failure undoes every
step before it (domain undefined, disk removed) and raises ``VMCreationError`` naming the
step. Template values come from the validated config, never from raw strings.

    creator = VMCreator(get_connection())
    plan = creator.plan(config)          # what would happen; changes nothing
    result = creator.create(config)      # does it
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import libvirt

from . import guard
from .connection import LibvirtConnection, get_connection
from .errors import VMCreationError, VMManagerError
from .host_facts import HostFacts, gather_host_facts
from .planning import CreationPlan, DiskPlan, plan_creation
from .store import VMStore, private_folder
from .vm_config import VMConfig
from .log import get_logger

log = get_logger(__name__)


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

    def gather(self, config: VMConfig | None = None, *, pci: bool | None = None) -> HostFacts:
        """Read the host facts planning ``config`` needs (the only I/O of a plan)."""
        return gather_host_facts(self.connection, config, images=self._images_dir,
                                 host_root=self.host_root, qemu_img=self.qemu_img, pci=pci)

    def plan(self, config: VMConfig, *, force: bool = False, template: str | None = None,
             facts: HostFacts | None = None, existing: bool = False,
             vm_uuid: str | None = None) -> CreationPlan:
        """Check everything and compute the plan (``planning.plan_creation`` on facts read
        once, or the ``facts`` given). Raises ``InvalidConfig`` (bad input, a missing file,
        a name in use) before anything is touched. ``existing``: plan a new definition for
        a VM that exists (``reconfigure``): its disk is reused, never made."""
        facts = facts or self.gather(config)
        plan = plan_creation(config, facts, template=template, force=force, existing=existing,
                             vm_uuid=vm_uuid)
        self.loader.find(plan.template)  # a missing template is an input error, found now
        return plan

    def render(self, plan: CreationPlan) -> str:
        return self.loader.render(plan.template, plan.context.as_mapping())

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
        plan = self.plan(config, force=force, existing=True, vm_uuid=vm_uuid)
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
        private_folder(path.parent, 0o711)  # as libvirt's own images folder: QEMU may pass
        # O_EXCL claims the name first, so an existing file is never overwritten (qemu-img
        # create itself would overwrite it).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        guard.check("qemu-img")
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
