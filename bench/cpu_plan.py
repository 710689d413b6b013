#!/usr/bin/env python3
"""How long planning where a VM's vCPUs run takes on a big host (issue 31): reading a
256-CPU sysfs tree (a two-socket, four-node, 128-core part with SMT and 16 L3 caches, built
like the kernel's by tests/support/cpu_trees.py) and planning 2 to 64 vCPUs on it with the
GPU on the last node. Prints the median and p90 of the read and of the plan.

    .venv/bin/python bench/cpu_plan.py [--runs 51]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support/: test helpers

from support.cpu_trees import Shape, build
from vm_manager.core.cpu_plan import plan_cpus
from vm_manager.passthrough.cpu_topology import format_cpulist, read_cpu_topology

CORES, NODES, CCDS = 128, 4, 16  # 8 cores per L3 cache, 4 caches per node


def big_host() -> Shape:
    per_ccd, per_node = CORES // CCDS, CORES // NODES
    cores = tuple((n, n + CORES) for n in range(CORES))
    l3 = tuple((format_cpulist([*range(c * per_ccd, (c + 1) * per_ccd),
                                *range(CORES + c * per_ccd, CORES + (c + 1) * per_ccd)]),
                "32768K") for c in range(CCDS))
    nodes = tuple(format_cpulist([*range(n * per_node, (n + 1) * per_node),
                                  *range(CORES + n * per_node, CORES + (n + 1) * per_node)])
                  for n in range(NODES))
    return Shape("256-CPU host", cores, l3, nodes=nodes, gpu=("0000:c1:00.0", NODES - 1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=51)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = build(Path(tmp), big_host())
        reads, plans = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            topology = read_cpu_topology(root)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            for vcpus in (2, 4, 8, 16, 32, 64):
                plan = plan_cpus(topology, vcpus, NODES - 1)
            plans.append((time.perf_counter() - start) / 6)
    print(f"host: {topology.describe()}")
    print(f"16 vCPUs: {plan_cpus(topology, 16, NODES - 1).describe()[1][:90]}...")
    for label, values in (("read sysfs (256 CPUs)", reads), ("plan one VM", plans)):
        ordered = sorted(values)
        p90 = ordered[int(len(ordered) * 0.9)]
        print(f"{label:24} median {statistics.median(values) * 1000:7.2f} ms"
              f"   p90 {p90 * 1000:7.2f} ms   ({args.runs} runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
