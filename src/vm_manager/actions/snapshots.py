"""Snapshots of a VM's whole state (disks, NVRAM, TPM) for both faces."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..core.snapshots import Snapshot, SnapshotManager


def manager(ctx: Context) -> SnapshotManager:
    from ..core.host import images_dir
    from ..core.snapshots import LIBVIRT_STATE, SnapshotManager
    from ..passthrough.pci import host_root

    # QEMU's libvirt keeps a VM's NVRAM and TPM state in its own folders, whatever sysfs
    # root the context reads GPUs from (libvirt 11 names them in the definition); the test
    # driver has none: a test's fake root stands for them
    state = LIBVIRT_STATE if ctx.uri.startswith("qemu") else \
        host_root(ctx.host_root) / LIBVIRT_STATE.relative_to("/")
    return SnapshotManager(ctx.connection, ctx.images_dir or images_dir(ctx.uri), state)


def list_snapshots(ctx: Context, name: str) -> list[Snapshot]:
    """Raises ``VMNotFound``; follows no events (``info`` stays a one-shot read)."""
    return manager(ctx).list(name)


WHY_LOCAL = ("a snapshot holds copies of the VM's UEFI variables and TPM state, files on the"
             " other machine; take, revert and delete it there")


def create(ctx: Context, name: str, snap: str | None = None,
           description: str = "") -> Snapshot:
    """Take a snapshot of a shut-off VM (``snap`` default: the time, e.g. 20261201-2130)."""
    import time

    ctx.require_local("snapshot create", WHY_LOCAL)
    ctx.lifecycle.require(name)
    return manager(ctx).create(name, snap or time.strftime("%Y%m%d-%H%M%S"), description)


def revert(ctx: Context, name: str, snap: str, force: bool = False) -> Snapshot:
    """Back to ``snap``; a running VM is refused, or powered off first with ``force``."""
    from ..core.vm_lifecycle import ShutdownMethod

    ctx.require_local("snapshot revert", WHY_LOCAL)
    lifecycle = ctx.lifecycle
    lifecycle.require(name)
    snapshots = manager(ctx)
    if force and lifecycle.get_state(name).is_active:
        lifecycle.stop(name, method=ShutdownMethod.FORCE)
    return snapshots.revert(name, snap)


def delete(ctx: Context, name: str, snap: str) -> None:
    ctx.require_local("snapshot delete", WHY_LOCAL)
    ctx.lifecycle.require(name)
    manager(ctx).delete(name, snap)
