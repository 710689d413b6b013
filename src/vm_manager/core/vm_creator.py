"""Create a VM from a ``VMConfig``: a transaction that leaves nothing behind on failure.

Steps: check (host facts read once, then a pure plan, ``planning.plan_creation``: nothing
is touched) -> disk (a qcow2 volume of the images folder's storage pool, made by libvirt
on the VM's host: ``core.storage``; never over an existing file) -> render (Jinja2
template, autoescaped) -> validate (libvirt's RNG schema and our rules) -> define (``VIR_DOMAIN_DEFINE_VALIDATE``) -> save settings. A failure undoes every
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

from ..base import guard
from ..base.connection import LibvirtConnection, get_connection
from ..base.domain_merge import disks_on_iothread
from ..base.errors import (
    InvalidConfig,
    OperationFailed,
    VMCreationError,
    VMManagerError,
)
from .host_facts import HostFacts, gather_host_facts
from .planning import CreationPlan, DiskPlan, plan_creation
from ..base.store import VMStore, private_folder
from ..base.vm_config import VMConfig
from ..base.log import get_logger

log = get_logger(__name__)
ROLLBACK_WAIT_S = 30.0  # how long an undo waits for a daemon that went away


@dataclass
class CreationResult:
    name: str
    uuid: str
    template: str
    disk_path: str | None
    disk_created: bool
    settings_path: str
    xml: str
    running: bool = False  # reconfigured while it runs: the change shows at its next start
    changes: tuple[str, ...] = ()  # reconfigure: what changed in the definition, in words
    warnings: tuple[str, ...] = ()  # reconfigure: what the change brings (a device unplugged)
    saved: bool = True  # reconfigure: the settings changed (with or without ``changes``)

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in self.__dict__.items() if key != "xml"}


class VMCreator:
    """Creates VMs on one connection. ``host_root`` points the sysfs readers elsewhere."""

    rollback_wait_s = ROLLBACK_WAIT_S  # how long an undo waits for a daemon that went away

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
        self.store = store or (VMStore.for_uri(connection.uri) if connection is not None
                               else VMStore())  # a remote host's settings in its own folder
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

    def gather(self, config: VMConfig | None = None, *, pci: bool | None = None,
               previous: VMConfig | None = None) -> HostFacts:
        """Read the host facts planning ``config`` needs (the only I/O of a plan);
        ``previous``: a VM's settings before a change, whose files are read too."""
        return gather_host_facts(self.connection, config, images=self._images_dir,
                                 host_root=self.host_root, qemu_img=self.qemu_img, pci=pci,
                                 previous=previous)

    def plan(self, config: VMConfig, *, force: bool = False, template: str | None = None,
             facts: HostFacts | None = None, existing: bool = False,
             vm_uuid: str | None = None, usb_later: bool = False,
             previous: VMConfig | None = None, lenient: bool = False,
             product_key: str | None = None) -> CreationPlan:
        """Check everything and compute the plan (``planning.plan_creation`` on facts read
        once, or the ``facts`` given). Raises ``InvalidConfig`` (bad input, a missing file,
        a name in use) before anything is touched. ``existing``: plan a new definition for
        a VM that exists (``reconfigure``): its disk is reused, never made."""
        facts = facts or self.gather(config)
        plan = plan_creation(config, facts, template=template, force=force, existing=existing,
                             vm_uuid=vm_uuid, usb_later=usb_later, previous=previous,
                             lenient=lenient, product_key=product_key)
        self.loader.find(plan.template)  # a missing template is an input error, found now
        return plan

    def render(self, plan: CreationPlan) -> str:
        """The templates' rendering (what a change compares: ``reconfigure``)."""
        return self.loader.render(plan.template, plan.context.as_mapping())

    def definition(self, plan: CreationPlan) -> str:
        """What ``create`` defines: the rendering, its virtio disks on the VM's I/O thread."""
        return disks_on_iothread(self.render(plan))

    def print_xml(self, config: VMConfig, *, force: bool = False,
                  template: str | None = None, usb_later: bool = False,
                  product_key: str | None = None) -> str:
        """The XML ``create`` would define, validated; changes nothing."""
        from ..templates.validator import validate_xml

        xml = self.definition(self.plan(config, force=force, template=template,
                                        usb_later=usb_later, product_key=product_key))
        validate_xml(xml)
        return xml

    # --- the transaction ------------------------------------------------------------------

    def create(self, config: VMConfig, *, force: bool = False, template: str | None = None,
               progress: Callable[[str], None] | None = None,
               plan: CreationPlan | None = None, usb_later: bool = False,
               secrets=None) -> CreationResult:
        """Create the VM. ``progress(step)`` is told each step as it starts. ``plan``: one
        this creator just made for ``config`` (shown to the user first), so the checks do
        not run twice. ``secrets``: the unattended setup's password (``SetupSecrets``),
        written onto the setup medium only."""
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
            plan = self.plan(config, force=force, template=template,  # InvalidConfig: no harm
                             usb_later=usb_later)
        if plan.setup is not None and secrets is None and (
                plan.setup.kind == "windows" or not plan.setup.ssh_keys):
            raise InvalidConfig("password", "unattended setup needs the password of the"
                                " account it makes" + ("" if plan.setup.kind == "windows"
                                                       else " (or an SSH key)"))
        if plan.setup is not None and plan.setup.answers is not None and secrets is not None:
            from ..guest.windows_answers import check_product_key

            check_product_key(secrets.product_key, plan.setup.answers.edition_id)
        claimed: dict = {}  # the disk file this creation made (its inode), nothing else
        try:
            # Each undo is registered BEFORE its step runs: a step that dies half-way (the
            # daemon killed during define: libvirt saved it, the reply never came) is undone
            # too. Undoing a step that did not happen is harmless.
            enter("disk")
            if plan.disk is not None and plan.disk.create:
                undo.append(("remove disk", lambda: self._remove_disk(plan.disk.path,
                                                                      claimed)))
                self._create_disk(plan.disk, claimed)
            if plan.setup is not None:
                enter("setup medium")
                undo.append(("remove setup medium", lambda: self._remove_disk(
                    plan.setup.medium, claimed, "medium")))
                self._setup_medium(plan, secrets, claimed)
            enter("render")
            xml = self.definition(_with_created_step(plan))
            enter("validate")
            validate_xml(xml)
            enter("define")
            undo.append(("undefine", lambda: self._undefine_uuid(plan.uuid)))
            self.define(xml)
            enter("save settings")
            saved = _as_planned(plan).to_dict()
            if plan.disk is not None:
                saved["disk_path"] = plan.disk.path
                saved["disk_size_gb"] = None if not plan.disk.create else plan.disk.size_gb
            settings_path = self.store.save(VMConfig.from_dict(saved), uuid=plan.uuid)
        except BaseException as error:
            left = self._rollback(config.name, undo, plan, claimed)
            failure = _creation_error(config.name, step, error, left)
            if failure is error:
                raise
            raise failure from error
        log.info("created VM %s (%s)", config.name, plan.template)
        return CreationResult(
            name=config.name, uuid=plan.uuid, template=plan.template,
            disk_path=plan.disk.path if plan.disk else None,
            disk_created=bool(plan.disk and plan.disk.create),
            settings_path=str(settings_path), xml=xml,
        )

    def _setup_medium(self, plan: CreationPlan, secrets, claimed: dict) -> None:
        """Write the setup medium (0600, never over an existing file) and claim its inode,
        so an undo removes this file and no other."""
        from ..guest.media import build_medium

        from .host import host_for

        guard.check("build the setup medium")
        medium = plan.setup.medium
        host = host_for(self.connection.uri, self.connection, self.host_root, self.qemu_img)
        opener = host.opener()  # a remote host's ISOs are read there, the medium built here

        def claim(made) -> None:  # a file (its inode) here, or a volume of that host's pool
            kind, what = made
            claimed["medium" if kind == "file" else "medium-volume"] = what

        try:
            host.put_file(medium, lambda target: build_medium(
                target, _as_planned(plan), vm_uuid=plan.uuid, loader=self.loader,
                secrets=secrets, opener=opener), claim=claim)
        except FileExistsError:
            raise InvalidConfig("name", f"{medium} already exists; NeuronOS never overwrites"
                                " it") from None

    def reconfigure(self, config: VMConfig, *, force: bool = False, running: bool = False,
                    previous: VMConfig | None = None) -> CreationResult:
        """Change a stopped VM's definition to ``config`` by what differs from ``previous``
        (default: its saved settings) and nothing else, then save the settings
        (``core.reconfigure``: disks, CD-ROMs, NICs, the setup record and anything added
        by hand stay). ``running``: a running VM is allowed too (``.running`` says so)."""
        from .reconfigure import reconfigure

        done = reconfigure(self, config, force=force, running=running, previous=previous)
        return CreationResult(config.name, done.uuid, done.template, config.disk_path, False,
                              done.settings_path, done.xml, running=done.running,
                              changes=done.changes, warnings=done.warnings, saved=done.saved)

    def _create_disk(self, disk: DiskPlan, claimed: dict) -> None:
        from . import storage

        if storage.uses_pools(self.connection.uri):  # made by libvirt, where the VM runs
            storage.create_volume(self.connection, disk.path, disk.size_gb, disk.backing,
                                  disk.backing_format,
                                  claim=lambda: claimed.__setitem__("volume", disk.path))
            return
        path = Path(disk.path)
        private_folder(path.parent, 0o711)  # as libvirt's own images folder: QEMU may pass
        # O_EXCL claims the name first, so an existing file is never overwritten (qemu-img
        # create itself would overwrite it).
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another creation got there first (a name race)
            raise InvalidConfig("name", f"{path} already exists; NeuronOS never overwrites a"
                                " disk (pick another name)") from None
        claimed["inode"] = (os.fstat(fd).st_dev, os.fstat(fd).st_ino)
        os.close(fd)
        guard.check("qemu-img")
        try:
            backing = ["-b", os.path.abspath(disk.backing), "-F", disk.backing_format] \
                if disk.backing else []  # an overlay: the image below is never written; its
            # format is the one planning read from it (an unknown one was refused there)
            subprocess.run(
                [self.qemu_img, "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on",
                 *backing, str(path), f"{disk.size_gb}G"],
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

    def _remove_disk(self, path: str, claimed: dict, key: str = "inode") -> None:
        """The disk (or setup medium) this creation made, and nothing else: its volume, or
        its very file."""
        from . import storage

        volume = claimed.get("volume" if key == "inode" else f"{key}-volume")
        if volume:  # waits for a daemon that went away mid-creation
            self._with_daemon(lambda conn: storage.remove_volume(conn, volume))
            return
        _remove_claimed(path, claimed, key)

    def _has_volume(self, path: str) -> bool:
        from . import storage

        try:
            return self._with_daemon(lambda c: storage.lookup_volume(c, path) is not None,
                                     wait=1.0)
        except VMManagerError:
            return True  # cannot tell: say it may be there

    def define(self, xml: str) -> None:
        """Define ``xml`` (libvirt checks it against its schema first)."""
        self.connection.execute(
            lambda c: c.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        )

    def _undefine_uuid(self, vm_uuid: str) -> None:
        """Undefine the domain this creation defined (by its UUID: never another one that
        took the name), if it exists."""
        def undefine(conn: libvirt.virConnect) -> None:
            try:
                dom = conn.lookupByUUIDString(vm_uuid)
            except libvirt.libvirtError as error:
                if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                raise
            try:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                                  | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                dom.undefine()  # the test driver refuses the NVRAM flag

        self._with_daemon(undefine)

    def _with_daemon(self, fn: Callable, wait: float = ROLLBACK_WAIT_S):
        return self.connection.execute_when_back(fn, wait)

    def _rollback(self, name: str, undo: list[tuple[str, Callable[[], None]]],
                  plan: CreationPlan, claimed: dict) -> list[str]:
        """Undo every registered step, then check; returns what is still left (empty: the
        rollback is verified)."""
        vm_uuid, disk = plan.uuid, plan.disk
        for label, action in reversed(undo):
            try:
                action()
                log.info("rolled back %s: %s", name, label)
            except Exception as error:  # report, and keep undoing the rest
                log.error("could not undo '%s' for %s: %s", label, name, error)
        left = []
        if any(label == "undefine" for label, _ in undo):
            try:
                exists = self._with_daemon(lambda c: _has_uuid(c, vm_uuid), wait=1.0)
            except VMManagerError:
                exists = None
            if exists is None:
                left.append(f"maybe the domain {name} (uuid {vm_uuid}): libvirt is not"
                            " reachable to check; `virsh undefine --nvram` it if it is there")
            elif exists:
                left.append(f"the domain {name} (uuid {vm_uuid})")
        if claimed.get("inode") and _same_file(disk.path, claimed["inode"]):
            left.append(f"the disk {disk.path}")
        if claimed.get("volume") and self._has_volume(claimed["volume"]):
            left.append(f"the disk {claimed['volume']} (a volume of its storage pool)")
        medium = plan.setup.medium if plan.setup else None
        if claimed.get("medium") and medium and _same_file(medium, claimed["medium"]):
            left.append(f"the setup medium {medium}")
        if claimed.get("medium-volume") and self._has_volume(claimed["medium-volume"]):
            left.append(f"the setup medium {medium} (a volume of its storage pool)")
        return left


def _has_uuid(conn: libvirt.virConnect, vm_uuid: str) -> bool:
    try:
        conn.lookupByUUIDString(vm_uuid)
        return True
    except libvirt.libvirtError as error:
        if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return False
        raise


def _same_file(path: str, inode: tuple[int, int]) -> bool:
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return False
    return (info.st_dev, info.st_ino) == inode


def _remove_claimed(path: str, claimed: dict, key: str = "inode") -> None:
    """Remove the disk (or setup medium) only if it is the very file this creation made."""
    if claimed.get(key) and _same_file(path, claimed[key]):
        os.unlink(path)


def _creation_error(name: str, step: str, error: BaseException, left: list[str]):
    """What a failed creation says: an input error stays one (a name taken meanwhile is
    ``InvalidConfig``); otherwise the step, the cause and whether the undo is verified."""
    if isinstance(error, OperationFailed) and "already exists" in str(error):
        error = InvalidConfig("name", f"a VM named {name!r} already exists (made meanwhile);"
                              " pick another name")
    if isinstance(error, InvalidConfig) and not left:
        return error
    if isinstance(error, VMCreationError) and getattr(error, "step", None) and not left:
        return error
    if not isinstance(error, (VMManagerError, OSError, subprocess.SubprocessError)):
        return error
    undone = ("everything done before it was undone" if not left else
              "NOT everything could be undone; left: " + "; ".join(left))
    return VMCreationError(f"creating {name!r} failed at step '{step}': {error} ({undone})",
                           step=step)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _with_created_step(plan: CreationPlan) -> CreationPlan:
    """An unattended setup's history starts with its "created" step (when, and what)."""
    import time
    from dataclasses import replace

    setup = plan.context.setup
    if setup is None or setup.steps:
        return plan
    what = "the VM and its setup medium exist" if setup.kind == "windows" else \
        "the VM, its overlay disk and its cloud-init seed exist"
    step = ("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), what)
    return replace(plan, context=replace(plan.context, setup=replace(setup, steps=(step,))))


def _as_planned(plan: CreationPlan) -> VMConfig:
    """The config with the Windows setup's language and time zone as planned (the image's,
    the host's at creation), so the medium and the saved settings agree, and a setup made
    again (``setup-restart``) says the same."""
    answers = plan.setup.answers if plan.setup is not None else None
    if answers is None:
        return plan.config
    from dataclasses import replace

    return replace(plan.config, unattended=replace(
        plan.config.unattended, timezone=answers.timezone, ui_language=answers.ui_language))
