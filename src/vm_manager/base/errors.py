"""One error hierarchy for the whole manager.

Every error the library raises on purpose is a ``VMManagerError``. The CLI turns one into a
single readable line and an exit code (``exit_code``); the GUI shows ``str(error)``.
"""

from __future__ import annotations


class VMManagerError(Exception):
    """Root of every error the VM manager raises on purpose."""

    #: process exit code the CLI uses for this kind of error
    exit_code = 1


class ConnectionFailed(VMManagerError):
    """libvirt could not be reached (bad URI, daemon down, permission denied)."""

    def __init__(self, uri: str, reason: str, hint: str | None = None):
        self.uri = uri
        self.reason = reason
        self.hint = hint
        message = f"cannot reach libvirt at {uri}: {reason}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class VMNotFound(VMManagerError):
    """No domain with that name exists on the connection."""

    exit_code = 3

    def __init__(self, name: str, uri: str | None = None):
        self.name = name
        self.uri = uri
        where = f" on {uri}" if uri else ""
        super().__init__(f"no VM named {name!r}{where}")


class InvalidConfig(VMManagerError):
    """A setting has a value that is not allowed. ``field`` names the setting."""

    exit_code = 2

    def __init__(self, field: str, message: str):
        self.field = _shorten_quoted(field)
        self.message = _shorten_quoted(message)
        super().__init__(f"{self.field}: {self.message}")


class NotFound(InvalidConfig):
    """What a command names (a snapshot) does not exist: exit 3, as a missing VM."""

    exit_code = 3


def _shorten_quoted(text: str, keep: int = 40, limit: int = 600) -> str:
    """A message echoes what the user typed; a 100,000-character value is cut to its start
    and its length (any unbroken run of 60+ characters), and the whole message to 600."""
    import re

    text = re.sub(r"\S{%d,}" % (keep + 20),
                  lambda m: f"{m.group(0)[:keep]}… ({len(m.group(0))} characters)", text)
    return text if len(text) <= limit else text[:limit] + "…"


class LifecycleError(VMManagerError):
    """A start/stop/pause/... request that cannot be done in the VM's current state."""


class VMCreationError(VMManagerError):
    """Creating a VM failed; nothing of it was left behind. ``step`` names where."""

    def __init__(self, message: str, step: str | None = None):
        self.step = step
        super().__init__(message)


class StoreError(VMManagerError):
    """A saved VM settings file could not be read or written."""


class StaleSettings(StoreError):
    """The saved settings of a name were written for another VM (another UUID): a VM of
    that name was deleted outside NeuronOS and another made under the name."""


class OperationFailed(VMManagerError):
    """libvirt refused a request for a reason other than a lost connection.

    ``code`` is libvirt's error code (``VIR_ERR_*``), for callers that need to tell cases
    apart without importing libvirt.
    """

    def __init__(self, message: str, code: int | None = None):
        self.code = code
        super().__init__(message)


class LocalOnly(VMManagerError):
    """What works only on this computer's own libvirt, asked of a remote one (the message
    names why: the shared memory, the boot files are on the other machine)."""

    exit_code = 2


class LookingGlassError(VMManagerError):
    """The Looking Glass display cannot be shown (the message says why and what to do)."""


class OperationTimedOut(LifecycleError):
    """A request was accepted but the VM did not reach the expected state in time."""
