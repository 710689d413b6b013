"""One VM described for people: the desktop app's details pane (read on a worker) and
`neuron-vm info` (the same sections, as text).

Sections of (label, value) rows, from ``vms.vm_details`` (the live domain and the saved
settings, what ``info`` prints) plus what a person wants beside it: disk sizes, the GPU's
functions and USB devices by their pci.ids / usb.ids names (ids second), the Looking Glass
client's state and the last lines of its log, the setup stage, snapshots and shared folders.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .context import Context

LOG_LINES = 5


@dataclass(frozen=True)
class Section:
    title: str
    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class VMDetails:
    name: str
    sections: tuple[Section, ...]
    facts: dict[str, Any] = field(default_factory=dict, repr=False)  # ``vms.vm_details``

    def section(self, title: str) -> Section | None:
        return next((s for s in self.sections if s.title == title), None)


def details(ctx: Context, name: str) -> VMDetails:
    """Raises ``VMNotFound``."""
    from . import vms

    info = vms.vm_details(ctx, name)
    settings = info.get("settings") or {}
    sections = [_system(ctx, info), _firmware(info), _disks(ctx, name, info), _network(info),
                _display(info), _gpu(ctx, info), _usb(ctx, info),
                _looking_glass(ctx, name, info, settings), _setup(ctx, name, info),
                _snapshots(ctx, name), _shares(info)]
    return VMDetails(name, tuple(section for section in sections if section is not None),
                     info)


def _size(number: float | None) -> str:
    if not number:
        return "?"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if number < 1024 or unit == "TiB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return "?"


def _system(ctx: Context, info: dict[str, Any]) -> Section:
    from ..base.primitives import host_name
    from ..base.vm_config import VMType

    kind = info.get("vm_type")
    label = VMType(kind).label if kind in {t.value for t in VMType} else (kind or "other")
    os_info = info.get("os") or {}
    from ..base.primitives import VMState

    state = info.get("state")
    shown = VMState(state).label if state in {s.value for s in VMState} else state or "?"
    rows = [("System", label), ("State", shown),
            ("vCPUs", str(info.get("vcpus"))),
            ("CPU", _cpu(info.get("cpu") or {}, (info.get("settings") or {}).get("tune") or {})),
            ("Memory", _size((info.get("memory_mb") or 0) * 1048576)),
            ("Machine", f"{os_info.get('machine') or '?'}"
             f" ({'KVM' if info.get('domain_type') == 'kvm' else info.get('domain_type')})")]
    if info.get("neuronos_template"):
        rows.append(("Template", info["neuronos_template"]))
    rows.append(("Host", host_name(ctx.uri)))  # where it runs: this computer or another
    rows.append(("UUID", info.get("uuid") or "?"))
    rows.append(("Starts with the host", "yes" if info.get("autostart") else "no"))
    if not info.get("settings"):
        rows.append(("Settings", "not made by NeuronOS (change it with virt-manager)"))
    return Section("System", tuple(rows))


def _cpu(cpu: dict[str, Any], tune: dict[str, Any]) -> str:
    """``1 socket, 4 cores x 2 threads; on host CPUs 2-9 (QEMU's own threads on 0-1)``."""
    from ..base.primitives import plural
    from ..passthrough.cpu_topology import format_cpulist, parse_cpulist

    topology = cpu.get("topology")
    if not topology:
        return "each vCPU a socket of its own (`neuron-vm tune --apply` makes them one)"
    sockets, _, cores, threads = topology
    text = (f"{plural(sockets, 'socket')}, {plural(cores, 'core')} x"
            f" {plural(threads, 'thread')}")
    pins = cpu.get("pins") or []
    if not pins:
        return text + "; not pinned"
    try:
        used = format_cpulist(set().union(*(parse_cpulist(cpuset) for _, cpuset in pins)))
    except ValueError:
        used = ", ".join(cpuset for _, cpuset in pins)
    emulator = f" (QEMU's own threads on {cpu['emulator']}" if cpu.get("emulator") else ""
    if emulator:
        io = cpu.get("io_threads")
        emulator += (", disk I/O too)" if io == cpu["emulator"] else
                     f", disk I/O on {io})" if io else ")")
    node = f", memory on NUMA node {cpu['memory_nodes']}" if cpu.get("memory_nodes") else ""
    alone = "; the host's own processes kept off them while it runs" if tune.get("isolate") \
        else ""
    return f"{text}; on host CPUs {used}{emulator}{node}{alone}"


def _firmware(info: dict[str, Any]) -> Section:
    os_info = info.get("os") or {}
    uefi = os_info.get("firmware") == "efi" or bool(os_info.get("loader"))
    rows = [("Firmware", "UEFI" if uefi else "BIOS" if not os_info.get("kernel") else
             "direct kernel boot")]
    if uefi:
        secure = os_info.get("secure_boot")
        if secure is None:
            secure = os_info.get("loader_secure")
        # libvirt 9.0 names the firmware only while the VM runs: until then it is its choice
        rows.append(("Secure Boot", {True: "on", False: "off"}.get(
            secure, "libvirt chooses the firmware when it starts (Secure Boot where it can)")))
        rows.append(("UEFI variables", os_info.get("nvram") or "made at its first start"))
    if os_info.get("kernel"):
        rows += [("Kernel", os_info["kernel"]), ("Initrd", os_info.get("initrd") or "none"),
                 ("Command line", os_info.get("cmdline") or "")]
    tpm = info.get("tpm")
    rows.append(("TPM", f"{tpm.get('model')} {tpm.get('version') or ''} ({tpm.get('backend')})"
                 .replace("  ", " ") if tpm else "none"))
    return Section("Firmware", tuple(rows))


def _disks(ctx: Context, name: str, info: dict[str, Any]) -> Section:
    import libvirt

    disks = info.get("disks") or []
    connection = ctx.connection

    def sizes(conn):
        dom = connection.lookup(conn, name)
        found = {}
        for disk in disks:
            if disk.get("device") == "disk" and disk.get("target") and disk.get("source"):
                try:
                    found[disk["target"]] = dom.blockInfo(disk["target"])[:2]
                except libvirt.libvirtError:
                    if not conn.isAlive():
                        raise
        return found

    known = connection.execute(sizes, idempotent=True) if disks else {}
    rows = []
    for disk in disks:
        where = disk.get("source") or "empty"
        if disk.get("device") == "cdrom":
            rows.append((f"{disk.get('target')} (CD-ROM)", where))
            continue
        capacity, used = known.get(disk.get("target"), (None, None))
        size = f", {_size(capacity)}, {_size(used)} used" if capacity else ""
        below = [image.get("path") for image in disk.get("backing_chain") or []
                 if image.get("path")]
        on = f", on {' on '.join(below)}" if below else ""  # its backing chain (live)
        rows.append((disk.get("target") or "disk",
                     f"{where} ({disk.get('format') or '?'}{size}{on})"))
    rows.extend(("Problem", f"{problem['problem']}. Fix: {problem['fix']}")
                for problem in info.get("disk_problems") or [])
    return Section("Disks", tuple(rows) or (("Disks", "none"),))


def _network(info: dict[str, Any]) -> Section:
    addresses = info.get("addresses") or {}

    def where(item: dict) -> str:
        text = f"{item.get('type')} {item.get('source') or ''} ({item.get('model') or '?'})"
        found = addresses.get((item.get("mac") or "").lower())
        return text.replace("  ", " ") + (f", address {', '.join(found)}" if found else "")

    rows = tuple((item.get("mac") or "interface", where(item))
                 for item in info.get("interfaces") or [])
    return Section("Network", rows or (("Network", "none"),))


def _display(info: dict[str, Any]) -> Section | None:
    """The VM's own screens (SPICE: the port libvirt chose while it runs) and the guest
    agent's channel."""
    rows = []
    for graphics in info.get("graphics") or []:
        port = graphics.get("port")
        where = f"{graphics.get('listen') or 'no address'}, port {port}" if port else \
            "port chosen when it starts"
        if graphics.get("listen_type") == "none":
            where = "no network port: only through libvirt (console, display)"
        rows.append((graphics.get("type") or "display", where))
    for channel in info.get("channels") or []:
        if channel.get("target_name") == "org.qemu.guest_agent.0":
            rows.append(("Guest agent", channel.get("state") or "not running"))
    return Section("Display", tuple(rows)) if rows else None


def _gpu(ctx: Context, info: dict[str, Any]) -> Section | None:
    addresses = [item.get("address") for item in info.get("hostdevs") or []
                 if item.get("type") == "pci" and item.get("address")]
    if not addresses:
        return None
    try:
        from ..passthrough.pci import read_devices

        devices = {str(address): device for address, device in read_devices(
            ctx.host_root).items()}
    except OSError:
        devices = {}
    rows = []
    for address in addresses:
        device = devices.get(address)
        if device is None:
            rows.append((address, "not on this host now"))
        elif device.vendor_name:  # its name from pci.ids, then what it is
            rows.append((address, f"{device.name} · {device.class_name} [{device.ids}]"))
        else:  # no pci.ids: the name would only repeat the class and ids
            rows.append((address, device.describe()))
    return Section("GPU", tuple(rows))


def _usb(ctx: Context, info: dict[str, Any]) -> Section | None:
    wanted = [(item.get("vendor_id"), item.get("product_id"))
              for item in info.get("hostdevs") or [] if item.get("type") == "usb"]
    if not wanted:
        return None
    try:
        from ..passthrough.usb_attach import list_usb

        plugged = {(d.vendor_id, d.product_id): d.name for d in list_usb(ctx.host_root)}
    except OSError:
        plugged = {}
    return Section("USB devices", tuple(
        (f"{vendor}:{product}", plugged.get((vendor, product), "not plugged in"))
        for vendor, product in wanted))


def _looking_glass(ctx: Context, name: str, info: dict[str, Any],
                   settings: dict[str, Any]) -> Section | None:
    lg = settings.get("looking_glass") or {}
    shmem = info.get("shmem") or []
    if not lg.get("enabled") and not shmem:
        return None
    rows = [("Resolution", f"{lg.get('width')}x{lg.get('height')}" if lg else "?")]
    if shmem:
        rows.append(("Shared memory", f"{shmem[0].get('name')}, {shmem[0].get('size')}"))
    if ctx.has_looking_glass:
        manager = ctx.looking_glass()
        state = manager.get_state(name)
        reason = manager.reason(name)
        rows.append(("Client", f"{state.value}{': ' + reason if reason else ''}"))
        try:
            tail = manager.log_path(name).read_text(errors="replace").splitlines()[-LOG_LINES:]
        except OSError:
            tail = []
        rows.extend(("log", line) for line in tail)
    else:
        rows.append(("Client", "not open (Show display starts it)"))
    return Section("Looking Glass", tuple(rows))


def _setup(ctx: Context, name: str, info: dict[str, Any]) -> Section | None:
    if not info.get("setup"):
        return None
    from . import setup

    status = setup.status(ctx, name)
    rows = [("Stage", status.stage)]
    if status.stage == "failed" and status.steps:
        rows.append(("Why", status.steps[-1]["note"]))
    if status.next:
        rows.append(("Next", status.next))
    return Section("Setup", tuple(rows))


def _snapshots(ctx: Context, name: str) -> Section:
    from . import snapshots

    items = snapshots.list_snapshots(ctx, name)
    rows = tuple((snap.name, f"{snap.created}  {snap.description}".rstrip()) for snap in items)
    return Section("Snapshots", rows or (("Snapshots", "none"),))


def _shares(info: dict[str, Any]) -> Section:
    rows = tuple((item.get("target") or "?", f"{item.get('source')}"
                  f"{' (read-only)' if item.get('readonly') else ''}")
                 for item in info.get("filesystems") or [])
    return Section("Shared folders", rows or (("Shared folders", "none"),))
