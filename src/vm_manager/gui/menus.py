"""The window's actions: what each is (label, state-machine operation, shortcut, what it
does), the menu bar that holds them all (the toolbar holds the common ones, so it fits a
1280-pixel screen), and which are enabled for the selected VM, a disabled one saying why
(issue 29: tooltips only repeated the labels, and a greyed button never said why)."""

from __future__ import annotations

from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMessageBox

from ..actions.power import actionable_state, allowed_operations
from ..base.primitives import VMState
from .texts import display_unavailable

# action key -> (label, state-machine operation, shortcut, what it does)
ACTIONS = {
    "start": ("Start", "start", "Ctrl+Return", "Start the VM"),
    "stop": ("Stop", "stop", "Ctrl+E", "Ask the guest to shut down (forced after a minute)"),
    "force_stop": ("Force stop…", "force-stop", "Ctrl+Shift+E",
                   "Turn the VM off at once, like pulling its plug"),
    "pause": ("Pause", "pause", "Ctrl+P", "Freeze the VM where it is"),
    "resume": ("Resume", "resume", "Ctrl+Shift+P", "Let a paused VM run on"),
    "reboot": ("Reboot", "reboot", "Ctrl+Shift+R", "Ask the guest to restart"),
    "display": ("Show display", None, "Ctrl+D",
                "The passed-through GPU's screen in a Looking Glass window"),
    "console": ("Console", None, "Ctrl+Shift+C",
                "The VM's own screen in virt-viewer (also while it installs)"),
    "delete": ("Delete…", "delete", QKeySequence.Delete,
               "Delete the VM; its disks are kept unless you ask"),
    "refresh": ("Refresh", None, QKeySequence.Refresh, "List the VMs again"),
    "settings": ("Settings…", None, "Ctrl+,",
                 "Memory, vCPUs, speed, GPU, USB and shared folders of a stopped VM"),
    "usb": ("USB…", None, "Ctrl+U", "Give USB devices to the running VM, or take them back"),
    "snapshots": ("Snapshots…", None, "Ctrl+Shift+S", "Take, revert to and delete snapshots"),
    "create": ("New VM…", None, QKeySequence.New, "Make a VM, and set its system up"),
    "readiness": ("Host check…", None, "Ctrl+H",
                  "What this computer has, and what it still needs, for VMs and GPUs"),
}
ALWAYS_ENABLED = {"refresh", "readiness"}
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
    for key, action in window.actions_by_key.items():
        action.setStatusTip(ACTIONS[key][3])
        action.setToolTip(ACTIONS[key][3])
    bar = window.menuBar()
    for title, keys in MENUS:
        menu = bar.addMenu(title)
        for key in keys:
            if key is None:
                menu.addSeparator()
            else:
                menu.addAction(extra.get(key) or window.actions_by_key[key])
    window.quit_action = quit_action


def update_actions(window) -> None:
    """Each action enabled as the selected VM's real state allows (``actions.power``), and
    its tooltip: what it does, or why it cannot now."""
    row = window.table.selected_row()
    here = window.uri in window.live and window.uri not in window.problems
    connected = row is not None and row.host in window.live and row.host not in window.problems
    state = row and actionable_state(window.contexts.get(row.host), row.name, row.state)
    allowed = set(allowed_operations(state)) if connected else set()
    busy = row is not None and row.key in window.busy
    for key, (_, operation, _, does) in ACTIONS.items():
        action = window.actions_by_key[key]
        why = None
        if key in ALWAYS_ENABLED:
            enabled = True
        elif key == "create":
            enabled = here
        elif key in ("console", "snapshots"):  # the viewer waits for the VM to start;
            enabled = connected  # the panel lists for any state
        elif key == "display":
            why = display_unavailable(row)
            enabled = connected and state == VMState.RUNNING and why is None
        elif key == "usb":
            enabled = connected and state == VMState.RUNNING
        elif key == "settings":
            enabled = connected and state == VMState.SHUTOFF and not busy
            why = None if enabled or not connected else "Settings change a stopped VM"
        elif busy and key != "force_stop":
            enabled = False
        else:
            enabled = operation in allowed
        action.setEnabled(enabled)
        if not enabled and why is None and row is not None and connected and state:
            why = f"Not while {row.name} is {state.label}" if not busy else \
                f"{row.name} is busy with the last request"
        action.setToolTip(why if why and not enabled else does)


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
