"""Keep blocking calls off a thread that must stay responsive (the desktop app's UI thread).

The library calls ``check(what)`` before it talks to libvirt, reads sysfs or runs a
program. A face marks its UI thread with ``forbid_blocking_calls``: strict (tests) raises
``BlockingCallOnUIThread`` there, so a GUI test fails the moment such a call slips onto
the Qt thread; not strict (the app itself) logs the call with its stack and goes on.
"""

from __future__ import annotations

import contextlib
import threading

from .log import get_logger

log = get_logger(__name__)

_forbidden: dict[int, bool] = {}  # thread ident -> strict
violations: list[str] = []  # every call seen on a forbidden thread, for tests to read


class BlockingCallOnUIThread(RuntimeError):
    """A programming error: libvirt, sysfs or a program was used on the UI thread."""


def forbid_blocking_calls(thread: threading.Thread | None = None, *, strict: bool) -> None:
    _forbidden[(thread or threading.current_thread()).ident] = strict


def allow_blocking_calls(thread: threading.Thread | None = None) -> None:
    _forbidden.pop((thread or threading.current_thread()).ident, None)


@contextlib.contextmanager
def allowed():
    """Blocking calls are fine inside (a test's own setup on the UI thread, say)."""
    ident = threading.get_ident()
    strict = _forbidden.pop(ident, None)
    try:
        yield
    finally:
        if strict is not None:
            _forbidden[ident] = strict


def check(what: str) -> None:
    """Called before a blocking call; ``what`` names it ("libvirt", "sysfs", "qemu-img")."""
    strict = _forbidden.get(threading.get_ident())
    if strict is None:
        return
    message = f"{what} used on the {threading.current_thread().name} thread, which must not block"
    violations.append(message)
    if strict:
        raise BlockingCallOnUIThread(message)
    import traceback

    log.error("%s:\n%s", message, "".join(traceback.format_stack(limit=8)))
