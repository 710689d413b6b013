"""Typical configs per template, shared by the golden-file tests and the real-daemon tests."""

from __future__ import annotations

from pathlib import Path

from dataclasses import replace

from vm_manager.core.host_facts import HostFacts
from vm_manager.base.vm_config import (
    GPUPassthroughConfig,
    HostResources,
    LookingGlassConfig,
    VMConfig,
)


def fixed_facts(creator, config: VMConfig) -> HostFacts:
    """The host as ``creator`` reads it for ``config``, with the capabilities unknown (as on
    the test driver: the safe Hyper-V fallback set is used) and room for every default."""
    return replace(creator.gather(config), kvm_usable=None, hyperv_features=None,
                   resources=HostResources(memory_mb=65536, cpus=16),
                   usb_present=None)  # the sample USB device need not be plugged in


def media(folder: Path) -> dict[str, str]:
    """Installer, driver and OpenCore images the configs point at: empty files, but the
    OpenCore image is a real (small) qcow2, since a disk image's format is read from it."""
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    names = {"iso": "Win11 installer & more.iso", "virtio": "virtio-win.iso",
             "opencore": "OpenCore.qcow2", "kernel": "vmlinuz", "initrd": "initrd.gz",
             "rom": "gpu.rom"}
    paths = {}
    for key, name in names.items():
        path = folder / name
        path.write_bytes(b"")
        paths[key] = str(path)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", paths["opencore"], "64M"],
                   check=True)
    return paths


def cases(paths: dict[str, str], gpu: bool) -> dict[str, VMConfig]:
    """case name -> config; ``gpu`` selects the passthrough variants."""
    common = {"domain_type": "qemu"}
    gpu_cfg = (lambda **kw: GPUPassthroughConfig("01:00.0", **kw)) if gpu else (lambda **kw: None)
    lg = LookingGlassConfig(enabled=gpu)
    configs = {
        "windows11": VMConfig(name="win11", vm_type="windows11", iso_path=paths["iso"],
                              gpu_passthrough=gpu_cfg(nvidia_compat=True, rom_file=paths["rom"]),
                              looking_glass=lg, **common),
        "windows10": VMConfig(name="win10", vm_type="windows10", iso_path=paths["iso"],
                              virtio_iso_path=paths["virtio"], gpu_passthrough=gpu_cfg(),
                              network="none", usb_devices=[{"vendor_id": "046d",
                                                            "product_id": "c52b"}],
                              **common),
        "linux": VMConfig(name="linux", vm_type="linux", memory_mb="4G", vcpus=2,
                          disk_size_gb=20, gpu_passthrough=gpu_cfg(),
                          looking_glass=LookingGlassConfig(enabled=gpu, width=1920,
                                                           height=1080), **common),
        "macos": VMConfig(name="mac", vm_type="macos", opencore_path=paths["opencore"],
                          gpu_passthrough=gpu_cfg(), network="none", **common),
    }
    if not gpu:
        configs["linux-kernel"] = VMConfig(
            name="tiny", vm_type="linux", memory_mb=512, vcpus=1, disk_size_gb=0,
            kernel_path=paths["kernel"], initrd_path=paths["initrd"],
            kernel_cmdline="console=ttyS0 quiet", serial_log_path="/var/log/tiny.log",
            network="none", **common)
    return configs
