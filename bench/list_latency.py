#!/usr/bin/env python3
"""How long `neuron-vm list --json` takes next to a bare libvirt-python script doing the
same listing, and next to `virsh list --all`, as whole processes.

All three list the same 200-domain host (a libvirt test-driver node file), several runs
each, interleaved so that machine noise hits them alike. Prints medians, p90 and the
ratios. Target (architecture issue): neuron-vm / bare script <= 1.25 (the script is what
any Python tool pays: the interpreter, libvirt-python and the listing).

    .venv/bin/python bench/list_latency.py [--runs 21] [--domains 200]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support/: test helpers

from vm_manager.base.vm_config import VMState
from support.fakes import FakeDomain, FakeHost, write_node_file


def timed(argv: list[str], env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()}")
    return elapsed, result.stdout


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--domains", type=int, default=200)
    args = parser.parse_args()

    neuron_vm = Path(sys.executable).with_name("neuron-vm")
    if not neuron_vm.exists():
        neuron_vm = Path(shutil.which("neuron-vm") or "neuron-vm")
    virsh = shutil.which("virsh")
    if virsh is None:
        sys.exit("virsh not found (apt-get install libvirt-clients)")

    states = [VMState.RUNNING, VMState.SHUTOFF, VMState.PAUSED]
    domains = [
        FakeDomain(f"vm-{i:03d}", states[i % 3], vcpus=1 + i % 8, memory_mb=512 * (1 + i % 16))
        for i in range(args.domains)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        uri = write_node_file(Path(tmp) / "node.xml", FakeHost(domains=domains))
        env = dict(os.environ, NEURONOS_CONFIG_DIR=str(Path(tmp) / "config"))
        # As on a user's machine, compiled modules are cached (some sandboxes set this,
        # and then every run compiles neuron-vm's modules again).
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        floor = (
            "import json, libvirt; c = libvirt.open(%r); "
            "print(json.dumps([[d.name(), d.info()] for d in c.listAllDomains()]))" % uri
        )
        commands = {
            "neuron-vm": [str(neuron_vm), "--connect", uri, "list", "--json"],
            "virsh": [virsh, "-c", uri, "list", "--all"],
            # What any Python tool pays: interpreter + libvirt-python + the same listing.
            "py-floor": [sys.executable, "-c", floor],
        }
        _, listing = timed(commands["neuron-vm"], env)
        count = len(json.loads(listing))
        if count != args.domains:
            sys.exit(f"neuron-vm listed {count} domains, expected {args.domains}")
        for argv in commands.values():  # warm the page cache
            timed(argv, env)
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                times[name].append(timed(argv, env)[0])

    print(f"list latency, {args.domains} domains on the test driver, {args.runs} runs each")
    for name, values in times.items():
        print(
            f"  {name:10s} median {statistics.median(values) * 1000:7.1f} ms"
            f"   p90 {percentile(values, 0.9) * 1000:7.1f} ms"
            f"   min {min(values) * 1000:7.1f} ms"
        )
    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"  ratio neuron-vm / py-floor (medians): {median['neuron-vm'] / median['py-floor']:.2f}"
          "  (target <= 1.25)")
    print(f"  ratio neuron-vm / virsh (medians):    {median['neuron-vm'] / median['virsh']:.2f}")
    print(f"  ratio py-floor / virsh (medians):     {median['py-floor'] / median['virsh']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
