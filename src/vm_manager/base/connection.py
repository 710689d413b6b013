"""The libvirt connection: URI choice, event loop, keepalive, reconnect, event fan-out.

Facts this follows (DESIGN.md 5, libvirt's ``examples/event-test.py``):
- ``virEventRegisterDefaultImpl()`` must run before the first ``open()``, or the connection
  delivers no events and ``setKeepAlive`` fails; the loop runs in one daemon thread.
- keepalive + a close callback notice a daemon that went away; every event callback is
  tied to one ``virConnect`` and must be registered again on the new one.

``LibvirtConnection`` hides the reconnects: callers use ``execute(fn)``, which hands ``fn``
the live ``virConnect``, and ``subscribe(callback)`` for lifecycle events. Keep no
``virDomain`` objects across calls: they belong to the connection that made them.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, TypeVar

import libvirt

from . import guard
from .open_failure import describe_open_failure
from .errors import ConnectionFailed, InvalidConfig, OperationFailed, VMNotFound
from .events import (  # noqa: F401 (re-exported: subscribers import them from here)
    CLOSE_REASONS,
    ensure_event_loop,
    quiet_libvirt_errors,
    EVENT_AGENT,
    EVENT_DEVICE_REMOVED,
    EVENT_METADATA,
    EVENT_REBOOTED,
    ConnectionEvent,
    DomainEvent,
    Event,
    Subscriber,
)
from .primitives import DEFAULT_URI, Subscribers, resolve_uri, uri_problem  # noqa: F401
from .log import get_logger

log = get_logger(__name__)

KEEPALIVE_INTERVAL_S = 5
KEEPALIVE_COUNT = 3
RECONNECT_FIRST_DELAY_S = 0.1
RECONNECT_MAX_DELAY_S = 5.0

T = TypeVar("T")


def _is_connection_error(conn: libvirt.virConnect | None, error: libvirt.libvirtError) -> bool:
    """Did this error come from a lost connection rather than from the request itself?"""
    if conn is not None:
        try:
            if not conn.isAlive():
                return True
        except libvirt.libvirtError:
            return True
    code = error.get_error_code()
    if code in (libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN):
        return True
    from_rpc = error.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE)
    return from_rpc and code in (
        libvirt.VIR_ERR_SYSTEM_ERROR,
        libvirt.VIR_ERR_RPC,
        libvirt.VIR_ERR_INTERNAL_ERROR,  # "client socket is closed"
    )


class LibvirtConnection:
    """One libvirt URI, kept open across daemon restarts. Thread-safe.

    >>> with LibvirtConnection("test:///default") as conn:
    ...     names = conn.execute(lambda c: [d.name() for d in c.listAllDomains()])
    """

    def __init__(self, uri: str | None = None, *, auto_reconnect: bool = True,
                 events: bool = True):
        self.uri = resolve_uri(uri)
        self.auto_reconnect = auto_reconnect
        # events=False: a one-shot command (list, info) that never waits on libvirt: no
        # event loop thread, no keepalive, no close callback. The first subscribe() turns
        # them on (the connection is reopened: libvirt wants the loop before the open).
        self.events = events
        self._lock = threading.RLock()  # guards the fields below; held only briefly
        self._open_lock = threading.Lock()  # one open() at a time
        self._changed = threading.Condition(self._lock)
        self._conn: libvirt.virConnect | None = None
        self._generation = 0  # bumps on every open; stale callbacks compare against it
        self._event_callback_ids: list[int] | None = None
        self._subscribers = Subscribers(log)
        self._closed = False
        self._reconnect_thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.reconnect_count = 0

    # --- opening and closing -------------------------------------------------------------

    def open(self) -> LibvirtConnection:
        """Open now (idempotent). Raises ``ConnectionFailed`` with the URI and a hint."""
        guard.check("libvirt")
        self._ensure_open()
        return self

    def __enter__(self) -> LibvirtConnection:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def is_connected(self) -> bool:
        with self._lock:
            conn = self._conn
        if conn is None:
            return False
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    def close(self) -> None:
        """Close for good: stops reconnecting and drops every libvirt callback."""
        with self._lock:
            self._closed = True
            self._stop.set()
            conn, self._conn = self._conn, None
            callback_ids, self._event_callback_ids = self._event_callback_ids, None
            self._generation += 1
            self._changed.notify_all()
        thread = self._reconnect_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=10)
        if conn is not None:
            self._release(conn, callback_ids)

    @staticmethod
    def _release(conn: libvirt.virConnect, callback_ids: list[int] | None) -> None:
        """Drop our callbacks and close a handle; a dead connection may refuse each step."""
        for one_id in callback_ids or ():
            try:
                conn.domainEventDeregisterAny(one_id)
            except libvirt.libvirtError as error:
                log.debug("while closing: %s", error)
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError as error:
            log.debug("while closing: %s", error)
        try:
            conn.close()
        except libvirt.libvirtError as error:
            log.debug("while closing: %s", error)

    def _ensure_open(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                return self._conn
            if self._closed:
                raise ConnectionFailed(self.uri, "this connection was closed")
        with self._open_lock:
            with self._lock:  # another thread may have opened it meanwhile
                if self._conn is not None:
                    return self._conn
                if self._closed:
                    raise ConnectionFailed(self.uri, "this connection was closed")
            return self._open_new()

    def _open_new(self) -> libvirt.virConnect:
        """Open a fresh virConnect and wire it up. Caller holds ``_open_lock``."""
        problem = uri_problem(self.uri)
        if problem:
            raise InvalidConfig("--connect", problem)
        events = self.events
        if events:
            ensure_event_loop()
        else:
            quiet_libvirt_errors()
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as error:
            raise describe_open_failure(self.uri, error) from None
        if conn is None:  # older bindings returned None instead of raising
            raise ConnectionFailed(self.uri, "libvirt returned no connection")
        if not events:
            with self._lock:
                self._generation += 1
                self._conn = conn
                self._changed.notify_all()
            log.info("connected to %s (no events)", self.uri)
            return conn
        try:
            conn.setKeepAlive(KEEPALIVE_INTERVAL_S, KEEPALIVE_COUNT)
        except libvirt.libvirtError as error:
            # Local drivers (test:///) have no keepalive: VIR_ERR_NO_SUPPORT is fine.
            if error.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                conn.close()
                raise describe_open_failure(self.uri, error) from None
        with self._lock:
            self._generation += 1
            generation = self._generation
            wants_events = bool(self._subscribers)
        try:
            conn.registerCloseCallback(self._on_close, generation)
        except libvirt.libvirtError as error:
            if error.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
                log.warning("no close callback on %s: %s", self.uri, error)
        callback_ids = self._register_lifecycle(conn, generation) if wants_events else None
        with self._lock:
            self._conn = conn
            self._event_callback_ids = callback_ids
            self._changed.notify_all()
        log.info("connected to %s", self.uri)
        return conn

    def _register_lifecycle(self, conn: libvirt.virConnect, generation: int) -> list[int] | None:
        """Register our lifecycle and reboot callbacks on ``conn``; their ids, or None."""
        ids = []
        event = self._domain_event  # (dom, event, detail, generation, device=None)
        for event_id, callback in (
            (libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE,
             lambda _c, dom, kind, detail, gen: event(dom, kind, detail, gen)),
            (libvirt.VIR_DOMAIN_EVENT_ID_REBOOT,
             lambda _c, dom, gen: event(dom, EVENT_REBOOTED, 0, gen)),
            (libvirt.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
             lambda _c, dom, alias, gen: event(dom, EVENT_DEVICE_REMOVED, 0, gen, device=alias)),
            (libvirt.VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE,  # detail: 1 connected, 2 not
             lambda _c, dom, state, _reason, gen: event(dom, EVENT_AGENT, state, gen)),
            (libvirt.VIR_DOMAIN_EVENT_ID_METADATA_CHANGE,  # device: the namespace's URI
             lambda _c, dom, kind, uri, gen: event(dom, EVENT_METADATA, kind, gen, device=uri)),
        ):
            try:
                ids.append(conn.domainEventRegisterAny(None, event_id, callback, generation))
            except libvirt.libvirtError as error:
                log.warning("cannot subscribe to domain events on %s: %s", self.uri, error)
        return ids or None

    # --- calls -----------------------------------------------------------------------------

    def execute(self, fn: Callable[[libvirt.virConnect], T], *, idempotent: bool = False) -> T:
        """Run ``fn(virConnect)`` and return its result.

        A lost connection becomes ``ConnectionFailed`` (and starts a reconnect). With
        ``idempotent=True`` the call is retried once on a freshly opened connection, so a
        read that races a daemon restart still succeeds when the daemon is back. Any other
        ``libvirtError`` that ``fn`` lets out becomes ``OperationFailed`` carrying libvirt's
        message and code; ``fn`` may raise ``VMManagerError`` subclasses of its own.
        """
        guard.check("libvirt")
        attempts = 2 if idempotent else 1
        for attempt in range(attempts):
            conn = self._ensure_open()
            try:
                return fn(conn)
            except libvirt.libvirtError as error:
                message = (error.get_error_message() or str(error)).strip()
                if not _is_connection_error(conn, error):
                    raise OperationFailed(message, error.get_error_code()) from None
                self._connection_lost(conn, f"call failed: {message}")
                if attempt + 1 == attempts:
                    raise ConnectionFailed(
                        self.uri, message, "the connection dropped; reconnecting, try again"
                    ) from None
        raise AssertionError("unreachable")

    def lookup(self, conn: libvirt.virConnect, name: str) -> libvirt.virDomain:
        """``lookupByName`` inside an ``execute`` callback; a missing VM is ``VMNotFound``."""
        try:
            return conn.lookupByName(name)
        except libvirt.libvirtError as error:
            if error.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise VMNotFound(name, self.uri) from None
            raise

    def host_info(self) -> tuple[int, int]:
        """(memory MiB, logical CPUs) of the host."""
        info = self.execute(lambda c: c.getInfo(), idempotent=True)
        return int(info[1]), int(info[2])

    def wait_connected(self, timeout: float) -> bool:
        """Block until the connection is open (e.g. after a daemon restart)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._conn is None and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return self._conn is not None

    def execute_when_back(self, fn: Callable[[libvirt.virConnect], T], wait: float = 30.0) -> T:
        """``execute(fn)``; when the daemon is away, wait (at most ``wait`` seconds) for the
        connection to come back and run ``fn`` once more. For steps that must finish (an
        undo, a deletion): ``fn`` must cope with having run before the daemon went away."""
        try:
            return self.execute(fn)
        except ConnectionFailed:
            if not self.wait_connected(wait):
                raise
            return self.execute(fn)

    # --- subscriptions ---------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> int:
        """Call ``callback(event)`` for every ``DomainEvent`` and ``ConnectionEvent``.

        Callbacks run on the libvirt event thread: keep them short, hand work off, and do
        not call back into libvirt from them. Returns a token for ``unsubscribe``.
        """
        guard.check("libvirt")
        if not self.events:
            self._enable_events()
        conn = self._ensure_open()
        token = self._subscribers.add(callback)
        with self._lock:
            need_register = self._event_callback_ids is None and self._conn is conn
            generation = self._generation
        if need_register:
            callback_ids = self._register_lifecycle(conn, generation)
            with self._lock:
                if self._conn is conn and self._event_callback_ids is None:
                    self._event_callback_ids = callback_ids
                    callback_ids = None
            for one_id in callback_ids or ():  # lost a race with another subscriber
                try:
                    conn.domainEventDeregisterAny(one_id)
                except libvirt.libvirtError:
                    pass
        return token

    def unsubscribe(self, token: int) -> None:
        self._subscribers.remove(token)

    def _enable_events(self) -> None:
        """Turn events on for a connection opened without them: the open handle is closed
        and the next call opens a new one after the event loop is registered."""
        with self._open_lock:
            with self._lock:
                if self.events:
                    return
                self.events = True
                conn, self._conn = self._conn, None
                self._generation += 1
        if conn is not None:
            self._release(conn, None)
        log.debug("events turned on for %s", self.uri)

    def _dispatch(self, event: Event) -> None:
        self._subscribers.notify(event)

    def _domain_event(
        self, dom: libvirt.virDomain, event: int, detail: int, generation: int,
        device: str | None = None,
    ) -> None:
        with self._lock:
            if generation != self._generation:
                return  # from a connection that has since been replaced
        self._dispatch(
            DomainEvent(
                name=dom.name(),
                uuid=dom.UUIDString(),
                event=event,
                detail=detail,
                timestamp=time.time(),
                monotonic=time.monotonic(),
                device=device,
            )
        )

    # --- losing and regaining the daemon ---------------------------------------------------

    def _on_close(self, _conn: libvirt.virConnect, reason: int, generation: int) -> None:
        with self._lock:
            if generation != self._generation:
                return
            conn = self._conn
        self._connection_lost(conn, f"closed: {CLOSE_REASONS.get(reason, reason)}")

    def _connection_lost(self, conn: libvirt.virConnect | None, reason: str) -> None:
        with self._lock:
            if conn is None or self._conn is not conn or self._closed:
                return
            self._conn = None
            self._event_callback_ids = None
            self._generation += 1  # ignore anything the dead connection still delivers
            start_thread = self.auto_reconnect and (
                self._reconnect_thread is None or not self._reconnect_thread.is_alive()
            )
            if start_thread:
                self._reconnect_thread = threading.Thread(
                    target=self._reconnect_loop, name=f"libvirt-reconnect {self.uri}", daemon=True
                )
            self._changed.notify_all()
        log.warning("lost libvirt connection %s (%s)", self.uri, reason)
        # The old handle is closed from another thread: closing inside libvirt's own close
        # callback is not allowed.
        threading.Thread(target=self._release, args=(conn, None), daemon=True).start()
        self._dispatch(ConnectionEvent("disconnected", self.uri, reason, time.time()))
        if start_thread:
            self._reconnect_thread.start()

    def _reconnect_loop(self) -> None:
        delay = RECONNECT_FIRST_DELAY_S
        while not self._stop.is_set():
            try:
                self._ensure_open()  # a caller may have reopened it already: also fine
            except ConnectionFailed as error:
                log.debug("reconnect to %s failed: %s; next try in %.1fs", self.uri, error, delay)
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, RECONNECT_MAX_DELAY_S)
                continue
            self.reconnect_count += 1
            log.info("reconnected to %s", self.uri)
            self._dispatch(ConnectionEvent("reconnected", self.uri, "daemon is back", time.time()))
            return


_shared: dict[str, LibvirtConnection] = {}
_shared_lock = threading.Lock()


def get_connection(uri: str | None = None, *, events: bool = True) -> LibvirtConnection:
    """The process-wide ``LibvirtConnection`` for a URI (resolved as ``resolve_uri`` says).

    Opens it on first use; raises ``ConnectionFailed`` if libvirt cannot be reached.
    ``events=False`` (one-shot commands): no event loop until something subscribes.
    """
    resolved = resolve_uri(uri)
    with _shared_lock:
        connection = _shared.get(resolved)
        if connection is None or connection._closed:
            connection = LibvirtConnection(resolved, events=events)
            _shared[resolved] = connection
    return connection.open()
