#!/usr/bin/env python3
"""Snapshot and revert times of NeuronOS's whole-state snapshots (disks + NVRAM + TPM) for a
Windows 11 VM with a 64 GiB sparse disk holding 1 GiB of data, next to `virsh
snapshot-create-as` / `snapshot-revert` on the same VM (which do less: the disk only).

The VM is made from the windows11 template on qemu:///system (OVMF Secure Boot, swtpm;
domain type qemu), booted once so its vars file and TPM state exist, and 1 GiB is written
into its disk with qemu-io. Needs libvirtd.

    .venv/bin/python bench/snapshots.py [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support/: test helpers

from support.domains import remove_domain

URI = "qemu:///system"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.core.snapshots import SnapshotManager
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.core.vm_creator import VMCreator
    from vm_manager.core.vm_lifecycle import ShutdownMethod, VMLifecycleManager

    folder = Path(f"/var/lib/libvirt/images/neuron-bench-{uuid.uuid4().hex[:6]}")
    folder.mkdir(mode=0o711)
    name = f"neuron-bench-{uuid.uuid4().hex[:6]}"
    conn = LibvirtConnection(URI)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            VMCreator(conn, store=VMStore(Path(tmp)), images_dir=folder).create(
                VMConfig(name=name, vm_type="windows11", network="none", domain_type="qemu",
                         memory_mb=4096, vcpus=2, disk_size_gb=64), force=True)
        lifecycle = VMLifecycleManager(conn)
        lifecycle.start(name, timeout=120)
        lifecycle.stop(name, method=ShutdownMethod.FORCE)
        disk = folder / f"{name}.qcow2"
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1G", str(disk)],
                       check=True, capture_output=True)
        print(f"{name}: 64 GiB qcow2, {disk.stat().st_size / 2**30:.2f} GiB on disk, NVRAM"
              " and TPM state from one boot")
        manager = SnapshotManager(conn, folder)
        ours_take, ours_revert, virsh_take, virsh_revert = [], [], [], []
        for run in range(args.runs):
            ours_take.append(timed(lambda: manager.create(name, f"n{run}")))
            ours_revert.append(timed(lambda: manager.revert(name, f"n{run}")))
            manager.delete(name, f"n{run}")
            virsh = ["virsh", "-q", "-c", URI]
            virsh_take.append(timed(lambda: subprocess.run(
                [*virsh, "snapshot-create-as", name, f"v{run}"], check=True,
                capture_output=True)))
            virsh_revert.append(timed(lambda: subprocess.run(
                [*virsh, "snapshot-revert", name, f"v{run}"], check=True,
                capture_output=True)))
            subprocess.run([*virsh, "snapshot-delete", name, f"v{run}"], check=True,
                           capture_output=True)

        def ms(values) -> str:
            return f"{statistics.median(values) * 1000:.0f} ms"

        print(f"neuron-vm (disks + NVRAM + TPM): snapshot {ms(ours_take)}, revert"
              f" {ms(ours_revert)} (median of {args.runs})")
        print(f"virsh (disk only):                snapshot {ms(virsh_take)}, revert"
              f" {ms(virsh_revert)}")
        print("(virsh's numbers include starting a virsh process each time; ours run in"
              " process)")
    finally:
        try:
            remove_domain(conn, name)
        finally:
            conn.close()
            shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
