"""The network a VM is on, picked from the host's libvirt networks (the create wizard and
Settings): the running ones first (libvirt's ``default`` preferred), then "No network", then
the ones that do not run, each with a Start button (a VM on a stopped network cannot start,
issue 29)."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QLabel, QPushButton, QVBoxLayout, QWidget


class NetworkPicker(QWidget):
    """``combo`` (data: the network's name, or "none"), a note, and ``start`` (Start it)."""

    changed = Signal()

    def __init__(self, ctx, networks, tasks, current: str | None = None, parent=None):
        super().__init__(parent)
        self.ctx, self.tasks = ctx, tasks
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.combo = QComboBox()
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.start = QPushButton("Start it")
        self.start.clicked.connect(self._start)
        for widget in (self.combo, self.note, self.start):
            layout.addWidget(widget)
        self.inactive: set[str] = set()
        self.fill(networks, current)
        self.combo.currentIndexChanged.connect(self._show)
        self.combo.currentIndexChanged.connect(self.changed)

    def value(self) -> str:
        return self.combo.currentData() or "none"

    def problem(self) -> str | None:
        """Why the chosen network cannot be used now (None: it can)."""
        if self.value() in self.inactive:
            return f"{self.value()} is not running: start it, or pick another network"
        return None

    def fill(self, networks, current: str | None = None) -> None:
        self.combo.blockSignals(True)
        self.combo.clear()
        running = [name for name, active in networks if active]
        for name in sorted(running, key=lambda name: name != "default"):
            self.combo.addItem(name, name)
        self.combo.addItem("No network", "none")
        self.inactive = {name for name, active in networks if not active}
        for name in sorted(self.inactive):
            self.combo.addItem(f"{name} (not running)", name)
        if current and self.combo.findData(current) < 0:  # one libvirt does not know
            self.combo.addItem(f"{current} (not on this host)", current)
            self.inactive.add(current)
        self.combo.setCurrentIndex(max(0, self.combo.findData(current)) if current else 0)
        self.combo.blockSignals(False)
        self._show()

    def _show(self, *_args) -> None:
        name = self.value()
        stopped = sorted(self.inactive)
        if name in self.inactive:
            text = f"{name} is not running: a VM on it cannot start. Start it, or pick another."
        elif stopped and name == "none":
            text = f"libvirt's network {stopped[0]} is not running; Start it to use it."
        else:
            text = ""
        self.note.setText(text)
        self.note.setVisible(bool(text))
        self.start.setVisible(bool(text))

    def _start(self) -> None:
        from ..actions import host

        name = self.value() if self.value() in self.inactive else sorted(self.inactive)[0]
        ctx = self.ctx
        self.start.setEnabled(False)
        self.note.setText(f"Starting {name}…")

        def started(networks) -> None:
            self.start.setEnabled(True)
            self.fill(networks, name)
            self.changed.emit()

        def failed(error: BaseException) -> None:
            self.start.setEnabled(True)
            self.note.setText(f"{name} could not start: {error}")

        self.tasks.run(lambda: host.start_network(ctx, name), started, failed)
