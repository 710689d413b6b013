"""The host's huge pages (read only): which sizes the kernel offers, how many are reserved
and free, per NUMA node too; and the guided fix that reserves them (it needs root).

Facts (kernel Documentation/admin-guide/mm/hugetlbpage.rst; checked read-only on this
machine's /sys):

- ``/sys/kernel/mm/hugepages/hugepages-<size>kB/`` exists for each size the CPU and kernel
  offer (x86-64: 2048 kB always, 1048576 kB with the CPU flag pdpe1gb), with
  ``nr_hugepages`` (reserved) and ``free_hugepages`` (reserved and not in use).
- ``/sys/devices/system/node/nodeN/hugepages/hugepages-<size>kB/`` the same per NUMA node.
- Writing ``nr_hugepages`` (root) reserves pages at run time; 2 MiB pages usually can be,
  1 GiB pages rarely once memory is fragmented: those are reserved at boot with
  ``hugepagesz=1G hugepages=N`` on the kernel command line.
- QEMU maps them from a mounted hugetlbfs; libvirt finds the mounts when libvirtd starts
  (qemu.conf ``hugetlbfs_mount``, libvirt's "formatdomain" memoryBacking). systemd mounts
  one at /dev/hugepages (dev-hugepages.mount); a system without it has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .pci import host_root

POOL_DIR = "sys/kernel/mm/hugepages"


@dataclass(frozen=True)
class HugePagePool:
    size_kib: int
    total: int
    free: int
    free_by_node: dict[int, int] = field(default_factory=dict)


def read_hugepages(root: Path | str | None = None) -> dict[int, HugePagePool]:
    """Page size in KiB -> its pool, for each size the host offers ({}: none, or no sysfs)."""
    base = host_root(root)
    pools = {}
    for folder in sorted((base / POOL_DIR).glob("hugepages-*kB")):
        size = _size(folder.name)
        if size is None:
            continue
        by_node = {}
        for node in sorted((base / "sys/devices/system/node").glob("node[0-9]*")):
            free = _count(node / "hugepages" / folder.name / "free_hugepages")
            if free is not None:
                by_node[int(node.name[4:])] = free
        pools[size] = HugePagePool(size, _count(folder / "nr_hugepages") or 0,
                                   _count(folder / "free_hugepages") or 0, by_node)
    return pools


def hugetlbfs_mounted(root: Path | str | None = None) -> bool:
    """Whether a hugetlbfs is mounted (``/proc/mounts``)."""
    try:
        mounts = (host_root(root) / "proc/mounts").read_text()
    except OSError:
        return False
    return any(line.split()[2:3] == ["hugetlbfs"] for line in mounts.splitlines())


def pages_needed(memory_mib: int, size_kib: int) -> int:
    return -(-memory_mib * 1024 // size_kib)


def reserve_fix(size_kib: int, total: int) -> str:
    """How to have ``total`` pages of ``size_kib`` reserved (root), in words."""
    if size_kib >= 1048576:
        return (f"1 GiB pages are reserved at boot: add `hugepagesz=1G hugepages={total}` to"
                " the kernel command line (e.g. GRUB_CMDLINE_LINUX in /etc/default/grub, then"
                " `sudo update-grub`) and restart")
    return (f"reserve them: `echo {total} | sudo tee"
            f" /sys/kernel/mm/hugepages/hugepages-{size_kib}kB/nr_hugepages` (until the next"
            f" boot; `vm.nr_hugepages = {total}` in /etc/sysctl.d/ keeps it)")


def _size(name: str) -> int | None:
    try:
        return int(name.removeprefix("hugepages-").removesuffix("kB"))
    except ValueError:
        return None


def _count(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None
