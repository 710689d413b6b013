"""Start, stop, pause, resume, reboot and reset VMs; every request says what happened.

Each request goes through the state machine first (``VMStateMachine.begin``): an illegal
one raises ``LifecycleError`` before libvirt is called. Waiting is on libvirt events
through the state machine's condition variable, never by polling ``state()``.

    manager = VMLifecycleManager(get_connection())
    result = manager.stop("win11", timeout=60)
    if result.forced: ...   # the guest ignored ACPI; it was powered off after 60 s
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Callable

import libvirt

from ..base.connection import LibvirtConnection, get_connection
from ..base.errors import (
    LifecycleError,
    OperationFailed,
    OperationTimedOut,
    VMManagerError,
    VMNotFound,
)
from ..base.primitives import VMState
from .state_machine import ALLOWED, STOPPED_LIKE, StateChange, Ticket, VMStateMachine
from ..base.log import get_logger

log = get_logger(__name__)

FORCE_TIMEOUT_S = 15.0  # how long a destroy may take to show up as "shut off"
QUICK_TIMEOUT_S = 30.0  # pause / resume / reset / reboot requests
DEADLINE_SLACK_S = 5.0  # the transitional state outlives the request's own timeout by this
# A guest still booting has no ACPI handler yet and loses the power button; it is pressed
# again this often until the stop's timeout (OpenStack nova does the same: commit 879bbcf902,
# "Power off commands should give guests a chance to shutdown", re-sends every 10 s).
PRESS_AGAIN_S = 10.0


class ShutdownMethod(str, Enum):
    """How ``stop`` ends a VM."""

    GRACEFUL = "graceful"  # ACPI power button; powered off by force after the timeout
    FORCE = "force"  # pull the plug now (virDomainDestroy)


@dataclass(frozen=True)
class OperationResult:
    """What a request did. ``state`` is libvirt's state when the request returned."""

    name: str
    operation: str
    state: VMState
    elapsed_s: float
    forced: bool = False
    method: str | None = None
    message: str = ""

    def to_dict(self) -> dict:
        data = asdict(self)
        data["state"] = self.state.value
        data["elapsed_s"] = round(self.elapsed_s, 3)
        return data


def _is_stopped(state: VMState) -> bool:
    return state in STOPPED_LIKE


