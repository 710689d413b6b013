"""sysfs CPU trees shaped exactly like the kernel's, for hosts this machine is not.

Each shape writes what ``passthrough/cpu_topology.py`` reads and nothing it does not:
``devices/system/cpu/online``, ``cpuN/topology/{core_cpus_list,thread_siblings_list,
core_id,physical_package_id}``, ``cpuN/cache/index{0..3}/{level,type,size,
shared_cpu_list}`` (an L1d, L1i and L2 per core too, so the reader must pick level 3),
``devices/system/node/nodeN/cpulist`` and, on hybrid Intel, ``devices/cpu_core/cpus`` and
``devices/cpu_atom/cpus``. Value formats are the kernel's (cpulists like ``0-7,16-23``,
sizes like ``32768K``), as this machine's /sys shows them.

Where each shape's numbers come from:

- i9-13900K: 8 P-cores with SMT + 16 E-cores, 32 threads, 36 MB L3 shared by all (Intel's
  specification; lexi-src/sGPUpt#1's lscpu: 32 CPUs, 24 cores, 2 threads per core). The
  P-cores' threads come first, siblings adjacent (0-1, 2-3, ... 14-15), then the E-cores
  16-31, and the cpu_core/cpu_atom PMUs list 0-15 and 16-31: the usual numbering of these
  parts, not checked against a dump here; the planner follows core_cpus_list and the PMU
  lists, never the numbering.
- Ryzen 9 7950X3D: 16 cores, 2 CCDs, 96 MB L3 on the V-Cache CCD and 32 MB on the other
  (AMD's 128 MB total; hwloc#772, cpufetch#332); threads numbered core n -> CPUs n and
  n+16 (lscpu -e of a 5950X, FeralInteractive/gamemode#460), CCD0 = cores 0-7.
- Ryzen 7 5800X: 8 cores in one CCD, 32 MB L3; siblings n and n+8.
- Threadripper 1950X in NUMA mode: 16 cores, 2 dies each a NUMA node (node0 CPUs 0-7,16-23;
  node1 8-15,24-31, the numbering of lscpu on 2-node hosts such as gdt-cpus#7's), 4 CCX of
  4 cores with 8 MB L3 each; the GPU at 0000:41:00.0 hangs off node 1.
- A 4-core laptop without SMT: 4 cores x 1 thread, 6 MB L3 (the shape of the 4-core,
  1-thread lscpu in nviennot/core-to-core-latency#2).
- A 2-CPU cloud VM: one core with two threads (0-1), as 2-vCPU cloud instances present
  themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Shape:
    name: str
    cores: tuple[tuple[int, ...], ...]  # each core's CPUs
    l3: tuple[tuple[str, str], ...]  # (shared_cpu_list, size)
    nodes: tuple[str, ...] = ()  # each node's cpulist (empty: the whole machine is node0)
    hybrid: tuple[str, str] | None = None  # (cpu_core/cpus, cpu_atom/cpus)
    gpu: tuple[str, int] | None = None  # (PCI address, numa_node)
    core_ids: tuple[int, ...] = field(default=())  # per core (default: its index)


def _pairs(cores: int, offset: int) -> tuple[tuple[int, ...], ...]:
    """AMD's numbering: core n has CPUs n and n + offset."""
    return tuple((n, n + offset) for n in range(cores))


SHAPES = {
    "i9-13900k": Shape(
        "i9-13900K", tuple((2 * n, 2 * n + 1) for n in range(8)) + tuple(
            (cpu,) for cpu in range(16, 32)), (("0-31", "36864K"),),
        hybrid=("0-15", "16-31"), gpu=("0000:01:00.0", -1),
        core_ids=tuple(range(0, 32, 4)) + tuple(range(32, 48))),
    "7950x3d": Shape("Ryzen 9 7950X3D", _pairs(16, 16),
                     (("0-7,16-23", "98304K"), ("8-15,24-31", "32768K")),
                     gpu=("0000:01:00.0", -1)),
    "5800x": Shape("Ryzen 7 5800X", _pairs(8, 8), (("0-15", "32768K"),),
                   gpu=("0000:0b:00.0", -1)),
    "threadripper": Shape(
        "Threadripper 1950X (NUMA)", _pairs(16, 16),
        (("0-3,16-19", "8192K"), ("4-7,20-23", "8192K"), ("8-11,24-27", "8192K"),
         ("12-15,28-31", "8192K")), nodes=("0-7,16-23", "8-15,24-31"),
        gpu=("0000:41:00.0", 1)),
    "laptop": Shape("4-core laptop without SMT", tuple((n,) for n in range(4)),
                    (("0-3", "6144K"),)),
    "cloud": Shape("2-CPU cloud VM", ((0, 1),), (("0-1", "36608K"),)),
}


