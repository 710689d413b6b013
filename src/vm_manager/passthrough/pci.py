"""PCI devices from sysfs under a host root (DESIGN.md 4.3).

``/sys/bus/pci/devices/DDDD:BB:SS.F/`` holds one folder per function; ``class`` reads
``0x%06x``, ``vendor``/``device`` read ``0x%04x``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..core.errors import InvalidConfig
from ..core.vm_config import PCIAddress


def host_root(root: Path | str | None = None) -> Path:
    """The folder that stands for "/" (tests pass a temporary sysfs tree)."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get("NEURONOS_HOST_ROOT") or "/")


def pci_devices_dir(root: Path | str | None = None) -> Path:
    return host_root(root) / "sys" / "bus" / "pci" / "devices"


def slot_functions(address: PCIAddress | str, root: Path | str | None = None) -> list[PCIAddress]:
    """Every function of the card at ``address`` (all ``DDDD:BB:SS.*``), sorted.

    A GPU goes to the guest whole: VGA, HD audio, and on Turing+ NVIDIA cards also the USB
    controller and the UCSI function. Raises ``InvalidConfig`` if the device is not there.
    """
    address = PCIAddress.parse(address, "gpu.pci_address")
    devices = pci_devices_dir(root)
    if not (devices / str(address)).exists():
        raise InvalidConfig(
            "gpu.pci_address",
            f"no PCI device {address} on this host (looked in {devices}); "
            "`neuron-vm gpu list` shows the GPUs",
        )
    prefix = address.slot_address + "."
    found = [PCIAddress.parse(entry.name) for entry in devices.iterdir()
             if entry.name.startswith(prefix)]
    return sorted(found)
