"""VM states as the manager sees them: libvirt's, fed by events, plus its own transitions.

For each VM it keeps:
- ``actual``: libvirt's state, updated from lifecycle events (and re-read from libvirt
  after a reconnect, since events are lost while disconnected);
- ``operation``: the request in flight (start, stop, ...), shown as a transitional state
  (starting, stopping, ...) until the request ends or its deadline passes;
- ``error``: the reason the last request failed, shown as ``error`` until the next request
  or the next real state change.

``begin()`` checks a request against ``ALLOWED`` *before* any libvirt call and raises
``LifecycleError`` naming the current state and what is allowed. Only one request per VM is
in flight at a time; a second one is refused the same way, except a force-stop, which may
cut a graceful stop or a start short. Waiters block on a condition variable that events
notify (``wait_for``); nothing here polls.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable

import libvirt

from ..base.connection import ConnectionEvent, DomainEvent, LibvirtConnection
from ..base.errors import LifecycleError, VMNotFound
from ..base.primitives import Subscribers, VMState
from ..base.log import get_logger

log = get_logger(__name__)

S = VMState
RUNNING_LIKE = frozenset({S.RUNNING, S.BLOCKED})
STOPPED_LIKE = frozenset({S.SHUTOFF, S.CRASHED, S.NOSTATE})

# operation -> (the transitional state it shows, the states it may start from)
ALLOWED: dict[str, tuple[VMState, frozenset[VMState]]] = {
    "start": (S.STARTING, STOPPED_LIKE),
    "stop": (S.STOPPING, RUNNING_LIKE | {S.SHUTDOWN}),
    "force-stop": (
        S.STOPPING,
        RUNNING_LIKE | {S.PAUSED, S.SHUTDOWN, S.PMSUSPENDED, S.CRASHED, S.STARTING, S.STOPPING,
                        S.PAUSING, S.RESUMING, S.REBOOTING},
    ),
    "pause": (S.PAUSING, RUNNING_LIKE),
    "resume": (S.RESUMING, frozenset({S.PAUSED})),
    "reboot": (S.REBOOTING, RUNNING_LIKE),
    "reset": (S.REBOOTING, RUNNING_LIKE | {S.PAUSED}),
    "delete": (S.DELETING, STOPPED_LIKE),
}
# Operations a force-stop may interrupt (the GUI's "Force stop" while "Stopping...").
INTERRUPTIBLE = frozenset({"start", "stop", "pause", "resume", "reboot", "reset"})

# Hints for the refusals users hit most.
_HINTS = {
    ("start", S.PAUSED): "use resume to let it continue",
    ("start", S.PMSUSPENDED): "use resume, or force-stop",
    ("stop", S.PAUSED): "a paused guest cannot react to ACPI: resume it first, or force-stop",
    ("delete", S.RUNNING): "stop it first",
    ("delete", S.PAUSED): "stop it first",
}

# lifecycle event type -> the libvirt state it leaves the domain in
_EVENT_STATE = {
    libvirt.VIR_DOMAIN_EVENT_STARTED: S.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: S.PAUSED,
    libvirt.VIR_DOMAIN_EVENT_RESUMED: S.RUNNING,
    libvirt.VIR_DOMAIN_EVENT_STOPPED: S.SHUTOFF,
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: S.SHUTDOWN,
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: S.PMSUSPENDED,
    libvirt.VIR_DOMAIN_EVENT_CRASHED: S.CRASHED,
}


def allowed_operations(state: VMState) -> list[str]:
    """Operations ``begin`` accepts in ``state`` (for messages and for enabling buttons)."""
    return [op for op, (_, sources) in ALLOWED.items() if state in sources]


@dataclass(frozen=True)
class StateChange:
    """One change of a VM's state, as subscribers receive it."""

    name: str
    old: VMState
    new: VMState
    reason: str
    timestamp: float  # time.time()
    monotonic: float  # time.monotonic(), for latency measurements


@dataclass
class _Record:
    actual: VMState
    operation: str | None = None
    operation_started: float = 0.0
    deadline: float | None = None
    error: str | None = None
    exists: bool = True
    version: int = 0  # bumps on every update, so a slow read cannot undo a newer event

    @property
    def effective(self) -> VMState:
        if self.operation is not None:
            return ALLOWED[self.operation][0]
        if self.error is not None:
            return S.ERROR
        return self.actual


