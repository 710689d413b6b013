"""The VM list of the main window: one row per VM of every host the window manages (a row
is known by its host's libvirt URI and its name: two hosts may each have a "win"), the
table that shows them, and the CPU column's graph. The Host column shows only while the
window manages more than one host."""

from __future__ import annotations

from dataclasses import dataclass

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QObject, QPointF, Qt
from PySide6.QtGui import QColor, QPainter, QPalette, QPen, QPolygonF
from PySide6.QtWidgets import (QAbstractItemView, QHeaderView, QStyledItemDelegate,
                               QTableView, QWidget)

from ..base.primitives import VMState, host_name, is_remote
from .widgets import OS_LABELS, STATE_COLORS, STATE_COLORS_DARK, dark_palette, os_icon


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
    host: str = ""  # the libvirt URI of the host it is on

    @property
    def key(self) -> tuple[str, str]:
        return self.host, self.name


def host_text(uri: str) -> str:
    """The Host column: the remote computer's name, "this computer" for the system
    daemon here, else the URI itself (qemu:///session, test:///…: both are this computer)."""
    if is_remote(uri):
        return host_name(uri)
    return "this computer" if uri.rstrip("/") in ("qemu:///system", "qemu+unix:///system") \
        else uri


HISTORY_ROLE = Qt.UserRole + 1  # the CPU column: the last minute of CPU %, oldest first


def _size(kib: int) -> str:
    return f"{kib / 1048576:.1f} GiB" if kib >= 1048576 else f"{kib // 1024} MiB"


