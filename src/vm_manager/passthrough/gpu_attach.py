"""GPUs, whether each can be passed through, and the plan for one (DESIGN.md 4.3).

The verdict is a pure function of a sysfs snapshot (``pci.PCISnapshot``; the ``*_in``
functions take one, the others read sysfs first). When a VM starts, every member of the
GPU's IOMMU group must be on vfio-pci, pci-stub or no driver (bridges may stay on
pcieport). The GPU's own functions go to the guest as ``managed='yes'`` hostdevs, which
libvirt detaches at start, so their current host driver (nvidia, amdgpu, snd_hda_intel,
xhci_hcd) is not a problem. A *blocker* is another group member that the plan does not pass
and that sits on a host driver: a SATA/NVMe controller, a NIC, a chipset USB controller.
Passing it would take it from the host, so NeuronOS never does it by itself.

The only side effects are ``detach``/``reattach`` through libvirt's node-device API, run
when the user asks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..base.errors import InvalidConfig, OperationFailed
from ..base.vm_config import PCIAddress
from .pci import VFIO_DRIVERS, PCIDevice, PCISnapshot, read_pci

BRIDGE_DRIVERS = frozenset({"pcieport", "shpchp"})


@dataclass(frozen=True)
class Blocker:
    address: str
    reason: str

    def to_dict(self) -> dict:
        return {"address": self.address, "reason": self.reason}


@dataclass
class GPUInfo:
    device: PCIDevice  # the display function (usually .0)
    functions: list[PCIDevice]
    group_devices: list[PCIDevice]
    blockers: list[Blocker] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    iommu_on: bool = True

    @property
    def viable(self) -> bool:
        return self.iommu_on and not self.blockers

    @property
    def address(self) -> str:
        return str(self.device.address)

    def to_dict(self) -> dict:
        dev = self.device
        return {
            "address": self.address,
            "vendor_id": f"{dev.vendor_id:04x}",
            "device_id": f"{dev.device_id:04x}",
            "name": dev.name,
            "class": dev.class_name,
            "driver": dev.driver,
            "iommu_group": dev.iommu_group,
            "boot_vga": dev.boot_vga if dev.boot_vga is None else bool(dev.boot_vga),
            "functions": [str(f.address) for f in self.functions],
            "group_devices": [str(d.address) for d in self.group_devices],
            "viable": self.viable,
            "blockers": [b.to_dict() for b in self.blockers],
            "warnings": list(self.warnings),
        }


@dataclass
class PassthroughPlan:
    gpu: GPUInfo
    hostdevs: list[str]  # addresses to add as managed hostdevs
    ready: bool
    refused_reason: str | None
    notes: list[str]

    def to_dict(self) -> dict:
        return {"gpu": self.gpu.to_dict(), "hostdevs": self.hostdevs, "ready": self.ready,
                "refused_reason": self.refused_reason, "notes": self.notes}


def _group_verdict(gpu: PCIDevice, functions: list[PCIDevice], members: list[PCIDevice],
                   ) -> tuple[list[Blocker], list[str]]:
    own = {f.address for f in functions}
    blockers, notes = [], []
    for member in members:
        if member.address in own:
            continue
        if member.is_bridge and (member.driver in BRIDGE_DRIVERS or member.driver is None):
            continue  # bridges may stay with the host (vfio.rst)
        if member.driver is None or member.driver in VFIO_DRIVERS:
            notes.append(f"{member.address} ({member.class_name}) shares the group, unbound or"
                         " on vfio: it stays with the host and does not block")
            continue
        blockers.append(Blocker(
            str(member.address),
            f"{member.describe()} on host driver {member.driver} shares IOMMU"
            f" group {gpu.iommu_group}: passing the GPU would take it from the host",
        ))
    return blockers, notes


def list_gpus(root: Path | str | None = None) -> list[GPUInfo]:
    """Every GPU (PCI base class 0x03: VGA, 3D, display) with its verdict, from sysfs."""
    return gpus_in(read_pci(root))


def gpus_in(snapshot: PCISnapshot) -> list[GPUInfo]:
    """``list_gpus`` of a snapshot: pure."""
    devices, groups = snapshot.devices, snapshot.groups
    gpus = [d for d in devices.values() if d.is_gpu]
    by_slot: dict[str, list[PCIDevice]] = {}
    for device in devices.values():
        by_slot.setdefault(device.address.slot_address, []).append(device)
    result = []
    seen_slots = set()
    for gpu in gpus:
        slot = gpu.address.slot_address
        if slot in seen_slots:
            continue  # one entry per card, for its first display function
        seen_slots.add(slot)
        functions = sorted(by_slot[slot], key=lambda d: d.address)
        members = [devices[a] for a in groups.get(gpu.iommu_group, []) if a in devices]
        info = GPUInfo(gpu, functions, members, iommu_on=bool(groups))
        if not groups:
            info.blockers.append(Blocker(str(gpu.address),
                                         "the IOMMU is off: no IOMMU groups exist"))
            info.warnings.append("IOMMU is off: add intel_iommu=on (Intel) to the kernel"
                                 " command line, or enable AMD-Vi/VT-d in the firmware")
        elif gpu.iommu_group is None:
            info.blockers.append(Blocker(str(gpu.address), "the GPU is in no IOMMU group"))
        else:
            blockers, _ = _group_verdict(gpu, functions, members)
            info.blockers.extend(blockers)
        if gpu.boot_vga:
            info.warnings.append("this is the boot GPU, showing the host's display: a VM gets"
                                 " it with --allow-boot-gpu, and its start then takes the"
                                 " desktop away while it runs (`neuron-vm gpu handoff-plan"
                                 " NAME` shows how)")
        if gpu.subclass == 0x02:  # a compute card (H100/H200, A100) or a laptop's render GPU
            info.warnings.append("a 3D controller: it has no display outputs, so the guest"
                                 " has no screen on it for Looking Glass to show")
        result.append(info)
    if len(result) == 1 and result[0].device.subclass != 0x02:  # a VGA card: the host's
        result[0].warnings.append("this is the only GPU: the host would have no display while"
                                  " the VM runs")
    return sorted(result, key=lambda info: info.device.address)


def find_gpu(address: PCIAddress | str, root: Path | str | None = None) -> GPUInfo:
    return find_gpu_in(read_pci(root), address)


def find_gpu_in(snapshot: PCISnapshot, address: PCIAddress | str) -> GPUInfo:
    wanted = PCIAddress.parse(address, "gpu.pci_address")
    for gpu in gpus_in(snapshot):
        if wanted.slot_address == gpu.device.address.slot_address:
            return gpu
    raise InvalidConfig("gpu.pci_address",
                        f"{wanted} is not a GPU on this host; `neuron-vm gpu list` shows them")


def plan_passthrough(address: PCIAddress | str, root: Path | str | None = None,
                     allow_boot_gpu: bool = False) -> PassthroughPlan:
    """What passing this GPU takes. ``ready`` only when the group is viable and (for the
    boot GPU) the single-GPU opt-in is given."""
    return plan_passthrough_in(read_pci(root), address, allow_boot_gpu)


def plan_passthrough_in(snapshot: PCISnapshot, address: PCIAddress | str,
                        allow_boot_gpu: bool = False) -> PassthroughPlan:
    """``plan_passthrough`` of a snapshot: pure."""
    gpu = find_gpu_in(snapshot, address)
    notes = []
    if gpu.iommu_on and gpu.device.iommu_group is not None:
        _, notes = _group_verdict(gpu.device, gpu.functions, gpu.group_devices)
    refused = None
    if not gpu.viable:
        refused = "not viable: " + "; ".join(f"{b.address}: {b.reason}" for b in gpu.blockers)
    elif gpu.device.boot_vga and not allow_boot_gpu:
        refused = ("it is the boot GPU (the host's display); pass it only with the explicit"
                   " single-GPU opt-in (--allow-boot-gpu)")
    hostdevs = [str(f.address) for f in gpu.functions]
    notes.append(f"every function of the card goes to the VM: {', '.join(hostdevs)}")
    return PassthroughPlan(gpu, hostdevs, refused is None, refused, notes)


# --- side effects, only when the user asks ---------------------------------------------------

def node_name(address: PCIAddress | str) -> str:
    addr = PCIAddress.parse(address)
    return f"pci_{addr.domain:04x}_{addr.bus:02x}_{addr.slot:02x}_{addr.function:x}"


def detach(connection, address: PCIAddress | str) -> None:
    """Hand one function to vfio-pci through libvirt (``virNodeDeviceDetachFlags``)."""
    address = PCIAddress.parse(address, "ADDR")
    name = node_name(address)

    def run(conn) -> None:  # a libvirt.virConnect
        conn.nodeDeviceLookupByName(name).detachFlags("vfio", 0)

    try:
        connection.execute(run)
    except OperationFailed as error:
        raise OperationFailed(f"cannot detach {address} from the host: {error}",
                              error.code) from None


def reattach(connection, address: PCIAddress | str) -> None:
    """Give one function back to its host driver (``virNodeDeviceReAttach``)."""
    address = PCIAddress.parse(address, "ADDR")
    name = node_name(address)
    try:
        connection.execute(lambda conn: conn.nodeDeviceLookupByName(name).reAttach())
    except OperationFailed as error:
        raise OperationFailed(f"cannot give {address} back to the host: {error}",
                              error.code) from None
