"""What the Windows media hold, read without mounting or modifying them (DESIGN.md 7).

- An installer ISO is Windows when it carries ``sources/install.wim`` or ``install.esd``
  (Microsoft's discs keep them in UDF; the ISO 9660 side holds only a README). Its editions
  are the images in the WIM's XML resource: the header (208 bytes, magic ``MSWIM\\0\\0\\0``)
  locates it at 0x48 (7-byte size, 1 flag byte, u64 offset, u64 original size), UTF-16LE,
  never compressed, in ``.esd`` files too. Each ``/WIM/IMAGE`` has its ``NAME`` (localized
  on some discs), ``WINDOWS/EDITIONID`` (``Professional``, ``Core``: never localized) and
  ``WINDOWS/LANGUAGES`` (its ``LANGUAGE`` list and ``DEFAULT``; wimlib's ``wiminfo`` shows
  them as "Languages" and "Default Language").
- The virtio-win ISO keeps each driver at ``<driver>/<w10|w11>/amd64/`` and the guest tools
  installer ``virtio-win-guest-tools.exe`` at its root. Setup needs the storage and network
  drivers (``viostor``, ``vioscsi``, ``NetKVM``) in ``$WinPEDriver$``.
- The Looking Glass host installer (``looking-glass-host-setup.exe``, NSIS) carries no
  version resource; its release is the one its download is named after (``B7``) or the one
  the user names.
"""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from ..base.errors import InvalidConfig
from ..base.guest_config import LG_RELEASE
from .iso import IsoReader

WIM_MAGIC = b"MSWIM\0\0\0"
WIM_HEADER_SIZE = 208
WIM_XML_RESHDR = 0x48
MAX_WIM_XML = 16 << 20
SETUP_DRIVERS = ("viostor", "vioscsi", "NetKVM")  # storage and network, for windowsPE
WINDOWS_FOLDER = {"windows11": "w11", "windows10": "w10"}
GUEST_TOOLS = "virtio-win-guest-tools.exe"
LG_HOST_SETUP = "looking-glass-host-setup.exe"
_RELEASE = re.compile(rf"(?<![A-Za-z0-9])({LG_RELEASE})(?![0-9])")


@dataclass(frozen=True)
class WimImage:
    """One edition of an install image, as its XML describes it."""

    name: str  # /IMAGE/NAME: what the answer file's /IMAGE/NAME must equal
    edition_id: str | None = None  # WINDOWS/EDITIONID: Professional, Core, Enterprise, ...
    languages: tuple[str, ...] = ()  # WINDOWS/LANGUAGES/LANGUAGE
    default_language: str | None = None  # WINDOWS/LANGUAGES/DEFAULT


@dataclass(frozen=True)
class InstallerInfo:
    label: str
    image: str | None  # the install.wim / install.esd path on the disc
    images: tuple[WimImage, ...] = ()

    @property
    def is_windows(self) -> bool:
        return self.image is not None

    @property
    def editions(self) -> tuple[str, ...]:
        return tuple(image.name for image in self.images)

    def edition(self, name: str | None) -> WimImage | None:
        return next((image for image in self.images if image.name == name), None)


@dataclass(frozen=True)
class VirtioInfo:
    label: str
    drivers: dict[str, tuple[str, ...]]  # driver -> its files for this Windows version
    guest_tools: bool

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(name for name in SETUP_DRIVERS if not self.drivers.get(name))


def wim_images(stream: BinaryIO) -> tuple[WimImage, ...]:
    """The images of a WIM/ESD, from its XML resource (read by offset, never whole)."""
    header = stream.read(WIM_HEADER_SIZE)
    if len(header) < WIM_HEADER_SIZE or header[:8] != WIM_MAGIC:
        return ()
    raw_size = int.from_bytes(header[WIM_XML_RESHDR:WIM_XML_RESHDR + 7], "little")
    offset, original = struct.unpack_from("<QQ", header, WIM_XML_RESHDR + 8)
    size = original or raw_size
    if not 0 < size <= MAX_WIM_XML:
        return ()
    stream.seek(offset)
    data = stream.read(size)
    try:
        root = ET.fromstring(data.decode("utf-16"))
    except (UnicodeDecodeError, ET.ParseError):
        return ()
    images = []
    for image in root.findall("IMAGE"):
        name = (image.findtext("NAME") or image.findtext("DISPLAYNAME") or "").strip()
        if not name:
            continue
        languages = tuple(text.strip() for text in (
            item.text for item in image.findall("WINDOWS/LANGUAGES/LANGUAGE")) if text)
        default = (image.findtext("WINDOWS/LANGUAGES/DEFAULT")
                   or image.findtext("WINDOWS/LANGUAGES/FALLBACK/DEFAULT") or "").strip()
        images.append(WimImage(name, (image.findtext("WINDOWS/EDITIONID") or "").strip() or None,
                               languages, default or (languages[0] if languages else None)))
    return tuple(images)


