"""Small validated values: sizes, whole numbers, switches, choices, paths, hex ids and PCI
addresses. Each parser raises ``InvalidConfig(field, ...)`` naming the field and what is
allowed; ``vm_config`` builds the settings dataclasses from them."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath
from typing import Any

from .errors import InvalidConfig

_SIZE_PATTERN = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(I?B)?\s*", re.IGNORECASE)
_UNIT_MIB = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
SIZE_RULE = "a whole number with an optional unit M, G or T (e.g. 8G, 8192M, 8GiB)"


def parse_size_mb(value: Any, field_name: str, default_unit: str = "M") -> int:
    """Parse a size into MiB. ``8G``, ``8GiB``, ``8GB`` and ``8192M`` are all 8192.

    Units are binary (a desktop "8 GB of RAM" means GiB). A bare number uses
    ``default_unit``. The result must be a whole, positive number of MiB.
    """
    if isinstance(value, bool):
        raise InvalidConfig(field_name, f"expected a size, got {value!r}; use {SIZE_RULE}")
    if isinstance(value, int):
        number, unit = float(value), default_unit
    elif isinstance(value, float) and math.isfinite(value):
        number, unit = value, default_unit
    elif isinstance(value, str):
        match = _SIZE_PATTERN.fullmatch(value)
        if not match:
            raise InvalidConfig(field_name, f"{value!r} is not a size; use {SIZE_RULE}")
        number = float(match.group(1))
        unit = (match.group(2) or default_unit).upper()
    else:
        raise InvalidConfig(field_name, f"expected a size, got {value!r}; use {SIZE_RULE}")
    mib = number * _UNIT_MIB[unit]
    if mib <= 0 or mib != int(mib):
        raise InvalidConfig(
            field_name, f"{value!r} is not a whole, positive number of MiB; use {SIZE_RULE}"
        )
    return int(mib)


def parse_int(value: Any, field_name: str) -> int:
    if isinstance(value, bool):
        raise InvalidConfig(field_name, f"expected a whole number, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,9}\s*", value):
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-[0-9]+\s*", value):
        raise InvalidConfig(field_name, f"cannot be negative, got {value.strip()}")
    raise InvalidConfig(field_name, f"expected a whole number, got {value!r}")


def parse_bool(value: Any, field_name: str) -> bool:
    if isinstance(value, bool):
        return value
    raise InvalidConfig(field_name, f"expected true or false, got {value!r}")


def parse_enum(enum_cls: type[Enum], value: Any, field_name: str) -> Any:
    if isinstance(value, enum_cls):
        return value
    if isinstance(value, str):
        for member in enum_cls:
            if value.strip().lower() in (member.value, member.name.lower()):
                return member
    allowed = ", ".join(member.value for member in enum_cls)
    raise InvalidConfig(field_name, f"{value!r} is not allowed; use one of: {allowed}")


def not_text(value: str) -> str | None:
    """Why ``value`` cannot be written into XML or a UTF-8 file (None when it can): bytes that
    were not UTF-8 (a terminal in another encoding gives Python lone surrogates), a
    noncharacter such as U+FFFE, or a control character other than tab and newline."""
    for ch in value:
        code = ord(ch)
        if 0xD800 <= code <= 0xDFFF:
            return "it is not UTF-8 text (bytes of another encoding)"
        if code in (0xFFFE, 0xFFFF) or (code < 32 and ch not in "\t\n") or code == 127:
            return f"it contains the character U+{code:04X}, which text cannot hold"
    return None


def parse_text(value: Any, field_name: str, limit: int) -> str:
    """One piece of text of at most ``limit`` characters that XML and UTF-8 can hold."""
    if not isinstance(value, str):
        raise InvalidConfig(field_name, f"expected text, got {value!r}")
    why = not_text(value)
    if why or len(value) > limit:
        raise InvalidConfig(field_name, f"at most {limit} characters of text" +
                            (f"; {why}" if why else ""))
    return value


def parse_path(value: Any, field_name: str) -> str | None:
    """An absolute path without control characters, normalized; None stays None."""
    if value is None:
        return None
    if hasattr(value, "__fspath__"):
        value = value.__fspath__()
    if not isinstance(value, str) or not value:
        raise InvalidConfig(field_name, f"expected an absolute path, got {value!r}")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise InvalidConfig(field_name, "the path contains control characters")
    if not_text(value):
        raise InvalidConfig(field_name, f"{value!r}: {not_text(value)}; rename it")
    path = PurePosixPath(value)
    if not path.is_absolute():
        raise InvalidConfig(field_name, f"{value!r} is not an absolute path (start it with /)")
    if ".." in path.parts:
        raise InvalidConfig(field_name, f"{value!r} contains '..'; give the real path")
    return str(path)


def parse_hex_id(value: Any, field_name: str) -> str:
    """A 16-bit PCI/USB id as 4 lowercase hex digits (``10de``; ``0x10DE`` accepted)."""
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(?:0x)?([0-9a-fA-F]{4})\s*", value)
        if match:
            return match.group(1).lower()
    raise InvalidConfig(field_name, f"{value!r} is not a 4-digit hex id (e.g. 10de)")


@dataclass(frozen=True, order=True)
class PCIAddress:
    """A PCI function address ``DDDD:BB:SS.F`` (domain, bus, slot, function)."""

    domain: int
    bus: int
    slot: int
    function: int

    _PATTERN = re.compile(
        r"\s*(?:(?P<domain>[0-9a-fA-F]{4}):)?(?P<bus>[0-9a-fA-F]{2}):"
        r"(?P<slot>[0-9a-fA-F]{2})\.(?P<function>[0-7])\s*"
    )
    RULE = "DDDD:BB:SS.F or BB:SS.F in hex, slot 00-1f, function 0-7 (e.g. 0000:01:00.0)"

    @classmethod
    def parse(cls, value: Any, field_name: str = "pci_address") -> PCIAddress:
        if isinstance(value, PCIAddress):
            return value
        match = cls._PATTERN.fullmatch(value) if isinstance(value, str) else None
        if not match:
            raise InvalidConfig(field_name, f"{value!r} is not a PCI address; use {cls.RULE}")
        slot = int(match.group("slot"), 16)
        if slot > 0x1F:
            raise InvalidConfig(field_name, f"{value!r} has slot {slot:#x}; use {cls.RULE}")
        return cls(
            domain=int(match.group("domain") or "0", 16),
            bus=int(match.group("bus"), 16),
            slot=slot,
            function=int(match.group("function")),
        )

    def __str__(self) -> str:
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function:x}"

    @property
    def slot_address(self) -> str:
        """``DDDD:BB:SS``: what every function of one card shares."""
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}"
