"""What holds a host's display, as files shaped like the real ones (issue 32): the
display-manager.service alias, /sys/class/vtconsole, the firmware framebuffer's platform
device and driver, /sys/module. The facts and their sources are in
src/vm_manager/passthrough/display_host.py; each writer says where its shape comes from."""

from __future__ import annotations

import os
from pathlib import Path

DUMMY = "(S) dummy device"  # drivers/video/console/dummycon.c, a system driver
FBCON = "(M) frame buffer device"  # drivers/video/fbdev/core/fbcon.c, registered as modular


def display_tree(root: Path, *, manager: str | None, consoles: list[tuple[str, bool]],
                 framebuffer: tuple[str, str | None] | None = None,
                 modules: tuple[str, ...] = (), systemd: bool = True) -> Path:
    """``manager``: the unit display-manager.service links to, as a path ("/lib/systemd/
    system/gdm3.service", Debian's link); ``consoles``: (name, bound) of vtcon0, vtcon1...;
    ``framebuffer``: (platform device, its driver or None) still there; ``modules``: loaded;
    ``systemd``: systemd is the init system (it makes /run/systemd/system at boot:
    sd_booted(3))."""
    root = Path(root)
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True, exist_ok=True)
    if manager:
        units = root / "etc/systemd/system"
        units.mkdir(parents=True, exist_ok=True)
        (units / "display-manager.service").symlink_to(manager)  # absolute, as systemctl
    for index, (name, bound) in enumerate(consoles):
        folder = root / f"sys/devices/virtual/vtconsole/vtcon{index}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "name").write_text(name + "\n")  # vt.c show_name: "%s %s\n"
        (folder / "bind").write_text(f"{int(bound)}\n")  # show_bind: "%i\n"
        links = root / "sys/class/vtconsole"
        links.mkdir(parents=True, exist_ok=True)
        (links / folder.name).symlink_to(os.path.relpath(folder, links))
    if framebuffer:
        device, driver = framebuffer
        real = root / "sys/devices/platform" / device
        real.mkdir(parents=True, exist_ok=True)
        devices = root / "sys/bus/platform/devices"
        devices.mkdir(parents=True, exist_ok=True)
        (devices / device).symlink_to(os.path.relpath(real, devices))
        if driver:
            folder = root / "sys/bus/platform/drivers" / driver
            folder.mkdir(parents=True, exist_ok=True)
            (real / "driver").symlink_to(os.path.relpath(folder, real))
            (folder / device).symlink_to(os.path.relpath(real, folder))
    for module in modules:
        (root / "sys/module" / module).mkdir(parents=True, exist_ok=True)
    return root
