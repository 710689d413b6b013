"""Where a VM's vCPUs run: its CPU topology and, for GPU VMs, a pinning plan made from the
host's topology (pure: the host is a ``CPUTopology`` read once, tests give hand-made ones).

What it plans and why (the Arch wiki's "PCI passthrough via OVMF: Performance tuning", done
from the host's own shape instead of by hand):

- **Topology everywhere**: one socket, one die, the vCPUs as its cores (``threads`` 2 when
  they are pinned to SMT sibling pairs). Without it each vCPU is a socket of its own, and
  Windows 11 Pro uses at most 2 sockets (Home 1): 4 vCPUs would give it 2 CPUs.
- **Whole cores of one L3 cache**: a vCPU pair on the two threads of one host core, all of
  them in one L3 domain (one AMD CCD/CCX, one Intel die), so the guest's threads share
  what they share on real hardware. On parts with unequal L3 (X3D) the larger cache first;
  on hybrid Intel, P-cores only; on NUMA hosts the GPU's node first.
- **The host keeps the first core** (CPU 0 and its sibling: timers and most interrupts run
  there), and QEMU's own threads (``emulatorpin``, ``iothreadpin``) run on every CPU the
  guest does not get, so they never take a vCPU's.
- **Memory on the chosen cores' node** (``numatune``) on NUMA hosts.

When the host cannot give what was asked, the plan says why and what it can give, and pins
nothing (the VM still gets its topology).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..passthrough.cpu_topology import Core, CPUTopology, format_cpulist, parse_cpulist

from ..base.errors import InvalidConfig
from ..passthrough.hugepages import pages_needed, reserve_fix

if TYPE_CHECKING:
    from ..base.domain_xml import CPUInfo
    from ..base.vm_config import VMConfig
    from .host_facts import HostFacts


@dataclass(frozen=True)
class CPUPlan:
    vcpus: int
    cores: int  # of the one socket and die
    threads: int  # per core
    pins: tuple[tuple[int, int], ...] = ()  # (vCPU, host CPU); empty: not pinned
    emulator: tuple[int, ...] = ()  # host CPUs of QEMU's own threads
    node: int | None = None  # numatune: the guest's memory on this node
    reasons: tuple[str, ...] = ()
    problem: str | None = None  # why nothing is pinned although it was asked

    @property
    def pinned(self) -> bool:
        return bool(self.pins)

    @property
    def host_cpus(self) -> str:
        return format_cpulist(cpu for _, cpu in self.pins)

    @property
    def emulator_cpus(self) -> str:
        return format_cpulist(self.emulator)

    def describe(self) -> list[str]:
        lines = [f"topology: 1 socket, {self.cores} core{'s' if self.cores != 1 else ''}"
                 f" x {self.threads} thread{'s' if self.threads != 1 else ''}"
                 f" ({self.vcpus} vCPU{'s' if self.vcpus != 1 else ''})"]
        if self.pins:
            lines.append("vCPUs -> host CPUs: " + ", ".join(f"{v}->{c}" for v, c in self.pins))
            lines.append(f"QEMU's own threads (emulator, I/O): host CPUs {self.emulator_cpus}")
            if self.node is not None:
                lines.append(f"memory: NUMA node {self.node}")
        if self.problem:
            lines.append(f"not pinned: {self.problem}")
        lines.extend(f"why: {reason}" for reason in self.reasons)
        return lines

    def to_dict(self) -> dict:
        return {"vcpus": self.vcpus, "sockets": 1, "dies": 1, "cores": self.cores,
                "threads": self.threads, "pins": [list(pin) for pin in self.pins],
                "emulator": self.emulator_cpus or None, "node": self.node,
                "reasons": list(self.reasons), "problem": self.problem}


def cpu_for(config: VMConfig, facts: HostFacts) -> CPUPlan:
    """What a VM gets: its pinning plan when it is pinned (a GPU VM unless ``--no-tune``, any
    VM with ``--tune``), else, and on a host whose topology is unknown, one socket of
    single cores."""
    if not config.tune.pins(config.gpu_passthrough is not None):
        return topology_only(config.vcpus)
    if facts.cpu_topology is None:
        return topology_only(config.vcpus, "this host's CPU topology was not read (another"
                             " computer's libvirt, or no sysfs)")
    return plan_cpus(facts.cpu_topology, config.vcpus, facts.gpu_numa_node)


def check_hugepages(config: VMConfig, facts: HostFacts, node: int | None,
                    warnings: list[str]) -> int | None:
    """The huge page size (KiB) of the VM's memory, checked against what the host offers
    (None: none asked). A size the host does not offer, or memory that is not whole pages,
    is refused; fewer free pages than it needs now is a warning with the fix (pages are
    taken at each start, and the start checks again)."""
    from ..base.vm_config import HUGEPAGE_SIZES

    size = config.tune.hugepages
    if size is None:
        return None
    kib = HUGEPAGE_SIZES[size]
    if config.memory_mb * 1024 % kib:
        raise InvalidConfig("tune.hugepages", f"{config.memory_mb} MiB is not whole {size}"
                            f" pages: give the memory in steps of {kib // 1024} MiB")
    if facts.hugepages is None:
        return kib  # another computer's: its pages are checked when it starts
    pool = facts.hugepages.get(kib)
    if pool is None:
        offered = ", ".join(f"{k // 1024}M" if k < 1048576 else f"{k // 1048576}G"
                            for k in sorted(facts.hugepages)) or "none"
        cpu = "; 1G pages need a CPU with pdpe1gb" if size == "1G" else ""
        raise InvalidConfig("tune.hugepages", f"this host offers no {size} pages (it offers:"
                            f" {offered}){cpu}")
    need = pages_needed(config.memory_mb, kib)
    free = pool.free_by_node.get(node, pool.free) if node is not None else pool.free
    if free < need:
        where = f" on NUMA node {node}" if node is not None else ""
        warnings.append(f"the VM takes {need} huge page{'s' if need != 1 else ''} of {size} at"
                        f" each start and this host"
                        f" has {free} free{where} now; it will not start until it has them:"
                        f" {reserve_fix(kib, pool.total + need - free)}")
    return kib


def defined_cpu(info: CPUInfo, vcpus: int) -> CPUPlan | None:
    """The plan a definition holds, as the templates render it, so that a change compares
    with what is there (None: no ``<topology>``, a VM made before it). A pin the templates
    never write (a range set by hand) reads as no pin: the plan's pins replace it."""
    if info.topology is None:
        return None
    _, _, cores, threads = info.topology
    try:
        pins = tuple((vcpu, int(cpuset)) for vcpu, cpuset in info.pins)
        emulator = tuple(sorted(parse_cpulist(info.emulator or "")))
        node = int(info.memory_nodes) if info.memory_nodes else None
    except ValueError:
        pins, emulator, node = (), (), None
    return CPUPlan(vcpus, cores, threads, pins, emulator, node)


