"""``neuron-vm-gui``: the main window.

The GUI calls the same library as the CLI and never libvirt itself. Library callbacks
(state changes on libvirt's event thread) reach the Qt thread through ``EventBridge``
signals, so the list follows every change without polling. Slow work (connecting, listing,
lifecycle requests) runs on a thread pool; the window never waits on libvirt.
"""

from __future__ import annotations

import argparse
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QAbstractItemView,
    QApplication,
    QHeaderView,
    QMainWindow,
    QMessageBox,
    QTableView,
    QVBoxLayout,
    QWidget,
)

# libvirt's default event loop iterates GLib's default main context on its own thread; a
# GLib-based Qt event dispatcher would compete for that same context and delay libvirt's
# events by hundreds of ms (measured with bench/gui_scale.py). Qt's own dispatcher avoids
# it. Must be set before the QApplication exists.
os.environ.setdefault("QT_NO_GLIB", "1")

from ..core.primitives import VMState  # noqa: E402
from ..core.state_machine import allowed_operations  # noqa: E402
from .widgets import Banner, EventBridge, VMRow, VMTableModel  # noqa: E402
from ..core.log import get_logger

log = get_logger(__name__)

# action key -> (label, state-machine operation, shortcut)
ACTIONS = {
    "start": ("Start", "start", "Ctrl+Return"),
    "stop": ("Stop", "stop", "Ctrl+E"),
    "force_stop": ("Force stop…", "force-stop", "Ctrl+Shift+E"),
    "pause": ("Pause", "pause", "Ctrl+P"),
    "resume": ("Resume", "resume", "Ctrl+Shift+P"),
    "reboot": ("Reboot", "reboot", "Ctrl+Shift+R"),
    "display": ("Show display", None, "Ctrl+D"),
    "delete": ("Delete…", "delete", QKeySequence.Delete),
    "refresh": ("Refresh", None, QKeySequence.Refresh),
    "settings": ("Settings…", None, "Ctrl+,"),
    "usb": ("USB…", None, "Ctrl+U"),
    "create": ("New VM…", None, QKeySequence.New),
    "readiness": ("Host check…", None, "Ctrl+H"),
}
ALWAYS_ENABLED = {"refresh", "readiness"}


