"""The host's CPUs as the kernel describes them in sysfs, read only, for planning where a
VM's vCPUs run (issue 31). The root folder is a parameter: tests pass trees shaped like the
kernel's (tests/support/cpu_trees.py), and ``NEURONOS_HOST_ROOT`` stands for "/".

Facts (kernel Documentation/admin-guide/cputopology.rst and ABI/stable/sysfs-devices-system-
cpu, Documentation/ABI/testing/sysfs-devices-system-cpu; checked read-only on this
machine's /sys):

- ``/sys/devices/system/cpu/online``: the online CPUs, as a cpulist (``0-15,32``).
- ``cpuN/topology/core_cpus_list``: the CPUs of N's core, its SMT siblings (kernels before
  5.7 name it ``thread_siblings_list``); ``physical_package_id`` its socket.
- ``cpuN/cache/indexK/``: ``level`` 3 and ``type`` Unified is the L3; ``shared_cpu_list`` the
  CPUs sharing it (one AMD CCD/CCX, or a whole Intel die); ``size`` like ``32768K``.
- ``/sys/devices/system/node/nodeN/cpulist``: the CPUs of NUMA node N (no node folder
  without CONFIG_NUMA: one node).
- Hybrid Intel (12th generation on): ``/sys/devices/cpu_core/cpus`` lists the P-cores' CPUs
  and ``/sys/devices/cpu_atom/cpus`` the E-cores' (the perf PMU of each core type; without
  them the CPU is not hybrid).
- ``/sys/bus/pci/devices/ADDR/numa_node``: the node a device hangs off, -1 when the
  firmware does not say.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .pci import host_root

CPU_DIR = "sys/devices/system/cpu"
NODE_DIR = "sys/devices/system/node"


@dataclass(frozen=True)
class Core:
    cpus: tuple[int, ...]  # its logical CPUs (SMT siblings), ascending
    package: int
    l3: int  # index into CPUTopology.l3; -1: no L3 known
    node: int  # its NUMA node (0 without NUMA)
    kind: str = ""  # "P" or "E" on hybrid Intel, "" elsewhere

    @property
    def first(self) -> int:
        return self.cpus[0]


@dataclass(frozen=True)
class L3Domain:
    cpus: frozenset[int]
    size_kib: int


@dataclass(frozen=True)
class CPUTopology:
    cores: tuple[Core, ...]  # ordered by their first CPU
    l3: tuple[L3Domain, ...] = ()
    nodes: tuple[int, ...] = (0,)

    @property
    def cpus(self) -> int:
        return sum(len(core.cpus) for core in self.cores)

    @property
    def hybrid(self) -> bool:
        return any(core.kind for core in self.cores)

    def describe(self) -> str:
        """``16 cores, 32 CPUs (SMT), 2 L3 caches (96 MiB, 32 MiB), 1 NUMA node``."""
        smt = " (SMT)" if any(len(core.cpus) > 1 for core in self.cores) else ""
        kinds = ""
        if self.hybrid:
            kinds = (f": {sum(c.kind == 'P' for c in self.cores)} P-cores,"
                     f" {sum(c.kind == 'E' for c in self.cores)} E-cores")
        sizes = [_size(domain.size_kib) for domain in self.l3]
        caches = (f"{len(sizes)} x {sizes[0]}" if len(sizes) > 2 and len(set(sizes)) == 1
                  else ", ".join(sizes))
        return (f"{len(self.cores)} core{'s' if len(self.cores) != 1 else ''}{kinds},"
                f" {self.cpus} CPUs{smt},"
                f" {len(self.l3)} L3 cache{'s' if len(self.l3) != 1 else ''}"
                f"{f' ({caches})' if caches else ''}, {len(self.nodes)} NUMA"
                f" node{'s' if len(self.nodes) != 1 else ''}")


def parse_cpulist(text: str) -> set[int]:
    """The kernel's cpulist format (``0-3,8,10-11``) as a set; ``ValueError`` when it is
    not one."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        match = re.fullmatch(r"(\d+)(?:-(\d+))?", part.strip())
        if match is None:
            raise ValueError(f"not a CPU list: {text.strip()!r}")
        first, last = int(match.group(1)), int(match.group(2) or match.group(1))
        cpus.update(range(first, last + 1))
    return cpus


