"""The tiny guest's builder on each Debian layout (issue 30, item 1): `make demo` failed on
Debian 13, whose packages keep busybox under usr/bin and modules under usr/lib/modules as
``.ko.xz``, with virtio, virtio_pci, virtio_console, fuse and virtiofs built into its 6.12
cloud kernel (``modules.builtin``). The trees here are shaped as each release's packages
unpack (``dpkg-deb -x``); the real Debian 12 build boots in the end-to-end tests."""

from __future__ import annotations

import lzma

import pytest

from support.tiny_guest import MODULES, _first, _modules

BUILT_IN_ON_DEBIAN_13 = ("virtio/virtio", "virtio/virtio_ring", "virtio/virtio_pci",
                         "virtio/virtio_pci_modern_dev", "virtio/virtio_pci_legacy_dev",
                         "char/virtio_console", "../fs/fuse/fuse", "../fs/fuse/virtiofs")


def unpacked(tmp_path, release: str):
    """What the kernel and busybox packages of ``release`` unpack to."""
    import posixpath

    version = {"12": "6.1.0-57-cloud-amd64", "13": "6.12.38+deb13-cloud-amd64"}[release]
    prefix = "usr/" if release == "13" else ""
    (tmp_path / f"{prefix}bin").mkdir(parents=True)
    (tmp_path / f"{prefix}bin" / "busybox").write_bytes(b"\x7fELF busybox")
    folder = tmp_path / f"{prefix}lib/modules/{version}"
    builtin = []
    for path in MODULES:
        relative = posixpath.normpath(f"kernel/drivers/{path}")
        if release == "13" and path in BUILT_IN_ON_DEBIAN_13:
            builtin.append(f"{relative}.ko")
            continue
        file = folder / (f"{relative}.ko.xz" if release == "13" else f"{relative}.ko")
        file.parent.mkdir(parents=True, exist_ok=True)
        code = f"ELF {relative}".encode()
        file.write_bytes(lzma.compress(code) if release == "13" else code)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "modules.builtin").write_text("".join(f"{line}\n" for line in builtin))
    return version, prefix


@pytest.mark.parametrize("release", ["12", "13"])
def test_busybox_and_the_modules_are_found_on_each_layout(tmp_path, release):
    version, prefix = unpacked(tmp_path, release)
    busybox = _first(tmp_path, "bin/busybox", "usr/bin/busybox")
    assert busybox == tmp_path / f"{prefix}bin" / "busybox"
    folder = _first(tmp_path, f"lib/modules/{version}", f"usr/lib/modules/{version}")
    modules = _modules(folder, MODULES)
    names = [path.rsplit("/", 1)[-1] for path in MODULES]
    if release == "12":
        assert list(modules) == names  # every one a file, in the order they load
    else:  # the built-in ones are not loaded; the others are decompressed
        assert list(modules) == ["evdev", "button", "virtio_blk", "cdrom", "isofs"]
        assert modules["isofs"] == b"ELF kernel/fs/isofs/isofs"


def test_a_module_neither_shipped_nor_built_in_is_named(tmp_path):
    version, _ = unpacked(tmp_path, "12")
    folder = tmp_path / f"lib/modules/{version}"
    (folder / "kernel/drivers/block/virtio_blk.ko").unlink()
    with pytest.raises(FileNotFoundError, match="virtio_blk.ko is neither"):
        _modules(folder, MODULES)
