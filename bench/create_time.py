#!/usr/bin/env python3
"""Time to create a Windows 11 VM with a GPU and Looking Glass, next to virt-install.

neuron-vm: a whole `neuron-vm create` process that renders the template, validates the XML
(libvirt's RNG schema + our rules) and defines the domain on qemu:///system, using an
existing disk (no allocation) and a fake sysfs GPU (NEURONOS_HOST_ROOT). The domain is
undefined between runs, outside the timing.

virt-install: `virt-install --print-xml` for a comparable VM (Windows 11 osinfo, UEFI,
TPM 2.0, SPICE, the same disk and ISO, an ivshmem-plain shmem). It only prints, it does not
define, and it gets no --host-device (it would look the GPU up on the real host, which has
none): so it does less work than neuron-vm here.

Target (issue 4): neuron-vm at most half of virt-install's time.
Needs libvirtd and Debian's `virtinst` package (apt-get install virtinst).

    .venv/bin/python bench/create_time.py [--runs 11]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support/: test helpers

from support.fakes import add_pci_devices, nvidia_turing_gpu

URI = "qemu:///system"


def timed(argv: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        sys.exit(f"{argv[0]} failed ({result.returncode}): {result.stderr.strip()[-400:]}")
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    args = parser.parse_args()
    virt_install = shutil.which("virt-install")
    if virt_install is None:
        sys.exit("virt-install not found: apt-get install virtinst")
    neuron_vm = str(Path(sys.executable).with_name("neuron-vm"))
    name = "neuron-bench-create"
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        host = add_pci_devices(tmp_path / "host", nvidia_turing_gpu())
        disk = tmp_path / "disk.qcow2"
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(disk), "64G"], check=True)
        iso = tmp_path / "win11.iso"
        iso.write_bytes(b"")
        env = dict(os.environ, NEURONOS_HOST_ROOT=str(host),
                   NEURONOS_CONFIG_DIR=str(tmp_path / "config"))
        ours = [neuron_vm, "--connect", URI, "create", name, "--template", "windows11",
                "--memory", "8G", "--cpus", "4", "--disk", str(disk), "--iso", str(iso),
                "--gpu", "01:00.0", "--looking-glass", "--domain-type", "qemu",
                "--network", "none", "--force", "--json"]
        theirs = [virt_install, "--connect", URI, "--name", name, "--memory", "8192",
                  "--vcpus", "4", "--osinfo", "win11", "--disk", f"path={disk}",
                  "--cdrom", str(iso), "--boot", "uefi",
                  "--tpm", "emulator,model=tpm-crb,version=2.0", "--graphics", "spice",
                  "--network", "none", "--virt-type", "qemu",
                  "--shmem", "name=looking-glass-x,model.type=ivshmem-plain,size=64,size.unit=M",
                  "--print-xml"]

        def cleanup() -> None:
            subprocess.run(["virsh", "-c", URI, "undefine", name, "--nvram"],
                           capture_output=True, check=False)
            shutil.rmtree(tmp_path / "config", ignore_errors=True)

        cleanup()
        times: dict[str, list[float]] = {"neuron-vm": [], "virt-install": []}
        try:
            for run in range(args.runs + 1):  # the first round warms caches, not counted
                first = run == 0
                elapsed = timed(ours, env)
                cleanup()
                if not first:
                    times["neuron-vm"].append(elapsed)
                elapsed = timed(theirs, env)
                if not first:
                    times["virt-install"].append(elapsed)
        finally:
            cleanup()
    print(f"create time, Windows 11 + GPU + Looking Glass, {args.runs} runs each, on {URI}")
    for label, values in times.items():
        print(f"  {label:12s} median {statistics.median(values) * 1000:7.1f} ms"
              f"   min {min(values) * 1000:7.1f} ms   max {max(values) * 1000:7.1f} ms")
    ratio = statistics.median(times["neuron-vm"]) / statistics.median(times["virt-install"])
    print(f"  ratio neuron-vm / virt-install (medians): {ratio:.2f}  (target <= 0.5)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
