"""The parts of the main window that follow the VMs as they run: the usage sample a
second (only while the window is visible; ``core.usage`` says why it is the one periodic
read) and the details pane of the selected VM (read again on its events, never polled).
A mixin of ``app.MainWindow``: it uses the window's ``tasks``, ``model``, ``details``,
``host_usage``, ``usage_timer`` and ``_details_timer``."""

from __future__ import annotations

from ..core.log import get_logger

log = get_logger(__name__)


class LiveParts:
    # --- live usage ---------------------------------------------------------------------------

    def sample_usage(self) -> None:
        """Ask for one usage sample on a worker (skipped while one is out, or offline)."""
        if self._sampling or self.lifecycle is None or not self.banner.isHidden():
            return
        self._sampling = True
        vcpus = {row.name: row.vcpus for row in self.model.rows}

        def work():
            from ..actions import usage

            if self.monitor is None:
                self.monitor = usage.Monitor(self.ctx)
            return self.monitor.sample(vcpus)

        self.tasks.run(work, self._on_usage, self._on_usage_failed)

    def _on_usage(self, view) -> None:
        self._sampling = False
        self.model.update_usage(view)
        parts = []
        if view.host_cpu_percent is not None:
            parts.append(f"host CPU {view.host_cpu_percent:.0f} %")
        if view.host_memory_kib:
            parts.append(f"memory {view.host_memory_used_kib / 1048576:.1f} of"
                         f" {view.host_memory_kib / 1048576:.1f} GiB")
        self.host_usage.setText(" · ".join(parts))

    def _on_usage_failed(self, error: BaseException) -> None:
        self._sampling = False
        log.debug("usage sample failed: %s", error)  # the banner tells a lost daemon

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        self.usage_timer.start()

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.usage_timer.stop()
        super().hideEvent(event)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt name
        from PySide6.QtCore import QEvent

        if event.type() in (QEvent.ApplicationPaletteChange, QEvent.PaletteChange):  # dark/light
            from .icons import icon

            self.banner.recolour()
            self.table.viewport().update()  # the state colours come from the palette
            for key, action in self.actions_by_key.items():
                action.setIcon(icon(key))  # bundled icons are drawn for the palette
        if event.type() == QEvent.WindowStateChange:
            if self.isMinimized():
                self.usage_timer.stop()
            elif self.isVisible():
                self.usage_timer.start()
        super().changeEvent(event)

    # --- the details pane ---------------------------------------------------------------------

    def _selected(self) -> None:
        self.update_actions()
        self._details_timer.start()

    def _load_details(self) -> None:
        from ..actions import details

        name = self.selected_name()
        if name is None:
            if self.model.rows:
                self.details.show_hint("Select a VM to see its details.")
            return

        def shown(found) -> None:
            if found.name == self.selected_name():  # not a stale answer
                self.details.show_details(found)

        def failed(error: BaseException) -> None:
            if name == self.selected_name():
                self.details.show_hint(f"{name}: {error}")

        self.tasks.run(lambda: details.details(self.ctx, name), shown, failed)
