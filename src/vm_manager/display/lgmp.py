"""The guest side of Looking Glass as the host sees it: the LGMP header the guest's host
application writes at the start of the shared memory (DESIGN.md 4.2).

Ready means: the file exists, the client's user can open it read-write, it starts with the
LGMP magic, and the heartbeat timestamp (or the session id) changes between two reads. A
stale header survives a VM stop and is never accepted. The memory is only ever read here,
never written. It has no change notification, so readiness is read every 50 ms.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import LookingGlassError, OperationTimedOut
from ..passthrough.ivshmem import access_problem

LGMP_MAGIC = b"LGMP"
KVMFR_MAGIC = b"KVMFR---"
HEARTBEAT_OFFSET = 16  # u64 timestamp the host bumps every 10 ms (LGMP header)


@dataclass(frozen=True)
class HostHeader:
    magic_ok: bool
    version: int
    session_id: int
    timestamp: int
    kvmfr_version: int | None = None
    host_release: str | None = None


def read_header(path: Path | str) -> HostHeader | None:
    """The LGMP header, read-only (never written). None when the file is missing or short."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(8192)
    except FileNotFoundError:
        return None
    if len(data) < 24:
        return None
    magic_ok = data[:4] == LGMP_MAGIC
    version, session = struct.unpack_from("<II", data, 4)
    (timestamp,) = struct.unpack_from("<Q", data, HEARTBEAT_OFFSET)
    kvmfr_version = release = None
    at = data.find(KVMFR_MAGIC)
    if magic_ok and at >= 0 and len(data) >= at + 8 + 4 + 32:
        (kvmfr_version,) = struct.unpack_from("<I", data, at + 8)
        raw = data[at + 12:at + 44].split(b"\0", 1)[0]
        release = raw.decode(errors="replace") or None
    return HostHeader(magic_ok, version, session, timestamp, kvmfr_version, release)


def wait_for_host(path: Path, timeout: float, cancel: threading.Event | None = None,
                  interval: float = 0.05, user: str | None = None) -> HostHeader:
    """Block until the guest's host application is live in ``path``: the file exists, this
    user can open it read-write, the magic is there, and the heartbeat (or the session id)
    changes between two reads. A stale header (VM stopped, host app gone) never changes and
    is never accepted. Raises ``LookingGlassError`` on a permission problem or when
    cancelled, ``OperationTimedOut`` after ``timeout``."""
    cancel = cancel or threading.Event()
    deadline = time.monotonic() + timeout
    seen: tuple[int, int] | None = None
    while True:
        problem = access_problem(path, user)
        if problem:
            raise LookingGlassError(problem)
        header = read_header(path)
        if header is not None and header.magic_ok:
            key = (header.session_id, header.timestamp)
            if seen is not None and key != seen:
                return header
            seen = key
        else:
            seen = None
        if time.monotonic() >= deadline:
            what = ("does not exist yet" if header is None else
                    "has no LGMP header" if not header.magic_ok else "has a stale header")
            raise OperationTimedOut(
                f"the Looking Glass host application is not running in the guest: {path}"
                f" {what} after {timeout:g} s; start it in the guest (it installs as a"
                " Windows service)")
        if cancel.wait(interval):
            raise LookingGlassError("cancelled while waiting for the guest's host application")


HOST_SILENCE = 1.0  # the client itself gives up on a session after 1000 ms without a beat


class Heartbeat:
    """Is the guest's host application still beating? Its (session id, timestamp) changed
    within ``silence`` seconds. Only the header tells: the client's log says it later, and
    not at all while the window is busy. Read-only, like everything here."""

    def __init__(self, path: Path | str, silence: float = HOST_SILENCE,
                 clock=time.monotonic):
        self.path = Path(path)
        self.silence = silence
        self._clock = clock
        self._seen: tuple[int, int] | None = None
        self._changed_at = clock()

    def alive(self) -> bool:
        try:
            header = read_header(self.path)
        except OSError:
            header = None
        now = self._clock()
        key = (header.session_id, header.timestamp) if header and header.magic_ok else None
        if key is not None and key != self._seen:
            self._seen, self._changed_at = key, now
        return key is not None and now - self._changed_at <= self.silence
