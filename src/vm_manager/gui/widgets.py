"""Reusable pieces of the desktop app: the VM table model, the daemon-down banner, the
bridge that carries library callbacks (libvirt's event thread) into the Qt thread, and
``Tasks``, which runs actions off the Qt thread and hands their results back to it."""

from __future__ import annotations

from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPointF, Qt, Signal
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QListWidgetItem,
    QPushButton,
    QStyledItemDelegate,
    QTableView,
    QWidget,
)

from ..core.primitives import VMState

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


def error_label(text: str = "") -> QLabel:
    """A wrapping label for a refusal, red on a light palette, light red on a dark one."""
    label = QLabel(text)
    label.setStyleSheet(f"color: {ERROR_COLOR[dark_palette()]}")
    label.setWordWrap(True)
    return label


@dataclass
class VMRow:
    name: str
    state: VMState
    vcpus: int
    memory_mb: int
    vm_type: str | None = None
    gpu: str | None = None  # PCI address when a GPU is passed through
    gpu_name: str | None = None  # its pci.ids name, where this host has the card
    looking_glass: bool = False
    reason: str = ""
    setup: str = ""  # the stage of an unattended setup ("" for none)


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
            from ..core.log import get_logger

            get_logger(__name__).debug("dropped a task: the window is closed")

    @staticmethod
    def _deliver(callback: Callable[[Any], None], value: Any) -> None:
        callback(value)


def _log_failure(error: BaseException) -> None:
    from ..core.log import get_logger

    get_logger(__name__).error("background task failed: %s", error)


class EventBridge(QObject):
    """Signals emitted from any thread, delivered in the GUI thread (queued)."""

    state_changed = Signal(str, str, str)  # name, new state value, reason
    connection_changed = Signal(str, str)  # "disconnected"/"reconnected", reason
    inventory_ready = Signal(object)  # list[VMRow]
    inventory_failed = Signal(str)
    setup_changed = Signal(str, str)  # name, the stage its unattended setup reached
    display_changed = Signal(str)  # name: its Looking Glass window changed state


HISTORY_ROLE = Qt.UserRole + 1  # the CPU column: the last minute of CPU %, oldest first


def _size(kib: int) -> str:
    return f"{kib / 1048576:.1f} GiB" if kib >= 1048576 else f"{kib // 1024} MiB"


class VMTableModel(QAbstractTableModel):
    COLUMNS = ("Name", "System", "State", "CPU", "Memory", "vCPUs", "GPU", "Setup")
    USAGE = (COLUMNS.index("CPU"), COLUMNS.index("Memory"))  # live while the VM runs

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.rows: list[VMRow] = []
        self._index: dict[str, int] = {}
        self.usage = None  # core.usage.UsageView: running VMs only

    # --- Qt model API ---------------------------------------------------------------------

    def rowCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802 - Qt name
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent: QModelIndex = QModelIndex()) -> int:  # noqa: N802
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section, orientation, role=Qt.DisplayRole):  # noqa: N802
        if role == Qt.DisplayRole and orientation == Qt.Horizontal:
            return self.COLUMNS[section]
        return None

    def data(self, index: QModelIndex, role=Qt.DisplayRole):
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        column = index.column()
        if column in self.USAGE:
            used = self._usage(row, column, role)
            if used is not None or column == self.USAGE[0] or role != Qt.DisplayRole:
                return used
        if role == Qt.DisplayRole:
            return (
                row.name,
                OS_LABELS.get(row.vm_type, row.vm_type or "Other"),
                row.state.label,
                "",
                _size(row.memory_mb * 1024),
                str(row.vcpus),
                (f"{row.gpu_name or row.gpu}{' + Looking Glass' if row.looking_glass else ''}"
                 if row.gpu else ""),
                row.setup,
            )[column]
        if role == Qt.DecorationRole and column == 1:
            return os_icon(row.vm_type)
        if role == Qt.ForegroundRole and column == 2:
            color = (STATE_COLORS_DARK if dark_palette() else STATE_COLORS).get(row.state)
            return QColor(color) if color else None
        if role == Qt.ToolTipRole and column == 2 and row.reason:
            return row.reason
        if role == Qt.ToolTipRole and column == self.COLUMNS.index("GPU") and row.gpu:
            return f"{row.gpu_name or 'GPU'} at {row.gpu}"
        if role == Qt.UserRole:
            return row
        return None

    def _usage(self, row: VMRow, column: int, role):
        """CPU % (and its graph) and memory in use; nothing at all for a stopped VM."""
        point = self.usage.latest(row.name) if self.usage else None
        if point is None:
            return None
        if role == HISTORY_ROLE and column == self.USAGE[0]:
            return [p.cpu_percent for p in self.usage.points[row.name]]
        if role == Qt.DisplayRole:
            if column == self.USAGE[0]:
                if point.cpu_percent is None:  # the first sample; or no figure at all
                    return "…" if len(self.usage.points[row.name]) < 2 else None
                return f"{point.cpu_percent:.0f} %"
            if not point.memory_used_kib:
                return None
            used, total = point.memory_used_kib / 1048576, row.memory_mb / 1024
            return f"{used:.1f} / {total:.1f} GiB"
        if role == Qt.ToolTipRole:
            return ("CPU use of the VM's vCPUs (100 % = all of them busy), the last minute"
                    if column == self.USAGE[0] else "memory in use (the guest's own figure"
                    " where its balloon driver reports one, else what QEMU holds)")
        return None

    # --- updates ----------------------------------------------------------------------------

    def update_usage(self, view) -> None:
        """A new usage sample: repaint the two usage columns (one signal for all rows)."""
        self.usage = view
        if self.rows:
            self.dataChanged.emit(self.index(0, self.USAGE[0]),
                                  self.index(len(self.rows) - 1, self.USAGE[1]))

    def reset_rows(self, rows: list[VMRow]) -> None:
        self.beginResetModel()
        self.rows = sorted(rows, key=lambda r: r.name)
        self._index = {row.name: i for i, row in enumerate(self.rows)}
        self.endResetModel()

    def update_state(self, name: str, state: VMState, reason: str) -> bool:
        """Change one row in place (one dataChanged, no reset); False if unknown."""
        position = self._index.get(name)
        if position is None:
            return False
        row = self.rows[position]
        row.state, row.reason = state, reason
        self.dataChanged.emit(self.index(position, 0), self.index(position, len(self.COLUMNS) - 1))
        return True

    def update_setup(self, name: str, stage: str) -> bool:
        """An unattended setup reached ``stage`` (from the tracker's events)."""
        position = self._index.get(name)
        if position is None:
            return False
        self.rows[position].setup = stage
        column = self.COLUMNS.index("Setup")
        self.dataChanged.emit(self.index(position, column), self.index(position, column))
        return True

    def remove(self, name: str) -> None:
        position = self._index.get(name)
        if position is None:
            return
        self.beginRemoveRows(QModelIndex(), position, position)
        del self.rows[position]
        self.endRemoveRows()
        self._index = {row.name: i for i, row in enumerate(self.rows)}

    def position(self, name: str) -> int | None:
        return self._index.get(name)

    def row_for(self, name: str) -> VMRow | None:
        position = self._index.get(name)
        return self.rows[position] if position is not None else None


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


