"""Small value types the whole library shares, cheap to import.

``neuron-vm list`` needs these but not the config dataclasses, so they live apart from
``vm_config`` (which re-exports them: ``from vm_manager.core.vm_config import VMState``).
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

from .errors import InvalidConfig

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"


def validate_name(value: Any, field_name: str = "name") -> str:
    if not isinstance(value, str) or not NAME_PATTERN.fullmatch(value):
        raise InvalidConfig(field_name, f"{value!r} is not a valid name; use {NAME_RULE}")
    return value


class VMState(str, Enum):
    """libvirt's domain states (virDomainState), as the manager names them."""

    NOSTATE = "nostate"
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"  # the guest is shutting down
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    PMSUSPENDED = "pmsuspended"

    @classmethod
    def from_libvirt(cls, code: int) -> VMState:
        # Order of virDomainState: NOSTATE 0 ... PMSUSPENDED 7 (libvirt-domain.h)
        order = list(cls)
        return order[code] if 0 <= code < len(order) else cls.NOSTATE

    @property
    def label(self) -> str:
        return _STATE_LABELS.get(self, self.value)

    @property
    def is_active(self) -> bool:
        """True while QEMU runs for the domain (libvirt's "active")."""
        return self not in (VMState.SHUTOFF, VMState.NOSTATE, VMState.CRASHED)


_STATE_LABELS = {
    VMState.NOSTATE: "no state",
    VMState.SHUTDOWN: "shutting down",
    VMState.SHUTOFF: "shut off",
    VMState.PMSUSPENDED: "suspended",
}
