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
_cache: dict[str, QIcon] = {}


def icon(key: str) -> QIcon:
    """The icon for ``key`` (an action key, or ``vm``): the theme's, else the bundled one."""
    if key not in _cache:
        fallback = QIcon(str(FOLDER / f"{key}.svg"))
        _cache[key] = QIcon.fromTheme(THEME_NAMES[key], fallback)
    return _cache[key]
