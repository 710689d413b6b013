"""Reusable pieces of the desktop app: the systems' icons and the state colours, the
daemon-down banner, the bridge that carries library callbacks (libvirt's event thread) into
the Qt thread, and ``Tasks``, which runs actions off the Qt thread and hands their results
back to it. The VM list itself is ``vm_list``."""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPixmap
from PySide6.QtWidgets import (QHBoxLayout, QLabel, QLineEdit, QListWidgetItem, QPushButton,
                               QWidget, QWizard, QWizardPage)

from ..base.primitives import VMState

OS_LABELS = {"windows11": "Windows 11", "windows10": "Windows 10", "linux": "Linux",
             "macos": "macOS", None: "Other"}
OS_COLORS = {"windows11": "#0078d4", "windows10": "#00a4ef", "linux": "#f4b400",
             "macos": "#8e8e93", None: "#b0bec5"}
_icons: dict = {}


# the system's logo where the desktop's icon theme has one (Papirus, Breeze and others ship
# these distributor logos); else a badge in the system's colour, drawn (needs no theme)
OS_THEME_NAMES = {"windows11": "distributor-logo-windows", "windows10": "distributor-logo-windows",
                  "linux": "distributor-logo-linux", "macos": "distributor-logo-apple"}


def os_icon(vm_type: str | None) -> QIcon:
    """The system's icon: the theme's logo, or a small badge in the system's colour."""
    if vm_type not in _icons:
        themed = QIcon.fromTheme(OS_THEME_NAMES.get(vm_type, ""))
        if not themed.isNull():
            _icons[vm_type] = themed
            return themed
        pixmap = QPixmap(14, 14)
        pixmap.fill(QColor(0, 0, 0, 0))
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.setBrush(QColor(OS_COLORS.get(vm_type, OS_COLORS[None])))
        painter.setPen(QColor(0, 0, 0, 0))
        painter.drawRoundedRect(1, 1, 12, 12, 3, 3)
        painter.end()
        _icons[vm_type] = QIcon(pixmap)
    return _icons[vm_type]


STATE_COLORS = {
    VMState.RUNNING: "#2e7d32", VMState.PAUSED: "#f9a825", VMState.SHUTOFF: "#616161",
    VMState.CRASHED: "#c62828", VMState.ERROR: "#c62828",
}
# the same meaning on a dark palette (the desktop's dark mode): lighter, still readable
STATE_COLORS_DARK = {
    VMState.RUNNING: "#81c784", VMState.PAUSED: "#ffd54f", VMState.SHUTOFF: "#bdbdbd",
    VMState.CRASHED: "#ef9a9a", VMState.ERROR: "#ef9a9a",
}
ERROR_COLOR = {False: "#b71c1c", True: "#ef9a9a"}


def dark_palette(palette: QPalette | None = None) -> bool:
    """Whether the desktop's palette (the app's, unless given) is a dark one."""
    from PySide6.QtWidgets import QApplication

    palette = palette or QApplication.palette()
    return palette.color(QPalette.Window).lightness() < 128


def app_settings():
    """The app's own settings (window size, remembered hosts): ``gui.conf`` in NeuronOS's
    settings folder, so ``$NEURONOS_CONFIG_DIR`` keeps a second profile (or a test) apart
    from the user's."""
    from PySide6.QtCore import QSettings

    from ..actions.context import settings_folder

    return QSettings(str(settings_folder() / "gui.conf"), QSettings.IniFormat)


def ask(parent, title: str, text: str) -> bool:
    """Yes or No, with No the default: Enter never confirms what cannot be undone (a
    revert, a forced stop)."""
    from PySide6.QtWidgets import QMessageBox

    return QMessageBox.question(parent, title, text, QMessageBox.Yes | QMessageBox.No,
                                QMessageBox.No) == QMessageBox.Yes


def error_label(text: str = "") -> QLabel:
    """A wrapping label for a refusal, red on a light palette, light red on a dark one."""
    label = QLabel(text)
    label.setStyleSheet(f"color: {ERROR_COLOR[dark_palette()]}")
    label.setWordWrap(True)
    return label


