"""Live usage of the running VMs and of the host (the desktop app's graphs and status bar).
See ``core.usage``: one bulk statistics call per sample, the library's one periodic read."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..core.usage import UsageView


class Monitor:
    """Samples on demand and keeps the history (the last minute per running VM). One
    sample at a time: the caller waits for one to finish before asking for the next."""

    def __init__(self, ctx: Context):
        from ..core.usage import UsageHistory

        self.ctx = ctx
        self.history = UsageHistory()

    def sample(self, vcpus: dict[str, int]) -> UsageView:
        """Read once, add it, and return what to show. ``vcpus``: each VM's vCPU count."""
        from ..core.usage import read_usage

        self.history.add(read_usage(self.ctx.connection), vcpus)
        return self.history.view()
