"""The details pane beside the VM list: everything about the selected VM, in sections
(``actions.details``, read on a worker), and the empty states of the window."""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QLabel, QPushButton, QTextBrowser, QVBoxLayout, QWidget


class DetailsPane(QTextBrowser):
    """Read-only, selectable text (so a path or an id can be copied)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setAccessibleName("Details of the selected VM")
        self.setOpenLinks(False)
        self.shown: str | None = None  # the VM whose details are shown
        self.show_hint("Select a VM to see its details.")

    def show_hint(self, text: str) -> None:
        self.shown = None
        self.setHtml(f"<p><i>{html.escape(text)}</i></p>")

    def show_details(self, details, failure: str | None = None) -> None:
        """``failure``: what the last action on this VM said when it failed (kept in view,
        with its fix, until an action on it succeeds: issue 29, item 3)."""
        from .texts import for_people, local_times
        from .widgets import ERROR_COLOR, dark_palette

        self.shown = details.name
        parts = [f"<h3>{html.escape(details.name)}</h3>"]
        if failure:
            parts.append(f"<p style='color: {ERROR_COLOR[dark_palette()]}'><b>The last action"
                         f" failed</b><br>{html.escape(failure)}</p>")
        for section in details.sections:
            parts.append(f"<p><b>{html.escape(section.title)}</b></p><table cellspacing='2'>")
            for label, value in section.rows:
                value = local_times(for_people(value))  # never a command to type
                if label == section.title:  # "none" and the like: the value alone
                    parts.append(f"<tr><td colspan='2'>{html.escape(value)}</td></tr>")
                    continue
                parts.append(f"<tr><td style='color: gray; padding-right: 8px'>"
                             f"{html.escape(label)}</td><td>{html.escape(value)}</td></tr>")
            parts.append("</table>")
        self.setHtml("".join(parts))


class EmptyState(QWidget):
    """A centred message with an optional button: "No VMs yet [Create your first VM]"."""

    clicked = Signal()

    def __init__(self, title: str, text: str, button: str | None = None,
                 parent: QWidget | None = None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.addStretch()
        self.title = QLabel(f"<h2>{html.escape(title)}</h2>")
        self.text = QLabel(text)
        self.text.setWordWrap(True)
        for label in (self.title, self.text):
            label.setAlignment(Qt.AlignCenter)
            layout.addWidget(label)
        self.button = None
        if button:
            self.button = QPushButton(button)
            self.button.setAccessibleName(button)
            self.button.clicked.connect(self.clicked.emit)
            layout.addWidget(self.button, 0, Qt.AlignCenter)
        layout.addStretch()
