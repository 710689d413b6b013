"""A tiny real guest for end-to-end tests and the demo (recipe: DESIGN.md 3).

A Debian cloud kernel booted directly (``<kernel>``/``<initrd>``), and an initramfs holding
a static busybox whose ``/init`` mounts proc/sys/devtmpfs, loads ``evdev.ko`` and
``button.ko`` (so the ACPI power button reaches userspace), prints ``READY_MARKER`` on the
serial console and runs ``acpid``, whose ``PWRF/00000080`` handler powers off. So a
graceful (ACPI) shutdown really completes, ~5 s after start under TCG.

For the guest-setup tests it also loads the virtio modules, and then:
- a cloud-init seed: the first virtio disk holding ``meta-data`` (ISO 9660) is mounted
  read-only and its instance-id printed as ``SEED_MARKER <id>``;
- shared folders: each ``neuronos.share=TAG`` on the kernel command line is mounted over
  virtiofs; the guest prints ``SHARE_MARKER TAG: <hello.txt>`` and writes ``from-guest.txt``;
  with ``neuronos.setuid`` guest root then makes that file setuid root and prints who owns
  ``hello.txt`` in the guest (``SHARE_MARKER-OWNERS TAG UID:GID``); ``neuronos.9p=TAG``
  mounts a virtio-9p share (the ``generic`` flavour only: Debian's cloud kernel has no 9p) and ``neuronos.read=FILE`` reads FILE from each mounted share
  (``neuronos.rounds=N`` times, page cache dropped before each), printing ``READ_MARKER TAG
  BLOCKS START END`` (``dd bs=1M``'s records read, ``/proc/uptime`` around it), for
  bench/shares.py;
- the QEMU guest agent: Debian's ``qemu-ga`` (with the libraries it links, found by
  ``ldd`` on this host, the same Debian release) runs on the ``org.qemu.guest_agent.0``
  port when the domain has one; the file ``STAGE_FILE`` says "done", as the Windows
  first-logon script's stage file does when setup ends.

Everything comes from Debian packages fetched with ``apt-get download`` into a cache
folder; nothing binary is committed. ``python tests/support/tiny_guest.py`` builds it and
prints the paths.
"""

from __future__ import annotations

import argparse
import gzip
import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

READY_MARKER = "NEURONOS-TINY-GUEST-READY"
SEED_MARKER = "NEURONOS-SEED instance-id:"
STAGE_FILE = "/run/neuronos-stage"
BUSYBOX_PACKAGE = "busybox-static"
AGENT_PACKAGE = "qemu-guest-agent"
FORMAT = "12"  # bump when the initramfs layout changes, to rebuild cached copies
# loaded in this order (each after what it depends on: the modules' own "depends=")
MODULES = ("input/evdev", "acpi/button", "virtio/virtio_ring", "virtio/virtio",
           "virtio/virtio_pci_modern_dev", "virtio/virtio_pci_legacy_dev", "virtio/virtio_pci",
           "char/virtio_console", "block/virtio_blk", "cdrom/cdrom", "../fs/isofs/isofs",
           "../fs/fuse/fuse", "../fs/fuse/virtiofs")
SHARE_MARKER = "NEURONOS-SHARE"  # NEURONOS-SHARE <tag>: <hello.txt>, then ...-WRITTEN <tag>
READ_MARKER = "NEURONOS-READ"
# the generic kernel (linux-image-amd64) has virtio-9p too: the bench's comparison
FLAVOURS = {"cloud": ("linux-image-cloud-amd64", ()),
            "generic": ("linux-image-amd64", ("../fs/netfs/netfs", "../fs/fscache/fscache",
                                              "../net/9p/9pnet", "../net/9p/9pnet_virtio",
                                              "../fs/9p/9p"))}

INIT_SCRIPT = f"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /mnt/seed
for module in $(cat /lib/modules/order); do  # those the kernel does not have built in
  insmod /lib/modules/$module.ko
