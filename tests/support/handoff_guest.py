"""A real Debian guest with one GPU stand-in, real systemd and real libvirt, for the
single-GPU handoff on a real kernel (issue 32; recipe: DESIGN.md 3).

Built from Debian's packages only (``debootstrap --variant=minbase`` of the host's release,
its mirror): Debian's generic kernel (it has DRM and virtio_gpu; the cloud kernel has no
DRM), systemd, udev, python3, python3-libvirt, libvirt's daemon and QEMU. It boots on q35
with an emulated Intel IOMMU (``intel_iommu=on``), OVMF without Secure Boot and a direct
kernel boot. Its only display, a ``virtio-vga`` (class 0x030000, boot_vga 1), is driven by
virtio-pci with virtio_gpu on top, which took the firmware framebuffer over at boot
(``efi-framebuffer.0`` is gone, as amdgpu and i915 leave it), and fbcon is on a virtual
console: the chain of a single-GPU desktop with an AMD or Intel card.

What stands in, and why:
- the display manager: ``fake-dm.service`` (holds ``/dev/dri/card0`` open, as a desktop
  holds its GPU), ``display-manager.service`` linked to it as Debian's debconf links the
  chosen one (systemd.special(7));
- the GPU's driver: virtio-pci and virtio_gpu (real drivers the kernel unbinds and libvirt's
  node-device API hands to vfio-pci);
- the VM: a QEMU domain of the guest's own libvirtd (nested TCG) with the GPU as its PCI
  hostdev and no operating system: QEMU really opens the device through vfio; its "own
  stop" is QEMU quitting (no OS answers ACPI), which libvirt reports as STOPPED.

The root disk is ext4 on the whole disk (``root=/dev/vda``), made with ``mke2fs -d``;
kernel and initrd are copied beside it. Every run boots a qcow2 overlay of it. A second
disk (ext4, made by the test) brings the package, the helper's installer and the guest's
script, and takes the results back (read with ``debugfs``): the unit
``neuronos-handoff-test.service`` mounts it, runs ``guest_handoff.py`` on it and powers off.
Cached in ``$NEURONOS_CACHE_DIR/handoff-guest`` with a stamp (110 s to build here);
nothing binary is committed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

try:
    from support.cloud_guest import _run, host_release, let_qemu_traverse
    from support.tiny_guest import cache_root
except ImportError:  # run as a script, from tests/support
    from cloud_guest import _run, host_release, let_qemu_traverse
    from tiny_guest import cache_root

log = logging.getLogger(__name__)

FORMAT = "4"  # bump when the recipe changes, to rebuild cached copies
# libvirt-daemon, not -system: polkitd's configuration fails in a debootstrap (seen
# 2026-12-06); the units and qemu.conf below are written instead
PACKAGES = ("linux-image-amd64", "systemd-sysv", "udev", "dbus", "kmod", "python3",
            "python3-libvirt", "libvirt-daemon", "libvirt-clients", "qemu-system-x86",
            "e2fsprogs", "pciutils")
DISK_MIB = 3072
FAKE_DM = """[Unit]
Description=A stand-in display manager (holds the GPU's DRM device open)

[Service]
ExecStart=/bin/sh -c 'for i in $(seq 100); do [ -e /dev/dri/card0 ] && break; sleep 0.1; done; exec 3<>/dev/dri/card0; exec sleep infinity'

[Install]
Alias=display-manager.service
"""
DAEMONS = {
    "virtlogd.service": "[Unit]\nDescription=libvirt's log daemon\n\n[Service]\n"
                        "ExecStart=/usr/sbin/virtlogd\n",
    "libvirtd.service": "[Unit]\nDescription=libvirt\nRequires=virtlogd.service\n"
                        "After=virtlogd.service\n\n[Service]\nType=notify\n"
                        "ExecStart=/usr/sbin/libvirtd\n\n[Install]\n"
                        "WantedBy=multi-user.target\n",
}
# libvirt's QEMU driver looks its build-time user up before it reads qemu.conf ("Failed to
# parse user 'libvirt-qemu'", seen here): -system's postinst makes it, _configure does here
QEMU_CONF = 'user = "root"\ngroup = "root"\n'

TEST_UNIT = """[Unit]
Description=NeuronOS single-GPU handoff test
After=libvirtd.service fake-dm.service systemd-udev-settle.service
Wants=libvirtd.service fake-dm.service

[Service]
Type=oneshot
StandardOutput=journal+console
StandardError=journal+console
ExecStart=/bin/sh -c 'mkdir -p /mnt/t && mount /dev/vdb /mnt/t && python3 /mnt/t/guest_handoff.py /mnt/t 2>&1 | tee /mnt/t/guest.log; sync; umount /mnt/t; echo HANDOFF-TEST-END'
ExecStartPost=/bin/systemctl --no-block poweroff

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class HandoffGuest:
    image: Path  # qcow2, root=/dev/vda
    kernel: Path
    initrd: Path


def default_cache_dir() -> Path:
    return cache_root() / "handoff-guest"


def _configure(root: Path) -> None:
    (root / "etc/fstab").write_text("/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    (root / "etc/hostname").write_text("handoff-guest\n")
    (root / "etc/machine-id").write_text("")
    (root / "etc/apt/sources.list").write_text("")
    units = root / "etc/systemd/system"
    (units / "fake-dm.service").write_text(FAKE_DM)
    (units / "neuronos-handoff-test.service").write_text(TEST_UNIT)
    (units / "display-manager.service").symlink_to("/etc/systemd/system/fake-dm.service")
    # the serial console carries the test's output (console=ttyS0): no login prompt there
    (units / "serial-getty@ttyS0.service").symlink_to("/dev/null")
    for unit, text in DAEMONS.items():
        (units / unit).write_text(text)
    _run(["chroot", str(root), "useradd", "--system", "--user-group", "--no-create-home",
          "--home-dir", "/var/lib/libvirt", "--shell", "/usr/sbin/nologin", "libvirt-qemu"])
    (root / "etc/libvirt").mkdir(parents=True, exist_ok=True)
    (root / "etc/libvirt/qemu.conf").write_text(QEMU_CONF)
    wants = units / "multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("fake-dm.service", "libvirtd.service", "neuronos-handoff-test.service"):
        (wants / unit).unlink(missing_ok=True)
        (wants / unit).symlink_to(f"/etc/systemd/system/{unit}")
    # the guest's libvirt starts no network (nothing to route; DESIGN.md 6)
    for link in root.glob("etc/libvirt/qemu/networks/autostart/*"):
        link.unlink()
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)


def build(cache_dir: Path | None = None) -> HandoffGuest:
    """Build (or reuse) the image, its kernel and initrd."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    guest = HandoffGuest(cache_dir / "handoff-guest.qcow2", cache_dir / "vmlinuz",
                         cache_dir / "initrd.img")
    stamp = cache_dir / "STAMP"
    if all(path.exists() for path in (guest.image, guest.kernel, guest.initrd)) \
            and stamp.exists() and stamp.read_text().split()[:1] == [FORMAT]:
        return guest
    codename, mirror = host_release()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="handoff-guest-", dir=cache_dir) as tmp:
        work = Path(tmp)
        root = work / "root"
        log.info("debootstrap %s (%d packages)", codename, len(PACKAGES))
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              codename, str(root), mirror])
        _configure(root)
        for name, target in (("vmlinuz-*", guest.kernel), ("initrd.img-*", guest.initrd)):
            found = sorted((root / "boot").glob(name))
            shutil.copyfile(found[-1], target)
            os.chmod(target, 0o644)
        raw = work / "root.raw"
        _run(["mke2fs", "-q", "-t", "ext4", "-L", "root", "-d", str(root), str(raw),
              f"{DISK_MIB}M"])
        partial = guest.image.with_name(guest.image.name + ".partial")
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(partial)])
        os.chmod(partial, 0o644)  # QEMU reads it through each run's overlay
        os.replace(partial, guest.image)
    stamp.write_text(f"{FORMAT} {codename}\n")
    let_qemu_traverse(cache_dir)
    return guest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the single-GPU handoff test guest.")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    guest = build(args.cache_dir)
    print(f"image {guest.image}\nkernel {guest.kernel}\ninitrd {guest.initrd}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
