"""Installer media shaped like the real ones, built with real tools for the guest-setup
tests and the benchmark (no Windows image exists on these machines).

- ``virtio_win_iso``: the virtio-win ISO's layout (``<driver>/<w10|w11>/amd64/*.inf|.sys|.cat``,
  ``virtio-win-guest-tools.exe`` at the root), written by xorriso with Rock Ridge and Joliet
  as Red Hat's is.
- ``windows_iso``: a Windows installer disc: UDF holding ``sources/install.wim`` whose WIM
  header and UTF-16 XML resource describe the editions as Microsoft's do (``NAME``,
  ``WINDOWS/EDITIONID``, ``WINDOWS/LANGUAGES`` with ``DEFAULT``: the fields wimlib's
  ``wiminfo`` prints for a real install.wim), and the ISO 9660 side holding only a README,
  written with pycdlib (xorriso writes no UDF).
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
from pathlib import Path

DRIVERS = ("viostor", "vioscsi", "NetKVM", "Balloon", "vioserial", "qxldod")
VERSIONS = ("w10", "w11", "2k22")


def virtio_win_iso(target: Path, *, versions=VERSIONS, drivers=DRIVERS,
                   payload: int = 4096, guest_tools: bool = True,
                   label: str = "virtio-win-0.1.262") -> Path:
    tree = target.parent / (target.name + ".tree")
    for driver in drivers:
        for version in versions:
            folder = tree / driver / version / "amd64"
            folder.mkdir(parents=True, exist_ok=True)
            low = driver.lower()
            (folder / f"{low}.inf").write_text(f"; {driver} for {version}\r\n[Version]\r\n")
            (folder / f"{low}.cat").write_bytes(b"CAT" + os.urandom(64))
            (folder / f"{low}.sys").write_bytes(b"MZ" + os.urandom(payload))
    if guest_tools:
        (tree / "virtio-win-guest-tools.exe").write_bytes(b"MZ" + os.urandom(payload))
    (tree / "guest-agent").mkdir(exist_ok=True)
    (tree / "guest-agent" / "qemu-ga-x86_64.msi").write_bytes(os.urandom(256))
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-J", "-R", "-V", label, "-o",
                    str(target), str(tree)], check=True, capture_output=True)
    return target


# Microsoft's English image names and their EDITIONIDs (wiminfo of the consumer discs)
EDITION_IDS = {"Home": "Core", "Home N": "CoreN", "Home Single Language": "CoreSingleLanguage",
               "Education": "Education", "Education N": "EducationN", "Pro": "Professional",
               "Pro N": "ProfessionalN", "Pro Education": "ProfessionalEducation",
               "Pro for Workstations": "ProfessionalWorkstation", "Enterprise": "Enterprise"}


def image_xml(index: int, name: str, edition_id: str | None, languages=("en-US",)) -> str:
    """One /WIM/IMAGE as a real install.wim has it (abridged: the fields Setup matches)."""
    windows = ""
    if edition_id is not None:
        langs = "".join(f"<LANGUAGE>{lang}</LANGUAGE>" for lang in languages)
        windows = (f"<WINDOWS><ARCH>9</ARCH><PRODUCTNAME>Microsoft® Windows® Operating"
                   f" System</PRODUCTNAME><EDITIONID>{edition_id}</EDITIONID>"
                   "<INSTALLATIONTYPE>Client</INSTALLATIONTYPE><PRODUCTTYPE>WinNT</PRODUCTTYPE>"
                   f"<LANGUAGES>{langs}<DEFAULT>{languages[0]}</DEFAULT></LANGUAGES>"
                   "<VERSION><MAJOR>10</MAJOR><MINOR>0</MINOR><BUILD>26100</BUILD></VERSION>"
                   "<SYSTEMROOT>WINDOWS</SYSTEMROOT></WINDOWS>")
    return (f'<IMAGE INDEX="{index}"><NAME>{name}</NAME><DESCRIPTION>{name}</DESCRIPTION>'
            f"<DISPLAYNAME>{name}</DISPLAYNAME>{windows}</IMAGE>")


def wim_bytes(editions: list, payload: int = 1024, languages=("en-US",)) -> bytes:
    """A WIM file: 208-byte header (magic, size, image count, the XML resource header at
    0x48) and the UTF-16LE XML with one IMAGE per edition: a name ("Windows 11 Pro": its
    EDITIONID from Microsoft's English names) or (name, EDITIONID or None: no WINDOWS
    element)."""
    pairs = [item if isinstance(item, tuple) else
             (item, EDITION_IDS.get(item.split(" ", 2)[-1], "Professional"))
             for item in editions]
    images = "".join(image_xml(n, name, ident, languages)
                     for n, (name, ident) in enumerate(pairs, 1))
    xml = ("\ufeff<WIM><TOTALBYTES>0</TOTALBYTES>" + images + "</WIM>").encode("utf-16-le")
    offset = 208 + payload
    header = bytearray(208)
    header[0:8] = b"MSWIM\0\0\0"
    struct.pack_into("<III", header, 8, 208, 0x10D00, 0x2)
    struct.pack_into("<HHI", header, 40, 1, 1, len(editions))
    header[0x48:0x48 + 7] = len(xml).to_bytes(7, "little")
    header[0x48 + 7] = 0x02  # metadata flag as WIMGAPI writes for the XML resource
    struct.pack_into("<QQ", header, 0x50, offset, len(xml))
    return bytes(header) + b"\0" * payload + xml


def windows_iso(target: Path, editions=("Windows 11 Home", "Windows 11 Pro"),
                label: str = "CCCOMA_X64FRE_EN-US_DV9", image: str = "install.wim",
                payload: int = 1024, languages=("en-US",)) -> Path:
    import pycdlib

    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=label, udf="2.60")
    readme = b"This disc contains a \"UDF\" file system and requires an operating system\r\n"
    iso.add_fp(io.BytesIO(readme), len(readme), "/README.TXT;1")
    iso.add_directory(udf_path="/sources")
    data = wim_bytes(list(editions), payload, languages)
    iso.add_fp(io.BytesIO(data), len(data), udf_path=f"/sources/{image}")
    boot = b"MZ boot manager"
    iso.add_fp(io.BytesIO(boot), len(boot), udf_path="/bootmgr")
    iso.write(str(target))
    iso.close()
    return target


def linux_iso(target: Path) -> Path:
    tree = target.parent / (target.name + ".tree")
    (tree / "casper").mkdir(parents=True, exist_ok=True)
    (tree / "casper" / "vmlinuz").write_bytes(os.urandom(512))
    subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-J", "-R", "-V", "Ubuntu 24.04",
                    "-o", str(target), str(tree)], check=True, capture_output=True)
    return target
