"""A real Debian cloud-style guest for the Linux setup journey (recipe: DESIGN.md 3).

Built from Debian's packages only: ``debootstrap`` of the host's own release (the mirror is
the one apt here uses) with cloud-init, Debian's qemu-guest-agent, openssh-server, netplan
with systemd-networkd and systemd-resolved (what Debian's own cloud images use since Debian
12, wiki.debian.org/Netplan; not ifupdown, see below) and the signed boot chain
(shim-signed, grub-efi-amd64-signed, the signed cloud kernel), so it boots under OVMF with
Secure Boot and Microsoft's keys enrolled, as the ``linux`` template starts it. A 3 GiB GPT disk: a 127 MiB EFI system partition (FAT, filled with
mtools: nothing is mounted) and an ext4 root made with ``mke2fs -d`` from the debootstrap
tree; then converted to qcow2, the form cloud images come in.

It is shaped like a cloud image: no user, no SSH host keys, an empty machine-id, cloud-init
reading only ``NoCloud`` (then ``None``), and no package sources (the test network is
isolated: the agent is in the image, so the seed's ``packages: [qemu-guest-agent]`` has
nothing to fetch). Under TCG it reaches cloud-init's final stage 60-90 s after start.

Two images come from one debootstrap tree: ``image`` has the locale cloud-init's Debian
defaults set (``en_US.UTF-8``) generated, so cloud-init finishes cleanly; ``script_error``
is the same tree with one image script that fails, the way vendors ship per-instance
scripts: cloud-init runs every executable in ``/var/lib/cloud/scripts/per-instance`` once
per instance (its ``scripts_per_instance`` module, final stage) and a failing one is the
module's error, ``Runparts: 1 failures (NAME) in 1 attempted commands`` (cloudinit/subp.py
``runparts``, the same words in cloud-init 22.4 of Debian 12 and 25.1 of Debian 13): a real
cloud-init error, whose words must reach ``setup-status``. (The first such image left the
locale ungenerated, which fails cloud-init 22.4's ``locale`` module but not 25.1's.)

Why not ifupdown (seen on a real guest, 2026-12-06): Debian 13's cloud-init 25.1, with no
network-config, renders its fallback as ``iface enp1s0 inet dhcp`` plus ``iface enp1s0 inet6
dhcp``; on an IPv4-only network (libvirt's own networks, and this test's) ifupdown's
``dhclient -6`` solicits until networking.service's 5-minute start timeout fails it, and
every boot waited those 5 minutes. networkd asks DHCPv6 without holding the boot.

Cached in ``$NEURONOS_CACHE_DIR/cloud-guest`` (``/var/cache/neuronos/cloud-guest`` as root)
with a stamp; ``python tests/support/cloud_guest.py`` builds it and prints its path. Nothing
binary is committed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FORMAT = "5"  # bump when the image's recipe changes, to rebuild cached copies
IMAGE_NAME = "debian-cloud-test.qcow2"
SCRIPT_ERROR_NAME = "debian-cloud-script-error.qcow2"
FAILING_SCRIPT = "neuronos-test-fails"  # in /var/lib/cloud/scripts/per-instance
PACKAGES = ("linux-image-cloud-amd64", "systemd-sysv", "udev", "dbus", "cloud-init",
            "python3-cffi-backend",  # named, or python3-cryptography's dependency fails
            "qemu-guest-agent", "openssh-server", "netplan.io", "systemd-resolved",
            "grub-efi-amd64-bin", "grub-efi-amd64-signed", "shim-signed", "sudo", "netbase",
            "iproute2", "ca-certificates", "locales",
            "e2fsprogs")  # cloud-init's resize2fs: in minbase up to Debian 12, named since 13
TOOLS = {"debootstrap": "debootstrap", "mformat": "mtools", "mkfs.fat": "dosfstools",
         "sfdisk": "fdisk", "mke2fs": "e2fsprogs", "qemu-img": "qemu-utils"}
DISK_MIB, ESP_START_MIB, ESP_MIB = 3072, 1, 127
ROOT_START_MIB = ESP_START_MIB + ESP_MIB + 1


def default_cache_dir() -> Path:
    try:
        from support.tiny_guest import cache_root
    except ImportError:  # run as a script, from tests/support
        from tiny_guest import cache_root
    return cache_root() / "cloud-guest"


def missing_tools() -> list[str]:
    """The Debian packages whose commands the build needs and this host lacks."""
    return sorted({package for command, package in TOOLS.items()
                   if shutil.which(command) is None
                   and not Path("/usr/sbin", command).exists()})


def _run(argv: list[str], **kwargs) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}):"
                           f" {(result.stderr or result.stdout).strip()[-2000:]}")
    return result.stdout


def host_release() -> tuple[str, str]:
    """The host's Debian release and the mirror its apt uses (sources.list or deb822)."""
    codename = ""
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("VERSION_CODENAME="):
            codename = line.split("=", 1)[1].strip().strip('"')
    mirrors = []
    for path in [Path("/etc/apt/sources.list"),
                 *sorted(Path("/etc/apt/sources.list.d").glob("*.sources")),
                 *sorted(Path("/etc/apt/sources.list.d").glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if line.startswith("URIs:") and len(words) > 1:
                mirrors.append(words[1])
            elif line.startswith("deb ") and len(words) > 2:
                mirrors.append(next(w for w in words[1:] if not w.startswith("[")))
    debian = [m for m in mirrors if m.rstrip("/").endswith("/debian")]
    if not codename or not debian:
        raise RuntimeError("cannot tell the host's Debian release and mirror from"
                           " /etc/os-release and apt's sources")
    return codename, debian[0]


GRUB_CFG = """set timeout=0
search --no-floppy --fs-uuid --set=root {uuid}
linux /vmlinuz root=UUID={uuid} ro console=tty0 console=ttyS0,115200
initrd /initrd.img
boot
"""


def _configure(root: Path, root_uuid: str) -> None:
    """Make the debootstrap tree look like a cloud image."""
    (root / "etc/fstab").write_text(f"UUID={root_uuid} / ext4 defaults,errors=remount-ro 0 1\n")
    (root / "etc/cloud/cloud.cfg.d/90-neuronos-test.cfg").write_text(
        "datasource_list: [ NoCloud, None ]\n")
    (root / "etc/machine-id").write_text("")
    for stale in [root / "var/lib/dbus/machine-id", *root.glob("etc/ssh/ssh_host_*")]:
        stale.unlink(missing_ok=True)
    (root / "etc/hostname").write_text("localhost\n")
    (root / "etc/apt/sources.list").write_text("")  # an isolated test network: nothing to fetch
    # as Debian's cloud images: networkd (and resolved) in the first boot's transaction,
    # before cloud-init writes the netplan config they carry out
    _run(["chroot", str(root), "systemctl", "enable", "systemd-networkd.service",
          "systemd-resolved.service"])
    resolv = root / "etc/resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("/run/systemd/resolve/resolv.conf")
    shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
    (root / "var/cache/apt/archives/partial").mkdir(parents=True, exist_ok=True)
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True, exist_ok=True)


def _esp(root: Path, target: Path, root_uuid: str) -> None:
    """A FAT EFI system partition image: shim as the removable-media loader, the signed
    grub beside it (shim loads ``grubx64.efi`` from its own folder) with a grub.cfg, and
    MokManager."""
    _run(["mkfs.fat", "-F", "32", "-n", "EFI", "-C", str(target), str(ESP_MIB * 1024)])
    lib = root / "usr/lib"
    files = {"EFI/BOOT/BOOTX64.EFI": lib / "shim/shimx64.efi.signed",
             "EFI/BOOT/grubx64.efi": lib / "grub/x86_64-efi-signed/grubx64.efi.signed",
             "EFI/BOOT/mmx64.efi": lib / "shim/mmx64.efi.signed"}
    config = GRUB_CFG.format(uuid=root_uuid).encode()
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    for folder in ("::/EFI", "::/EFI/BOOT", "::/EFI/debian"):
        _run(["mmd", "-i", str(target), folder], env=env)
    with tempfile.NamedTemporaryFile() as cfg:
        cfg.write(config)
        cfg.flush()
        for where in ("EFI/BOOT/grub.cfg", "EFI/debian/grub.cfg"):
            _run(["mcopy", "-i", str(target), cfg.name, f"::/{where}"], env=env)
    for where, source in files.items():
        _run(["mcopy", "-i", str(target), str(source), f"::/{where}"], env=env)


@dataclass(frozen=True)
class CloudGuest:
    image: Path  # cloud-init finishes cleanly
    script_error: Path  # cloud-init finishes with its per-instance script's error


def _disk(root: Path, work: Path, root_uuid: str, target: Path) -> None:
    """The GPT disk of ``root`` as qcow2 at ``target`` (written whole, then renamed)."""
    esp, rootfs, disk = work / "esp.img", work / "root.img", work / "disk.raw"
    for stale in (esp, rootfs, disk):
        stale.unlink(missing_ok=True)
    _esp(root, esp, root_uuid)
    root_mib = DISK_MIB - ROOT_START_MIB - 1
    _run(["mke2fs", "-q", "-t", "ext4", "-U", root_uuid, "-L", "root", "-d", str(root),
          str(rootfs), f"{root_mib}M"])
    with open(disk, "wb") as handle:
        handle.truncate(DISK_MIB << 20)
    _run(["sfdisk", "--no-reread", "--no-tell-kernel", str(disk)], input=(
        "label: gpt\n"
        f"start={ESP_START_MIB}MiB, size={ESP_MIB}MiB, type=uefi, name=EFI\n"
        f"start={ROOT_START_MIB}MiB, size={root_mib}MiB, type=linux, name=root\n"))
    for part, start in ((esp, ESP_START_MIB), (rootfs, ROOT_START_MIB)):
        _run(["dd", f"if={part}", f"of={disk}", "bs=1M", f"seek={start}",
              "conv=notrunc,sparse", "status=none"])
    partial = target.with_name(target.name + ".partial")
    _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disk), str(partial)])
    os.chmod(partial, 0o644)  # QEMU runs as another user and reads it (never writes)
    os.replace(partial, target)


