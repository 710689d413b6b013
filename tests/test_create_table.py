"""`neuron-vm create` as a table of command lines (virtinst's way): each row either prints a
domain (`--print-xml`) compared with its stored golden file, or is refused with exit 2, one
line naming the flag, and words that say why. A failure names its row.

The host is a test-driver node file with a fake-sysfs root (an Intel boot GPU, an NVIDIA
Turing card in its own group, an AMD card sharing its group with a SATA controller, one USB
mouse) and a folder of media: installer ISOs (empty), a qcow2 and a raw disk image made by
qemu-img, a qcow2 OpenCore image, a kernel and initrd, a folder to share. Golden files are
written anew with NEURONOS_UPDATE_GOLDEN=1.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
from pathlib import Path

import pytest

from support.fakes import (
    FakePCIDevice,
    FakeUSBDevice,
    add_pci_devices,
    add_usb_devices,
    nvidia_turing_gpu,
)
from vm_manager.base.connection import LibvirtConnection
from vm_manager.cli import main

GOLDEN = Path(__file__).parent / "golden" / "cli"
UPDATE = os.environ.get("NEURONOS_UPDATE_GOLDEN") == "1"
UUID = re.compile(r"<uuid>[0-9a-f-]{36}</uuid>")
LINUX = ["--template", "linux", "--network", "none"]

# row id -> the arguments after `create NAME` (@M@ is the media folder)
COMPARE = {
    "linux-defaults": LINUX,
    "linux-memory-cpus": [*LINUX, "--memory", "3G", "--cpus", "3"],
    "linux-domain-qemu-network": ["--template", "linux", "--domain-type", "qemu",
                                  "--network", "default"],
    "linux-existing-raw": [*LINUX, "--disk", "@M@/raw.img"],
    "linux-existing-qcow2": [*LINUX, "--disk", "@M@/disk.qcow2"],
    "linux-kernel-no-disk": [*LINUX, "--disk-size", "0", "--kernel", "@M@/vmlinuz",
                             "--initrd", "@M@/initrd.gz", "--cmdline", "console=ttyS0 quiet",
                             "--serial-log", "@M@/serial.log"],
    "linux-gpu": [*LINUX, "--gpu", "01:00.0"],
    "linux-gpu-looking-glass-1080p": [*LINUX, "--gpu", "01:00.0", "--looking-glass",
                                      "--resolution", "1920x1080"],
    "linux-usb": [*LINUX, "--usb", "046d:c077"],
    "linux-usb-later": [*LINUX, "--usb", "1234:5678", "--usb-later"],
    "linux-share": [*LINUX, "--share", "@M@/Work Files=work"],
    "windows11-installer": ["--template", "windows11", "--network", "none",
                            "--iso", "@M@/Win11.iso"],
    "windows11-installer-virtio": ["--template", "windows11", "--network", "none",
                                   "--iso", "@M@/Win11.iso", "--virtio-iso", "@M@/virtio.iso"],
    "windows11-gpu-all-options": ["--template", "windows11", "--network", "none",
                                  "--gpu", "0000:01:00.0", "--gpu-rom", "@M@/gpu.rom",
                                  "--nvidia-compat", "--looking-glass"],
    "windows10-installer": ["--template", "windows10", "--network", "none",
                            "--iso", "@M@/Win10.iso"],
    "macos-opencore": ["--template", "macos", "--network", "none",
                       "--opencore", "@M@/OpenCore.img"],
    "linux-passthrough-template-named": ["--template", "linux-passthrough", "--network", "none",
                                         "--gpu", "01:00.0"],
}

# row id -> (the arguments after `create NAME`, the flag the error names, words in it)
INVALID = {
    "bad-template": (["--template", "beos"], "--template", "windows11"),
    "bad-variant": (["--template", "linux-fast"], "--template", "basic or passthrough"),
    "memory-zero": ([*LINUX, "--memory", "0"], "--memory", ""),
    "memory-below-windows-minimum": (["--template", "windows11", "--memory", "2G"],
                                     "--memory", "below the minimum for Windows 11"),
    "memory-more-than-host": ([*LINUX, "--memory", "64G"], "--memory",
                              "more than the host has"),
    "cpus-zero": ([*LINUX, "--cpus", "0"], "--cpus", ""),
    "cpus-negative": ([*LINUX, "--cpus", "-2"], "--cpus", "cannot be negative, got -2"),
    "initrd-without-kernel": ([*LINUX, "--initrd", "@M@/initrd.gz"], "--kernel",
                              "needs the kernel file they go with"),
    "no-disk-without-kernel": ([*LINUX, "--disk-size", "0"], "--disk-size",
                               "booted straight from a kernel file"),
    "gpu-not-viable": ([*LINUX, "--gpu", "02:00.0"], "--gpu", "not viable"),
    "gpu-boot": ([*LINUX, "--gpu", "00:02.0"], "--gpu", "boot GPU"),
    "gpu-not-a-gpu": ([*LINUX, "--gpu", "05:00.0"], "--gpu", "not a GPU"),
    "gpu-bad-address": ([*LINUX, "--gpu", "zz"], "--gpu", "PCI address"),
    "gpu-rom-without-gpu": ([*LINUX, "--gpu-rom", "@M@/gpu.rom"], "--gpu-rom", "--gpu"),
    "usb-not-plugged": ([*LINUX, "--usb", "1234:5678"], "--usb", "--usb-later"),
    "usb-bad-id": ([*LINUX, "--usb", "mouse"], "--usb", "VID:PID"),
    "looking-glass-without-gpu": ([*LINUX, "--looking-glass"], "--looking-glass", "GPU"),
    "resolution-tiny": ([*LINUX, "--gpu", "01:00.0", "--looking-glass", "--resolution",
                         "10x10"], "--resolution", ""),
    "iso-missing": (["--template", "windows11", "--iso", "@M@/gone.iso"], "--iso",
                    "does not exist"),
    "iso-a-device": (["--template", "windows11", "--iso", "/dev/null"], "--iso",
                     "is a device"),
    "disk-a-folder": ([*LINUX, "--disk", "@M@/Work Files"], "--disk", "is a folder"),
    "disk-format-unreadable": ([*LINUX, "--disk", "@M@/broken.qcow2"], "--disk",
                               "cannot tell the format"),
    "disk-device-not-block": ([*LINUX, "--disk-device", "@M@/raw.img"], "--disk-device",
                              "not a block device"),
    "cloud-image-on-windows": (["--template", "windows11", "--cloud-image", "@M@/disk.qcow2"],
                               "--cloud-image", "Linux"),
    "network-unknown": (["--template", "linux", "--network", "nosuch"], "--network",
                        "there are: default"),
    "share-etc": ([*LINUX, "--share", "/etc"], "--share", "inside /etc"),
    "macos-without-opencore": (["--template", "macos", "--network", "none"], "--opencore", ""),
    "kernel-on-windows": (["--template", "windows11", "--kernel", "@M@/vmlinuz"], "--kernel",
                          "Linux"),
    "name-with-space": (["--template", "linux"], "NAME", "", "a b"),
    "name-traversal": (["--template", "linux"], "NAME", "", "../x"),
}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    for name in ("Win11.iso", "Win10.iso", "virtio.iso", "vmlinuz", "initrd.gz"):
        (folder / name).write_bytes(b"")
    (folder / "gpu.rom").write_bytes(b"\x55\xaa")
    (folder / "Work Files").mkdir()
    for name, fmt in (("disk.qcow2", "qcow2"), ("raw.img", "raw"), ("OpenCore.img", "qcow2")):
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, str(folder / name), "64M"],
                       check=True)
    (folder / "broken.qcow2").write_bytes(b"QFI\xfb\x00\x00\x00\x09" + b"\0" * 512)
    return folder


@pytest.fixture
def host(make_host, tmp_path, media, monkeypatch):
    root = add_pci_devices(tmp_path / "host", [
        FakePCIDevice("0000:00:02.0", 0x8086, 0x3E92, 0x030000, "i915", 0, True),
        *nvidia_turing_gpu(bus=1, group=14),
        *nvidia_turing_gpu(bus=2, group=7),
        FakePCIDevice("0000:03:00.0", 0x1022, 0x43B7, 0x010601, "ahci", 7),
    ])
    add_usb_devices(root, [FakeUSBDevice(1, "2", "046d", "c077", devnum=3,
                                         product_name="M105 Mouse")])
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    with LibvirtConnection(make_host(cpus=8, memory_mb=16384)) as conn:
        yield conn


def create(conn, media: Path, argv: list[str], name: str = "vm") -> tuple[int, str, str]:
    args = [arg.replace("@M@", str(media)) for arg in argv]
    out, err = io.StringIO(), io.StringIO()
    code = main(["create", name, *args, "--print-xml"], connection=conn, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("row", list(COMPARE))
def test_create_prints_the_golden_domain(host, media, tmp_path, row):
    code, out, err = create(host, media, COMPARE[row])
    assert code == 0, f"{row}: {err}"
    text = UUID.sub("<uuid>@UUID@</uuid>", out).replace(str(media), "@MEDIA@") \
        .replace(str(tmp_path / "images"), "@IMAGES@")
    golden = GOLDEN / f"{row}.xml"
    if UPDATE:
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert golden.exists(), f"{row}: no golden file; run with NEURONOS_UPDATE_GOLDEN=1"
    assert text == golden.read_text(), f"{row}: the XML differs from {golden.name}"
    assert host.execute(lambda c: [d.name() for d in c.listAllDomains()]).count("vm") == 0


@pytest.mark.parametrize("row", list(INVALID))
def test_create_refuses_with_exit_2_naming_the_flag(host, media, row):
    argv, flag, words, *name = INVALID[row]
    code, out, err = create(host, media, argv, *name)
    assert code == 2, f"{row}: exit {code}, {out}{err}"
    assert err.startswith(f"neuron-vm: {flag}") or (flag == "NAME" and "name" in err), \
        f"{row}: {err}"
    assert words.replace("@M@", str(media)) in err, f"{row}: {err}"
    assert err.count("\n") == 1 and out == "", f"{row}: more than one line: {err}"
