#!/usr/bin/env python3
"""Sequential read of a 256 MiB file over virtiofs (what NeuronOS makes) vs the same file
over virtio-9p (``<filesystem accessmode='mapped'>``, what older guides use), in the tiny
guest under TCG, both in one run of one VM.

The VM is made by NeuronOS with the folder shared over virtiofs, and gets the same folder
over 9p too (added to its definition here: NeuronOS does not make 9p shares). The guest is
the tiny guest's ``generic`` flavour (Debian's full kernel: the cloud kernel has no 9p); it
drops its page cache, then reads the file with ``dd bs=1M`` from each mount in turn,
``--rounds`` times, timing each read with ``/proc/uptime`` (10 ms steps). The host's page
cache holds the file for both (it was just written). Needs root and libvirtd.

    .venv/bin/python bench/shares.py [--size-mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support/: test helpers

from support.domains import remove_domain  # noqa: E402
from support.tiny_guest import READ_MARKER, build, wait_for_console  # noqa: E402

URI = "qemu:///system"
NINE_P = ("<filesystem type='mount' accessmode='mapped'><source dir='{dir}'/>"
          "<target dir='p9'/></filesystem>")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--domain-type", choices=("qemu", "kvm"), default="qemu",
                        help="qemu (TCG, the default: nested KVM fails here) or kvm")
    args = parser.parse_args()

    import libvirt

    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.core.vm_creator import VMCreator
    from vm_manager.core.vm_lifecycle import VMLifecycleManager

    guest = build(flavour="generic")
    folder = Path(f"/var/lib/neuronos-bench-share-{uuid.uuid4().hex[:6]}")
    shared = folder / "data"
    shared.mkdir(parents=True)
    for path in (folder, shared):
        path.chmod(0o755)  # QEMU's own user reads the 9p share
    data = shared / "data.bin"
    with open(data, "wb") as out:
        for _ in range(args.size_mib):
            out.write(os.urandom(1 << 20))
    data.chmod(0o644)
    images = Path(f"/var/lib/libvirt/images/neuron-bench-{uuid.uuid4().hex[:6]}")
    images.mkdir(mode=0o711)
    serial = images / "serial.log"
    name = f"neuron-bench-{uuid.uuid4().hex[:6]}"
    conn = LibvirtConnection(URI)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            VMCreator(conn, store=VMStore(Path(tmp)), images_dir=images).create(VMConfig(
                name=name, vm_type="linux", kernel_path=str(guest.kernel),
                initrd_path=str(guest.initrd), disk_size_gb=0,
                kernel_cmdline=f"console=ttyS0 quiet panic=-1 neuronos.share=vfs"
                f" neuronos.9p=p9 neuronos.read={data.name} neuronos.rounds={args.rounds}",
                serial_log_path=str(serial), network="none", domain_type=args.domain_type,
                memory_mb=1024, shares=[{"path": str(shared), "tag": "vfs"}]), force=True)
        conn.execute(lambda c: c.lookupByName(name).attachDeviceFlags(
            NINE_P.format(dir=shared), libvirt.VIR_DOMAIN_AFFECT_CONFIG))
        VMLifecycleManager(conn).start(name, timeout=120)
        wait_for_console(serial, READ_MARKER, count=2 * args.rounds, timeout=900)
        rates: dict[str, list[float]] = {"vfs": [], "p9": []}
        for line in serial.read_text(errors="replace").splitlines():
            if line.startswith(READ_MARKER):
                _, tag, blocks, start, end, *said = line.split()
                if blocks != f"{args.size_mib}+0":
                    raise SystemExit(f"{tag}: the guest read {blocks} MiB blocks, not"
                                     f" {args.size_mib}: {' '.join(said)}")
                rates[tag].append(args.size_mib / max(float(end) - float(start), 0.01))
    finally:
        remove_domain(conn, name)
        conn.close()
        shutil.rmtree(images, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)

    mode = "TCG" if args.domain_type == "qemu" else "KVM"
    print(f"sequential read of {args.size_mib} MiB in the tiny guest ({mode}, kernel"
          f" {guest.kernel_version}), {args.rounds} rounds, page cache dropped before each:")
    for tag, label in (("vfs", "virtiofs (NeuronOS)"), ("p9", "virtio-9p, mapped")):
        values = rates[tag]
        print(f"  {label:<22} median {statistics.median(values):7.1f} MiB/s"
              f"   (each: {', '.join(f'{v:.1f}' for v in values)})")
    ratio = statistics.median(rates["vfs"]) / statistics.median(rates["p9"])
    print(f"  virtiofs / 9p: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
