"""Where a VM's vCPUs run (issue 31): the plan for this host with its reasons
(``neuron-vm tune NAME``, the app's Settings), and applying it to the VM's definition."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..base.domain_xml import CPUInfo
    from ..core.cpu_plan import CPUPlan


@dataclass(frozen=True)
class TuneReport:
    name: str
    host: str  # this host's CPUs in words
    plan: CPUPlan  # what the VM gets on this host
    defined: CPUInfo  # what its definition holds now
    applies: bool  # the VM is pinned (a GPU VM unless --no-tune, or --tune); else topology

    @property
    def current(self) -> bool:
        """The definition already holds the plan."""
        from ..core.cpu_plan import defined_cpu

        held = defined_cpu(self.defined, self.plan.vcpus)
        wanted = self.plan if self.applies else replace(self.plan, pins=(), emulator=(),
                                                        node=None)
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
                      read_domain(xml).cpu, config.tune.pins(gpu is not None))


def apply(ctx: Context, name: str):
    """Write the plan into the VM's definition (stopped; its next start has it): its
    topology and its pinning (``tune.pin`` on, whatever it was). Returns
    ``ReconfigureOutcome``."""
    from ..base.errors import InvalidConfig
    from .create import ReconfigureOutcome

    config = ctx.settings(name)
    if config is None:
        raise InvalidConfig("NAME", f"{name} was not made by NeuronOS")
    new = replace(config, tune=replace(config.tune, pin=True))
    result = ctx.creator().reconfigure(new, previous=config)
    return ReconfigureOutcome(result, new)