done
mkdir -p /etc/acpi/PWRF
acpid -f -c /etc/acpi &
# Ready means the power button works: wait until acpid holds the input event devices open.
while ! ls -l /proc/$!/fd 2>/dev/null | grep -q /dev/input/event; do sleep 0.05; done
echo {READY_MARKER}
for disk in /dev/vd?; do
  [ -b "$disk" ] || continue
  if mount -t iso9660 -o ro "$disk" /mnt/seed 2>/dev/null; then
    if [ -f /mnt/seed/meta-data ]; then
      echo "{SEED_MARKER} $(sed -n 's/^instance-id: *//p' /mnt/seed/meta-data)"
      break
    fi
    umount /mnt/seed
  fi
done
read_from=
rounds=1
for word in $(cat /proc/cmdline); do
  case "$word" in
    neuronos.read=*) read_from=${{word#neuronos.read=}};;
    neuronos.rounds=*) rounds=${{word#neuronos.rounds=}};;
    neuronos.setuid) setuid=1;;
  esac
done
mounted=
for word in $(cat /proc/cmdline); do
  case "$word" in
    neuronos.9p=*)
      tag=${{word#neuronos.9p=}}
      mkdir -p /mnt/$tag
      mount -t 9p -o trans=virtio,version=9p2000.L "$tag" /mnt/$tag && mounted="$mounted $tag";;
    neuronos.share=*)
      tag=${{word#neuronos.share=}}
      mkdir -p /mnt/$tag
      if mount -t virtiofs "$tag" /mnt/$tag; then
        mounted="$mounted $tag"
        [ -n "$read_from" ] && continue
        echo "{SHARE_MARKER} $tag: $(cat /mnt/$tag/hello.txt)"
        echo "written by the guest" > /mnt/$tag/from-guest.txt && sync
        if [ -n "$setuid" ]; then
          chown 0:0 /mnt/$tag/from-guest.txt; chmod 4755 /mnt/$tag/from-guest.txt; sync
          echo "{SHARE_MARKER}-OWNERS $tag $(stat -c '%u:%g' /mnt/$tag/hello.txt)"
        fi
        echo "{SHARE_MARKER}-WRITTEN $tag"
      fi;;
  esac
done
for round in $(seq $rounds); do for tag in $mounted; do
  [ -n "$read_from" ] || break 2
  sync; echo 3 > /proc/sys/vm/drop_caches
  read start rest < /proc/uptime
  said=$(dd if=/mnt/$tag/$read_from of=/dev/null bs=1M 2>&1)
  read end rest < /proc/uptime
  blocks=$(echo "$said" | sed -n 's/ records in.*//p')
  echo "{READ_MARKER} $tag ${{blocks:-failed}} $start $end $(echo "$said" | head -1)"
done; done
echo done > {STAGE_FILE}
for port in /sys/class/virtio-ports/*; do
  [ "$(cat $port/name 2>/dev/null)" = org.qemu.guest_agent.0 ] || continue
  /usr/sbin/qemu-ga -m virtio-serial -p /dev/$(basename $port) -t /run -f /run/qga.pid &
done
while :; do sleep 3600; done
"""
POWER_BUTTON_SCRIPT = "#!/bin/sh\necho NEURONOS-TINY-GUEST-POWEROFF\npoweroff -f\n"


@dataclass(frozen=True)
class TinyGuest:
    kernel: Path
    initrd: Path
    kernel_version: str


def cache_root() -> Path:
    """``$NEURONOS_CACHE_DIR``; else ``/var/cache/neuronos`` for root (QEMU of the system
    daemon must be able to read it), or the user's XDG cache folder."""
    override = os.environ.get("NEURONOS_CACHE_DIR")
    if override:
        return Path(override)
    if os.geteuid() == 0:
        return Path("/var/cache/neuronos")
    import platformdirs

    return Path(platformdirs.user_cache_dir("neuronos", appauthor=False))


def default_cache_dir() -> Path:
    return cache_root() / "tiny-guest"


def _run(argv: list[str], cwd: Path | None = None) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result.stdout


def _resolve_kernel_package(metapackage: str) -> str:
    """The real image behind ``metapackage`` (linux-image-cloud-amd64 -> ...-6.1.0-NN-...)."""
    out = _run(["apt-cache", "depends", metapackage])
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("Depends:") and "linux-image-" in line:
            return line.split(":", 1)[1].strip()
    raise RuntimeError(f"cannot resolve {metapackage} (run apt-get update first?)")


def _download(packages: list[str], into: Path) -> None:
    try:
        _run(["apt-get", "download", *packages], cwd=into)
    except RuntimeError:
        if os.geteuid() != 0:
            raise
        _run(["apt-get", "update", "-qq"])  # lists may be missing on a fresh machine
        _run(["apt-get", "download", *packages], cwd=into)


def _cpio_newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio "newc" archive (what the kernel unpacks as initramfs).

    ``entries``: (path, mode, data, (rdev major, minor)); a symlink's data is its target.
    Written by hand so that device nodes need no root and no cpio binary.
    """
    out = io.BytesIO()

    def pad(length: int) -> None:
        out.write(b"\0" * (-length % 4))

    for ino, (name, mode, data, (major, minor)) in enumerate(
        [*entries, ("TRAILER!!!", 0, b"", (0, 0))], start=1
    ):
        encoded = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, major, minor, len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % value for value in fields)
        out.write(header + encoded)
        pad(len(header) + len(encoded))
        out.write(data)
        pad(len(data))
    return out.getvalue()


def _initramfs(busybox: bytes, modules: dict[str, bytes], files: dict[str, bytes]) -> bytes:
    """``modules``: name -> .ko, in the order they are loaded; ``files``: absolute path ->
    content (qemu-ga and the libraries it links, at the paths its loader looks in)."""
    directory, regular, executable = 0o040755, 0o100644, 0o100755
    folders = {"bin", "dev", "proc", "sys", "etc", "etc/acpi", "etc/acpi/PWRF", "lib",
               "lib/modules", "tmp", "var", "var/log", "var/run", "run", "mnt"}
    for path in files:
        parts = path.strip("/").split("/")[:-1]
        folders.update("/".join(parts[:n]) for n in range(1, len(parts) + 1))
    entries = [(name, directory, b"", (0, 0)) for name in sorted(folders)]
    entries += [
        ("dev/console", 0o020600, b"", (5, 1)),  # the kernel opens it before /init runs
        ("bin/busybox", executable, busybox, (0, 0)),
        ("bin/sh", 0o120777, b"busybox", (0, 0)),
        ("init", executable, INIT_SCRIPT.encode(), (0, 0)),
        ("lib/modules/order", regular, " ".join(modules).encode(), (0, 0)),
        ("etc/acpi/PWRF/00000080", executable, POWER_BUTTON_SCRIPT.encode(), (0, 0)),
    ]
    entries += [(f"lib/modules/{name}.ko", regular, data, (0, 0))
                for name, data in modules.items()]
    entries += [(path.strip("/"), executable, data, (0, 0)) for path, data in files.items()]
    return gzip.compress(_cpio_newc(entries), compresslevel=6, mtime=0)


def _agent_files(root: Path) -> dict[str, bytes]:
    """qemu-ga from its Debian package, and every library it links as this host's loader
    resolves them (``ldd``; the host is the same Debian release, and QEMU itself needs the
    same libraries, so they are installed wherever the tests run)."""
    agent = root / "usr" / "sbin" / "qemu-ga"
    files = {"/usr/sbin/qemu-ga": agent.read_bytes()}
    for line in _run(["ldd", str(agent)]).splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/") and os.path.exists(path):
            files[path] = Path(path).read_bytes()
            if "=>" not in parts:  # the loader itself, also where the binary names it
                files["/lib64/ld-linux-x86-64.so.2"] = files[path]
    return files


def build(cache_dir: Path | None = None, flavour: str = "cloud") -> TinyGuest:
    """Build (or reuse) the kernel and initramfs in ``cache_dir`` (default: the cache's
    ``tiny-guest`` folder, ``tiny-guest-generic`` for the generic kernel with 9p)."""
    package, extra = FLAVOURS[flavour]
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if flavour != "cloud" and not cache_dir.name.endswith(flavour):
        cache_dir = cache_dir.with_name(f"{cache_dir.name}-{flavour}")
    kernel, initrd, stamp = cache_dir / "vmlinuz", cache_dir / "initrd.gz", cache_dir / "STAMP"
    if kernel.exists() and initrd.exists() and stamp.exists():
        fmt, _, version = stamp.read_text().strip().partition(" ")
        if fmt == FORMAT:
            return TinyGuest(kernel, initrd, version)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tiny-guest-") as tmp:
        work = Path(tmp)
        os.chmod(work, 0o755)  # apt's _apt user downloads into it
        kernel_package = _resolve_kernel_package(package)
        log.info("downloading %s, %s and %s", kernel_package, BUSYBOX_PACKAGE, AGENT_PACKAGE)
        _download([kernel_package, BUSYBOX_PACKAGE, AGENT_PACKAGE], work)
        root = work / "root"
        for deb in work.glob("*.deb"):
            _run(["dpkg-deb", "-x", str(deb), str(root)])
        vmlinuz = next((root / "boot").glob("vmlinuz-*"))
        version = vmlinuz.name[len("vmlinuz-"):]
        image = _initramfs(
            busybox=_first(root, "bin/busybox", "usr/bin/busybox").read_bytes(),
            modules=_modules(_first(root, f"lib/modules/{version}",
                                    f"usr/lib/modules/{version}"), (*MODULES, *extra)),
            files=_agent_files(root),
        )
        for target, write in ((kernel, None), (initrd, image)):
            partial = target.with_suffix(".partial")
            if write is None:
                shutil.copyfile(vmlinuz, partial)
            else:
                partial.write_bytes(write)
            os.chmod(partial, 0o644)  # QEMU runs as another user and must read it
            os.replace(partial, target)
    stamp.write_text(f"{FORMAT} {version}\n")
    for folder in (cache_dir, *cache_dir.parents):
        if folder == Path("/") or folder.stat().st_uid != os.geteuid():
            break
        os.chmod(folder, folder.stat().st_mode | 0o011)  # let QEMU's user traverse
    return TinyGuest(kernel, initrd, version)


def _first(root: Path, *paths: str) -> Path:
    """The first of ``paths`` under ``root`` that exists: Debian 12 keeps busybox and the
    modules under /bin and /lib, Debian 13 (merged /usr) under /usr/bin and /usr/lib."""
    for path in paths:
        if (root / path).exists():
            return root / path
    raise FileNotFoundError(f"none of {', '.join(paths)} in the packages unpacked at {root}")


def _modules(folder: Path, wanted) -> dict[str, bytes]:
    """name -> the module's code, for each of ``wanted`` (paths under kernel/drivers) the
    kernel does not have built in (its ``modules.builtin``: Debian 13's 6.12 cloud kernel
    has virtio, virtio_pci, virtio_console, fuse and virtiofs built in); ``.ko`` as Debian
    12 ships it, ``.ko.xz`` as Debian 13 does."""
    import lzma
    import posixpath

    builtin = set((folder / "modules.builtin").read_text().split()) \
        if (folder / "modules.builtin").exists() else set()
    found = {}
    for path in wanted:
        relative = posixpath.normpath(f"kernel/drivers/{path}")
        name = relative.rsplit("/", 1)[-1]
        if (folder / f"{relative}.ko").exists():
            found[name] = (folder / f"{relative}.ko").read_bytes()
        elif (folder / f"{relative}.ko.xz").exists():
            found[name] = lzma.decompress((folder / f"{relative}.ko.xz").read_bytes())
        elif f"{relative}.ko" not in builtin:
            raise FileNotFoundError(f"{relative}.ko is neither in {folder} nor built in")
    return found


def wait_for_console(path: Path, marker: str, count: int = 1, timeout: float = 60.0) -> float:
    """Wait until ``marker`` appears ``count`` times in the serial log; return the seconds
    waited. The console is a plain file QEMU appends to and nothing signals a write, so
    this reads it every 50 ms (a test and demo helper, not a lifecycle wait)."""
    started = time.monotonic()
    needle = marker.encode()
    while True:
        try:
            if Path(path).read_bytes().count(needle) >= count:
                return time.monotonic() - started
        except FileNotFoundError:
            pass
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{marker!r} x{count} not seen in {path} within {timeout:.0f} s")
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build the tiny test guest (kernel + initrd).")
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), default="cloud",
                        help="generic: Debian's full kernel, with virtio-9p (bench/shares.py)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    guest = build(args.cache_dir, args.flavour)
    print(f"kernel {guest.kernel}\ninitrd {guest.initrd}\nversion {guest.kernel_version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