def topology_only(vcpus: int, problem: str | None = None,
                  reasons: tuple[str, ...] = ()) -> CPUPlan:
    """One socket with ``vcpus`` single-threaded cores: what every VM gets unpinned."""
    return CPUPlan(vcpus, vcpus, 1, problem=problem, reasons=reasons)


def plan_cpus(topology: CPUTopology | None, vcpus: int,
              gpu_node: int | None = None) -> CPUPlan:
    """The pinning plan of ``vcpus`` on this host, or the topology alone with the reason."""
    if topology is None or not topology.cores:
        return topology_only(vcpus, "this host's CPU topology cannot be read (no sysfs)")
    host_core = topology.cores[0]
    usable = [core for core in topology.cores[1:]
              if not topology.hybrid or core.kind == "P"]
    why = []
    if topology.hybrid:
        why.append("hybrid Intel CPU: P-cores only (E-cores are slower and have no SMT);"
                   " the E-cores stay the host's")
    if not usable:
        return topology_only(vcpus, f"this host has {len(topology.cores)} core"
                             f"{'s' if len(topology.cores) != 1 else ''}: nothing is left to"
                             " pin beside the first, which the host keeps", tuple(why))
    width = min(len(core.cpus) for core in usable)
    if vcpus % width:
        return topology_only(vcpus, f"{vcpus} vCPUs are not whole cores of {width} threads:"
                             f" ask for {vcpus - vcpus % width} or"
                             f" {vcpus - vcpus % width + width}", tuple(why))
    needed = vcpus // width
    domains = _domains(usable, topology, gpu_node)
    chosen = next((cores for cores in domains if len(cores) >= needed), None)
    if chosen is None:
        most = max(len(cores) for cores in domains)
        return topology_only(vcpus, f"{vcpus} vCPUs need {needed} whole cores of one L3"
                             f" cache beside the host's first core; this host has at most"
                             f" {most} (ask for at most {most * width} vCPU"
                             f"{'s' if most * width != 1 else ''})", tuple(why))
    cores = chosen[:needed]
    if len(topology.l3) > 1:
        sizes = {topology.l3[core.l3].size_kib for core in usable if core.l3 >= 0}
        l3 = topology.l3[cores[0].l3] if cores[0].l3 >= 0 else None
        if l3 is not None:
            larger = " (the larger one)" if len(sizes) > 1 and l3.size_kib == max(sizes) else ""
            why.append(f"all in one L3 cache of {l3.size_kib >> 10} MiB{larger}, host CPUs"
                       f" {format_cpulist(l3.cpus)}")
    if gpu_node is not None and len(topology.nodes) > 1:
        why.append(f"NUMA node {cores[0].node}: the GPU's" if cores[0].node == gpu_node else
                   f"NUMA node {cores[0].node}: the GPU's node {gpu_node} has too few free"
                   " cores")
    pins = tuple(enumerate(cpu for core in cores for cpu in core.cpus[:width]))
    guest = {cpu for _, cpu in pins}
    every = {cpu for core in topology.cores for cpu in core.cpus}
    why.append(f"the host keeps its first core (CPUs {format_cpulist(host_core.cpus)}: timers"
               " and most interrupts run there)")
    if width > 1:
        why.append("each vCPU pair on the two threads of one host core, as the guest's"
                   " topology says (threads 2)")
    return CPUPlan(vcpus, needed, width, pins, tuple(sorted(every - guest)),
                   cores[0].node if len(topology.nodes) > 1 else None, tuple(why))


def _domains(usable: list[Core], topology: CPUTopology,
             gpu_node: int | None) -> list[list[Core]]:
    """The usable cores grouped by L3 cache, best first: the GPU's NUMA node, then the
    larger cache, then the lower CPU numbers."""
    groups: dict[tuple[int, int], list[Core]] = {}
    for core in usable:
        groups.setdefault((core.l3, core.node), []).append(core)

    def rank(key: tuple[int, int]):
        l3, node = key
        size = topology.l3[l3].size_kib if l3 >= 0 else 0
        return (gpu_node is not None and node != gpu_node, -size, groups[key][0].first)

    return [groups[key] for key in sorted(groups, key=rank)]
