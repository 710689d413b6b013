"""The parts of the main window that follow the VMs as they run: the usage sample a
second (only while the window is visible; ``core.usage`` says why it is the one periodic
read) and the details pane of the selected VM (read again on its events, never polled).
A part of ``app.MainWindow`` (it holds the window): it uses the window's ``tasks``,
``model``, ``details``, ``host_usage``, ``usage_timer`` and ``_details_timer``."""

from __future__ import annotations

from ..base.log import get_logger

log = get_logger(__name__)


class LiveParts:
    def __init__(self, window):
        self.window = window  # the MainWindow this part belongs to

    # --- live usage ---------------------------------------------------------------------------

    def sample_usage(self) -> None:
        """Ask each connected host for one usage sample on a worker (skipped for a host
        with a sample still out)."""
        for uri, ctx in list(self.window.contexts.items()):
            window = self.window
            if uri in window._sampling or uri not in window.live or uri in window.problems:
                continue
            self.window._sampling.add(uri)
            vcpus = {row.name: row.vcpus for row in self.window.model.rows if row.host == uri}
            self.window.tasks.run(lambda ctx=ctx, vcpus=vcpus: (ctx, self._sample(ctx, vcpus)),
                           self._on_usage,
                           lambda error, uri=uri: self._on_usage_failed(uri, error))

    def _sample(self, ctx, vcpus: dict[str, int]):
        from ..actions import usage

        monitor = self.window.monitors.get(ctx.uri)
        if monitor is None:
            monitor = self.window.monitors[ctx.uri] = usage.Monitor(ctx)
        return monitor.sample(vcpus)

    def _on_usage(self, sampled) -> None:
        ctx, view = sampled
        self.window._sampling.discard(ctx.uri)
        if self.window.contexts.get(ctx.uri) is not ctx:
            return
        self.window.model.update_usage(ctx.uri, view)
        if ctx.uri == self.window.uri:
            self.show_host_usage()

    def show_host_usage(self) -> None:
        """The current host's CPU and memory in the status bar."""
        from ..base.primitives import host_name

        view = self.window.model.usage.get(self.window.uri)
        parts = []
        if view is not None and view.host_cpu_percent is not None:
            parts.append(f"host CPU {view.host_cpu_percent:.0f} %")
        if view is not None and view.host_memory_kib:
            parts.append(f"memory {view.host_memory_used_kib / 1048576:.1f} of"
                         f" {view.host_memory_kib / 1048576:.1f} GiB")
        if parts and len(self.window.contexts) > 1:
            parts.insert(0, host_name(self.window.uri))
        self.window.host_usage.setText(" · ".join(parts))

    def _on_usage_failed(self, uri: str, error: BaseException) -> None:
        self.window._sampling.discard(uri)
        log.debug("usage sample of %s failed: %s", uri, error)  # the banner tells a lost host

    def shown(self, event) -> None:
        self.window.usage_timer.start()

    def hidden(self, event) -> None:
        self.window.usage_timer.stop()

    def changed(self, event) -> None:
        from PySide6.QtCore import QEvent

        if event.type() in (QEvent.ApplicationPaletteChange, QEvent.PaletteChange):  # dark/light
            from .icons import icon

            self.window.banner.recolour()
            self.window.table.viewport().update()  # the state colours come from the palette
            for key, action in self.window.actions_by_key.items():
                action.setIcon(icon(key))  # bundled icons are drawn for the palette
        if event.type() == QEvent.WindowStateChange:
            if self.window.isMinimized():
                self.window.usage_timer.stop()
            elif self.window.isVisible():
                self.window.usage_timer.start()

    # --- the details pane ---------------------------------------------------------------------

    def selection_changed(self) -> None:
        row = self.window.table.selected_row()
        if row is not None and row.host != self.window.uri:
            self.window.hosts.use_host(row.host)  # the actions work on the selected VM's host
        self.window.update_actions()
        self.window._details_timer.start()

    def load_details(self) -> None:
        from ..actions import details

        row = self.window.table.selected_row()
        if row is None:
            if self.window.model.rows:
                self.window.details.show_hint("Select a VM to see its details.")
            return
        ctx, key = self.window.contexts.get(row.host), row.key
        if ctx is None:
            return

        def shown(found) -> None:
            if self.window._is_selected(*key):  # not a stale answer
                self.window.details.show_details(found, self.window.failures.get(key))

        def failed(error: BaseException) -> None:
            if self.window._is_selected(*key):
                self.window.details.show_hint(f"{key[1]}: {error}")

        self.window.tasks.run(lambda: details.details(ctx, key[1]), shown, failed)