def format_cpulist(cpus) -> str:
    """A set of CPUs as libvirt's cpuset and the kernel write them: ``0-3,8``."""
    ordered, parts = sorted(set(cpus)), []
    start = prev = None
    for cpu in ordered + [None]:
        if cpu is not None and prev is not None and cpu == prev + 1:
            prev = cpu
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = cpu
    return ",".join(parts)


def read_cpu_topology(root: Path | str | None = None) -> CPUTopology | None:
    """The host's cores, L3 caches and NUMA nodes; None when sysfs has no CPU topology
    (not Linux, or a tree without it)."""
    base = host_root(root)
    cpu_dir = base / CPU_DIR
    online = _cpulist(cpu_dir / "online")
    if not online:
        return None
    kinds = {}
    for kind, pmu in (("P", "cpu_core"), ("E", "cpu_atom")):
        for cpu in _cpulist(base / "sys/devices" / pmu / "cpus"):
            kinds[cpu] = kind
    node_of: dict[int, int] = {}
    nodes = []
    for folder in sorted((base / NODE_DIR).glob("node[0-9]*"), key=_number):
        cpus = _cpulist(folder / "cpulist")
        if cpus:  # a node of memory only has no CPUs
            nodes.append(_number(folder))
            node_of.update({cpu: _number(folder) for cpu in cpus})
    l3: list[L3Domain] = []
    cores: dict[tuple[int, ...], Core] = {}
    for cpu in sorted(online):
        topology = cpu_dir / f"cpu{cpu}" / "topology"
        siblings = _cpulist(topology / "core_cpus_list") or \
            _cpulist(topology / "thread_siblings_list") or {cpu}
        key = tuple(sorted(siblings & online))
        if key in cores:
            continue
        domain = _l3_of(cpu_dir / f"cpu{cpu}" / "cache")
        index = -1
        if domain is not None:
            if domain not in l3:
                l3.append(domain)
            index = l3.index(domain)
        cores[key] = Core(key, _int(topology / "physical_package_id", 0), index,
                          node_of.get(cpu, 0), kinds.get(cpu, ""))
    return CPUTopology(tuple(sorted(cores.values(), key=lambda core: core.first)), tuple(l3),
                       tuple(nodes) or (0,))


def device_numa_node(address: str, root: Path | str | None = None) -> int | None:
    """The NUMA node of PCI device ``address`` (None when the firmware does not say)."""
    node = _int(host_root(root) / "sys/bus/pci/devices" / address / "numa_node", -1)
    return node if node >= 0 else None


def _l3_of(cache: Path) -> L3Domain | None:
    for index in sorted(cache.glob("index[0-9]*"), key=_number):
        if _text(index / "level") == "3" and _text(index / "type") == "Unified":
            cpus = _cpulist(index / "shared_cpu_list")
            if cpus:
                return L3Domain(frozenset(cpus), _kib(_text(index / "size")))
    return None


def _text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _cpulist(path: Path) -> set[int]:
    try:
        return parse_cpulist(_text(path))
    except ValueError:
        return set()


def _int(path: Path, default: int) -> int:
    try:
        return int(_text(path))
    except ValueError:
        return default


def _number(path: Path) -> int:
    digits = re.sub(r"\D", "", path.name)
    return int(digits) if digits else 0


def _kib(size: str) -> int:
    """sysfs cache sizes: ``32768K`` (KiB), ``96M``; a bare number is bytes."""
    match = re.fullmatch(r"(\d+)\s*([KMG]?)", size)
    if match is None:
        return 0
    number, unit = int(match.group(1)), match.group(2)
    return {"": number // 1024, "K": number, "M": number << 10, "G": number << 20}[unit]


def _size(kib: int) -> str:
    return f"{kib >> 10} MiB" if kib >= 1024 and kib % 1024 == 0 else f"{kib} KiB"


__all__ = ["CPUTopology", "Core", "L3Domain", "device_numa_node", "format_cpulist",
           "parse_cpulist", "read_cpu_topology"]