class Tasks(QObject):
    """Runs work (an action: libvirt, sysfs, programs) on a thread pool and calls ``done``
    with its result, or ``failed`` with its exception, on the Qt thread. The Qt thread
    itself never waits on the library."""

    _finished = Signal(object, object)  # the callback to run on the Qt thread, its argument

    def __init__(self, pool: Executor | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.pool = pool or ThreadPoolExecutor(max_workers=2, thread_name_prefix="neuron-gui")
        self._finished.connect(self._deliver)
        from .gc_guard import collect_garbage_on_the_ui_thread

        collect_garbage_on_the_ui_thread()

    def run(self, work: Callable[[], Any], done: Callable[[Any], None] | None = None,
            failed: Callable[[BaseException], None] | None = None) -> None:
        def job() -> None:
            try:
                value = work()
            except Exception as error:  # noqa: BLE001 - handed to ``failed`` on the Qt thread
                self._finished.emit(failed or _log_failure, error)
                return
            if done is not None:
                self._finished.emit(done, value)

        try:
            self.pool.submit(job)
        except RuntimeError:  # the window closed: a late event's work has no one to show it
            from ..base.log import get_logger

            get_logger(__name__).debug("dropped a task: the window is closed")

    @staticmethod
    def _deliver(callback: Callable[[Any], None], value: Any) -> None:
        callback(value)


def _log_failure(error: BaseException) -> None:
    from ..base.log import get_logger

    get_logger(__name__).error("background task failed: %s", error)


class EventBridge(QObject):
    """Signals emitted from any thread, delivered in the GUI thread (queued)."""

    # every signal names the host (its libvirt URI) first: the window lists several
    state_changed = Signal(str, str, str, str)  # host, name, new state value, reason
    connection_changed = Signal(str, str, str)  # host, "disconnected"/"reconnected", reason
    inventory_ready = Signal(object)  # (Context, list[VMRow])
    inventory_failed = Signal(object)  # (Context, message)
    setup_changed = Signal(str, str, str)  # host, name, the stage its setup reached
    display_changed = Signal(str, str)  # host, name: its Looking Glass window changed state


def notify_desktop(window: QWidget, title: str, text: str) -> None:
    """A tray balloon, where the desktop has a tray (the window keeps one icon for it)."""
    from PySide6.QtWidgets import QSystemTrayIcon

    if not QSystemTrayIcon.isSystemTrayAvailable():
        return
    tray = getattr(window, "_tray", None)
    if tray is None:
        tray = window._tray = QSystemTrayIcon(window.windowIcon(), window)
        tray.show()
    tray.showMessage(title, text, QSystemTrayIcon.Warning)


def screen_room(widget: QWidget, share: float = 0.9) -> tuple[int, int]:
    """The width and height a window may take on the screen it is on."""
    from PySide6.QtGui import QGuiApplication

    screen = widget.screen() or QGuiApplication.primaryScreen()
    available = screen.availableGeometry()
    return int(available.width() * share), int(available.height() * share)


def fit_to_screen(widget: QWidget, width: int, height: int) -> None:
    """Resize to ``width`` x ``height``, never beyond the screen."""
    room_width, room_height = screen_room(widget)
    widget.resize(min(width, room_width), min(height, room_height))


def fit_list(widget, rows: int = 3, max_rows: int = 10) -> None:
    """A list wide enough for its longest row and tall enough for its rows (3 to 10)."""
    metrics = widget.fontMetrics()
    texts = [widget.item(i).text() for i in range(widget.count())]
    width = max((metrics.horizontalAdvance(text) for text in texts), default=200) + 60
    shown = min(max(len(texts), rows), max_rows)
    widget.setMinimumSize(min(width, screen_room(widget)[0] - 40),
                          shown * (metrics.height() + 8) + 2 * widget.frameWidth())


def check_item(text: str, data, checked: bool) -> QListWidgetItem:
    """A list row with a tick box, carrying ``data``."""
    item = QListWidgetItem(text)
    item.setData(Qt.UserRole, data)
    item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
    item.setCheckState(Qt.Checked if checked else Qt.Unchecked)
    return item


class Banner(QWidget):
    """A strip across the window: "libvirt is not reachable ... [Retry]"."""

    retry = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("banner")
        self.setAccessibleName("Connection problem")
        self.recolour()
        self.setAutoFillBackground(True)
        layout = QHBoxLayout(self)
        self.label = QLabel()
        self.label.setWordWrap(True)
        self.button = QPushButton("Retry")
        self.button.clicked.connect(self.retry.emit)
        layout.addWidget(self.label, 1)
        layout.addWidget(self.button)
        self.hide()

    def recolour(self) -> None:
        """Colours for the palette now (the window calls it when the desktop's changes: a
        widget with a style sheet is not told itself)."""
        background, text = ("#4a1c1c", "#ffcdd2") if dark_palette() else ("#fdecea", "#b71c1c")
        self.setStyleSheet(f"#banner {{ background: {background}; }} QLabel {{ color: {text}; }}")

    def show_message(self, text: str) -> None:
        self.label.setText(text)
        self.show()


def details_fit_beside(window, width: int, details_width: int) -> bool:
    """Whether a main window ``width`` wide shows the details pane beside the list with
    every column in view (else below it)."""
    return window.table.natural_width() + 8 + details_width + 24 <= width


def fit_main_window(window, remembered: bool, details_width: int) -> None:
    """The main window's list, toolbar and details pane sized to their content: every
    column, the whole toolbar and several rows in view (never past the screen); the details
    pane beside the list where that leaves room, else below it. ``remembered``: the window
    has the size the user gave it, only its inside is laid out."""
    table = window.table.natural_width() + 8  # the splitter's handle and rounding
    room = window.width() if remembered else screen_room(window)[0]
    beside = details_fit_beside(window, room, details_width)
    window.splitter.setOrientation(Qt.Horizontal if beside else Qt.Vertical)
    if not remembered:
        width = max(table + (details_width if beside else 0),
                    window.toolbar.sizeHint().width()) + 24
        height = (window.table.height_for_rows(8) + window.toolbar.sizeHint().height()
                  + window.statusBar().sizeHint().height() + 24 + (0 if beside else 220))
        fit_to_screen(window, width, height)
    window.centralWidget().layout().activate()  # the splitter's own size, now
    if beside:
        total = window.splitter.width()
        window.splitter.setSizes([table, max(total - table, details_width)])
    else:
        total, rows = window.splitter.height(), window.table.height_for_rows(8) + 8
        window.splitter.setSizes([rows, max(total - rows, 1)])


class CheckedPage(QWizardPage):
    """A page whose fields are checked as they change by building the config. It shows,
    and is held back by, the errors of its own ``fields`` (config field names, or their
    first part) and of the pages before it, never of a later page: a later page's empty
    password never blocks the first page."""

    wizard_: QWizard  # the create wizard: build_config(), error_text, error_field, checked
    error: QLabel
    fields: tuple[str, ...] = ()
    bad: dict = {}  # field -> the widget to mark when that field is refused

    def claims(self, field: str | None) -> bool:
        return field is not None and any(field == mine or field.startswith(f"{mine}.")
                                         for mine in self.fields)

    def owns(self, field: str | None) -> bool:
        pages = self.wizard_.checked
        later = pages[pages.index(self) + 1:] if self in pages else []
        return not any(page.claims(field) for page in later)

    def _changed(self, *_args) -> None:
        self.wizard_.build_config()
        field = self.wizard_.error_field
        mine = self.wizard_.error_text and self.owns(field)
        self.error.setText(self.wizard_.error_text if mine else "")
        for name, widget in self.bad.items():  # the refused field, marked
            widget.setStyleSheet(f"border: 1px solid {ERROR_COLOR[dark_palette()]}"
                                 if mine and name == field else "")
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802 - Qt name
        return self.wizard_.build_config() is not None or \
            not self.owns(self.wizard_.error_field)


def with_browse(field: QLineEdit, filter_text: str | None) -> QWidget:
    """A path field with a Browse… button (a file picker; a folder picker without a
    filter)."""
    from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QToolButton

    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    button = QToolButton()
    button.setText("Browse…")

    def pick() -> None:
        if filter_text is None:
            path = QFileDialog.getExistingDirectory(box, "Choose a folder", field.text())
        else:
            path, _ = QFileDialog.getOpenFileName(box, "Choose a file", field.text(),
                                                  filter_text)
        if path:
            field.setText(path)

    button.clicked.connect(pick)
    row.addWidget(field, 1)
    row.addWidget(button)
    return box


def quit_on_signals(app, window) -> None:
    """SIGTERM, SIGHUP and SIGINT close the window as its close button does (the Looking
    Glass clients and connections it opened are closed with it), then the app quits. Python
    runs signal handlers only between Qt events: a timer gives it a chance twice a second."""
    import signal

    from PySide6.QtCore import QTimer

    def close(_signum, _frame) -> None:
        window.close()
        app.quit()

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, close)
    ticker = QTimer(window)
    ticker.timeout.connect(lambda: None)
    ticker.start(500)