class VMLifecycleManager:
    """Lifecycle requests for the VMs on one connection. Thread-safe: requests on
    different VMs run in parallel; a second request on a VM that has one in flight is
    refused with ``LifecycleError`` (a force-stop may interrupt a stop or a start)."""

    def __init__(
        self,
        connection: LibvirtConnection | None = None,
        state_machine: VMStateMachine | None = None,
    ):
        self.connection = connection or get_connection()
        self.states = state_machine or VMStateMachine(self.connection)
        # Per-VM lock around each libvirt call, so a force-stop that interrupts a request
        # cannot interleave with that request's own call (it runs before or after it).
        self._call_locks: dict[str, threading.Lock] = {}
        self._call_locks_guard = threading.Lock()

    def close(self) -> None:
        self.states.close()

    # --- reading ---------------------------------------------------------------------------

    def get_state(self, name: str) -> VMState:
        """The VM's state as the manager shows it (may be transitional or ``error``);
        ``VMState.UNDEFINED`` when no such VM exists. Every *operation* on a missing VM
        raises ``VMNotFound``; asking for its state does not (the design notes' use)."""
        try:
            return self.states.state(name)
        except VMNotFound:
            return VMState.UNDEFINED

    def require(self, name: str) -> VMState:
        """The VM's state; raises ``VMNotFound`` when it does not exist."""
        return self.states.state(name)

    def subscribe(self, callback: Callable[[StateChange], None]) -> int:
        return self.states.subscribe(callback)

    def unsubscribe(self, token: int) -> None:
        self.states.unsubscribe(token)

    # --- requests --------------------------------------------------------------------------

    def start(
        self, name: str, paused: bool = False, wait: bool = True, timeout: float = 60.0
    ) -> OperationResult:
        """Boot the VM (``paused``: stop at the first instruction). With ``wait``, returns
        once libvirt reports it running (or paused); raises ``OperationTimedOut`` if that
        does not happen within ``timeout``."""
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        target = VMState.PAUSED if paused else VMState.RUNNING
        return self._request(
            name, "start", timeout,
            lambda dom: dom.createWithFlags(flags),
            (lambda state: state == target) if wait else None,
            done=f"{'started paused' if paused else 'started'}",
        )

    def stop(
        self, name: str, method: ShutdownMethod = ShutdownMethod.GRACEFUL, timeout: float = 60.0
    ) -> OperationResult:
        """Shut the VM down. ``GRACEFUL`` presses the ACPI power button and waits up to
        ``timeout`` seconds; a guest that has not powered off by then is powered off by
        force and the result says ``forced=True``. ``FORCE`` powers off at once."""
        method = ShutdownMethod(method)
        if method is ShutdownMethod.FORCE:
            return self._request(
                name, "force-stop", FORCE_TIMEOUT_S,
                lambda dom: dom.destroy(), _is_stopped,
                done="powered off by force", method="force", forced=True, locked=False,
            )
        ticket = self.states.begin(name, "stop", timeout + FORCE_TIMEOUT_S + DEADLINE_SLACK_S)
        started = time.monotonic()
        forced = False
        try:
            state = self._press_power_button(ticket, timeout, started)
            if state is None:
                self._raise_if_superseded(ticket)
                log.info("%s ignored ACPI shutdown for %.0f s; forcing it off", name, timeout)
                forced = True
                # not behind the hung request's lock: libvirt kills QEMU before it takes
                # the domain's job, so a destroy ends a request that waits on a hung QEMU
                version = self._call(ticket, lambda dom: dom.destroy(), _is_stopped,
                                     locked=False)
                state = self.states.wait_for(
                    name, _is_stopped, FORCE_TIMEOUT_S, version, ticket
                )
                if state is None:
                    raise OperationTimedOut(
                        f"{name!r} did not power off even by force within {FORCE_TIMEOUT_S:.0f} s"
                    )
        except BaseException as error:
            self._fail(ticket, error)
        self.states.end(ticket)
        elapsed = time.monotonic() - started
        if forced:
            message = f"forced off after the guest ignored shutdown for {timeout:.0f} s"
        else:
            message = "shut down gracefully"
        return OperationResult(
            name, "stop", state, elapsed, forced=forced,
            method="forced" if forced else "graceful", message=message,
        )

    def _press_power_button(self, ticket: Ticket, timeout: float, started: float
                            ) -> VMState | None:
        """Press the ACPI power button, again every ``PRESS_AGAIN_S`` while there is time
        left, and wait for the guest to power off: its state, or None at ``timeout``."""
        name, deadline, version = ticket.name, started + timeout, None
        while True:
            left = deadline - time.monotonic()
            # libvirt waits for QEMU's answer to the power button without a deadline: a QEMU
            # that hangs (its monitor never answers) would hold this stop, and a delete
            # --force behind it, for ever. The request gets the time left too.
            pressed = within(max(left, 0.0), lambda: self._call(
                ticket, lambda dom: dom.shutdown(), _is_stopped))
            if pressed is HUNG:
                log.warning("%s: QEMU did not answer the power button within %.0f s; forcing"
                            " it off", name, timeout)
                return None
            version = pressed if version is None else min(version, pressed)
            left = deadline - time.monotonic()
            state = self.states.wait_for(name, _is_stopped, max(0.0, min(left, PRESS_AGAIN_S)),
                                         version, ticket)
            if state is not None or left <= PRESS_AGAIN_S or self.states.superseded(ticket):
                return state
            log.info("%s: still running %.0f s after the power button; pressing it again",
                     name, time.monotonic() - started)

    def pause(self, name: str, timeout: float = QUICK_TIMEOUT_S) -> OperationResult:
        return self._request(
            name, "pause", timeout, lambda dom: dom.suspend(),
            lambda state: state == VMState.PAUSED, done="paused",
        )

    def resume(self, name: str, timeout: float = QUICK_TIMEOUT_S) -> OperationResult:
        return self._request(
            name, "resume", timeout, lambda dom: dom.resume(),
            lambda state: state in (VMState.RUNNING, VMState.BLOCKED), done="resumed",
        )

    def reboot(self, name: str, timeout: float = QUICK_TIMEOUT_S) -> OperationResult:
        """Ask the guest to reboot (ACPI). Returns once libvirt accepted the request; the
        guest then restarts on its own."""
        return self._request(
            name, "reboot", timeout, lambda dom: dom.reboot(0), None, done="reboot requested"
        )

    def reset(self, name: str, timeout: float = QUICK_TIMEOUT_S) -> OperationResult:
        """Press the reset button: the guest restarts at once, without shutting down."""
        return self._request(name, "reset", timeout, lambda dom: dom.reset(0), None, done="reset")

    # --- internals -------------------------------------------------------------------------

    def _fail(self, ticket, error: BaseException) -> None:
        """End a failed request and raise; a request that a force-stop cut short says so
        instead of passing on libvirt's "domain is not running"."""
        if self.states.superseded(ticket) and isinstance(error, OperationFailed):
            raise LifecycleError(
                f"{ticket.operation} of {ticket.name!r} was cut short by a force-stop"
            ) from error
        self.states.end(ticket, error=_describe(error))
        raise error

    def _call(
        self,
        ticket: Ticket,
        action: Callable[[libvirt.virDomain], object],
        already_done: Callable[[VMState], bool] | None,
        locked: bool = True,
    ) -> int:
        """Run ``action`` on the domain; return the state version to wait beyond.

        If libvirt refuses, its state is read afresh: a VM that already got where we wanted
        (the guest shut down by itself a moment earlier) is a success; a VM that is in a
        state the request is not allowed from (it changed before its event reached us) is
        a ``LifecycleError`` naming that state.
        """
        name, operation = ticket.name, ticket.operation
        # A request that does not take the lock (a force-stop) runs beside the one it cuts
        # short: a start may finish between its refusal ("domain is not running") and the
        # fresh read. Then it is simply asked again, a few times at most.
        attempts = 1 if locked else 3
        with self._call_lock(name) if locked else contextlib.nullcontext():
            for attempt in range(attempts):
                self._raise_if_superseded(ticket)
                version = self.states.version(name)
                try:
                    self.connection.execute(
                        lambda conn: action(self.connection.lookup(conn, name)))
                    return version
                except OperationFailed as error:
                    fresh = self.states.read_libvirt(name)
                    if already_done is not None and already_done(fresh):
                        return -1  # the fresh read is the answer: any recorded state counts
                    if fresh not in ALLOWED[operation][1]:
                        raise LifecycleError(
                            f"cannot {operation} {name!r}: it is {fresh.label} (it changed"
                            " while the request was on its way)"
                        ) from error
                    if attempt + 1 == attempts:
                        raise
                    log.info("%s: %s refused (%s) while another request changed it to %s;"
                             " asking again", name, operation, error, fresh.label)
        raise AssertionError("unreachable")

    def _raise_if_superseded(self, ticket: Ticket) -> None:
        if self.states.superseded(ticket):
            raise LifecycleError(
                f"{ticket.operation} of {ticket.name!r} was cut short (by a force-stop, or it"
                " outlived its deadline)"
            )

    def _call_lock(self, name: str) -> threading.Lock:
        with self._call_locks_guard:
            return self._call_locks.setdefault(name, threading.Lock())

    def _request(
        self,
        name: str,
        operation: str,
        timeout: float,
        action: Callable[[libvirt.virDomain], object],
        reached: Callable[[VMState], bool] | None,
        *,
        done: str,
        method: str | None = None,
        forced: bool = False,
        locked: bool = True,
    ) -> OperationResult:
        ticket = self.states.begin(name, operation, timeout + DEADLINE_SLACK_S)
        started = time.monotonic()
        try:
            version = self._call(ticket, action, reached, locked)
            if reached is not None:
                state = self.states.wait_for(name, reached, timeout, version, ticket)
                if state is None:
                    self._raise_if_superseded(ticket)
                    now = self.states.actual(name)
                    raise OperationTimedOut(
                        f"{operation} of {name!r} did not complete within {timeout:.0f} s;"
                        f" it is {now.label if now else 'gone'}"
                    )
            else:
                state = self.states.actual(name) or VMState.NOSTATE
        except BaseException as error:
            self._fail(ticket, error)
        self.states.end(ticket)
        return OperationResult(
            name, operation, state, time.monotonic() - started,
            forced=forced, method=method, message=done,
        )


HUNG = object()


def within(timeout: float, call: Callable[[], object]) -> object:
    """``call()`` on a helper thread: its result (or its error), or ``HUNG`` when it has not
    returned within ``timeout`` seconds (it goes on in the background, and ends with the
    domain)."""
    box: dict[str, object] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
            box["error"] = error
        finally:
            done.set()

    threading.Thread(target=run, name="libvirt-request", daemon=True).start()
    if not done.wait(timeout):
        return HUNG
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]


def _describe(error: BaseException) -> str:
    if isinstance(error, VMManagerError):
        return str(error)
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}"
