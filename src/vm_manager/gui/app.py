"""``neuron-vm-gui``: the main window.

The GUI calls the same actions as the CLI (``vm_manager.actions``) and never libvirt
itself: everything that talks to libvirt, reads sysfs or runs a program runs on a worker
(``Tasks``) while the window shows a busy state. State changes (libvirt's event thread)
reach the Qt thread through ``EventBridge`` signals: the list follows them, never polls.
The list holds the VMs of every host the window manages (``connections``), one
``Context`` per host; the actions work on the selected VM's host.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QApplication, QLabel, QMainWindow, QSplitter, QStackedWidget,
                               QVBoxLayout, QWidget)

# libvirt's default event loop iterates GLib's default main context on its own thread; a
# GLib-based Qt event dispatcher would compete for that same context and delay libvirt's
# events by hundreds of ms (measured with bench/gui_scale.py). Qt's own dispatcher avoids
# it. Must be set before the QApplication exists.
os.environ.setdefault("QT_NO_GLIB", "1")

from ..actions import Context  # noqa: E402
from ..base.primitives import VMState, host_name  # noqa: E402
from ..base.log import get_logger  # noqa: E402
from .widgets import Banner, EventBridge, Tasks, app_settings, notify_desktop, quit_on_signals  # noqa: E402,E501
from .vm_list import VMRow, VMTable, VMTableModel  # noqa: E402
from .commands import Commands  # noqa: E402
from .connections import Connections  # noqa: E402
from .details import DetailsPane, EmptyState  # noqa: E402
from .live import LiveParts  # noqa: E402
from .icons import icon  # noqa: E402
from .menus import ACTIONS, MENU_ONLY, build_menus, update_actions  # noqa: E402
from .texts import said  # noqa: E402

log = get_logger(__name__)

DETAILS_WIDTH = 340  # the details pane beside the list, where the screen has room


class MainWindow(QMainWindow):
    """The list of every host's VMs with its toolbar, details pane and banner. Its parts
    are composed: ``commands``, ``live_view`` and ``hosts`` (each holds the window)."""

    def __init__(self, uri: str | None = None, connection=None, store=None,
                 context: Context | None = None):
        super().__init__()
        self.ctx = context or Context(uri, connection=connection, store=store)
        self.uri = self.ctx.uri  # the current host: the selected VM's, where New VM makes one
        self.contexts: dict[str, Context] = {self.uri: self.ctx}  # every host, this one first
        self.live: set[str] = set()  # hosts listed and connected
        self.problems: dict[str, str] = {}  # host -> why it is not reachable (the banner)
        self._following: dict = {}  # host -> its lifecycle manager, once its events followed
        self._loads = threading.Lock()  # guards the two sets below (workers finish loads)
        self._loading: set[str] = set()  # hosts with a listing out: one at a time each
        self._load_again: set[str] = set()  # asked again meanwhile: list once more after
        self._select_first_of: str | None = None  # a host chosen before its VMs were listed
        self.bridge = EventBridge()
        self.commands = Commands(self)  # the window's parts, each its own object
        self.live_view = LiveParts(self)
        self.hosts = Connections(self)
        self.model = VMTableModel(self)
        # four workers: a graceful stop may wait a minute; the list must not wait behind it
        self.tasks = Tasks(ThreadPoolExecutor(max_workers=4, thread_name_prefix="neuron-gui"),
                           parent=self)
        self.pool = self.tasks.pool
        self.busy: set[tuple[str, str]] = set()  # (host, name) of VMs waiting on an action
        self.last_error: str | None = None
        self.failures: dict[tuple[str, str], str] = {}  # (host, VM): its last action's error
        self.notifications: list[tuple[str, str]] = []  # (title, text), also for tests
        self._reload_timer = QTimer(self)
        self._reload_timer.setSingleShot(True)
        self._reload_timer.setInterval(200)
        self._reload_timer.timeout.connect(self._reload)
        self._reload_hosts: set[str] = set()
        # The one periodic read (core.usage says why): one bulk statistics call a second,
        # only while the window is visible, never two at once.
        self.monitors: dict = {}  # host -> actions.usage.Monitor
        self._sampling: set[str] = set()  # hosts with a sample out
        self.usage_timer = QTimer(self)
        self.usage_timer.setInterval(1000)
        self.usage_timer.timeout.connect(self.live_view.sample_usage)
        self.host_usage = QLabel()
        self.host_usage.setAccessibleName("Host usage")

        self.setWindowTitle("NeuronOS VM Manager")
        self.banner = Banner()
        self.banner.retry.connect(self.load)
        self.table = VMTable(self.model)
        self.table.selectionModel().selectionChanged.connect(
            lambda *_: self.live_view.selection_changed())
        self.empty = EmptyState("No virtual machines yet", "A VM runs Windows, Linux or macOS"
                                " programs in a window of their own, with a real GPU if you"
                                " give it one.", "Create your first VM")
        self.empty.clicked.connect(lambda: self.commands.on_create())
        self.list_stack = QStackedWidget()
        self.list_stack.addWidget(self.table)
        self.list_stack.addWidget(self.empty)
        self.details = DetailsPane()
        self.splitter = QSplitter(Qt.Horizontal)
        self.splitter.addWidget(self.list_stack)
        self.splitter.addWidget(self.details)
        self.splitter.setStretchFactor(0, 3)
        self.splitter.setStretchFactor(1, 2)
        self._details_timer = QTimer(self)  # one read when the selection settles
        self._details_timer.setSingleShot(True)
        self._details_timer.setInterval(100)
        self._details_timer.timeout.connect(self.live_view.load_details)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.banner)
        layout.addWidget(self.splitter)
        self.setCentralWidget(central)

        self.toolbar = toolbar = self.addToolBar("VM")
        toolbar.setObjectName("vm-toolbar")
        toolbar.setAccessibleName("VM actions")
        toolbar.setToolButtonStyle(Qt.ToolButtonTextUnderIcon)
        self.setWindowIcon(icon("vm"))
        self.actions_by_key: dict[str, QAction] = {}
        for key, (label, _, shortcut, _does) in ACTIONS.items():
            action = QAction(icon(key), label, self)
            action.setShortcut(QKeySequence(shortcut))
            action.triggered.connect(getattr(self.commands, f"on_{key}"))
            if key not in MENU_ONLY:
                toolbar.addAction(action)
            if key != "refresh":
                self.table.addAction(action)
            self.actions_by_key[key] = action
        build_menus(self)

        self.hosts.build_connections()
        self.bridge.inventory_ready.connect(self._on_inventory)
        self.bridge.inventory_failed.connect(self.hosts.on_inventory_failed)
        self.bridge.state_changed.connect(self._on_state_changed)
        self.bridge.connection_changed.connect(self.hosts.on_connection_changed)
        self.bridge.setup_changed.connect(self._on_setup_changed)
        self.bridge.display_changed.connect(self._on_display_changed)
        self._restore_geometry()
        self.update_actions()
        self.statusBar().addPermanentWidget(self.host_usage)
        self.statusBar().showMessage(f"Connecting to {self.uri}…")
        self.load()

    # --- loading ----------------------------------------------------------------------------

    def load(self) -> None:
        """(Re)connect where needed and list every host's VMs, each off the GUI thread."""
        for ctx in list(self.contexts.values()):
            self.load_host(ctx)

    def load_host(self, ctx: Context) -> None:
        """List one host's VMs on a worker. A host with a listing out is not asked twice (a
        host that does not answer never ties up more than one worker): it is listed once
        more when that one ends."""
        with self._loads:
            if ctx.uri in self._loading:
                self._load_again.add(ctx.uri)
                return
            self._loading.add(ctx.uri)
        self.pool.submit(self._load_worker, ctx)

    def _load_worker(self, ctx: Context) -> None:
        try:
            self._list_host(ctx)
        finally:
            with self._loads:
                self._loading.discard(ctx.uri)
                again = ctx.uri in self._load_again
                self._load_again.discard(ctx.uri)
            if again and self.contexts.get(ctx.uri) is ctx:
                self.load_host(ctx)

    def _list_host(self, ctx: Context) -> None:
        from ..actions import setup, vms
        from ..base.errors import VMManagerError

        uri = ctx.uri

        def current() -> bool:  # still a host of this window (not one it let go)
            return self.contexts.get(uri) is ctx

        try:
            if uri not in self._following:  # one listing of a host at a time: no race
                lifecycle = ctx.lifecycle  # opens the connection: a worker's call
                lifecycle.subscribe(lambda change: self.bridge.state_changed.emit(
                    uri, change.name, change.new.value, change.reason) if current()
                    else None)
                ctx.connection.subscribe(lambda event: self.bridge.connection_changed.emit(
                    uri, event.status, event.reason) if hasattr(event, "status")
                    and current() else None)
                setup.follow_all(ctx, lambda change: self.bridge.setup_changed.emit(
                    uri, change.name, change.new) if current() else None)
                from ..actions import tune

                lifecycle.subscribe(lambda change: self.pool.submit(
                    tune.release, ctx, change.name) if change.new is VMState.SHUTOFF else None)
                tune.restore_stale(ctx)  # a VM that stopped while no NeuronOS ran
                self._following[uri] = lifecycle
            inventory = vms.list_vms(ctx)
            from ..actions import host

            names = host.gpu_names(ctx, {config.gpu_passthrough.pci_address for config in
                                              inventory.settings.values()
                                              if config and config.gpu_passthrough})
            rows = []
            for vm in inventory.vms:
                config = inventory.settings.get(vm.name)
                gpu = config.gpu_passthrough if config else None
                rows.append(VMRow(
                    name=vm.name, state=vms.shown_state(ctx, vm.name, vm.state),
                    vcpus=vm.vcpus, memory_mb=vm.memory_mb, vm_type=vm.vm_type,
                    gpu=gpu.pci_address if gpu else None,
                    gpu_name=names.get(gpu.pci_address) if gpu else None,
                    looking_glass=bool(config and config.looking_glass.enabled),
                    setup=setup.stage(ctx, vm.name) if config and config.unattended
                    else "", host=uri))
            self.bridge.inventory_ready.emit((ctx, rows))
        except VMManagerError as error:
            self.bridge.inventory_failed.emit((ctx, str(error)))
        except Exception as error:  # noqa: BLE001 - shown in the banner, never a dead window
            log.exception("loading the VM list of %s failed", uri)
            self.bridge.inventory_failed.emit((ctx, f"{type(error).__name__}: {error}"))

    @property
    def connection(self):
        """The context's connection (opening it is a libvirt call: workers only)."""
        return self.ctx.connection

    @property
    def store(self):
        return self.ctx.store

    def _on_inventory(self, listing) -> None:
        ctx, rows = listing
        if self.contexts.get(ctx.uri) is not ctx:
            return  # a listing of a host the window let go meanwhile
        selected = self.table.selected_row()
        first_listing = self.model.rowCount() == 0
        self.model.reset_host(ctx.uri, rows)
        self.live.add(ctx.uri)
        self.problems.pop(ctx.uri, None)
        self.hosts.show_problems()
        self.list_stack.setCurrentWidget(self.table if self.model.rows else self.empty)
        if not self.model.rows:
            self.details.show_hint("Create a VM to see its details here.")
        if first_listing and rows:
            self.table.resizeColumnsToContents()
            metrics = self.table.fontMetrics()  # room for the graph and for "9.9 / 9.9 GiB"
            for column, sample in zip(self.model.USAGE, ("100 %  ~~~~~~", "99.9 / 99.9 GiB")):
                self.table.setColumnWidth(column, max(self.table.columnWidth(column),
                                                      metrics.horizontalAdvance(sample) + 16))
            self._fit_first_run()
        if rows and len(self.contexts) > 1:
            self.hosts.show_host_column()  # room for this host's name too
        self.statusBar().showMessage(self.hosts.summary())
        if self._select_first_of == ctx.uri and rows:
            self._select_first_of = None
            if self.uri == ctx.uri and (selected is None or selected.host != ctx.uri):
                selected = self.model.row_for(min(row.name for row in rows), ctx.uri)
        if selected:
            self.select(selected.name, selected.host)
        self.update_actions()

    # --- live updates -------------------------------------------------------------------------

    def notify(self, title: str, text: str) -> None:
        """A desktop notification (tray balloon where a tray exists) plus the status bar."""
        self.notifications.append((title, text))
        self.statusBar().showMessage(f"{title}: {text}")
        notify_desktop(self, title, text)

    def _on_state_changed(self, uri: str, name: str, value: str, reason: str) -> None:
        state = VMState(value)
        unexpected = (uri, name) not in self.busy and (
            state == VMState.CRASHED or "crashed" in reason
            or (state == VMState.SHUTOFF and "destroyed" in reason))
        if unexpected:  # the user did not ask for it here: tell them
            what = "crashed" if state == VMState.CRASHED or "crashed" in reason else \
                "was powered off by force"
            where = f" on {host_name(uri)}" if len(self.contexts) > 1 else ""
            self.notify(f"{name}{where} {what}", reason)
        if state == VMState.UNDEFINED:
            self.model.remove(uri, name)
            if self.details.shown == name and not self._is_selected(uri, name):
                self.details.show_hint("Select a VM to see its details.")  # it is gone
            if not self.model.rows:  # the last one: the empty window and its button again
                self.list_stack.setCurrentWidget(self.empty)
                self.details.show_hint("Create a VM to see its details here.")
        elif not self.model.update_state(uri, name, state, reason):
            self._reload_hosts.add(uri)  # a VM we did not know: list that host again, once
            self._reload_timer.start()
        if self._is_selected(uri, name):
            self.update_actions()
            self._details_timer.start()  # its details follow its events, never a poll

    def _reload(self) -> None:
        hosts, self._reload_hosts = self._reload_hosts, set()
        for uri in hosts:
            if uri in self.contexts:
                self.load_host(self.contexts[uri])

    def _is_selected(self, uri: str, name: str) -> bool:
        row = self.table.selected_row()
        return row is not None and row.key == (uri, name)

    def _on_setup_changed(self, uri: str, name: str, stage: str) -> None:
        self.model.update_setup(uri, name, stage)
        if self._is_selected(uri, name):
            self._details_timer.start()

    def _on_display_changed(self, uri: str, name: str) -> None:
        if self._is_selected(uri, name):  # the Looking Glass client's state and its log
            self._details_timer.start()

    # --- actions ------------------------------------------------------------------------------

    def selected_name(self) -> str | None:
        return self.table.selected_name()

    def select(self, name: str, host: str | None = None) -> None:
        self.table.select(name, host)

    def update_actions(self) -> None:
        update_actions(self)

    def _run(self, name: str, label: str, call: Callable[[], object]) -> None:
        """An action on ``name`` of the current host on a worker; the VM shows busy until
        it answers."""
        key = (self.uri, name)
        self.busy.add(key)
        self.update_actions()
        self.statusBar().showMessage(f"{label} {name}…")

        def done(result) -> None:
            self.failures.pop(key, None)
            self._finished(key, f"{name}: {getattr(result, 'message', 'done')}")

        def failed(error: BaseException) -> None:  # said in its details until one succeeds
            self.last_error = self.failures[key] = said(error)
            self._finished(key, f"{name}: {self.last_error}")

        self.tasks.run(call, done, failed)

    def _finished(self, key: tuple[str, str], message: str) -> None:
        self.busy.discard(key)
        self.statusBar().showMessage(message)
        self.update_actions()
        self._details_timer.start()

    # --- window state -------------------------------------------------------------------------

    def _restore_geometry(self) -> None:
        """The remembered geometry wins; the first run is sized to the content."""
        geometry = app_settings().value("geometry")
        self._remembered = geometry is not None and self.restoreGeometry(geometry)
        self._fit_first_run()

    def _fit_first_run(self) -> None:
        from .widgets import fit_main_window

        fit_main_window(self, self._remembered, DETAILS_WIDTH)

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt name
        """The details pane moves beside the list, or below it, when the window is made
        wide enough for it, or too narrow (the splitter's sizes stay the user's otherwise)."""
        super().resizeEvent(event)
        if not hasattr(self, "splitter") or not self.isVisible():
            return
        from .widgets import details_fit_beside

        beside = details_fit_beside(self, self.width(), DETAILS_WIDTH)
        if beside != (self.splitter.orientation() == Qt.Horizontal):
            self._remembered = True
            self._fit_first_run()

    def showEvent(self, event) -> None:  # noqa: N802 - Qt name
        super().showEvent(event)
        self.live_view.shown(event)

    def hideEvent(self, event) -> None:  # noqa: N802 - Qt name
        self.live_view.hidden(event)
        super().hideEvent(event)

    def changeEvent(self, event) -> None:  # noqa: N802 - Qt name
        if hasattr(self, "live_view"):  # Qt may tell a change while the window is made
            self.live_view.changed(event)
        super().changeEvent(event)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt name
        if getattr(self, "_closed", False):  # closed twice (a test, a session manager)
            super().closeEvent(event)
            return
        self._closed = True
        for timer in (self.usage_timer, self._details_timer, self._reload_timer):
            timer.stop()
        app_settings().setValue("geometry", self.saveGeometry())
        for ctx in self.contexts.values():  # displays closed, connections released, off the UI
            self.pool.submit(ctx.close)
        self.pool.shutdown(wait=False)
        super().closeEvent(event)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neuron-vm-gui",
                                     description="NeuronOS VM Manager (desktop app)")
    parser.add_argument("-c", "--connect", metavar="URI", help="libvirt URI")
    args, qt_args = parser.parse_known_args(argv)
    app = QApplication.instance() or QApplication([sys.argv[0], *qt_args])
    app.setApplicationName("NeuronOS VM Manager")
    app.setDesktopFileName("neuron-vm-gui")
    from ..base import guard

    guard.forbid_blocking_calls(strict=False)  # a slip onto the UI thread is logged
    window = MainWindow(uri=args.connect)
    window.show()
    quit_on_signals(app, window)  # SIGTERM and SIGHUP close it as its close button does
    return app.exec()


if __name__ == "__main__":
    sys.exit(main())
