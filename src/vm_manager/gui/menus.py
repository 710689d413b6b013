"""The window's menu bar: every action of the toolbar, and those kept off it (so the
toolbar fits a 1280-pixel screen with its labels), Quit (Ctrl+Q) and About (issue 29)."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMessageBox

# in the menus only: rarer actions, kept off the toolbar so that it fits
MENU_ONLY = ("force_stop", "reboot", "usb", "refresh")
MENUS = (
    ("&File", ("create", "readiness", None, "quit")),
    ("&VM", ("start", "stop", "force_stop", "pause", "resume", "reboot", None, "display",
             "console", None, "settings", "usb", "snapshots", None, "delete")),
    ("V&iew", ("refresh",)),
    ("&Help", ("about",)),
)


def build_menus(window) -> None:
    """The menu bar of ``window`` (a MainWindow with ``actions_by_key``)."""
    quit_action = QAction("&Quit", window)
    quit_action.setShortcut(QKeySequence("Ctrl+Q"))
    quit_action.triggered.connect(window.close)
    about = QAction("&About NeuronOS VM Manager", window)
    about.triggered.connect(lambda: QMessageBox.about(window, "About NeuronOS VM Manager",
                                                      about_text()))
    extra = {"quit": quit_action, "about": about}
    bar = window.menuBar()
    for title, keys in MENUS:
        menu = bar.addMenu(title)
        for key in keys:
            if key is None:
                menu.addSeparator()
            else:
                menu.addAction(extra.get(key) or window.actions_by_key[key])
    window.quit_action = quit_action


def about_text() -> str:
    from importlib import metadata

    try:
        version = metadata.version("neuronos-vm-manager")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return (f"<b>NeuronOS VM Manager</b> {version}<p>Windows, macOS and Linux programs in"
            " virtual machines with a passed-through GPU, shown through Looking Glass.</p>"
            "<p>The same actions are on the command line: <code>neuron-vm --help</code>."
            " Host check… says what this computer still needs.</p>")
