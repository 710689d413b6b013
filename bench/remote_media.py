#!/usr/bin/env python3
"""What an unattended setup on a remote host reads of its installer ISOs: the installer's
editions and the virtio-win setup drivers come through libvirt's download stream
(`storage.VolumeFile`, 256 KiB blocks), never the whole image. Prints the bytes fetched and
the time, next to reading the same files here.

The ISOs are the test suite's fakes (a Windows installer whose install.wim carries
--wim-mib MiB, a virtio-win ISO) in a pool on qemu:///system; a remote host streams the
same way over its connection (qemu+ssh:// adds the link's latency per block). Needs
libvirtd.

    .venv/bin/python bench/remote_media.py [--wim-mib 1024]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support/: test helpers

from support.domains import remove_pool  # noqa: E402
from support.media import virtio_win_iso, windows_iso  # noqa: E402
from vm_manager.core import storage  # noqa: E402
from vm_manager.base.connection import LibvirtConnection  # noqa: E402
from vm_manager.guest.iso import IsoReader  # noqa: E402
from vm_manager.guest.windows import inspect_installer, inspect_virtio, setup_driver_files  # noqa: E402

URI = "qemu:///system"


def read_all(installer: Path, virtio: Path, opener, scratch: Path) -> tuple[float, int]:
    """The reads a remote Windows setup makes: editions, drivers, every driver file."""
    start = time.perf_counter()
    info = inspect_installer(str(installer), opener)
    inspect_virtio(str(virtio), "windows11", opener)
    copied = 0
    with IsoReader(str(virtio), "virtio_iso_path", opener) as iso:
        for number, (source, _) in enumerate(setup_driver_files(iso, "windows11")):
            copied += iso.copy_to(source, scratch / f"{number:05d}")
    assert info.editions == ("Windows 11 Home", "Windows 11 Pro"), info
    return time.perf_counter() - start, copied


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wim-mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=4, help="the first is a warm-up")
    args = parser.parse_args()
    folder = Path(f"/var/lib/libvirt/images/neuron-bench-media-{uuid.uuid4().hex[:6]}")
    folder.mkdir(mode=0o711)
    conn = LibvirtConnection(URI)
    opened: list[storage.VolumeFile] = []

    def opener(path: str) -> storage.VolumeFile:
        opened.append(storage.VolumeFile(conn, path))
        return opened[-1]

    try:
        installer = windows_iso(folder / "Win11.iso", payload=args.wim_mib << 20)
        virtio = virtio_win_iso(folder / "virtio-win.iso", payload=256 * 1024)
        shutil.rmtree(folder / "virtio-win.iso.tree", ignore_errors=True)
        conn.execute(lambda c: storage.images_pool(c, folder))
        sizes = installer.stat().st_size + virtio.stat().st_size
        here_s, there_s = [], []
        for _ in range(args.rounds):  # alternating, after one warm-up read of each
            for reads, opening in ((here_s, None), (there_s, opener)):
                opened.clear()
                with tempfile.TemporaryDirectory() as scratch:
                    seconds, copied = read_all(installer, virtio, opening, Path(scratch))
                reads.append(seconds)
        with tempfile.TemporaryDirectory() as scratch:
            opened.clear()
            read_all(installer, virtio, opener, Path(scratch))
        fetched = sum(volume.fetched for volume in opened)
        here, there = statistics.median(here_s[1:]), statistics.median(there_s[1:])
        print(f"installer ISO {installer.stat().st_size / 2**20:.0f} MiB (install.wim"
              f" {args.wim_mib} MiB), virtio-win ISO {virtio.stat().st_size / 2**20:.1f} MiB;"
              f" driver files copied: {copied / 2**20:.1f} MiB")
        print(f"  through libvirt ({URI}, vol.download): fetched {fetched / 2**20:.1f} MiB"
              f" ({100 * fetched / sizes:.2f} % of both ISOs) in {there * 1000:.0f} ms"
              f" (median of {args.rounds - 1}) over {len(opened)} opens")
        print(f"  the same reads of the local files: {here * 1000:.0f} ms (median)")
    finally:
        remove_pool(conn, folder)
        conn.close()
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