class SparklineDelegate(QStyledItemDelegate):
    """The CPU column: the last minute as a small line behind the figure."""

    def paint(self, painter: QPainter, option, index) -> None:
        super().paint(painter, option, index)  # the background and the figure, then the line
        values = index.data(HISTORY_ROLE)
        if values:
            rect = option.rect.adjusted(2, 3, -2, -3)
            known = [(i, v) for i, v in enumerate(values) if v is not None]
            if len(known) > 1:
                step = rect.width() / 59
                left = rect.right() - step * (len(values) - 1)
                line = QPolygonF([QPointF(left + i * step,
                                          rect.bottom() - rect.height() * v / 100.0)
                                  for i, v in known])
                painter.save()
                painter.setRenderHint(QPainter.Antialiasing)
                from PySide6.QtWidgets import QStyle

                selected = bool(option.state & QStyle.State_Selected)
                color = option.palette.color(QPalette.HighlightedText if selected
                                             else QPalette.Highlight)
                painter.setPen(QPen(color, 1.5))
                painter.drawPolyline(line)
                painter.restore()


class VMTable(QTableView):
    """The VM list: whole rows, one at a time, actions in the context menu."""

    def __init__(self, model: VMTableModel, parent: QWidget | None = None):
        super().__init__(parent)
        self.setModel(model)
        self.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.setSelectionMode(QAbstractItemView.SingleSelection)
        self.verticalHeader().hide()
        # Fixed row heights and columns sized once per listing, from the first rows: a
        # ResizeToContents header re-measures every row on every state change (~300 ms
        # with 500 VMs), which is exactly what must stay instant.
        self.verticalHeader().setSectionResizeMode(QHeaderView.Fixed)
        header = self.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.Interactive)
        header.setResizeContentsPrecision(50)
        header.setStretchLastSection(True)
        self.setContextMenuPolicy(Qt.ActionsContextMenu)
        self.setItemDelegateForColumn(model.USAGE[0], SparklineDelegate(self))
        self.setAccessibleName("Virtual machines")

    def natural_width(self) -> int:
        """Every column at the width its header and its rows need, with the frame and room
        for a vertical scroll bar (the last column stretches beyond this)."""
        header = self.horizontalHeader()
        columns = sum(max(header.sectionSizeHint(i), self.sizeHintForColumn(i),
                          self.columnWidth(i)) for i in range(header.count()))
        return columns + 2 * self.frameWidth() + self.verticalScrollBar().sizeHint().width()

    def height_for_rows(self, rows: int) -> int:
        header = self.horizontalHeader()
        return (header.sizeHint().height() + rows * self.verticalHeader().defaultSectionSize()
                + 2 * self.frameWidth())

    def selected_name(self) -> str | None:
        rows = self.selectionModel().selectedRows()
        return self.model().rows[rows[0].row()].name if rows else None

    def select(self, name: str) -> None:
        row = self.model().position(name)
        if row is not None:
            self.selectRow(row)


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
