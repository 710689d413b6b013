"""Where a VM's vCPUs run (issue 31): the plan for this host with its reasons
(``neuron-vm tune NAME``, the app's Settings), and applying it to the VM's definition."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..base.domain_xml import CPUInfo
    from ..core.cpu_plan import CPUPlan
    from ..passthrough.cpu_topology import CPUTopology


@dataclass(frozen=True)
class TuneReport:
    name: str
    host: str  # this host's CPUs in words
    plan: CPUPlan  # what the VM gets on this host
    defined: CPUInfo  # what its definition holds now
    applies: bool  # the VM is pinned (a GPU VM unless --no-tune, or --tune); else topology
    turned_off: bool = False  # unpinned because the user said so (--no-tune)
    topology: CPUTopology | None = None  # this host's, for plans of other vCPU counts
    gpu_node: int | None = None

    def plan_for(self, vcpus: int) -> CPUPlan:
        """The plan for another vCPU count (the Settings dialog's field), pure."""
        from ..core.cpu_plan import plan_cpus

        return plan_cpus(self.topology, vcpus, self.gpu_node)

    @property
    def current(self) -> bool:
        """The definition already holds the plan."""
        from ..core.cpu_plan import defined_cpu, topology_only

        held = defined_cpu(self.defined, self.plan.vcpus)
        wanted = self.plan if self.applies else topology_only(self.plan.vcpus)
        return held is not None and (held.cores, held.threads, held.pins, held.emulator,
                                     held.node) == (wanted.cores, wanted.threads, wanted.pins,
                                                    wanted.emulator, wanted.node)

    def to_dict(self) -> dict:
        return {"name": self.name, "host": self.host, "plan": self.plan.to_dict(),
                "applies": self.applies, "current": self.current}


def report(ctx: Context, name: str) -> TuneReport:
    """The plan of VM ``name`` on this computer. Raises ``VMNotFound``, ``InvalidConfig``
    (a VM NeuronOS did not make, or another computer's: its CPUs are not read here)."""
    import libvirt

    from ..base.domain_xml import read_domain
    from ..base.errors import InvalidConfig
    from ..core.cpu_plan import plan_cpus
    from ..passthrough.cpu_topology import device_numa_node, read_cpu_topology

    ctx.require_local("CPU tuning", "the CPUs read are this computer's")
    config = ctx.settings(name)
    if config is None:
        raise InvalidConfig("NAME", f"{name} was not made by NeuronOS; its CPUs are set with"
                            " virt-manager or `virsh edit`")
    connection = ctx.connection
    xml = connection.execute(lambda conn: connection.lookup(conn, name).XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE), idempotent=True)
    topology = read_cpu_topology(ctx.host_root)
    gpu = config.gpu_passthrough
    node = device_numa_node(gpu.pci_address, ctx.host_root) if gpu else None
    plan = plan_cpus(topology, config.vcpus, node)
    return TuneReport(name, topology.describe() if topology else "unknown (no sysfs)", plan,
                      read_domain(xml).cpu, config.tune.pins(gpu is not None),
                      config.tune.pin is False, topology, node)


def apply(ctx: Context, name: str):
    """Write the plan into the VM's definition (stopped; its next start has it): its
    topology and its pinning (``tune.pin`` on, whatever it was). Returns the change
    (a ``CreationResult``: its ``changes`` in words)."""
    from ..base.errors import InvalidConfig

    config = ctx.settings(name)
    if config is None:
        raise InvalidConfig("NAME", f"{name} was not made by NeuronOS")
    new = replace(config, tune=replace(config.tune, pin=True))
    return ctx.creator().reconfigure(new, previous=config)


# --- the host kept off the VM's cores while it runs (core/cpu_isolation.py) ---------------

def isolation(ctx: Context):
    from ..core.cpu_isolation import CPUIsolation
    from .context import settings_folder

    return CPUIsolation(settings_folder() / "cpu-isolation")


def restore_stale(ctx: Context) -> list[str]:
    """Give the host back every CPU a VM that no longer runs kept from it (a NeuronOS that
    died while it ran, a VM stopped behind its back); what could not be, in words."""
    from ..base.primitives import is_remote

    if is_remote(ctx.uri) or not isolation(ctx).recorded():
        return []
    connection = ctx.connection
    running = set(connection.execute(lambda conn: [
        dom.UUIDString() for dom in conn.listAllDomains(1)], idempotent=True))  # ACTIVE
    return isolation(ctx).restore_stale(running)


def isolate_started(ctx: Context, name: str) -> str | None:
    """Once VM ``name`` runs with ``--isolate``: the host's units limited to the CPUs it does
    not get (its emulator pin). Returns what to tell the user; a failure is told, never
    stops the VM."""
    from ..base.domain_xml import read_domain
    from ..base.errors import OperationFailed
    from ..base.primitives import is_remote

    config = ctx.settings(name)
    if config is None or not config.tune.isolate or is_remote(ctx.uri):
        return None
    connection = ctx.connection
    xml, uuid = connection.execute(lambda conn: (lambda dom: (dom.XMLDesc(0), dom.UUIDString()))(
        connection.lookup(conn, name)), idempotent=True)
    host_cpus = read_domain(xml).cpu.emulator
    if not host_cpus:
        return f"{name} runs unpinned, so the host was not kept off its cores"
    try:
        isolation(ctx).apply(name, uuid, host_cpus)
    except OperationFailed as error:
        return f"{name} runs, but the host could not be kept off its cores: {error}"
    return f"while {name} runs, the host's own processes keep to CPUs {host_cpus}"


def release(ctx: Context, name: str | None = None, uuid: str | None = None) -> list[str]:
    """After VM ``name`` (or the VM ``uuid``) stopped: the host's CPUs back (nothing when
    none were kept)."""
    from ..base.primitives import is_remote

    if is_remote(ctx.uri):
        return []
    if uuid is None:
        connection = ctx.connection
        uuid = connection.execute(lambda conn: connection.lookup(conn, name).UUIDString(),
                                  idempotent=True)
    return isolation(ctx).restore(uuid)