def build(cache_dir: Path | None = None) -> CloudGuest:
    """Build (or reuse) both images."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    guest = CloudGuest(cache_dir / IMAGE_NAME, cache_dir / SCRIPT_ERROR_NAME)
    stamp = cache_dir / "STAMP"
    if guest.image.exists() and guest.script_error.exists() and stamp.exists() \
            and stamp.read_text().split()[:1] == [FORMAT]:
        return guest
    missing = missing_tools()
    if missing:
        raise RuntimeError(f"building the cloud guest needs: apt-get install {' '.join(missing)}")
    codename, mirror = host_release()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cloud-guest-", dir=cache_dir) as tmp:
        work = Path(tmp)
        root = work / "root"
        log.info("debootstrap %s (%d packages)", codename, len(PACKAGES))
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
              codename, str(root), mirror])
        root_uuid = str(uuid.uuid4())
        _configure(root, root_uuid)
        for link in ("vmlinuz", "initrd.img"):  # debootstrap's kernel links at / (grub.cfg)
            if not (root / link).exists():
                found = sorted((root / "boot").glob(f"{link}-*"))
                (root / link).symlink_to(f"boot/{found[-1].name}")
        locale_gen = root / "etc/locale.gen"
        locale_gen.write_text(locale_gen.read_text().replace("# en_US.UTF-8 UTF-8",
                                                             "en_US.UTF-8 UTF-8"))
        _run(["chroot", str(root), "locale-gen"])  # no /dev, /proc or /run needed
        _disk(root, work, root_uuid, guest.image)
        scripts = root / "var/lib/cloud/scripts/per-instance"
        scripts.mkdir(parents=True, exist_ok=True)
        script = scripts / FAILING_SCRIPT
        script.write_text("#!/bin/sh\necho 'this test image fails on purpose' >&2\nexit 3\n")
        script.chmod(0o755)
        _disk(root, work, root_uuid, guest.script_error)
    stamp.write_text(f"{FORMAT} {codename}\n")
    let_qemu_traverse(cache_dir)
    return guest


def let_qemu_traverse(cache_dir: Path) -> None:
    """QEMU runs as another user: it must pass through the cache folder and those above
    it that are ours."""
    for folder in (cache_dir, *cache_dir.parents):
        if folder == Path("/") or folder.stat().st_uid != os.geteuid():
            break
        os.chmod(folder, folder.stat().st_mode | 0o011)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the cloud-init test guest image.")
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    guest = build(args.cache_dir)
    print(f"image {guest.image}\nscript-error {guest.script_error}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