class MainWindow(QMainWindow):
    def __init__(self, uri: str | None = None, connection=None, store=None):
        super().__init__()
        from ..core.connection import resolve_uri
        from ..core.store import VMStore

        self.uri = connection.uri if connection is not None else resolve_uri(uri)
        self.connection = connection
        self.store = store or VMStore()
        self.lifecycle = None
        self.looking_glass = None
        self.bridge = EventBridge()
        self.model = VMTableModel(self)
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="neuron-gui")
        self.busy: set[str] = set()
        self.last_error: str | None = None
        self.notifications: list[tuple[str, str]] = []  # (title, text), also for tests
        self.tray = None
        self._reload_timer = QTimer(self)
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(200)
        self._reload_timer.timeout.connect(self.load)

        self.setWindowTitle("NeuronOS VM Manager")
        self.banner = Banner()
        self.banner.retry.connect(self.load)
        self.table = QTableView()
        self.table.setModel(self.model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().hide()
        # Fixed row heights and columns sized once per listing, from the first rows: a
        # ResizeToContents header re-measures every row on every state change (~300 ms
        # with 500 VMs), which is exactly what must stay instant.
        self.table.verticalHeader().setSectionResizeMode(QHeaderView.Fixed)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Interactive)
        header.setResizeContentsPrecision(50)
        header.setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(lambda *_: self.update_actions())
        self.table.setContextMenuPolicy(Qt.ActionsContextMenu)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.banner)
        layout.addWidget(self.table)
        self.setCentralWidget(central)

        toolbar = self.addToolBar("VM")
        toolbar.setObjectName("vm-toolbar")
        self.actions_by_key: dict[str, QAction] = {}
        for key, (label, _, shortcut) in ACTIONS.items():
            action = QAction(label, self)
            action.setShortcut(QKeySequence(shortcut))
            action.triggered.connect(getattr(self, f"on_{key}"))
            toolbar.addAction(action)
            if key != "refresh":
                self.table.addAction(action)
            self.actions_by_key[key] = action

        self.bridge.inventory_ready.connect(self._on_inventory)
        self.bridge.inventory_failed.connect(self._on_inventory_failed)
        self.bridge.state_changed.connect(self._on_state_changed)
        self.bridge.connection_changed.connect(self._on_connection_changed)
        self.bridge.operation_done.connect(self._on_operation_done)
        self.bridge.operation_failed.connect(self._on_operation_failed)
        self.bridge.checks_ready.connect(self._show_readiness)
        self._restore_geometry()
        self.update_actions()
        self.statusBar().showMessage(f"Connecting to {self.uri}…")
        self.load()

    # --- loading ----------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)connect if needed and list every VM, off the GUI thread."""
        self.pool.submit(self._load_worker)

    def _load_worker(self) -> None:
        from ..core.connection import ConnectionEvent, LibvirtConnection
        from ..core.errors import VMManagerError
        from ..core.inventory import list_vms
        from ..core.vm_lifecycle import VMLifecycleManager

        try:
            if self.connection is None:
                self.connection = LibvirtConnection(self.uri)
            self.connection.open()
            if self.lifecycle is None:
                self.lifecycle = VMLifecycleManager(self.connection)
                self.lifecycle.subscribe(lambda change: self.bridge.state_changed.emit(
                    change.name, change.new.value, change.reason))
                self.connection.subscribe(lambda event: self.bridge.connection_changed.emit(
                    event.status, event.reason) if isinstance(event, ConnectionEvent) else None)
            inventory = list_vms(self.connection)
            names = {vm.name for vm in inventory.vms}
            saved = self.store.load_all(sorted(names & set(self.store.names()))).configs
            rows = []
            for vm in inventory.vms:
                config = saved.get(vm.name)
                shown = self.lifecycle.states.state_if_known(vm.name) or vm.state
                rows.append(VMRow(
                    name=vm.name, state=shown, vcpus=vm.vcpus, memory_mb=vm.memory_mb,
                    vm_type=config.vm_type.value if config else None,
                    gpu=config.gpu_passthrough.pci_address if config and
                    config.gpu_passthrough else None,
                    looking_glass=bool(config and config.looking_glass.enabled),
                ))
            self.bridge.inventory_ready.emit(rows)
        except VMManagerError as error:
            self.bridge.inventory_failed.emit(str(error))
        except Exception as error:  # noqa: BLE001 - shown in the banner, never a dead window
            log.exception("loading the VM list failed")
            self.bridge.inventory_failed.emit(f"{type(error).__name__}: {error}")

    def _on_inventory(self, rows: list[VMRow]) -> None:
        selected = self.selected_name()
        first_listing = self.model.rowCount() == 0
        self.model.reset_rows(rows)
        if first_listing and rows:
            self.table.resizeColumnsToContents()
        self.banner.hide()
        self.statusBar().showMessage(f"{len(rows)} VMs on {self.uri}")
        if selected:
            self.select(selected)
        self.update_actions()

    def _on_inventory_failed(self, message: str) -> None:
        self.banner.show_message(f"libvirt is not reachable: {message}")
        self.statusBar().showMessage("Not connected")
        self.update_actions()

    # --- live updates -------------------------------------------------------------------------

    def notify(self, title: str, text: str) -> None:
        """A desktop notification (tray balloon where a tray exists) plus the status bar."""
        from PySide6.QtWidgets import QSystemTrayIcon

        self.notifications.append((title, text))
        self.statusBar().showMessage(f"{title}: {text}")
        if QSystemTrayIcon.isSystemTrayAvailable():
            if self.tray is None:
                self.tray = QSystemTrayIcon(self.windowIcon(), self)
                self.tray.show()
            self.tray.showMessage(title, text, QSystemTrayIcon.Warning)

    def _on_state_changed(self, name: str, value: str, reason: str) -> None:
        state = VMState(value)
        unexpected = name not in self.busy and (
            state == VMState.CRASHED or "crashed" in reason
            or (state == VMState.SHUTOFF and "destroyed" in reason))
        if unexpected:  # the user did not ask for it here: tell them
            what = "crashed" if state == VMState.CRASHED or "crashed" in reason else \
                "was powered off by force"
            self.notify(f"{name} {what}", reason)
        if state == VMState.UNDEFINED:
            self.model.remove(name)
        elif not self.model.update_state(name, state, reason):
            self._reload_timer.start()  # a VM we did not know: list again, once
        if name == self.selected_name():
            self.update_actions()

    def _on_connection_changed(self, status: str, reason: str) -> None:
        if status == "disconnected":
            self.banner.show_message(
                f"Lost the connection to libvirt at {self.uri} ({reason}); reconnecting…")
            self.update_actions()
        else:
            self.load()

    # --- actions ------------------------------------------------------------------------------

    def selected_name(self) -> str | None:
        rows = self.table.selectionModel().selectedRows()
        if not rows:
            return None
        return self.model.rows[rows[0].row()].name

    def select(self, name: str) -> None:
        row = self.model._index.get(name)
        if row is not None:
            self.table.selectRow(row)

    def update_actions(self) -> None:
        name = self.selected_name()
        row = self.model.row_for(name) if name else None
        connected = self.lifecycle is not None and self.banner.isHidden()
        allowed = set(allowed_operations(row.state)) if row and connected else set()
        for key, (_, operation, _) in ACTIONS.items():
            action = self.actions_by_key[key]
            if key in ALWAYS_ENABLED:
                action.setEnabled(True)
            elif key == "create":
                action.setEnabled(connected)
            elif key in ("display", "usb"):
                action.setEnabled(bool(row and connected and row.state == VMState.RUNNING))
            elif key == "settings":
                action.setEnabled(bool(row and connected and row.state == VMState.SHUTOFF
                                       and name not in self.busy))
            elif name in self.busy and key != "force_stop":
                action.setEnabled(False)
            else:
                action.setEnabled(operation in allowed)

    def _run(self, name: str, label: str, call: Callable[[], object]) -> None:
        self.busy.add(name)
        self.update_actions()
        self.statusBar().showMessage(f"{label} {name}…")

        def work() -> None:
            try:
                result = call()
                message = getattr(result, "message", "done")
                self.bridge.operation_done.emit(name, f"{name}: {message}")
            except Exception as error:  # noqa: BLE001 - reported in the window
                self.bridge.operation_failed.emit(name, str(error))

        self.pool.submit(work)

    def _on_operation_done(self, name: str, message: str) -> None:
        self.busy.discard(name)
        self.statusBar().showMessage(message)
        self.update_actions()

    def _on_operation_failed(self, name: str, error: str) -> None:
        self.busy.discard(name)
        self.last_error = error
        self.statusBar().showMessage(f"{name}: {error}")
        self.update_actions()

    def confirm(self, title: str, text: str) -> bool:
        return QMessageBox.question(self, title, text) == QMessageBox.Yes

    def on_start(self) -> None:
        name = self.selected_name()
        if name:
            self._run(name, "Starting", lambda: self.lifecycle.start(name))

    def on_stop(self) -> None:
        name = self.selected_name()
        if name:
            self._run(name, "Stopping", lambda: self.lifecycle.stop(name))

    def on_force_stop(self) -> None:
        from ..core.vm_lifecycle import ShutdownMethod

        name = self.selected_name()
        if name and self.confirm("Force stop", f"Power {name} off now? Unsaved work in the"
                                 " VM is lost."):
            self._run(name, "Powering off",
                      lambda: self.lifecycle.stop(name, method=ShutdownMethod.FORCE))

    def on_pause(self) -> None:
        name = self.selected_name()
        if name:
            self._run(name, "Pausing", lambda: self.lifecycle.pause(name))

    def on_resume(self) -> None:
        name = self.selected_name()
        if name:
            self._run(name, "Resuming", lambda: self.lifecycle.resume(name))

    def on_reboot(self) -> None:
        name = self.selected_name()
        if name:
            self._run(name, "Rebooting", lambda: self.lifecycle.reboot(name))

    def on_refresh(self) -> None:
        self.load()

    def on_create(self) -> None:
        from ..core.vm_creator import VMCreator
        from .dialogs import CreateWizard

        wizard = CreateWizard(VMCreator(self.connection, store=self.store), parent=self)
        if wizard.exec() and wizard.result is not None:
            self.statusBar().showMessage(f"created {wizard.result.name}")
            self.load()

    def on_settings(self) -> None:
        from ..core.vm_creator import VMCreator
        from .dialogs import SettingsDialog

        name = self.selected_name()
        config = self.store.load(name) if name else None
        if config is None:
            QMessageBox.information(self, "Settings", f"{name} was not made by NeuronOS; change"
                                    " it with virt-manager or `virsh edit`.")
            return
        dialog = SettingsDialog(VMCreator(self.connection, store=self.store), config, parent=self)
        if dialog.exec():
            self.load()

    def on_usb(self) -> None:
        from .dialogs import USBPanel

        name = self.selected_name()
        if name:
            self.usb_panel = USBPanel(self.connection, name, parent=self)
            self.usb_panel.show()

    def on_readiness(self) -> None:
        from ..passthrough.host_check import run_checks

        def work() -> None:
            checks = run_checks(uri=self.uri)
            self.bridge.checks_ready.emit(checks)

        self.statusBar().showMessage("Checking this computer…")
        self.pool.submit(work)

    def _show_readiness(self, checks) -> None:
        from .dialogs import ReadinessDialog

        self.statusBar().showMessage("Host check done")
        self.readiness = ReadinessDialog(checks, self)
        self.readiness.show()

    def on_display(self) -> None:
        from ..core.errors import VMManagerError
        from ..core.looking_glass import LookingGlassManager, display_config

        name = self.selected_name()
        if not name:
            return
        try:
            config = display_config(name, self.store, self.connection)
            if config is None:
                QMessageBox.information(
                    self, "No Looking Glass",
                    f"{name} has no Looking Glass display. Create it with a GPU and Looking"
                    " Glass turned on to see its screen here.")
                return
            if self.looking_glass is None:
                run_as = os.environ.get("SUDO_USER") if os.geteuid() == 0 else None
                self.looking_glass = LookingGlassManager(run_as=run_as,
                                                         connection=self.connection)
            self.looking_glass.start(name, config)
            self.statusBar().showMessage(f"{name}: waiting for the guest's Looking Glass host")
        except VMManagerError as error:
            self.last_error = str(error)
            self.statusBar().showMessage(str(error))

    def on_delete(self) -> None:
        from .dialogs import DeleteDialog

        name = self.selected_name()
        if not name:
            return
        from ..core.vm_destroyer import VMDestroyer

        destroyer = VMDestroyer(self.connection, store=self.store, lifecycle=self.lifecycle)
        dialog = DeleteDialog(destroyer, name, self)
        if dialog.exec():
            delete_disks = dialog.delete_disks
            self._run(name, "Deleting",
                      lambda: destroyer.destroy(name, delete_disks=delete_disks))

    # --- window state -------------------------------------------------------------------------

    def _restore_geometry(self) -> None:
        settings = QSettings("NeuronOS", "VM Manager")
        geometry = settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(900, 520)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        QSettings("NeuronOS", "VM Manager").setValue("geometry", self.saveGeometry())
        if self.looking_glass is not None:
            self.looking_glass.stop_all()
        self.pool.shutdown(wait=False, cancel_futures=True)
        super().closeEvent(event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuron-vm-gui",
                                     description="NeuronOS VM Manager (desktop app)")
    parser.add_argument("-c", "--connect", metavar="URI", help="libvirt URI")
    args, qt_args = parser.parse_known_args(argv)
    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setApplicationName("NeuronOS VM Manager")
    app.setDesktopFileName("neuron-vm-gui")
    window = MainWindow(uri=args.connect)
    window.show()
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
