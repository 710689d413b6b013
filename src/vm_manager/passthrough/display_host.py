"""What holds the host's display, read from a host root (the single-GPU handoff, issue 32).

Facts, with their sources (checked for this module):
- Display manager: systemd.special(7): ``display-manager.service`` is an alias (a symlink in
  ``/etc/systemd/system``) of the real unit: ``gdm.service``, ``sddm.service`` (their
  ``[Install] Alias=``), Debian's ``gdm3.service`` and ``lightdm.service`` (Debian's debconf
  makes the link for the chosen one). The link's target names the unit.
- Virtual consoles: ``/sys/class/vtconsole/vtconN/{name,bind}`` (kernel
  drivers/tty/vt/vt.c ``show_name``/``store_bind``): ``name`` reads ``(S) dummy device``
  for the system's dummy console and ``(M) frame buffer device`` for fbcon; only ``(M)``
  drivers can be unbound (write 0) and bound again (1); N is a registration slot, never
  fixed, so the name tells which is which; the write always "succeeds" (read ``bind``).
- Firmware framebuffers: drivers/firmware/sysfb.c makes one platform device,
  ``simple-framebuffer.0`` (CONFIG_SYSFB_SIMPLEFB, driven by simpledrm or simplefb) or
  ``efi-framebuffer.0`` / ``vesa-framebuffer.0`` (efifb/efidrm, vesafb/vesadrm), whose
  driver directory has the same name; unbind/bind by writing the device name to
  ``/sys/bus/platform/drivers/<driver>/unbind|bind``. A native GPU driver that probed
  deletes that device (drivers/video/aperture.c, kernel 5.19+), so it is often absent: then
  there is nothing to unbind (the "No such device" of the guides' scripts).
- Modules: ``/sys/module/<name>`` for every loaded module, names with ``_``
  (``vendor-reset.ko`` is ``vendor_reset``).
- systemd: it is the init system when ``/run/systemd/system`` exists (sd_booted(3)); the
  handoff runs as a systemd unit and needs it.
Everything here only reads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .pci import host_root

FRAMEBUFFER_DEVICES = ("simple-framebuffer.0", "efi-framebuffer.0", "vesa-framebuffer.0")
WATCHED_MODULES = ("nvidia", "nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nouveau",
                   "amdgpu", "radeon", "i915", "xe", "vendor_reset", "vfio_pci")


@dataclass(frozen=True)
class VtConsole:
    index: int
    name: str  # "(M) frame buffer device"
    bound: bool

    @property
    def unbindable(self) -> bool:
        return self.name.startswith("(M)")  # only a modular driver can be unbound


@dataclass(frozen=True)
class Framebuffer:
    device: str  # "efi-framebuffer.0"
    driver: str | None  # its driver directory's name; None: not bound


@dataclass(frozen=True)
class DisplayHost:
    display_manager: str | None  # the unit display-manager.service points at
    consoles: tuple[VtConsole, ...] = ()
    framebuffers: tuple[Framebuffer, ...] = ()
    modules: frozenset[str] = field(default_factory=frozenset)  # of WATCHED_MODULES
    systemd: bool = True  # systemd is the init system


def read_display_host(root: Path | str | None = None) -> DisplayHost:
    base = host_root(root)
    return DisplayHost(_display_manager(base), _consoles(base), _framebuffers(base),
                       frozenset(name for name in WATCHED_MODULES
                                 if (base / "sys/module" / name).is_dir()),
                       (base / "run/systemd/system").is_dir())


def _display_manager(base: Path) -> str | None:
    link = base / "etc/systemd/system/display-manager.service"
    try:
        return Path(os.readlink(link)).name
    except OSError:
        return None


def _consoles(base: Path) -> tuple[VtConsole, ...]:
    found = []
    for folder in (base / "sys/class/vtconsole").glob("vtcon*"):
        try:
            index = int(folder.name[len("vtcon"):])
            name = (folder / "name").read_text().strip()
            bound = (folder / "bind").read_text().strip() == "1"
        except (OSError, ValueError):
            continue
        found.append(VtConsole(index, name, bound))
    return tuple(sorted(found, key=lambda console: console.index))


def _framebuffers(base: Path) -> tuple[Framebuffer, ...]:
    found = []
    for device in FRAMEBUFFER_DEVICES:
        folder = base / "sys/bus/platform/devices" / device
        if not folder.exists():
            continue
        try:
            driver = Path(os.readlink(folder / "driver")).name
        except OSError:
            driver = None
        found.append(Framebuffer(device, driver))
    return tuple(found)
