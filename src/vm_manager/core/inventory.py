"""What VMs exist and what they look like: the data behind ``list`` and ``info``.

Reads libvirt (through ``LibvirtConnection``) and the saved settings (``VMStore``); never
changes anything.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, NamedTuple

import libvirt

from .connection import LibvirtConnection
from .errors import StoreError
from .primitives import VMState

if TYPE_CHECKING:
    import xml.etree.ElementTree as ET

    from .store import VMStore

log = logging.getLogger(__name__)


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
    if store is not None:
        saved = set(store.names())
        wanted = [vm.name for vm in vms if vm.name in saved]
        if wanted:
            scan = store.load_all(wanted)
            problems.extend(str(problem) for problem in scan.problems)
            vms = [
                vm._replace(vm_type=scan.configs[vm.name].vm_type.value)
                if vm.name in scan.configs
                else vm
                for vm in vms
            ]
    return Inventory(vms=vms, problems=problems)


def _by_name(vm: VMSummary) -> str:
    return vm.name


def vm_details(
    connection: LibvirtConnection, name: str, store: VMStore | None = None
) -> dict[str, Any]:
    """Everything known about one VM: live domain XML facts plus its saved settings.

    Raises ``VMNotFound`` when no such domain exists.
    """

    def read(conn: libvirt.virConnect) -> tuple[VMSummary, str, bool, tuple[int, int]]:
        dom = connection.lookup(conn, name)
        summary = _summary(dom)
        xml = dom.XMLDesc(0)
        try:
            autostart = bool(dom.autostart())
        except libvirt.libvirtError:
            autostart = False
        state, reason = dom.state()
        return summary, xml, autostart, (state, reason)

    summary, xml, autostart, (_state, reason) = connection.execute(read, idempotent=True)
    details: dict[str, Any] = summary.to_dict()
    details["state_reason"] = reason
    details["autostart"] = autostart
    details.update(parse_domain_xml(xml))
    details["settings"] = None
    if store is not None:
        try:
            config = store.load(name)
        except StoreError as error:
            details["settings_problem"] = str(error)
            config = None
        if config is not None:
            details["settings"] = config.to_dict()
            details["vm_type"] = config.vm_type.value
    return details


def parse_domain_xml(xml: str) -> dict[str, Any]:
    """The facts a user cares about from a domain's XML (works on live or inactive XML)."""
    import xml.etree.ElementTree as ET  # only `info` needs it; `list` stays light

    root = ET.fromstring(xml)
    os_type = root.find("os/type")
    os_elem = root.find("os")
    info: dict[str, Any] = {
        "domain_type": root.get("type"),
        "title": root.findtext("title"),
        "description": root.findtext("description"),
        "os": {
            "type": os_type.text if os_type is not None else None,
            "arch": os_type.get("arch") if os_type is not None else None,
            "machine": os_type.get("machine") if os_type is not None else None,
            "firmware": os_elem.get("firmware") if os_elem is not None else None,
            "kernel": root.findtext("os/kernel"),
        },
        "disks": [],
        "interfaces": [],
        "graphics": [],
        "hostdevs": [],
        "shmem": [],
    }
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        info["disks"].append(
            {
                "device": disk.get("device"),
                "type": disk.get("type"),
                "source": _first_attr(source, ("file", "dev", "name", "volume")),
                "target": target.get("dev") if target is not None else None,
                "bus": target.get("bus") if target is not None else None,
                "readonly": disk.find("readonly") is not None,
            }
        )
    for iface in root.findall("devices/interface"):
        source = iface.find("source")
        model = iface.find("model")
        mac = iface.find("mac")
        info["interfaces"].append(
            {
                "type": iface.get("type"),
                "source": _first_attr(source, ("network", "bridge", "dev")),
                "model": model.get("type") if model is not None else None,
                "mac": mac.get("address") if mac is not None else None,
            }
        )
    for graphics in root.findall("devices/graphics"):
        info["graphics"].append(
            {
                "type": graphics.get("type"),
                "port": _int_or_none(graphics.get("port")),
                "listen": graphics.get("listen"),
            }
        )
    for hostdev in root.findall("devices/hostdev"):
        info["hostdevs"].append(_hostdev(hostdev))
    for shmem in root.findall("devices/shmem"):
        model = shmem.find("model")
        size = shmem.find("size")
        info["shmem"].append(
            {
                "name": shmem.get("name"),
                "model": model.get("type") if model is not None else None,
                "size": f"{size.text} {size.get('unit', 'B')}" if size is not None else None,
            }
        )
    return info


def _hostdev(hostdev: ET.Element) -> dict[str, Any]:
    kind = hostdev.get("type")
    entry: dict[str, Any] = {"type": kind, "managed": hostdev.get("managed") == "yes"}
    address = hostdev.find("source/address")
    if kind == "pci" and address is not None:
        parts = [address.get(key, "0") for key in ("domain", "bus", "slot", "function")]
        try:
            domain, bus, slot, function = (int(part, 0) for part in parts)
            entry["address"] = f"{domain:04x}:{bus:02x}:{slot:02x}.{function:x}"
        except ValueError:
            entry["address"] = None
    elif kind == "usb":
        vendor = hostdev.find("source/vendor")
        product = hostdev.find("source/product")
        entry["vendor_id"] = vendor.get("id") if vendor is not None else None
        entry["product_id"] = product.get("id") if product is not None else None
    return entry


def _first_attr(element: ET.Element | None, names: tuple[str, ...]) -> str | None:
    if element is None:
        return None
    for name in names:
        value = element.get(name)
        if value:
            return value
    return None


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
