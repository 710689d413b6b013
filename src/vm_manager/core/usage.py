"""What the running VMs and the host are using right now: CPU time and memory.

This is the one periodic read of the library. libvirt has no event for "CPU time moved",
so the desktop app samples once a second while its window is visible, and each sample is
ONE ``getAllDomainStats`` call for every running VM (not one call per VM), plus the host's
CPU and memory counters. ``UsageHistory`` turns consecutive samples into CPU % and keeps
the last 60 points per VM; it is pure (no libvirt), so it is tested on made-up samples.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import libvirt

from ..base.connection import LibvirtConnection

HISTORY = 60  # points kept per VM (one a second: the last minute)
STATS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
         | libvirt.VIR_DOMAIN_STATS_BALLOON)


@dataclass(frozen=True)
class DomainSample:
    cpu_time_ns: int | None  # "cpu.time": all of the VM's vCPUs and QEMU's own threads
    memory_used_kib: int | None  # what the guest uses (its balloon stats), else QEMU's RSS
    memory_kib: int | None  # what the guest has ("balloon.current")


@dataclass(frozen=True)
class HostSample:
    cpu_busy_ns: int | None  # user + kernel, all CPUs (cumulative)
    cpu_total_ns: int | None  # busy + idle + iowait
    memory_kib: int | None
    memory_used_kib: int | None  # total - free - buffers - cached


@dataclass(frozen=True)
class UsageSample:
    monotonic: float
    domains: dict[str, DomainSample]
    host: HostSample


def read_usage(connection: LibvirtConnection) -> UsageSample:
    """One sample: every running VM's counters in one bulk call, and the host's."""

    def read(conn: libvirt.virConnect) -> UsageSample:
        stats = conn.getAllDomainStats(STATS, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)
        now = time.monotonic()
        domains = {dom.name(): _domain(values) for dom, values in stats}
        return UsageSample(now, domains, _host(conn))

    return connection.execute(read, idempotent=True)


def _domain(values: dict) -> DomainSample:
    available, unused = values.get("balloon.available"), values.get("balloon.unused")
    used = available - unused if available is not None and unused is not None else \
        values.get("balloon.rss")
    return DomainSample(values.get("cpu.time"), used, values.get("balloon.current"))


def _host(conn: libvirt.virConnect) -> HostSample:
    busy = total = memory = used = None
    try:
        cpu = conn.getCPUStats(libvirt.VIR_NODE_CPU_STATS_ALL_CPUS, 0)
        busy = cpu.get("user", 0) + cpu.get("kernel", 0)
        total = busy + cpu.get("idle", 0) + cpu.get("iowait", 0)
    except libvirt.libvirtError:
        if not conn.isAlive():
            raise
    try:
        mem = conn.getMemoryStats(libvirt.VIR_NODE_MEMORY_STATS_ALL_CELLS, 0)
        memory = mem.get("total")
        if memory is not None:
            used = memory - sum(mem.get(key, 0) for key in ("free", "buffers", "cached"))
    except libvirt.libvirtError:  # the test driver has none
        if not conn.isAlive():
            raise
    return HostSample(busy, total, memory, used)


@dataclass(frozen=True)
class Point:
    cpu_percent: float | None  # of the VM's vCPUs (100 = all of them busy)
    memory_used_kib: int | None


@dataclass
class UsageHistory:
    """The last ``HISTORY`` points of every running VM, and the host's latest figures."""

    points: dict[str, deque] = field(default_factory=dict)
    host_cpu_percent: float | None = None
    host: HostSample | None = None
    _last: UsageSample | None = None

    def add(self, sample: UsageSample, vcpus: dict[str, int]) -> None:
        """Take a sample; ``vcpus``: each VM's vCPU count (for the percentage). A VM that
        no longer runs loses its history: a stopped VM shows nothing, not zeros."""
        last = self._last
        seconds = sample.monotonic - last.monotonic if last else 0.0
        for name in list(self.points):
            if name not in sample.domains:
                del self.points[name]
        for name, now in sample.domains.items():
            before = last.domains.get(name) if last else None
            percent = None
            if (before and seconds > 0 and now.cpu_time_ns is not None
                    and before.cpu_time_ns is not None):
                busy = max(now.cpu_time_ns - before.cpu_time_ns, 0) / 1e9 / seconds
                percent = min(100.0 * busy / max(vcpus.get(name, 1), 1), 100.0)
            self.points.setdefault(name, deque(maxlen=HISTORY)).append(
                Point(percent, now.memory_used_kib))
        if last and None not in (sample.host.cpu_total_ns, last.host.cpu_total_ns):
            total = sample.host.cpu_total_ns - last.host.cpu_total_ns
            busy = (sample.host.cpu_busy_ns or 0) - (last.host.cpu_busy_ns or 0)
            self.host_cpu_percent = 100.0 * busy / total if total > 0 else None
        self.host = sample.host
        self._last = sample

    def view(self) -> UsageView:
        """A copy to hand to another thread (the window's)."""
        host = self.host or HostSample(None, None, None, None)
        return UsageView({name: tuple(points) for name, points in self.points.items()},
                         self.host_cpu_percent, host.memory_kib, host.memory_used_kib)


@dataclass(frozen=True)
class UsageView:
    points: dict[str, tuple[Point, ...]]  # running VMs only, oldest first
    host_cpu_percent: float | None
    host_memory_kib: int | None
    host_memory_used_kib: int | None

    def latest(self, name: str) -> Point | None:
        history = self.points.get(name)
        return history[-1] if history else None
