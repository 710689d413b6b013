"""Deleting a VM: the plan first (what goes, what stays and why), then the deletion."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..core.vm_destroyer import DestroyPlan, DestroyResult


@dataclass(frozen=True)
class DeleteRequest:
    name: str
    delete_disks: bool = False  # also its own disks, UEFI variables and TPM state
    force: bool = False  # stop a running VM first (graceful, then forced)
    stop_timeout: float = 60.0


@dataclass
class DeletePreview:
    """The plan both ways, from one read: what the window's tick box would change."""

    keep_disks: DestroyPlan
    delete_disks: DestroyPlan

    def plan(self, delete_disks: bool) -> DestroyPlan:
        return self.delete_disks if delete_disks else self.keep_disks


def preview(ctx: Context, name: str) -> DeletePreview:
    """Raises ``VMNotFound``. Changes nothing."""
    keep, full = ctx.destroyer().plan_both(name)
    return DeletePreview(keep, full)


def delete(ctx: Context, request: DeleteRequest) -> DestroyResult:
    """Stop (only with ``force``), undefine, and remove what the plan says; a disk that must
    be kept is kept, with the reason, whatever was asked."""
    from . import tune

    connection = ctx.connection
    uuid = connection.execute(lambda conn: connection.lookup(conn, request.name).UUIDString(),
                              idempotent=True)
    result = ctx.destroyer().destroy(request.name, delete_disks=request.delete_disks,
                                     force=request.force, stop_timeout=request.stop_timeout)
    tune.release(ctx, uuid=uuid)  # a VM stopped to be deleted gives the host its CPUs back
    return result
