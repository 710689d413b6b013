"""Looking Glass shared memory (IVSHMEM): its size, its name and its path.

Facts (DESIGN.md 4.2, Looking Glass B5-B7 docs): the frame buffer needs width x height x 4
bytes (8 for HDR) x 2 frames, plus 10 MiB, rounded up to a power of two in MiB (QEMU
refuses other sizes). libvirt's ``<shmem name='N'>`` becomes ``/dev/shm/N``.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..core.primitives import validate_name

SHM_DIR = Path("/dev/shm")
EXTRA_MIB = 10  # LGMP queues and headers, per the Looking Glass docs


def shm_size_mb(width: int, height: int, hdr: bool = False) -> int:
    """MiB of shared memory for a ``width`` x ``height`` guest desktop."""
    if width <= 0 or height <= 0:
        raise ValueError(f"resolution must be positive, got {width}x{height}")
    frame_bytes = width * height * (8 if hdr else 4) * 2
    needed = frame_bytes / (1024 * 1024) + EXTRA_MIB
    return 1 << math.ceil(math.log2(needed))


def shm_name(vm_name: str) -> str:
    """The per-VM shmem name (a shared ``looking-glass`` name would mix VMs' frames)."""
    return f"looking-glass-{validate_name(vm_name)}"


def shm_path(vm_name: str, shm_dir: Path = SHM_DIR) -> Path:
    return Path(shm_dir) / shm_name(vm_name)
