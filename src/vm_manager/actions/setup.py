"""Unattended setups as both faces see them: where one stands, and following it to the end.

The stages come from ``core.guest_setup`` (events, the domain's metadata); this layer adds
what the user can do at each one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from .context import Context

NEXT = {
    "created": "start it (`neuron-vm start {name}`): setup runs by itself from there",
    "installing": "Windows is installing (20-40 minutes with KVM, hours emulated); watch it"
                  " with `neuron-vm console {name}`",
    "first-logon": "Windows runs; its first-logon steps (guest tools, the Looking Glass host)"
                   " are running",
    "looking-glass": "waiting for the Looking Glass host application in the guest: it needs"
                     " a display on the passed-through GPU (a monitor or a dummy plug)",
    "ready": "done: the installer and setup media are detached",
    "failed": "the last step says why; `neuron-vm setup-restart {name} --force --start` tries"
              " again (--wipe-disk: from an empty disk)",
}
NEXT_CLOUD_INIT = {
    "installing": "cloud-init is setting the guest up (1-2 minutes with KVM, a few more"
                  " emulated); watch it with `neuron-vm console {name}`",
    "ready": "done: log in with `ssh USER@ADDRESS` (the address: `neuron-vm info {name}`);"
             " the seed is detached and deleted",
}


STOPPED_MIDWAY = ("the VM is shut off at this stage: start it to go on (`neuron-vm start"
                  " {name}`); setup goes on where it was")


def next_step(kind: str | None, stage: str | None, name: str, running: bool = True) -> str:
    if not running and stage in ("installing", "first-logon", "looking-glass"):
        return STOPPED_MIDWAY.format(name=name)  # (a walk found "Windows is installing")
    table = NEXT_CLOUD_INIT if kind == "cloud-init" else {}
    return table.get(stage or "", NEXT.get(stage or "", "")).format(name=name)


@dataclass
class SetupStatus:
    name: str
    kind: str | None
    stage: str | None
    steps: list[dict] = field(default_factory=list)
    next: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def status(ctx: Context, name: str) -> SetupStatus:
    """Where the setup of ``name`` stands (caught up once if its agent is connected).
    Raises ``VMNotFound``; ``InvalidConfig`` for a VM that was not set up unattended."""
    from ..base.errors import InvalidConfig

    ctx.lifecycle.require(name)
    info = ctx.setup_tracker().status(name)
    if info is None:
        raise InvalidConfig("NAME", f"{name} was not created with --unattended: there is no"
                            " setup to follow")
    steps = [{"stage": stage, "at": at, "note": note} for stage, at, note in info.steps]
    from ..base.primitives import VMState

    running = ctx.lifecycle.get_state(name) in (VMState.RUNNING, VMState.PAUSED)
    return SetupStatus(name, info.kind, info.stage, steps,
                       next_step(info.kind, info.stage, name, running))


def after_start(ctx: Context, name: str) -> SetupStatus | None:
    """A VM just started (by any command or face): when its setup goes on, it follows the
    start (the stage moves to "installing", a Windows installer's boot prompt is answered,
    which takes ~20 s); returns where it stands then (None: no setup, or it is over)."""
    info = stage(ctx, name)
    if info in ("", "ready", "failed"):
        return None
    ctx.setup_tracker().on_started(name)
    return status(ctx, name)


def stage(ctx: Context, name: str) -> str:
    """The stage of ``name``'s unattended setup as its metadata says ("" for none); one
    read, no catching up (the list shows this)."""
    from ..base.errors import VMManagerError

    try:
        info, _ = ctx.setup_tracker().info(name)
    except VMManagerError:
        return ""
    return (info.stage or "") if info else ""


def follow(ctx: Context, name: str, on_change: Callable) -> Callable[[], None]:
    """Call ``on_change(SetupChange)`` for each stage ``name`` reaches; returns the stop."""
    tracker = ctx.setup_tracker()
    token = tracker.subscribe(lambda change: on_change(change) if change.name == name
                              else None)
    return lambda: tracker.unsubscribe(token)


def follow_all(ctx: Context, on_change: Callable) -> Callable[[], None]:
    tracker = ctx.setup_tracker()
    token = tracker.subscribe(on_change)
    return lambda: tracker.unsubscribe(token)


def restart(ctx: Context, name: str, *, secrets=None, wipe_disk: bool = False,
            force: bool = False, start: bool = False,
            stage_timeout_s: int | None = None) -> SetupStatus:
    """Restart a setup that failed or was interrupted: stopped first with ``force`` (a
    running VM is refused otherwise), the stage back to "created", a missing medium made
    again (``secrets`` then), the VM's own disk made empty only with ``wipe_disk``; then
    started with ``start``. Raises ``InvalidConfig`` (finished, no setup, a password is
    needed), ``LifecycleError`` (running)."""
    from ..base.errors import InvalidConfig
    from ..core.setup_restart import restart_setup
    from ..core.vm_lifecycle import ShutdownMethod

    lifecycle = ctx.lifecycle
    config = ctx.settings(name)
    if config is None or config.unattended is None:
        raise InvalidConfig("NAME", f"{name} was not created with --unattended")
    tracker = ctx.setup_tracker()
    setup_info, live = tracker.info(name)
    restartable = setup_info is not None and (setup_info.stage != "ready" or (
        wipe_disk and setup_info.kind == "cloud-init"))  # else refused below, VM untouched
    if wipe_disk:
        from ..core.setup_restart import refuse_wiping_snapshots

        refuse_wiping_snapshots(tracker.connection, name)  # before anything is stopped
    stopped = bool(force and live["active"] and restartable)
    if stopped:
        lifecycle.stop(name, method=ShutdownMethod.FORCE)
    from ..core.host import images_dir

    restart_setup(tracker, config, images_dir=ctx.images_dir or images_dir(ctx.uri),
                  loader=ctx.loader, secrets=secrets, wipe_disk=wipe_disk, stopped=stopped,
                  stage_timeout_s=stage_timeout_s)
    if start:
        from .boot import prepare, start as boot

        prepare(ctx, name)
        boot(ctx, name)
        after_start(ctx, name)
    return status(ctx, name)


class SetupJourney:
    """From a fresh unattended setup to the desktop, for any face: each stage the setup
    reaches goes to ``on_stage(SetupChange)``; with ``display``, the Looking Glass display
    opens when the guest's host application is due (stage "looking-glass", or "ready"),
    its states going to ``on_display(DisplayChange)``. Made before the VM starts (so no
    stage is missed); ``wait`` tells how it ended: "ready", or "vm-stopped" (the VM stopped
    during setup: start it again to go on). Closing it stops following (setup goes on)."""

    def __init__(self, ctx: Context, name: str, *, display: bool = False,
                 on_stage: Callable | None = None, on_display: Callable | None = None):
        import queue

        from . import vms

        self.ctx, self.name, self.display = ctx, name, display
        self.on_stage, self.on_display = on_stage, on_display
        self.session = None  # the display, once it opened
        self._items: queue.Queue = queue.Queue()
        self._stops = [follow(ctx, name, self._items.put)]
        self._vms = vms
        self._watching = False

    def wait(self, timeout: float | None = None) -> str | None:
        """The end ("ready", "vm-stopped"), or None when ``timeout`` passed first."""
        import queue

        from ..base.primitives import VMState
        from ..core.guest_setup import SetupChange

        if not self._watching:  # the VM exists by now: its state changes too
            self._stops.append(self._vms.watch(self.ctx, self.name, self._items.put,
                                               lambda event: None))
            self._watching = True
            self.ctx.setup_tracker().arm(self.name)  # its stage's deadline, from here
        try:
            item = self._items.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(item, SetupChange):
            if self.on_stage is not None:
                self.on_stage(item)
            if self.display and self.session is None and item.new in ("looking-glass",
                                                                      "ready"):
                from . import display

                self.session = display.open_display(self.ctx, display.DisplayRequest(
                    self.name), on_change=self.on_display)
            return item.new if item.new in ("ready", "failed") else None
        if item.new in (VMState.SHUTOFF, VMState.CRASHED):
            return "vm-stopped"
        return None

    def close(self) -> None:
        """Stop following (the display, if open, stays: it follows the VM)."""
        for stop in self._stops:
            stop()
        self._stops = []
