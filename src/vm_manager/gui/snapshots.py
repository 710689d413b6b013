"""The Snapshots panel: a VM's snapshots with time, description and what they hold; take,
revert (after a confirmation that says what will be lost) and delete, each the ``snapshot``
action of the CLI, on a worker."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from .texts import local_times, said
from .widgets import Tasks, ask, screen_room


class SnapshotsPanel(QDialog):
    changed = Signal()  # a snapshot was taken, reverted to or deleted: the details are stale

    def __init__(self, ctx, vm_name: str, snapshots, tasks: Tasks | None = None, parent=None):
        """``snapshots``: the VM's list (``actions.snapshots.list_snapshots``), read on a
        worker before the panel opens."""
        super().__init__(parent)
        self.setWindowTitle(f"Snapshots of {vm_name}")
        self.ctx, self.vm_name = ctx, vm_name
        self.tasks = tasks or Tasks(parent=self)
        self.confirm = lambda title, text: ask(self, title, text)  # replaced in tests
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("A snapshot holds the VM's disks, UEFI variables and TPM state;"
                                " it is taken and restored while the VM is shut off."))
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Name", "Taken", "Holds", "Description"])
        self.tree.setRootIsDecorated(False)
        self.tree.setAccessibleName("Snapshots")
        layout.addWidget(self.tree)
        row = QHBoxLayout()
        self.name = QLineEdit()
        self.name.setPlaceholderText("name (default: the time)")
        self.description = QLineEdit()
        self.description.setPlaceholderText("description")
        self.take_button = QPushButton("Take snapshot")
        self.revert_button = QPushButton("Revert…")
        self.delete_button = QPushButton("Delete")
        for widget in (self.name, self.description, self.take_button, self.revert_button,
                       self.delete_button):
            row.addWidget(widget)
        layout.addLayout(row)
        self.status = QLabel()
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self.take_button.clicked.connect(self.take)
        self.revert_button.clicked.connect(self.revert)
        self.delete_button.clicked.connect(self.delete)
        self.tree.itemSelectionChanged.connect(self._selection)
        self.show_list(snapshots)

    def show_list(self, snapshots) -> None:
        self.snapshots = list(snapshots)
        self.tree.clear()
        for snap in self.snapshots:
            holds = ", ".join(["disks", *snap.files]) if snap.complete else "disks only"
            self.tree.addTopLevelItem(QTreeWidgetItem([snap.name, local_times(snap.created),
                                                       holds, snap.description]))
        for column in range(4):
            self.tree.resizeColumnToContents(column)
        width = sum(self.tree.columnWidth(column) for column in range(4)) + 40
        self.tree.setMinimumSize(min(max(width, 520), screen_room(self.tree)[0] - 40),
                                 6 * (self.tree.fontMetrics().height() + 8))
        self._selection()

    def selected(self) -> str | None:
        items = self.tree.selectedItems()
        return items[0].text(0) if items else None

    def _selection(self) -> None:
        chosen = self.selected() is not None
        self.revert_button.setEnabled(chosen)
        self.delete_button.setEnabled(chosen)

    def _do(self, label: str, work) -> None:
        """``work`` on a worker, then the list read again; the outcome in the status line."""
        from ..actions import snapshots

        self.status.setText(f"{label}…")
        self.setEnabled(False)

        def run():
            message = work()
            return message, snapshots.list_snapshots(self.ctx, self.vm_name)

        def done(result) -> None:
            message, listing = result
            self.setEnabled(True)
            self.status.setText(message)
            self.show_list(listing)
            self.changed.emit()

        def failed(error: BaseException) -> None:
            self.setEnabled(True)
            self.status.setText(f"{label} failed: {said(error)}")

        self.tasks.run(run, done, failed)

    def take(self) -> None:
        from ..actions import snapshots

        name = self.name.text().strip() or None
        text = self.description.text().strip()
        self._do("Taking a snapshot", lambda: "taken: " + snapshots.create(
            self.ctx, self.vm_name, name, text).name)

    def revert(self) -> None:
        from ..actions import snapshots

        name = self.selected()
        snap = next((s for s in self.snapshots if s.name == name), None)
        if snap is None:
            return
        lost = "its disks" if not snap.complete else "its disks, UEFI variables and TPM state"
        if not self.confirm("Revert?", f"Revert {self.vm_name} to {name}"
                            f" ({local_times(snap.created)})?"
                            f" Everything written to {lost} since then will be lost."):
            return
        self._do(f"Reverting to {name}", lambda: "reverted to " + snapshots.revert(
            self.ctx, self.vm_name, name).name)

    def delete(self) -> None:
        from ..actions import snapshots

        name = self.selected()
        if name:
            self._do(f"Deleting {name}", lambda: (snapshots.delete(self.ctx, self.vm_name, name),
                                                   f"deleted {name}")[1])