@dataclass(frozen=True)
class Ticket:
    """Proof that ``begin`` accepted a request; give it back to ``end``."""

    name: str
    operation: str
    serial: int


class VMStateMachine:
    """Tracks every VM's state on one connection. Thread-safe."""

    def __init__(self, connection: LibvirtConnection, clock: Callable[[], float] = time.monotonic):
        self.connection = connection
        self._clock = clock
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._records: dict[str, _Record] = {}
        self._tickets: dict[str, Ticket] = {}
        self._timers: dict[str, threading.Timer] = {}
        self._serial = 0
        self._subscribers = Subscribers(log)
        self._event_token = connection.subscribe(self._on_connection_event)

    def close(self) -> None:
        self.connection.unsubscribe(self._event_token)

    # --- reading ---------------------------------------------------------------------------

    def state(self, name: str) -> VMState:
        """The VM's state now (reads libvirt the first time a VM is asked about)."""
        with self._lock:
            record = self._records.get(name)
            if record is not None and record.exists:
                return record.effective
        return self.refresh(name)

    def error_reason(self, name: str) -> str | None:
        with self._lock:
            record = self._records.get(name)
            return record.error if record else None

    def refresh(self, name: str) -> VMState:
        """Read the VM's real state from libvirt now; returns the state as shown (which
        may be transitional). Raises ``VMNotFound``."""
        self.read_libvirt(name)
        return self.state_if_known(name) or S.NOSTATE

    def read_libvirt(self, name: str) -> VMState:
        """libvirt's state of ``name``, read now (and recorded unless an event was newer).
        Raises ``VMNotFound``."""

        def read(conn: libvirt.virConnect) -> int:
            return self.connection.lookup(conn, name).state()[0]

        version = self._version(name)
        try:
            code = self.connection.execute(read, idempotent=True)
        except VMNotFound:
            self._set_actual(name, None, "not defined", if_version=version)
            raise
        state = VMState.from_libvirt(code)
        self._set_actual(name, state, "read from libvirt", if_version=version)
        return state

    def _version(self, name: str) -> int:
        with self._lock:
            record = self._records.get(name)
            return record.version if record is not None else -1

    def state_if_known(self, name: str) -> VMState | None:
        with self._lock:
            record = self._records.get(name)
            return record.effective if record is not None and record.exists else None

    def refresh_all(self, announce: bool = True) -> None:
        """Re-read every domain's state (after a reconnect: events were missed). Subscribers
        hear only real differences; ``announce=False`` records without telling anyone (to
        learn every domain first, so a later re-read has something to compare with)."""

        def read(conn: libvirt.virConnect) -> dict[str, int]:
            return {dom.name(): dom.state()[0] for dom in conn.listAllDomains(0)}

        with self._lock:
            versions = {name: record.version for name, record in self._records.items()}
        states = self.connection.execute(read, idempotent=True)
        for name, version in versions.items():
            if name not in states:
                self._set_actual(name, None, "no longer defined (re-read after reconnect)",
                                 if_version=version, notify=announce)
        for name, code in states.items():
            self._set_actual(
                name, VMState.from_libvirt(code), "re-read after reconnect",
                if_version=versions.get(name, -1), notify=announce,
            )

    # --- requests --------------------------------------------------------------------------

    def begin(self, name: str, operation: str, timeout: float) -> Ticket:
        """Accept ``operation`` on ``name`` or raise ``LifecycleError`` (no libvirt call is
        made when refused). ``timeout`` bounds the transitional state."""
        if self.state_if_known(name) is None:
            self.refresh(name)  # learn the state (or raise VMNotFound) before judging
        _, sources = ALLOWED[operation]
        for fresh in (False, True):
            with self._lock:
                record = self._records[name]
                if not record.exists:
                    raise VMNotFound(name, self.connection.uri)
                current = record.operation
                shown = record.effective
                judged = ALLOWED[current][0] if current else record.actual
                if current is not None and not (
                    operation == "force-stop" and current in INTERRUPTIBLE
                ):
                    raise LifecycleError(
                        f"cannot {operation} {name!r}: it is {shown.label} (a {current} is"
                        " in progress); wait for it to finish"
                        + (", or force-stop it" if current in INTERRUPTIBLE else "")
                    )
                if judged in sources:
                    ticket, timer, change = self._accept_locked(record, name, operation,
                                                                timeout)
                    break
                if fresh:
                    allowed = ", ".join(allowed_operations(judged)) or "nothing"
                    hint = _HINTS.get((operation, judged))
                    raise LifecycleError(
                        f"cannot {operation} {name!r}: it is {shown.label}"
                        + (f" ({hint})" if hint else "")
                        + f"; allowed now: {allowed}"
                    )
            # The record may lag libvirt (its events are still on their way, e.g. right
            # after a start made on another connection): refuse only on a fresh read.
            self.read_libvirt(name)
        timer.start()
        self._notify(change)
        return ticket

    def _accept_locked(self, record: _Record, name: str, operation: str, timeout: float):
        self._serial += 1
        ticket = Ticket(name, operation, self._serial)
        self._tickets[name] = ticket
        self._changed.notify_all()  # a request this one interrupts stops waiting
        old = record.effective
        record.operation = operation
        record.operation_started = self._clock()
        record.deadline = record.operation_started + timeout
        record.error = None
        change = self._change_locked(name, old, record.effective, f"{operation} requested")
        # Nothing stays "starting" forever: past the deadline the state resolves to
        # libvirt's, even if the request's thread is stuck in a call that never returns.
        self._cancel_timer_locked(name)  # a force-stop replaces the request it interrupts
        timer = threading.Timer(timeout, self._on_deadline, args=(ticket,))
        timer.daemon = True
        self._timers[name] = timer
        return ticket, timer, change

    def superseded(self, ticket: Ticket) -> bool:
        """True if a force-stop (or the deadline) took this request over."""
        with self._lock:
            return self._tickets.get(ticket.name) != ticket

    def end(self, ticket: Ticket, error: str | None = None) -> None:
        """Finish a request; with ``error``, the VM shows ``error`` and the reason."""
        with self._lock:
            record = self._records.get(ticket.name)
            if record is None or self._tickets.get(ticket.name) != ticket:
                return  # superseded (force-stop) or expired: that path reported already
            del self._tickets[ticket.name]
            self._cancel_timer_locked(ticket.name)
            old = record.effective
            record.operation = None
            record.deadline = None
            record.error = error
            reason = f"{ticket.operation} failed: {error}" if error else f"{ticket.operation} done"
            change = self._change_locked(ticket.name, old, record.effective, reason)
        self._notify(change)

    def version(self, name: str) -> int:
        """A counter that grows with every update of ``name``'s state (-1: unknown)."""
        return self._version(name)

    def wait_for(
        self,
        name: str,
        predicate: Callable[[VMState], bool],
        timeout: float,
        after_version: int = -1,
        ticket: Ticket | None = None,
    ) -> VMState | None:
        """Block until libvirt's state of ``name`` satisfies ``predicate``; return it, or
        None on timeout. With ``after_version``, only an update newer than that counts, so
        a state that was stale when the request was made cannot end the wait. With
        ``ticket``, the wait also ends (None) as soon as a force-stop or the deadline takes
        that request over. Woken by events, never by polling."""
        deadline = self._clock() + timeout
        with self._lock:
            while True:
                record = self._records.get(name)
                if record is None or not record.exists:
                    raise VMNotFound(name, self.connection.uri)
                if record.version > after_version and predicate(record.actual):
                    return record.actual
                if ticket is not None and self._tickets.get(ticket.name) != ticket:
                    return None
                left = deadline - self._clock()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def actual(self, name: str) -> VMState | None:
        """libvirt's state as last reported, without the manager's overlay."""
        with self._lock:
            record = self._records.get(name)
            return record.actual if record is not None and record.exists else None

    # --- subscriptions ---------------------------------------------------------------------

    def subscribe(self, callback: Callable[[StateChange], None]) -> int:
        """``callback(StateChange)`` on every change of any VM's shown state. Runs on the
        thread that caused the change (the libvirt event thread, or a request's): keep it
        short and do not call the manager back from it."""
        return self._subscribers.add(callback)

    def unsubscribe(self, token: int) -> None:
        self._subscribers.remove(token)

    # --- internals -------------------------------------------------------------------------

    def _on_connection_event(self, event: DomainEvent | ConnectionEvent) -> None:
        if isinstance(event, ConnectionEvent):
            if event.status == "reconnected":
                # No libvirt calls on the event thread: re-read from a worker.
                threading.Thread(target=self._refresh_after_reconnect, daemon=True).start()
            return
        if event.event == libvirt.VIR_DOMAIN_EVENT_UNDEFINED:
            self._set_actual(event.name, None, "undefined", event.monotonic)
        elif event.event == libvirt.VIR_DOMAIN_EVENT_DEFINED:
            if self.actual(event.name) is None:  # new: shut off (redefined: its state stays)
                self._set_actual(event.name, S.SHUTOFF, "defined", event.monotonic)
        elif event.event in _EVENT_STATE:
            new = _EVENT_STATE[event.event]
            if (event.event == libvirt.VIR_DOMAIN_EVENT_STOPPED
                    and event.detail == libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED):
                new = S.CRASHED
            reason = f"{event.event_name}: {event.detail_name}"
            # libvirt's QEMU driver resumes a booting VM's CPUs before it says STARTED
            resumed = event.event == libvirt.VIR_DOMAIN_EVENT_RESUMED
            if resumed and self.actual(event.name) in STOPPED_LIKE:
                reason = "started"
            self._set_actual(event.name, new, reason, event.monotonic)

    def _refresh_after_reconnect(self) -> None:
        try:
            self.refresh_all()
        except Exception as error:  # the daemon may be gone again: the next reconnect retries
            log.warning("could not re-read VM states after reconnect: %s", error)

    def _set_actual(
        self,
        name: str,
        actual: VMState | None,
        reason: str,
        stamp: float | None = None,
        if_version: int | None = None,
        notify: bool = True,
    ) -> None:
        """Record libvirt's state. ``if_version``: only if nothing changed the record since
        that version was read (a read that raced an event must not undo it)."""
        with self._lock:
            record = self._records.get(name)
            if if_version is not None and (record.version if record else -1) != if_version:
                return
            if record is None:
                if actual is None:
                    return
                record = self._records[name] = _Record(actual=actual)
                old = S.UNDEFINED
            else:
                old = record.effective if record.exists else S.UNDEFINED
            record.version += 1
            if actual is None:
                record.exists = False
                record.operation = None
                record.error = None
                self._tickets.pop(name, None)
                self._cancel_timer_locked(name)
                new = S.UNDEFINED
            else:
                if actual != record.actual or not record.exists:
                    record.error = None  # a real change clears a stale error
                record.exists = True
                record.actual = actual
                new = record.effective
            self._changed.notify_all()
            change = self._change_locked(name, old, new, reason, stamp) if notify else None
        self._notify(change)

    def _on_deadline(self, ticket: Ticket) -> None:
        """A transitional state past its deadline resolves to libvirt's state, reported to
        subscribers with the reason."""
        with self._lock:
            record = self._records.get(ticket.name)
            if record is None or self._tickets.get(ticket.name) != ticket:
                return  # the request ended in time
            del self._tickets[ticket.name]
            self._timers.pop(ticket.name, None)
            self._changed.notify_all()
            elapsed = self._clock() - record.operation_started
            old = record.effective
            record.operation = None
            record.deadline = None
            record.error = f"{ticket.operation} did not finish within {elapsed:.0f} s"
            change = self._change_locked(
                ticket.name, old, record.effective,
                f"{record.error}; libvirt says {record.actual.label}",
            )
        log.warning("%s: %s", ticket.name, change[1].reason if change else "deadline passed")
        self._notify(change)

    def _cancel_timer_locked(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _change_locked(
        self, name: str, old: VMState, new: VMState, reason: str, stamp: float | None = None
    ) -> tuple[list, StateChange] | None:
        if old == new:
            return None
        change = StateChange(name, old, new, reason, time.time(), stamp or time.monotonic())
        return self._subscribers.snapshot(), change

    def _notify(self, pending: tuple[list, StateChange] | None) -> None:
        if pending is not None:
            subscribers, change = pending
            self._subscribers.notify(change, subscribers)
