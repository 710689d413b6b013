"""Small value types the whole library shares, cheap to import.

``neuron-vm list`` needs these but not the config dataclasses, so they live apart from
``vm_config`` (which re-exports them: ``from vm_manager.base.vm_config import VMState``).
"""

from __future__ import annotations

import os
import re
from enum import Enum
from typing import Any

from .errors import InvalidConfig

DEFAULT_URI = "qemu:///system"


def resolve_uri(uri: str | None = None, environ: dict | None = None) -> str:
    """``--connect``/argument > ``NEURONOS_LIBVIRT_URI`` > ``LIBVIRT_DEFAULT_URI`` > system."""
    env = os.environ if environ is None else environ
    for candidate in (uri, env.get("NEURONOS_LIBVIRT_URI"), env.get("LIBVIRT_DEFAULT_URI")):
        if candidate and candidate.strip():
            return candidate.strip()
    return DEFAULT_URI


REMOTE_TRANSPORTS = ("ssh", "libssh", "libssh2", "tcp", "tls", "ext")
# libvirt's remote URI parameters (its "Connection URIs" page): these only choose among
# ways to reach the same daemon; the others run a program the URI names (command, netcat),
# or turn a check off (no_verify, known_hosts_verify, tls_priority) (issue 28).
SAFE_URI_PARAMETERS = {"name", "mode", "proxy", "socket", "keyfile", "no_tty", "pkipath",
                       "known_hosts", "sshauth"}


def uri_problem(uri: str) -> str | None:
    """Why NeuronOS does not open ``uri`` (None: it does): the ``ext`` transport, or a
    query parameter that runs a program or turns a check off."""
    from urllib.parse import parse_qsl, urlsplit

    scheme, _, _ = uri.partition("://")
    if scheme.partition("+")[2] == "ext":
        return f"{uri}: the ext transport runs a program the URI names; use qemu+ssh"
    try:
        query = urlsplit(uri).query
    except ValueError:
        return f"{uri} is not a URI"
    for key, _ in parse_qsl(query, keep_blank_values=True):
        if key not in SAFE_URI_PARAMETERS:
            return (f"{uri}: the parameter {key!r} is not allowed (it runs a program the URI"
                    " names, turns a check off, or is unknown); allowed: "
                    + ", ".join(sorted(SAFE_URI_PARAMETERS)))
    return None


def is_remote(uri: str) -> bool:
    """Whether ``uri`` reaches libvirt on another computer (``qemu+ssh://host/system``,
    ``qemu://host/system``): its /sys, /dev/shm and files are not this machine's."""
    scheme, _, rest = uri.partition("://")
    transport = scheme.partition("+")[2]
    if transport in REMOTE_TRANSPORTS:
        return True
    host = rest.split("/", 1)[0].rpartition("@")[2]
    return bool(host) and transport != "unix"


def host_name(uri: str) -> str:
    """The computer a URI names, as people call it: ``workstation`` for
    ``qemu+ssh://anna@workstation:2222/system``; ``this computer`` for a local URI."""
    host = uri.split("?", 1)[0].partition("://")[2].split("/", 1)[0].rpartition("@")[2]
    if host.startswith("["):  # an IPv6 address: [::1]:2222
        return host.partition("]")[0] + "]" if is_remote(uri) else "this computer"
    return host.partition(":")[0] if is_remote(uri) and host else "this computer"


def host_key(uri: str) -> str:
    """A folder name for the host behind ``uri``: readable, and unique per host and path
    (its query, e.g. ``keyfile=``, is not part of who the host is)."""
    import hashlib

    identity = uri.split("?", 1)[0].rstrip("/")
    host = identity.partition("://")[2].split("/", 1)[0].rpartition("@")[2] or "local"
    readable = re.sub(r"[^A-Za-z0-9._-]", "-", host)[:40].strip(".-") or "host"
    return f"{readable}-{hashlib.sha256(identity.encode()).hexdigest()[:10]}"


NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"


def validate_name(value: Any, field_name: str = "name") -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidConfig(field_name, f"{value!r} is not a valid name; use {NAME_RULE}")
    return value


def dotted_version(number: int) -> str:
    """libvirt's version number (major * 1,000,000 + minor * 1,000 + release) as people
    write it: 9009000 -> "9.9.0"."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 VM``, ``2 VMs``, ``1 check``, ``0 warnings``."""
    return f"{count} {noun if count == 1 else (plural_form or noun + 's')}"


class VMState(str, Enum):
    """A VM's state: libvirt's domain states, then the ones the manager adds.

    The first eight are virDomainState in order (NOSTATE 0 ... PMSUSPENDED 7). The
    transitional states mean "the manager asked for this and is waiting"; ``ERROR`` means
    the last request failed (the reason travels with the state change). ``UNDEFINED``
    is the state of a name libvirt does not know: ``get_state`` of a missing VM answers it
    (the design notes ask for a state, not an error), and a VM that is undefined changes to
    it.
    """

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # the guest is shutting down
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"
    # owned by the manager
    STARTING = "starting"
    STOPPING = "stopping"
    PAUSING = "pausing"
    RESUMING = "resuming"
    REBOOTING = "rebooting"
    CREATING = "creating"
    DELETING = "deleting"
    ERROR = "error"
    UNDEFINED = "undefined"  # no such domain (any more): asked about, or just undefined

    @classmethod
    def from_libvirt(cls, code: int) -> VMState:
        return _LIBVIRT_ORDER[code] if 0 <= code < len(_LIBVIRT_ORDER) else cls.NOSTATE

    @property
    def label(self) -> str:
        return _STATE_LABELS.get(self, self.value)

    @property
    def is_transitional(self) -> bool:
        return self in _TRANSITIONAL

    @property
    def is_active(self) -> bool:
        """True while QEMU runs for the domain (libvirt's "active")."""
        return self in (
            VMState.RUNNING, VMState.BLOCKED, VMState.PAUSED, VMState.SHUTDOWN,
            VMState.PMSUSPENDED,
        )


_LIBVIRT_ORDER = list(VMState)[:8]
_TRANSITIONAL = frozenset(list(VMState)[8:15])
_STATE_LABELS = {
    VMState.NOSTATE: "no state",
    VMState.SHUTDOWN: "shutting down",
    VMState.SHUTOFF: "shut off",
    VMState.PMSUSPENDED: "suspended",
    VMState.UNDEFINED: "not defined",
}


class Subscribers:
    """Callbacks registered under tokens, called with each change; one failing callback is
    logged and does not stop the others. Thread-safe."""

    def __init__(self, logger) -> None:
        import threading

        self._lock = threading.Lock()
        self._callbacks: dict[int, Any] = {}
        self._next_token = 1
        self._log = logger

    def add(self, callback) -> int:
        with self._lock:
            token = self._next_token
            self._next_token += 1
            self._callbacks[token] = callback
            return token

    def remove(self, token: int) -> None:
        with self._lock:
            self._callbacks.pop(token, None)

    def __bool__(self) -> bool:
        with self._lock:
            return bool(self._callbacks)

    def snapshot(self) -> list:
        with self._lock:
            return list(self._callbacks.values())

    def notify(self, value, callbacks: list | None = None) -> None:
        """Call every callback (or the given snapshot) with ``value``."""
        for callback in self.snapshot() if callbacks is None else callbacks:
            try:
                callback(value)
            except Exception:  # one bad subscriber must not starve the others
                self._log.exception("subscriber %r failed on %s", callback, value)
