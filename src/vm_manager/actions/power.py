"""Start, stop, pause, resume, reboot and reset; each returns the lifecycle manager's
``OperationResult`` (what happened, how long it took, whether a stop was forced)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..core.vm_lifecycle import OperationResult
    from .display import DisplayRequest, DisplaySession


@dataclass(frozen=True)
class StartRequest:
    name: str
    paused: bool = False
    wait: bool = True
    timeout: float = 60.0
    display: DisplayRequest | None = None  # then show it through Looking Glass
    hand_over: bool = False  # the user said yes to the single-GPU handoff (actions.handoff)


@dataclass
class StartOutcome:
    result: OperationResult
    display: DisplaySession | None = None
    setup: object | None = None  # actions.setup.SetupStatus of a VM whose setup goes on
    prepared: tuple[str, ...] = ()  # what was checked or changed before it booted (boot.py)
    handoff: object | None = None  # actions.handoff.HandoffStarted: started by the handoff

    @property
    def message(self) -> str:
        """The result's words, then what was changed before it booted (the window's status
        bar shows it; the CLI prints each as a warning)."""
        return "; ".join([self.result.message or "started", *self.prepared])


def start(ctx: Context, request: StartRequest, on_display_change=None) -> StartOutcome:
    """Boot the VM; with ``display``, then open its Looking Glass window (a VM without
    Looking Glass is refused before anything boots)."""
    from . import boot, display

    if request.display is not None:
        display.config_for(ctx, request.name)  # InvalidConfig before booting anything
    from . import handoff

    if handoff.needed(ctx, request.name) is not None:  # its GPU shows this desktop
        return _hand_over(ctx, request)
    from . import setup

    from . import tune

    prepared = tuple(tune.restore_stale(ctx)) + tuple(boot.prepare(ctx, request.name))
    result = boot.start(ctx, request.name, paused=request.paused, wait=request.wait,
                        timeout=request.timeout)
    isolated = tune.isolate_started(ctx, request.name)
    prepared += (isolated,) if isolated else ()
    progress = None if request.paused or not request.wait else \
        setup.after_start(ctx, request.name)
    session = None
    if request.display is not None:
        session = display.open_display(ctx, request.display, on_change=on_display_change)
    return StartOutcome(result, session, progress, prepared)


def _hand_over(ctx: Context, request: StartRequest) -> StartOutcome:
    """Start through the single-GPU handoff: the root helper's unit starts the VM and gives
    the desktop back when it stops; this returns once the unit runs."""
    import time

    from ..core.state_machine import VMState
    from ..core.vm_lifecycle import OperationResult
    from . import handoff

    if request.display is not None or request.paused:
        from ..base.errors import InvalidConfig

        raise InvalidConfig("--display" if request.display else "--paused", "a VM given this"
                            " desktop's GPU shows itself on the screen and starts running")
    began = time.monotonic()
    started = handoff.start(ctx, request.name, consent=request.hand_over)
    result = OperationResult(request.name, "start", VMState.STARTING,
                             time.monotonic() - began, method="handoff",
                             message="handed this desktop's GPU over: the screen goes black,"
                                     f" then shows {request.name}")
    return StartOutcome(result, handoff=started)


def stop(ctx: Context, name: str, force: bool = False, timeout: float = 60.0
         ) -> OperationResult:
    """ACPI shutdown, forced after ``timeout`` (the result says so); ``force``: at once."""
    from ..core.vm_lifecycle import ShutdownMethod

    from . import tune

    method = ShutdownMethod.FORCE if force else ShutdownMethod.GRACEFUL
    result = ctx.lifecycle.stop(name, method=method, timeout=timeout)
    tune.release(ctx, name)  # what could not be given back is logged with its command
    return result


def pause(ctx: Context, name: str) -> OperationResult:
    return ctx.lifecycle.pause(name)


def resume(ctx: Context, name: str) -> OperationResult:
    return ctx.lifecycle.resume(name)


def reboot(ctx: Context, name: str) -> OperationResult:
    return ctx.lifecycle.reboot(name)


def reset(ctx: Context, name: str) -> OperationResult:
    return ctx.lifecycle.reset(name)


def allowed_operations(state) -> list[str]:
    """The requests the state table accepts in ``state`` (for enabling buttons)."""
    from ..core.state_machine import allowed_operations as table

    return table(state)


def actionable_state(ctx: Context | None, name: str, shown):
    """The state the buttons follow: libvirt's own while a failed request's ``error`` is
    shown (its reason stays in the details; Start, Delete and Settings stay what the VM
    really allows, issue 29), else the state shown. Reads nothing."""
    from ..base.primitives import VMState

    lifecycle = ctx.started_lifecycle if ctx is not None else None
    if shown != VMState.ERROR or lifecycle is None:
        return shown
    return lifecycle.states.actual(name) or shown
