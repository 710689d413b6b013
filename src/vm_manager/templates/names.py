"""Template names, without the template engine (cheap to import)."""

from __future__ import annotations

SUFFIX = ".xml.j2"
TEMPLATE_KINDS = ("windows11", "windows10", "linux", "macos")
VARIANTS = ("basic", "passthrough")


def template_name(vm_type: str, passthrough: bool) -> str:
    """``windows11-basic``, ``linux-passthrough``, ... (the design notes' names)."""
    return f"{vm_type}-{'passthrough' if passthrough else 'basic'}"
