"""GPUs: the host's list with verdicts, a VM's passthrough plan, boot-time isolation for
vfio-pci (``gpu prepare``, written only with ``apply``), and detach/reattach through
libvirt's node-device API."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..passthrough.gpu_attach import GPUInfo, PassthroughPlan
    from ..passthrough.isolation import IsolationPlan


def snapshot(ctx: Context, source: str | None = None):
    """The host's PCI devices and IOMMU groups: from this machine's /sys for a local URI,
    from libvirt's node devices for a remote one (or as ``source`` says)."""
    if source is None:
        return ctx.host.pci()
    if source == "libvirt":
        from ..passthrough.nodedev import read_pci_nodedev

        return read_pci_nodedev(ctx.connection)
    from ..passthrough.pci import read_pci

    return read_pci(ctx.host_root)


def list_gpus(ctx: Context, source: str | None = None) -> list[GPUInfo]:
    """Every GPU with its verdict. ``source``: ``sysfs`` (this machine's /sys, under the
    host root) or ``libvirt`` (the node-device API: what a remote host reports); default
    sysfs for a local URI, libvirt for a remote one. Only ``libvirt`` needs libvirt-python."""
    from ..passthrough.gpu_attach import gpus_in

    return gpus_in(snapshot(ctx, source))


def plan(ctx: Context, address: str, allow_boot_gpu: bool = False) -> PassthroughPlan:
    from ..passthrough.gpu_attach import plan_passthrough_in

    return plan_passthrough_in(snapshot(ctx), address, allow_boot_gpu=allow_boot_gpu)


def handoff_plan(ctx: Context, name: str):
    """The single-GPU handoff of VM ``name``: every step with its undo for this computer
    (``core.handoff_plan``); changes nothing. Raises ``InvalidConfig`` for a VM without a
    GPU or not made by NeuronOS, ``VMNotFound``."""
    from ..base.errors import InvalidConfig
    from ..core.handoff_plan import plan_handoff
    from ..passthrough.display_host import read_display_host

    ctx.require_local("gpu handoff-plan", "it reads what holds this computer's display")
    config = ctx.settings(name)
    if config is None:
        raise InvalidConfig("NAME", f"{name} was not made by NeuronOS; its GPU is set with"
                            " virt-manager or `virsh edit`")
    if config.gpu_passthrough is None:
        raise InvalidConfig("NAME", f"{name} has no GPU to hand over; give it one: "
                            f"`neuron-vm configure {name} --gpu ADDRESS`")
    pci = snapshot(ctx)
    address = config.gpu_passthrough.address
    functions = [pci.devices[a] for a in pci.slot_functions(address) if a in pci.devices]
    if not functions:
        raise InvalidConfig("gpu.pci_address", f"{address} is not on this computer (no such"
                            " PCI device)")
    functions.sort(key=lambda device: device.address != address)  # the GPU first
    return plan_handoff(name, functions, read_display_host(ctx.host_root))


@dataclass
class PrepareOutcome:
    plan: IsolationPlan
    applied: bool
    done: list[str] = field(default_factory=list)  # what apply did, line by line


def prepare(ctx: Context, address: str, apply: bool = False) -> PrepareOutcome:
    """Plan the boot-time vfio-pci isolation of the GPU; with ``apply``, back up and write
    the files and rebuild the initramfs (a reboot is needed afterwards)."""
    from ..passthrough import isolation

    ctx.require_local("gpu prepare", "it reads and writes the boot configuration (kernel"
                      " options, initramfs) of the computer it runs on; run it on that host")
    planned = isolation.plan_isolation(address, ctx.host_root)
    if not apply:
        return PrepareOutcome(planned, False)
    return PrepareOutcome(planned, True, isolation.apply(planned, ctx.host_root))


def unprepare(ctx: Context) -> list[str]:
    """Undo ``prepare``: every file back byte for byte."""
    from ..passthrough import isolation

    ctx.require_local("gpu unprepare", "it restores the boot configuration of the computer it"
                      " runs on; run it on that host")
    return isolation.unprepare(ctx.host_root)


def detach(ctx: Context, address: str) -> None:
    from ..passthrough.gpu_attach import detach as run

    run(ctx.connection, address)


def reattach(ctx: Context, address: str) -> None:
    from ..passthrough.gpu_attach import reattach as run

    run(ctx.connection, address)
