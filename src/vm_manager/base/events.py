"""libvirt's event loop (one per process, DESIGN.md 5) and what the connection tells its
subscribers: domain events and connection events.

The events are NamedTuples, not dataclasses: this module is on `neuron-vm list`'s start-up path, and the
dataclasses module costs ~6 ms to import there (bench/list_latency.py).
"""

from __future__ import annotations

import threading
import time
from typing import Callable, NamedTuple, Union

import libvirt

from .log import get_logger

log = get_logger(__name__)

# virDomainEventType (libvirt-domain.h), in order
DOMAIN_EVENT_NAMES = (
    "defined",
    "undefined",
    "started",
    "suspended",
    "resumed",
    "stopped",
    "shutdown",
    "pmsuspended",
    "crashed",
)
# Detail names per event type (virDomainEvent*DetailType), for messages and `events`.
EVENT_DETAIL_NAMES = (
    ("added", "updated", "renamed", "from snapshot"),
    ("removed", "renamed"),
    ("booted", "migrated", "restored", "from snapshot", "woken up"),
    ("paused", "migrated", "I/O error", "watchdog", "restored", "from snapshot", "API error",
     "post-copy", "post-copy failed"),
    ("unpaused", "migrated", "from snapshot", "post-copy", "post-copy failed"),
    ("shut down", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot"),
    ("finished", "by the guest", "by the host"),
    ("to memory", "to disk"),
    ("panicked", "crash loaded"),
)
# VIR_DOMAIN_EVENT_ID_REBOOT and _DEVICE_REMOVED have no lifecycle type of their own; they
# arrive as DomainEvents with these.
EVENT_REBOOTED = 100
EVENT_DEVICE_REMOVED = 101
EVENT_AGENT = 102  # VIR_DOMAIN_EVENT_ID_AGENT_LIFECYCLE; detail: 1 connected, 2 disconnected
AGENT_STATES = {1: "connected", 2: "disconnected"}
EVENT_METADATA = 103  # VIR_DOMAIN_EVENT_ID_METADATA_CHANGE; device: the namespace URI
# virConnectCloseReason
CLOSE_REASONS = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "closed by client"}


class DomainEvent(NamedTuple):
    """A libvirt lifecycle event for one domain."""

    name: str
    uuid: str
    event: int  # virDomainEventType
    detail: int  # meaning depends on ``event`` (e.g. STOPPED: 0 shutdown, 1 destroyed, ...)
    timestamp: float  # time.time() when the callback ran
    monotonic: float  # time.monotonic() at the same moment, for latency measurements
    device: str | None = None  # the device alias, for EVENT_DEVICE_REMOVED

    @property
    def event_name(self) -> str:
        if self.event == EVENT_REBOOTED:
            return "rebooted"
        if self.event == EVENT_DEVICE_REMOVED:
            return "device-removed"
        if self.event == EVENT_AGENT:
            return "agent"
        if self.event == EVENT_METADATA:
            return "metadata"
        if 0 <= self.event < len(DOMAIN_EVENT_NAMES):
            return DOMAIN_EVENT_NAMES[self.event]
        return f"event-{self.event}"

    @property
    def detail_name(self) -> str:
        if self.event == EVENT_AGENT:
            return AGENT_STATES.get(self.detail, str(self.detail))
        if 0 <= self.event < len(EVENT_DETAIL_NAMES):
            names = EVENT_DETAIL_NAMES[self.event]
            if 0 <= self.detail < len(names):
                return names[self.detail]
        return str(self.detail)


class ConnectionEvent(NamedTuple):
    """The connection went away (``disconnected``) or is back (``reconnected``)."""

    status: str
    uri: str
    reason: str
    timestamp: float


Event = Union[DomainEvent, ConnectionEvent]
Subscriber = Callable[[Event], None]


# --- the process-wide event loop ---------------------------------------------------------

_loop_lock = threading.Lock()
_loop_thread: threading.Thread | None = None


def _log_libvirt_error(_ctx: object, error: tuple) -> None:
    # Replaces libvirt's default handler, which prints every error to stderr. Errors still
    # reach us as exceptions; this only keeps a trace in the log.
    log.debug("libvirt: %s", error[2] if len(error) > 2 else error)


def _run_event_loop() -> None:
    while True:
        try:
            if libvirt.virEventRunDefaultImpl() < 0:
                log.warning("libvirt event loop iteration failed")
                time.sleep(0.1)
        except Exception:  # never let the loop thread die: events would stop for good
            log.exception("libvirt event loop raised")
            time.sleep(0.1)


_errors_quieted = False


def quiet_libvirt_errors() -> None:
    global _errors_quieted
    if not _errors_quieted:
        libvirt.registerErrorHandler(_log_libvirt_error, None)
        _errors_quieted = True


def ensure_event_loop() -> None:
    """Register libvirt's default event loop and start its thread, once per process.

    Must run before any ``libvirt.open``; ``LibvirtConnection`` calls it first thing.
    """
    global _loop_thread
    with _loop_lock:
        if _loop_thread is not None:
            return
        quiet_libvirt_errors()
        libvirt.virEventRegisterDefaultImpl()
        thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
        thread.start()
        _loop_thread = thread
