"""The guided part of the host check: one row per fix, with a button where the app can do
it (``actions.guide``: elevated through pkexec, which asks for the password itself), and the
explanation where only the user can (the firmware setup). Nothing runs until a button is
pressed; each command runs on a worker, and its outcome is shown on its row."""

from __future__ import annotations

import html

from PySide6.QtWidgets import QGridLayout, QGroupBox, QLabel, QPushButton, QWidget

from .widgets import Tasks, error_label


class GuidePanel(QGroupBox):
    def __init__(self, fixes, tasks: Tasks, parent: QWidget | None = None):
        super().__init__("Guided setup", parent)
        self.setAccessibleName("Guided setup")
        self.tasks = tasks
        self.buttons: dict[str, QPushButton] = {}  # the fix's label -> its button
        self.results: dict[str, QLabel] = {}
        self.done: list = []  # FixResults, for the window and tests
        grid = QGridLayout(self)
        for row, fix in enumerate(fixes):
            text = QLabel(f"<b>{html.escape(fix.label)}</b><br>{html.escape(fix.says)}")
            text.setWordWrap(True)
            grid.addWidget(text, row, 0)
            result = error_label()
            self.results[fix.label] = result
            grid.addWidget(result, row, 2)
            if fix.argv is not None:
                button = QPushButton("Fix…")
                button.setAccessibleName(fix.label)
                button.setToolTip(" ".join(fix.argv))  # exactly what runs, elevated
                button.clicked.connect(lambda _=False, f=fix: self.run(f))
                self.buttons[fix.label] = button
                grid.addWidget(button, row, 1)
        grid.setColumnStretch(0, 3)
        grid.setColumnStretch(2, 2)
        if not fixes:
            grid.addWidget(QLabel("Nothing here needs fixing from the app."), 0, 0)

    def run(self, fix) -> None:
        from ..actions import guide

        button = self.buttons[fix.label]
        button.setEnabled(False)
        self.results[fix.label].setStyleSheet("")
        self.results[fix.label].setText("asking for your password…")

        def finished(outcome) -> None:
            self.done.append(outcome)
            label = self.results[fix.label]
            if outcome.ok:
                label.setStyleSheet("")
                label.setText("done" + (f": {outcome.output.splitlines()[-1]}"
                                        if outcome.output else ""))
            else:
                label.setStyleSheet(error_label().styleSheet())
                label.setText(outcome.output)
                button.setEnabled(True)  # try again

        self.tasks.run(lambda: guide.run_fix(fix), finished)
