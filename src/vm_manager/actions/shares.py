"""Shared folders: the host folders a VM mounts over virtiofs, listed, added and removed.

A change rewrites the VM's definition through ``create.reconfigure`` (the same checks as
``create --share``: a real folder the desktop user can read, never the system's, libvirt's
or the images folder). A stopped VM has it at its next start; a running one keeps what it
runs with until it is shut down and started again (a reboot inside the guest is not enough:
QEMU keeps its devices), and the outcome says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from .create import ReconfigureOutcome


@dataclass(frozen=True)
class Share:
    source: str  # the host folder
    tag: str  # what the guest mounts
    readonly: bool
    driver: str  # virtiofs (what NeuronOS makes), path/handle for 9p made elsewhere

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class ShareOutcome:
    vm: str
    share: Share
    added: bool  # False: removed
    restart_needed: bool  # the VM runs: it sees the change after a shut down and start
    shares: tuple[Share, ...]  # the VM's shared folders now (in its definition)
    warnings: tuple[str, ...] = ()  # e.g. a whole home folder shared

    def describe(self) -> str:
        verb = "now shared with" if self.added else "no longer shared with"
        when = (f"; shut {self.vm} down and start it again to see the change (a restart"
                " inside the guest is not enough)") if self.restart_needed else ""
        return f"{self.share.source} ({self.share.tag}) {verb} {self.vm}{when}"

    def to_dict(self) -> dict:
        return {"vm": self.vm, "share": self.share.to_dict(), "added": self.added,
                "restart_needed": self.restart_needed,
                "shares": [share.to_dict() for share in self.shares],
                "warnings": list(self.warnings)}


def list_shares(ctx: Context, vm: str) -> tuple[Share, ...]:
    """The folders the VM's definition shares (made with virsh too). Raises ``VMNotFound``."""
    import libvirt

    connection = ctx.connection
    return _read(connection.execute(lambda conn: connection.lookup(conn, vm).XMLDesc(
        libvirt.VIR_DOMAIN_XML_INACTIVE), idempotent=True))


def add(ctx: Context, vm: str, path: str, tag: str | None = None, readonly: bool = False,
        ) -> ShareOutcome:
    """Share ``path`` (its tag: the folder's name unless given). Raises ``InvalidConfig``
    (``shares.path``, ``shares.tag``, ``shares.readonly``), ``VMNotFound``."""
    from ..base.errors import InvalidConfig
    from ..base.guest_config import ShareConfig

    share = ShareConfig(path, tag, readonly)
    current = _saved(ctx, vm)
    # the same folder again is said by planning ("shared already"), not "give another tag"
    if any(item.tag == share.tag and item.path != share.path for item in current):
        raise InvalidConfig("shares.tag", f"{vm} already shares a folder as {share.tag!r}:"
                            " give another tag")
    outcome = _change(ctx, vm, [*current, share])
    added = next(item for item in _shares_of(outcome) if item.tag == share.tag)
    return ShareOutcome(vm, added, True, outcome.restart_needed, _shares_of(outcome),
                        outcome.result.warnings)


def remove(ctx: Context, vm: str, which: str) -> ShareOutcome:
    """Stop sharing the folder whose tag or host path is ``which``. Raises ``InvalidConfig``
    (``TAG``: no such share), ``VMNotFound``."""
    import os

    from ..base.errors import InvalidConfig

    current = _saved(ctx, vm)
    real = os.path.realpath(which) if "/" in which else None
    gone = [item for item in current if which in (item.tag, item.path)
            or (real is not None and os.path.realpath(item.path) == real)]
    if not gone:
        tags = ", ".join(item.tag for item in current) or "none"
        raise InvalidConfig("TAG", f"{vm} shares no folder {which!r} (its shares: {tags})")
    if len(gone) > 1:  # one folder under several tags: say which one goes
        tags = ", ".join(item.tag for item in gone)
        raise InvalidConfig("TAG", f"{which} is shared with {vm} as {tags}: remove one by its"
                            " tag")
    before = {item.tag: item for item in list_shares(ctx, vm)}
    outcome = _change(ctx, vm, [item for item in current if item not in gone])
    share = before.get(gone[0].tag) or Share(gone[0].path, gone[0].tag, gone[0].readonly,
                                            "virtiofs")
    return ShareOutcome(vm, share, False, outcome.restart_needed, _shares_of(outcome),
                        outcome.result.warnings)


def _saved(ctx: Context, vm: str) -> list:
    from ..base.errors import InvalidConfig

    config = ctx.settings(vm)
    if config is None:
        raise InvalidConfig("NAME", f"{vm} was not made by NeuronOS; share folders with"
                            " virt-manager (Add Hardware > Filesystem)")
    return list(config.shares)


def _change(ctx: Context, vm: str, shares: list) -> ReconfigureOutcome:
    from .create import SettingsChange, reconfigure

    change = SettingsChange(shares=tuple({"path": item.path, "tag": item.tag,
                                          "readonly": item.readonly} for item in shares))
    return reconfigure(ctx, vm, change)


def _shares_of(outcome: ReconfigureOutcome) -> tuple[Share, ...]:
    return _read(outcome.result.xml)


def _read(xml: str) -> tuple[Share, ...]:
    from ..base.domain_xml import read_domain

    return tuple(Share(item.source or "", item.target or "", item.readonly,
                       item.driver or "path")
                 for item in read_domain(xml).filesystems if item.type in (None, "mount"))
