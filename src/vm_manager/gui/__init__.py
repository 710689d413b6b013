"""The desktop app (PySide6). Nothing here talks to libvirt: it uses the library."""