def inspect_installer(path: Path | str, opener=None) -> InstallerInfo:
    """Label, install image and editions of an installer ISO (``InvalidConfig`` on --iso
    when it is not an ISO at all); ``opener``: see ``IsoReader``."""
    with IsoReader(path, "iso_path", opener) as iso:
        image = iso.find("/sources/install.wim") or iso.find("/sources/install.esd")
        images: tuple[WimImage, ...] = ()
        if image is not None:
            with iso.open(image) as stream:
                images = wim_images(stream)
        return InstallerInfo(iso.label, image, images)


def inspect_virtio(path: Path | str, vm_type: str, opener=None) -> VirtioInfo:
    """The setup drivers for that Windows version on a virtio-win ISO."""
    with IsoReader(path, "virtio_iso_path", opener) as iso:
        return virtio_in(iso, vm_type)


def virtio_in(iso: IsoReader, vm_type: str) -> VirtioInfo:
    folder = WINDOWS_FOLDER[vm_type]
    drivers = {}
    for name in SETUP_DRIVERS:
        found = iso.find_dir(f"/{name}/{folder}/amd64")
        drivers[name] = tuple(iso.files(found)) if found else ()
    return VirtioInfo(iso.label, drivers, iso.find(f"/{GUEST_TOOLS}") is not None)


def setup_driver_files(iso: IsoReader, vm_type: str) -> list[tuple[str, str]]:
    """(path on the virtio ISO, path on the setup medium) for every setup driver file."""
    info = virtio_in(iso, vm_type)
    out = []
    for name in SETUP_DRIVERS:
        for source in info.drivers[name]:
            out.append((source, f"/$WinPEDriver$/{name}/{PurePosixPath(source).name}"))
    return out


def lg_host_release(path: Path | str, given: str | None = None) -> str | None:
    """The Looking Glass release of a host installer (.exe or the .zip it comes in): the one
    given, else the one its file or folder name carries (``looking-glass-host-B7.zip``)."""
    if given:
        return given
    path = Path(path)
    for part in (path.name, path.parent.name):
        match = _RELEASE.search(part)
        if match:
            return match.group(1)
    return None


def lg_host_setup_bytes(path: Path | str) -> bytes:
    """The installer itself: the file, or ``looking-glass-host-setup.exe`` from its zip."""
    path = Path(path)
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist()
                           if PurePosixPath(n).name.lower() == LG_HOST_SETUP), None)
            if member is None:
                raise InvalidConfig("--lg-host-installer", f"{path} holds no {LG_HOST_SETUP}")
            return archive.read(member)
    data = path.read_bytes()
    if data[:2] != b"MZ":
        raise InvalidConfig("--lg-host-installer", f"{path} is not a Windows program (.exe) nor"
                            " the .zip it comes in")
    return data


# The GPU vendors' Windows driver packages and their silent switches (the package .exe hands
# them to its setup.exe): NVIDIA's setup.exe -s (silent) -noreboot -noeula, as NVIDIA's
# deployment scripts and NVCleanstall run it; AMD Software's Setup.exe -INSTALL (AMD's
# command-line install). The first-logon script picks them by the vendor of the GPU the
# guest sees (its PCI id). Neither was run here: no Windows can run on these machines.
GPU_DRIVER_SWITCHES = {0x10DE: ("NVIDIA", ("-s", "-noreboot", "-noeula")),
                       0x1002: ("AMD", ("-INSTALL",))}
NETBIOS_BAD = re.compile(r"[^A-Za-z0-9-]")
# Words NetBIOS reserves for Windows' own principals (Microsoft, "Naming conventions in
# Active Directory for computers, domains, sites, and OUs": the one-word ones), and devices
RESERVED_COMPUTER_NAMES = frozenset({
    "ANONYMOUS", "BATCH", "BUILTIN", "DIALUP", "INTERACTIVE", "INTERNET", "LOCAL", "NETWORK",
    "NULL", "PROXY", "RESTRICTED", "SELF", "SERVER", "SERVICE", "SYSTEM", "USERS", "WORLD",
    "CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)),
    *(f"LPT{n}" for n in range(1, 10))})


def computer_name(vm_name: str) -> str:
    """The VM's name as a Windows computer name: NetBIOS rules (at most 15 letters, digits
    and hyphens, not only digits, no hyphen at either end, not a reserved word)."""
    name = NETBIOS_BAD.sub("-", vm_name)[:15].strip("-") or "NEURONOS-VM"
    if name.isdigit() or name.upper() in RESERVED_COMPUTER_NAMES:
        name = ("VM-" + name)[:15]
    return name.upper()
