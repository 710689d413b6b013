"""The Host check page of the desktop app: ``neuron-vm doctor``'s checks as a table, the
verdict above them and the guide below (importable from ``gui.dialogs`` too)."""

from __future__ import annotations

from PySide6.QtCore import QRect, QSize, Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QLabel, QStyledItemDelegate,
                               QTreeWidget, QTreeWidgetItem, QVBoxLayout)

from ..actions.host import verdict
from .widgets import Tasks, screen_room

__all__ = ["ReadinessDialog"]


class ReadinessDialog(QDialog):
    """``neuron-vm doctor`` as a page: each check with its status and its one-line fix, and
    below it the guide (``fixes``: buttons for what the app can fix, words for the rest)."""

    COLORS = {"ok": "#2e7d32", "warn": "#f9a825", "fail": "#c62828"}

    def __init__(self, checks, parent=None, fixes=None, tasks: Tasks | None = None,
                 recheck=None):
        """``recheck``: called by "Check again" (the window runs the checks anew)."""
        super().__init__(parent)
        self.setWindowTitle("Is this computer ready?")
        layout = QVBoxLayout(self)
        self.summary = QLabel(verdict(checks))
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Status", "Check", "Result", "How to fix"])
        self.tree.setRootIsDecorated(False)
        self.tree.setWordWrap(True)
        self.tree.setUniformRowHeights(False)
        self.tree.setItemDelegate(WrappingDelegate(self.tree))
        for check in checks:
            item = QTreeWidgetItem([check.status, check.name, check.detail,
                                    check.fix if check.status != "ok" and check.fix else ""])
            item.setForeground(0, QColor(self.COLORS.get(check.status, "#000000")))
            self.tree.addTopLevelItem(item)
        layout.addWidget(self.tree)
        self.guide = None
        if fixes is not None:
            from .guide import GuidePanel

            self.guide = GuidePanel(fixes, tasks or Tasks(parent=self))
            layout.addWidget(self.guide)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        self.recheck = None
        if recheck is not None:
            self.recheck = buttons.addButton("Check again", QDialogButtonBox.ActionRole)
            self.recheck.clicked.connect(recheck)
        layout.addWidget(buttons)
        self._fit()

    def _fit(self) -> None:
        """Every result and fix readable without scrolling: the columns take the width their
        text needs; where the screen is narrower, Result and How to fix share what is left
        and wrap. The height is then that of all the rows."""
        tree = self.tree
        for column in range(4):
            tree.resizeColumnToContents(column)
        chrome = 2 * tree.frameWidth() + 48  # the layout's margins and a little air
        room_width, room_height = screen_room(self)
        natural = [tree.columnWidth(column) for column in range(4)]
        if sum(natural) + chrome > room_width:
            left = max(room_width - chrome - natural[0] - natural[1], 320)
            share = natural[2] / max(natural[2] + natural[3], 1)
            tree.setColumnWidth(2, int(left * share))
            tree.setColumnWidth(3, left - int(left * share))
        tree.doItemsLayout()
        width = sum(tree.columnWidth(column) for column in range(4)) + chrome
        model = tree.model()
        rows = sum(max(tree.sizeHintForIndex(model.index(row, column)).height()
                       for column in range(4)) + 1
                   for row in range(tree.topLevelItemCount()))
        others = self.summary.sizeHint().height() + 96 + (  # the guide below the table:
            self.guide.sizeHint().height() + 12 if self.guide is not None else 0)  # its room
        height = rows + tree.header().sizeHint().height() + 2 * tree.frameWidth() + others
        tree.setMinimumHeight(max(min(height - others, room_height - others - 44), 120))
        self.resize(min(width, room_width), min(height, room_height))


class WrappingDelegate(QStyledItemDelegate):
    """Rows as tall as their wrapped text needs in the column's width."""

    def sizeHint(self, option, index):  # noqa: N802 - Qt name
        hint = super().sizeHint(option, index)
        view = self.parent()
        width = max(view.columnWidth(index.column()) - 12, 20)
        text = index.data() or ""
        rect = option.fontMetrics.boundingRect(QRect(0, 0, width, 100000), Qt.TextWordWrap,
                                               text)
        return QSize(hint.width(), max(hint.height(), rect.height() + 6))
