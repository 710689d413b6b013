"""Icons of the desktop app: the desktop's icon theme first (``QIcon.fromTheme``, the
freedesktop names), the SVGs bundled in ``icons/`` where the theme lacks one, so the app
looks complete on any desktop (a bare X server, a KDE or GNOME session alike)."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QIcon

FOLDER = Path(__file__).with_name("icons")
# action key -> freedesktop icon name (Icon Naming Specification, or what GNOME/KDE ship)
THEME_NAMES = {
    "start": "media-playback-start", "stop": "system-shutdown", "force_stop": "process-stop",
    "pause": "media-playback-pause", "resume": "media-playback-start",
    "reboot": "system-reboot", "display": "video-display", "console": "utilities-terminal",
    "delete": "edit-delete", "refresh": "view-refresh", "settings": "preferences-system",
    "usb": "drive-removable-media", "snapshots": "camera-photo", "create": "list-add",
    "readiness": "security-high", "vm": "computer",
}
STROKE = "#5f6368"  # the bundled icons' line colour on a light palette
STROKE_DARK = "#c4c7c5"  # ... and on a dark one
_cache: dict[tuple[str, bool], QIcon] = {}


def icon(key: str) -> QIcon:
    """The icon for ``key`` (an action key, or ``vm``): the theme's, else the bundled one,
    drawn in a line colour that reads on the palette now (light or dark)."""
    from .widgets import dark_palette

    dark = dark_palette()
    if (key, dark) not in _cache:
        _cache[key, dark] = QIcon.fromTheme(THEME_NAMES[key], _bundled(key, dark))
    return _cache[key, dark]


def _bundled(key: str, dark: bool) -> QIcon:
    from PySide6.QtCore import QByteArray, Qt
    from PySide6.QtGui import QPainter, QPixmap
    from PySide6.QtSvg import QSvgRenderer

    svg = (FOLDER / f"{key}.svg").read_bytes()
    if dark:
        svg = svg.replace(STROKE.encode(), STROKE_DARK.encode())
    renderer = QSvgRenderer(QByteArray(svg))
    result = QIcon()
    for size in (16, 24, 32, 48, 64):
        pixmap = QPixmap(size, size)
        pixmap.fill(Qt.transparent)
        painter = QPainter(pixmap)
        renderer.render(painter)
        painter.end()
        result.addPixmap(pixmap)
    return result
