"""The system libraries the desktop app's Qt platform plugins need, and which are missing.

PySide6's wheels carry Qt but not the X11/Wayland client libraries its platform plugins link
against; without them ``neuron-vm-gui`` aborts with "Could not load the Qt platform plugin
xcb". The table below was derived with ``ldd`` on the pinned PySide6 (6.11):
``plugins/platforms/libqxcb.so`` and ``libqwayland.so``, ``lib/libQt6XcbQpa.so.6`` and
``lib/libQt6WaylandClient.so.6`` and the xcb-gl / wayland integration plugins, each library
mapped to its Debian package with ``dpkg -S`` (and its Arch package), plus
``libxcb-cursor.so.0``, which Qt 6.5+ loads at run time instead of linking.

``scripts/setup-host.sh`` installs ``python3 qt_libraries.py debian``'s list (this file is
the one place that knows it); ``neuron-vm doctor`` reports what ``ldd`` cannot find.
"""

from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

# soname -> (Debian/Ubuntu package, Arch package)
SONAME_PACKAGES = {
    "libxcb.so.1": ("libxcb1", "libxcb"),
    "libX11.so.6": ("libx11-6", "libx11"),
    "libX11-xcb.so.1": ("libx11-xcb1", "libx11"),
    "libxcb-cursor.so.0": ("libxcb-cursor0", "xcb-util-cursor"),
    "libxcb-icccm.so.4": ("libxcb-icccm4", "xcb-util-wm"),
    "libxcb-image.so.0": ("libxcb-image0", "xcb-util-image"),
    "libxcb-keysyms.so.1": ("libxcb-keysyms1", "xcb-util-keysyms"),
    "libxcb-randr.so.0": ("libxcb-randr0", "libxcb"),
    "libxcb-render.so.0": ("libxcb-render0", "libxcb"),
    "libxcb-render-util.so.0": ("libxcb-render-util0", "xcb-util-renderutil"),
    "libxcb-shape.so.0": ("libxcb-shape0", "libxcb"),
    "libxcb-shm.so.0": ("libxcb-shm0", "libxcb"),
    "libxcb-sync.so.1": ("libxcb-sync1", "libxcb"),
    "libxcb-util.so.1": ("libxcb-util1", "xcb-util"),
    "libxcb-xfixes.so.0": ("libxcb-xfixes0", "libxcb"),
    "libxcb-xkb.so.1": ("libxcb-xkb1", "libxcb"),
    "libxcb-glx.so.0": ("libxcb-glx0", "libxcb"),
    "libxkbcommon.so.0": ("libxkbcommon0", "libxkbcommon"),
    "libxkbcommon-x11.so.0": ("libxkbcommon-x11-0", "libxkbcommon-x11"),
    "libwayland-client.so.0": ("libwayland-client0", "wayland"),
    "libwayland-cursor.so.0": ("libwayland-cursor0", "wayland"),
    "libwayland-egl.so.1": ("libwayland-egl1", "wayland"),
    "libGL.so.1": ("libgl1", "libglvnd"),
    "libEGL.so.1": ("libegl1", "libglvnd"),
    "libfontconfig.so.1": ("libfontconfig1", "fontconfig"),
    "libfreetype.so.6": ("libfreetype6", "freetype2"),
    "libdbus-1.so.3": ("libdbus-1-3", "dbus"),
}
EXTRA_PACKAGES = (("fonts-dejavu-core", "ttf-dejavu"),)  # Qt draws no text without a font
LOADED_AT_RUN_TIME = ("libxcb-cursor.so.0",)  # dlopen()ed by the xcb plugin, not linked
PLUGIN_FILES = ("plugins/platforms/libqxcb.so", "plugins/platforms/libqwayland.so",
                "lib/libQt6XcbQpa.so.6", "lib/libQt6WaylandClient.so.6")


def packages(distribution: str = "debian") -> list[str]:
    column = 0 if distribution == "debian" else 1
    names = [pair[column] for pair in (*SONAME_PACKAGES.values(), *EXTRA_PACKAGES)]
    return sorted(set(names), key=names.index)


def qt_dir() -> Path | None:
    """PySide6's Qt folder in this Python, found without importing PySide6."""
    import importlib.util

    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "Qt"


def missing_libraries(qt: Path, ldd: str = "ldd") -> list[str]:
    """Sonames the platform plugins under ``qt`` need and the dynamic loader cannot find."""
    missing: list[str] = []
    for relative in PLUGIN_FILES:
        path = qt / relative
        if not path.exists():
            continue
        result = subprocess.run([ldd, str(path)], capture_output=True, text=True, check=False)
        for line in result.stdout.splitlines():
            name, _, where = line.strip().partition(" => ")
            if where.strip() == "not found" and name not in missing:
                missing.append(name)
    for soname in LOADED_AT_RUN_TIME:
        stem = soname[3:].split(".so")[0]  # libxcb-cursor.so.0 -> xcb-cursor
        if ctypes.util.find_library(stem) is None and soname not in missing:
            missing.append(soname)
    return missing


def install_hint(sonames: list[str]) -> str:
    debian = sorted({SONAME_PACKAGES.get(name, (f"<the package of {name}>",))[0]
                     for name in sonames})
    arch = sorted({SONAME_PACKAGES[name][1] for name in sonames if name in SONAME_PACKAGES})
    hint = f"sudo apt install {' '.join(debian)} (Debian/Ubuntu)"
    if arch:
        hint += f"; sudo pacman -S {' '.join(arch)} (Arch)"
    return hint


if __name__ == "__main__":  # setup-host.sh: python3 qt_libraries.py debian|arch
    print("\n".join(packages(sys.argv[1] if len(sys.argv) > 1 else "debian")))
