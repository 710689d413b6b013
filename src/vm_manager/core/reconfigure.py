"""Changing a VM that exists: its definition by exactly what its settings change asks.

Both the saved settings (``previous``) and the changed ones are planned on the same host
facts and rendered; ``domain_merge`` applies the difference of the two renderings to the
definition libvirt holds. So a change of memory changes ``<memory>`` and nothing else: the
disks and their formats (the definition's own, never re-read or guessed), CD-ROMs, NICs
and their MACs, the setup record and anything added by hand stay. A change that renders
the same XML defines nothing. A NeuronOS disk that an earlier version defined as raw while
its file is qcow2 is put back (``disks.disk_repairs``). If saving the settings fails, the
old definition is put back.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import libvirt

from .disks import disk_repairs
from ..base.domain_merge import disks_on_iothread, merge_definition, set_disk_format
from .cpu_plan import defined_cpu
from .planning import as_defined
from ..base.domain_xml import read_domain
from ..base.errors import ConnectionFailed, InvalidConfig, LifecycleError, VMCreationError
from ..base.log import get_logger
from ..base.vm_config import VMConfig

if TYPE_CHECKING:
    from .vm_creator import VMCreator

log = get_logger(__name__)


@dataclass(frozen=True)
class Reconfigured:
    uuid: str
    template: str
    settings_path: str
    xml: str  # the definition now
    running: bool  # the VM runs: it has the change at its next start
    changes: tuple[str, ...]  # what changed in the definition, in words (empty: nothing)
    warnings: tuple[str, ...] = ()  # what the change brings that the user should know
    saved: bool = True  # the settings changed and were saved (with or without ``changes``)


def reconfigure(creator: VMCreator, config: VMConfig, *, force: bool = False,
                running: bool = False, previous: VMConfig | None = None) -> Reconfigured:
    """Change ``config``'s VM (stopped, or ``running`` allowed: its next start has the
    change) by what differs from ``previous`` (default: its saved settings), keeping its
    UUID, then save the settings."""
    from ..templates.validator import validate_xml

    name = config.name

    def read(conn: libvirt.virConnect):
        dom = creator.connection.lookup(conn, name)
        return (dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE), dom.UUIDString(),
                bool(dom.isActive()))

    old_xml, vm_uuid, active = creator.connection.execute(read)
    if active and not running:
        raise LifecycleError(f"{name!r} is running: stop it before changing its settings")
    definition = read_domain(old_xml)  # an unattended setup's media and record stay in it
    if previous is None:
        previous = creator.store.load(name, vm_uuid)
    if previous is None:
        raise InvalidConfig("NAME", f"{name} has no saved NeuronOS settings to compare"
                            " the change with; change it with virt-manager or `virsh edit`")
    facts = replace(creator.gather(config, previous=previous), definition=definition)
    plan = creator.plan(config, force=force, existing=True, vm_uuid=vm_uuid, facts=facts,
                     previous=previous)
    made = creator.plan(previous, existing=True, vm_uuid=vm_uuid, facts=facts, lenient=True)
    if definition.domain_type in ("kvm", "qemu"):  # as it is defined, whatever the host
        made = as_defined(made, definition.domain_type)  # can do now (issue 29)
    made = replace(made, context=replace(made.context, cpu=defined_cpu(  # its CPU as defined:
        definition.cpu, made.context.vcpus)))  # an older VM gets its topology (issue 31)
    change = merge_definition(old_xml, creator.render(made), creator.render(plan))
    warnings = tuple(w for w in plan.warnings if w not in made.warnings)  # the change's own
    xml, changes = change.xml, list(change.changes)
    if changes:  # the disks follow the I/O thread the change adds or removes
        xml = disks_on_iothread(xml)
    for repair in disk_repairs(config, facts):
        xml = set_disk_format(xml, repair.path, repair.actual)
        changes.append(repair.repaired())
        log.warning("%s: %s", name, repair.repaired())
    for device in change.missing:
        log.info("%s: %s was already gone from the definition", name, device)
    if not changes:
        settings_path = creator.store.path_for(name)
        if config != previous:
            settings_path = creator.store.save(config, uuid=vm_uuid)
        log.info("%s: nothing to change", name)
        return Reconfigured(vm_uuid, plan.template, str(settings_path), old_xml, active, (),
                            warnings, saved=config != previous)
    validate_xml(xml)
    try:
        creator.define(xml)  # the daemon may die here, with or without having saved it
        settings_path = creator.store.save(config, uuid=vm_uuid)
    except BaseException as error:
        try:  # same UUID: libvirt replaces it back (and waits for a daemon that left)
            creator.connection.execute_when_back(lambda c: c.defineXML(old_xml),
                                                 creator.rollback_wait_s)
        except Exception as restore_error:
            raise VMCreationError(
                f"changing {name!r} failed ({error}) and its old definition could not be"
                f" put back ({restore_error}); `neuron-vm info {name}` shows what is"
                " defined now", step="define") from error
        if isinstance(error, ConnectionFailed):  # it is back: say what that meant
            raise VMCreationError(
                f"changing {name!r} failed: libvirt went away during the change"
                f" ({error.reason}); it is back"
                " and the old definition is in place: nothing was changed, try again",
                step="define") from error
        raise
    log.info("changed %s: %s", name, "; ".join(changes))
    return Reconfigured(vm_uuid, plan.template, str(settings_path), xml, active, tuple(changes),
                        warnings)
