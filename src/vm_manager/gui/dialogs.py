"""Dialogs of the desktop app. (The create wizard and the settings dialog come next.)"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
)


class DeleteDialog(QDialog):
    """Shows the destroyer's plan. Disks are kept unless the box is ticked (it starts
    unticked); disks that must be kept are listed greyed out with the reason."""

    def __init__(self, destroyer, name: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Delete {name}")
        self.destroyer = destroyer
        self.name = name
        self.kept_plan = destroyer.plan(name, delete_disks=False)
        self.full_plan = destroyer.plan(name, delete_disks=True)
        layout = QVBoxLayout(self)
        state = self.kept_plan.state
        text = f"Delete the VM <b>{name}</b>?"
        if state.is_active:
            text += f" It is {state.label}: stop it first."
        layout.addWidget(QLabel(text))
        deletable = [d for d in self.full_plan.disks if d.delete]
        self.disks_box = QCheckBox(
            f"Also delete its disk{'s' if len(deletable) != 1 else ''}, UEFI variables and TPM"
            " state (cannot be undone)")
        self.disks_box.setChecked(False)
        self.disks_box.setEnabled(bool(deletable))
        self.disks_box.toggled.connect(self._refresh)
        layout.addWidget(self.disks_box)
        self.disk_list = QListWidget()
        layout.addWidget(self.disk_list)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.ok_button = buttons.button(QDialogButtonBox.Ok)
        self.ok_button.setText("Delete")
        self.ok_button.setEnabled(not state.is_active)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self._refresh()

    @property
    def delete_disks(self) -> bool:
        return self.disks_box.isChecked()

    def _refresh(self) -> None:
        self.disk_list.clear()
        for disk in self.full_plan.disks:
            will_delete = disk.delete and self.delete_disks
            verb = "delete" if will_delete else "keep"
            reason = "" if disk.delete else f" ({disk.reason})"
            item = QListWidgetItem(f"{verb}: {disk.path}{reason}")
            if not disk.delete:  # must be kept: shown greyed, whatever the box says
                item.setFlags(item.flags() & ~Qt.ItemIsEnabled)
                item.setToolTip(disk.reason)
            self.disk_list.addItem(item)
