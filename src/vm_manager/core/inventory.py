"""What VMs exist and what they look like: the data behind ``list`` and ``info``.

Reads libvirt (through ``LibvirtConnection``) and the saved settings (``VMStore``); never
changes anything.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import libvirt

from ..base.connection import LibvirtConnection
from ..base.errors import StoreError
from ..base.primitives import VMState
from ..base.log import get_logger

if TYPE_CHECKING:
    from ..base.store import VMStore

log = get_logger(__name__)


# NamedTuples rather than dataclasses keep `neuron-vm list` start-up light (see
# bench/list_latency.py): the dataclasses module alone costs ~6 ms to import.
class VMSummary(NamedTuple):
    name: str
    uuid: str
    state: VMState
    vcpus: int
    memory_mb: int  # configured (maximum) memory
    persistent: bool
    vm_type: str | None = None  # from the saved settings, when NeuronOS made the VM

    def to_dict(self) -> dict[str, Any]:
        data = self._asdict()
        data["state"] = self.state.value
        return data


class Inventory(NamedTuple):
    vms: list[VMSummary]
    problems: list[str]  # e.g. unreadable settings files
    settings: dict[str, Any] = {}  # name -> VMConfig, for the VMs NeuronOS made


def _summary(dom: libvirt.virDomain) -> VMSummary:
    state, max_mem_kib, _mem_kib, vcpus, _cpu_time = dom.info()
    return VMSummary(
        name=dom.name(),
        uuid=dom.UUIDString(),
        state=VMState.from_libvirt(state),
        vcpus=vcpus,
        memory_mb=max_mem_kib // 1024,
        persistent=bool(dom.isPersistent()),
    )


def _domain_gone(error: libvirt.libvirtError) -> bool:
    # A domain undefined between listAllDomains and info(): skip it, it is not an error.
    return error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN


def list_vms(connection: LibvirtConnection, store: VMStore | None = None) -> Inventory:
    """All defined and running VMs, sorted by name."""

    def read(conn: libvirt.virConnect) -> list[VMSummary]:
        summaries = []
        for dom in conn.listAllDomains(0):
            try:
                summaries.append(_summary(dom))
            except libvirt.libvirtError as error:
                if not _domain_gone(error):
                    raise
        return summaries

    vms = sorted(connection.execute(read, idempotent=True), key=_by_name)
    problems: list[str] = []
    settings: dict[str, Any] = {}
    if store is not None:
        saved = set(store.names())
        wanted = [vm.name for vm in vms if vm.name in saved]
        if wanted:
            scan = store.load_all(wanted, {vm.name: vm.uuid for vm in vms})
            problems.extend(str(problem) for problem in scan.problems)
            settings = scan.configs
            vms = [
                vm._replace(vm_type=settings[vm.name].vm_type.value)
                if vm.name in settings
                else vm
                for vm in vms
            ]
    return Inventory(vms=vms, problems=problems, settings=settings)


def _by_name(vm: VMSummary) -> str:
    return vm.name


def vm_details(
    connection: LibvirtConnection, name: str, store: VMStore | None = None
) -> dict[str, Any]:
    """Everything known about one VM: live domain XML facts plus its saved settings.

    Raises ``VMNotFound`` when no such domain exists.
    """

    def read(conn: libvirt.virConnect):
        dom = connection.lookup(conn, name)
        summary = _summary(dom)
        xml = dom.XMLDesc(0)
        try:
            autostart = bool(dom.autostart())
        except libvirt.libvirtError:
            autostart = False
        state, reason = dom.state()
        try:
            snapshots = dom.snapshotNum(0)
        except libvirt.libvirtError:
            snapshots = 0
        addresses = _addresses(dom) if state == libvirt.VIR_DOMAIN_RUNNING else {}
        return summary, xml, autostart, (state, reason), snapshots, addresses

    summary, xml, autostart, (_state, reason), snapshots, addresses = connection.execute(
        read, idempotent=True)
    details: dict[str, Any] = summary.to_dict()
    details["addresses"] = addresses
    details["snapshots"] = snapshots
    details["state_reason"] = reason
    details["autostart"] = autostart
    from ..base.domain_xml import read_domain  # only `info` needs it; `list` stays light

    domain = read_domain(xml)
    details.update({key: value for key, value in domain.to_dict().items()
                    if key not in details})
    details["settings"] = None
    config = None
    if store is not None:
        try:
            config = store.load(name, summary.uuid)
        except StoreError as error:
            details["settings_problem"] = str(error)
            config = None
        if config is not None:
            details["settings"] = config.to_dict()
            details["vm_type"] = config.vm_type.value
    details["disk_problems"] = [item.to_dict() for item in _format_mismatches(
        connection, name, domain, config)]
    return details


def _addresses(dom) -> dict[str, list[str]]:
    """The running guest's IPv4 addresses by MAC: from libvirt's DHCP leases (its own
    networks), else from the guest agent (any network)."""
    found: dict[str, list[str]] = {}
    for source in (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE,
                   libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT):
        try:
            interfaces = dom.interfaceAddresses(source, 0) or {}
        except libvirt.libvirtError:  # no such network, no agent, a driver without it
            continue
        for interface in interfaces.values():
            mac = (interface.get("hwaddr") or "").lower()
            for address in interface.get("addrs") or []:
                text = address.get("addr") or ""
                if mac and address.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4 \
                        and not text.startswith("127."):
                    found.setdefault(mac, []).append(text)
        if found:
            break
    return found


def _format_mismatches(connection: LibvirtConnection, name: str, domain, config):
    """Disks defined as raw whose file is another format (this computer's files only: a
    remote host's are not read from here)."""
    from .disks import cloud_image_names, find_mismatches
    from .host import host_for

    images = host_for(connection.uri, connection).image_formats(domain)
    return find_mismatches(name, domain, images, config, cloud_image_names(config))


def format_mismatches(connection: LibvirtConnection, store: VMStore | None = None) -> list:
    """Every VM's disks defined as raw whose file is another format (``doctor``)."""
    from ..base.domain_xml import read_domain

    def read(conn: libvirt.virConnect):
        found = []
        for dom in conn.listAllDomains(0):
            try:
                found.append((dom.name(), dom.UUIDString(),
                              dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
            except libvirt.libvirtError as error:
                if not _domain_gone(error):
                    raise
        return found

    mismatches = []
    for name, vm_uuid, xml in connection.execute(read, idempotent=True):
        try:
            config = store.load(name, vm_uuid) if store is not None else None
        except StoreError:
            config = None
        mismatches += _format_mismatches(connection, name, read_domain(xml), config)
    return mismatches