class VMTableModel(QAbstractTableModel):
    COLUMNS = ("Name", "Host", "System", "State", "CPU", "Memory", "vCPUs", "GPU", "Setup")
    USAGE = (COLUMNS.index("CPU"), COLUMNS.index("Memory"))  # live while the VM runs
    HOST = COLUMNS.index("Host")

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self.rows: list[VMRow] = []
        self._index: dict[tuple[str, str], int] = {}
        self.usage: dict = {}  # host -> core.usage.UsageView: its running VMs only

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
        column = self.COLUMNS[index.column()]
        if index.column() in self.USAGE:
            used = self._usage(row, index.column(), role)
            if used is not None or column == "CPU" or role != Qt.DisplayRole:
                return used
        if role == Qt.DisplayRole:
            return {
                "Name": row.name, "Host": host_text(row.host),
                "System": OS_LABELS.get(row.vm_type, row.vm_type or "Other"),
                "State": row.state.label, "Memory": _size(row.memory_mb * 1024),
                "vCPUs": str(row.vcpus), "Setup": row.setup,
                "GPU": (f"{row.gpu_name or row.gpu}"
                        f"{' + Looking Glass' if row.looking_glass else ''}" if row.gpu else ""),
            }.get(column, "")
        if role == Qt.DecorationRole and column == "System":
            return os_icon(row.vm_type)
        if role == Qt.ForegroundRole and column == "State":
            color = (STATE_COLORS_DARK if dark_palette() else STATE_COLORS).get(row.state)
            return QColor(color) if color else None
        if role == Qt.ToolTipRole:
            if column == "State" and row.reason:
                return row.reason
            if column == "GPU" and row.gpu:
                return f"{row.gpu_name or 'GPU'} at {row.gpu}"
            if column == "Host":
                return row.host.split("?", 1)[0]
        if role == Qt.UserRole:
            return row
        return None

    def _usage(self, row: VMRow, column: int, role):
        """CPU % (and its graph) and memory in use; nothing at all for a stopped VM."""
        view = self.usage.get(row.host)
        point = view.latest(row.name) if view else None
        if point is None:
            return None
        if role == HISTORY_ROLE and column == self.USAGE[0]:
            return [p.cpu_percent for p in view.points[row.name]]
        if role == Qt.DisplayRole:
            if column == self.USAGE[0]:
                if point.cpu_percent is None:  # the first sample; or no figure at all
                    return "…" if len(view.points[row.name]) < 2 else None
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

    def update_usage(self, host: str, view) -> None:
        """A new usage sample of ``host`` (None: none): repaint the two usage columns."""
        if view is None:
            self.usage.pop(host, None)
        else:
            self.usage[host] = view
        if self.rows:
            self.dataChanged.emit(self.index(0, self.USAGE[0]),
                                  self.index(len(self.rows) - 1, self.USAGE[1]))

    def reset_host(self, host: str, rows: list[VMRow]) -> None:
        """The VMs of ``host`` are now ``rows`` (the other hosts' rows stay)."""
        for row in rows:
            row.host = host
        kept = [row for row in self.rows if row.host != host]
        self.beginResetModel()
        self.rows = sorted(kept + rows, key=lambda r: (r.name, r.host))
        self._index = {row.key: i for i, row in enumerate(self.rows)}
        self.endResetModel()

    def hosts(self) -> set[str]:
        return {row.host for row in self.rows}

    def update_state(self, host: str, name: str, state: VMState, reason: str) -> bool:
        """Change one row in place (one dataChanged, no reset); False if unknown."""
        position = self._index.get((host, name))
        if position is None:
            return False
        row = self.rows[position]
        row.state, row.reason = state, reason
        self.dataChanged.emit(self.index(position, 0), self.index(position, len(self.COLUMNS) - 1))
        return True

    def update_setup(self, host: str, name: str, stage: str) -> bool:
        """An unattended setup reached ``stage`` (from the tracker's events)."""
        position = self._index.get((host, name))
        if position is None:
            return False
        self.rows[position].setup = stage
        column = self.COLUMNS.index("Setup")
        self.dataChanged.emit(self.index(position, column), self.index(position, column))
        return True

    def remove(self, host: str, name: str) -> None:
        position = self._index.get((host, name))
        if position is None:
            return
        self.beginRemoveRows(QModelIndex(), position, position)
        del self.rows[position]
        self.endRemoveRows()
        self._index = {row.key: i for i, row in enumerate(self.rows)}

    def position(self, name: str, host: str | None = None) -> int | None:
        """The row of ``name`` on ``host`` (any host: the first one listed)."""
        if host is not None:
            return self._index.get((host, name))
        return next((i for i, row in enumerate(self.rows) if row.name == name), None)

    def row_for(self, name: str, host: str | None = None) -> VMRow | None:
        position = self.position(name, host)
        return self.rows[position] if position is not None else None


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
        self.setColumnHidden(model.HOST, True)  # until a second host is added
        self.setAccessibleName("Virtual machines")

    def natural_width(self) -> int:
        """Every column shown at the width its header and its rows need, with the frame and
        room for a vertical scroll bar (the last column stretches beyond this)."""
        header = self.horizontalHeader()
        shown = [i for i in range(header.count()) if not self.isColumnHidden(i)]
        stretched = shown[-1] if shown and header.stretchLastSection() else None
        # the stretched column's width is the window's doing (counted, a window restored
        # wide never fitted its details pane beside the list again); it keeps at least the
        # header's default section size when the view is narrower
        columns = sum(max(header.sectionSizeHint(i), self.sizeHintForColumn(i),
                          header.defaultSectionSize() if i == stretched
                          else self.columnWidth(i)) for i in shown)
        return columns + 2 * self.frameWidth() + self.verticalScrollBar().sizeHint().width()

    def height_for_rows(self, rows: int) -> int:
        header = self.horizontalHeader()
        return (header.sizeHint().height() + rows * self.verticalHeader().defaultSectionSize()
                + 2 * self.frameWidth())

    def selected_row(self) -> VMRow | None:
        rows = self.selectionModel().selectedRows()
        return self.model().rows[rows[0].row()] if rows else None

    def selected_name(self) -> str | None:
        row = self.selected_row()
        return row.name if row else None

    def select(self, name: str, host: str | None = None) -> None:
        row = self.model().position(name, host)
        if row is not None:
            self.selectRow(row)