def _cpulist(cpus) -> str:
    from vm_manager.passthrough.cpu_topology import format_cpulist

    return format_cpulist(cpus)


def build(root: Path, shape: Shape) -> Path:
    """Write ``shape`` under ``root`` (which stands for "/"); returns ``root``."""
    from vm_manager.passthrough.cpu_topology import parse_cpulist

    cpu_dir = root / "sys/devices/system/cpu"
    every = sorted(cpu for core in shape.cores for cpu in core)
    cpu_dir.mkdir(parents=True, exist_ok=True)
    for name in ("online", "possible", "present"):
        (cpu_dir / name).write_text(_cpulist(every) + "\n")
    l3_of = {}
    for shared, size in shape.l3:
        for cpu in parse_cpulist(shared):
            l3_of[cpu] = (shared, size)
    for index, core in enumerate(shape.cores):
        for cpu in core:
            folder = cpu_dir / f"cpu{cpu}"
            topology = folder / "topology"
            topology.mkdir(parents=True)
            siblings = _cpulist(core) + "\n"
            (topology / "core_cpus_list").write_text(siblings)
            (topology / "thread_siblings_list").write_text(siblings)
            core_id = shape.core_ids[index] if shape.core_ids else index
            (topology / "core_id").write_text(f"{core_id}\n")
            (topology / "physical_package_id").write_text("0\n")
            caches = [("1", "Data", "48K" if len(core) > 1 else "32K", siblings),
                      ("1", "Instruction", "32K", siblings),
                      ("2", "Unified", "2048K", siblings)]
            if cpu in l3_of:
                shared, size = l3_of[cpu]
                caches.append(("3", "Unified", size, shared + "\n"))
            for number, (level, kind, size, shared) in enumerate(caches):
                cache = folder / "cache" / f"index{number}"
                cache.mkdir(parents=True)
                (cache / "level").write_text(level + "\n")
                (cache / "type").write_text(kind + "\n")
                (cache / "size").write_text(size + "\n")
                (cache / "shared_cpu_list").write_text(shared)
    node_dir = root / "sys/devices/system/node"
    for number, cpus in enumerate(shape.nodes or (_cpulist(every),)):
        (node_dir / f"node{number}").mkdir(parents=True)
        (node_dir / f"node{number}" / "cpulist").write_text(cpus + "\n")
    if shape.hybrid:
        for pmu, cpus in zip(("cpu_core", "cpu_atom"), shape.hybrid):
            (root / "sys/devices" / pmu).mkdir(parents=True)
            (root / "sys/devices" / pmu / "cpus").write_text(cpus + "\n")
    if shape.gpu:
        address, node = shape.gpu
        device = root / "sys/bus/pci/devices" / address
        device.mkdir(parents=True, exist_ok=True)
        (device / "numa_node").write_text(f"{node}\n")
    return root


def hugepages(root: Path, pools: dict[int, tuple[int, int]],
              nodes: dict[int, dict[int, int]] | None = None, mounted: bool = True) -> Path:
    """Huge page pools as the kernel shows them: size (KiB) -> (nr_hugepages,
    free_hugepages) under /sys/kernel/mm/hugepages, free pages per node (node -> size ->
    free), and a hugetlbfs in /proc/mounts (as systemd's dev-hugepages.mount leaves it)."""
    for kib, (total, free) in pools.items():
        folder = root / "sys/kernel/mm/hugepages" / f"hugepages-{kib}kB"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "nr_hugepages").write_text(f"{total}\n")
        (folder / "free_hugepages").write_text(f"{free}\n")
    for node, sizes in (nodes or {}).items():
        for kib, free in sizes.items():
            folder = root / f"sys/devices/system/node/node{node}/hugepages/hugepages-{kib}kB"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "free_hugepages").write_text(f"{free}\n")
    (root / "proc").mkdir(parents=True, exist_ok=True)
    (root / "proc/mounts").write_text(
        "proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n"
        + ("hugetlbfs /dev/hugepages hugetlbfs rw,nosuid,nodev,relatime,pagesize=2M 0 0\n"
           if mounted else ""))
    return root
