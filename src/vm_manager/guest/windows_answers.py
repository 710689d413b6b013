"""What the Windows answer file says, decided from the settings, the chosen image of the
installer and the host (pure, but for ``host_zone``): the product key, the languages, the
time zone and the computer name. ``setup_rules`` checks the file written from them.

Facts, with their sources:

- **Keys.** A VM has no key in its firmware, so an answer file without one stops Setup at
  the product-key page (Windows-Setup UserData/ProductKey; unattend-generator #359, winode
  PR #10). Microsoft's generic installation keys install an edition and never activate it;
  the Media Creation Tool's ``sources/product.ini`` presets them per EDITIONID (the table
  below), dockur/windows (``assets/win11x64.xml``) and quickemu write the Pro one. Since
  Windows 8 a key is 25 characters of ``BCDFGHJKMNPQRTVWXY2346789`` in five groups.
- **Languages.** ``SetupUILanguage``/``UILanguage`` must be a language of the image (its
  WIM XML's ``LANGUAGES``), else Setup shows the language page or loops (unattend-generator
  #36, #64, #270): they come from the image; the desktop's locale sets only the formats
  (``SystemLocale``, ``UserLocale``) and the keyboard (``InputLocale``).
- **Time zones.** ``TimeZone`` takes a Windows ID (``tzutil /l``; checked in
  ``guest_config``); the host's IANA zone is mapped through CLDR's windowsZones table as
  tzlocal ships it. The domain clock is
  ``localtime``, so the guest shows the host's time only in the host's zone.
- **Names.** The account must differ from the computer name (case-insensitively): Setup
  then makes the account outside Administrators and OOBE creates ``defaultuser0``, whose
  FirstLogonCommands never run. ``windows.computer_name`` keeps to NetBIOS' rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import InvalidConfig
from ..base.guest_config import UnattendedConfig, check_timezone
from .windows import computer_name

# EDITIONID -> the generic installation key (Media Creation Tool, sources/product.ini).
GENERIC_KEYS = {
    "Core": "YTMG3-N6DKC-DKB77-7M9GH-8HVX7",
    "CoreN": "4CPRK-NM3K3-X6XXQ-RXX86-WXCHW",
    "CoreSingleLanguage": "BT79Q-G7N6G-PGBYW-4YWX6-6F4BT",
    "CoreCountrySpecific": "N2434-X9D7W-8PF6X-8DV9T-8TYMD",
    "Professional": "VK7JG-NPHTM-C97JM-9MPGT-3V66T",
    "ProfessionalN": "2B87N-8KFHP-DKV6R-Y2C8J-PKCKT",
    "ProfessionalEducation": "8PTT6-RNW4C-6V7J2-C2D3X-MHBPB",
    "ProfessionalEducationN": "GJTYN-HDMQY-FRR76-HVGC7-QPF8P",
    "ProfessionalWorkstation": "DXG7C-N36C4-C4HTG-X4T3X-2YV77",
    "ProfessionalWorkstationN": "WYPNQ-8C467-V2W6J-TX4WX-WT2RQ",
    "Education": "YNMGQ-8RYV3-4PGQ3-C8XTP-7CFBY",
    "EducationN": "84NGF-MHBT6-FXBX8-QWJK7-DRR8H",
    "Enterprise": "NPPR9-FWDCX-D2C8J-H872K-2YT43",
    "EnterpriseN": "DPH2V-TTNVB-4X9Q3-TJR4H-KHJW4",
}
EDITION_OF_KEY = {key: edition for edition, key in GENERIC_KEYS.items()}
# Microsoft's English image names -> EDITIONID: only when the WIM's XML cannot be read.
EDITION_NAMES = {
    "Home": "Core", "Home N": "CoreN", "Home Single Language": "CoreSingleLanguage",
    "Pro": "Professional", "Pro N": "ProfessionalN", "Pro Education": "ProfessionalEducation",
    "Pro Education N": "ProfessionalEducationN",
    "Pro for Workstations": "ProfessionalWorkstation",
    "Pro N for Workstations": "ProfessionalWorkstationN", "Education": "Education",
    "Education N": "EducationN", "Enterprise": "Enterprise", "Enterprise N": "EnterpriseN",
}
KEY_ALPHABET = "BCDFGHJKMNPQRTVWXY2346789"
PRODUCT_KEY = re.compile(rf"[{KEY_ALPHABET}]{{5}}(-[{KEY_ALPHABET}]{{5}}){{4}}")


def edition_id(image_name: str | None, image=None) -> str | None:
    """The EDITIONID of the chosen image: its WIM XML's, else from Microsoft's English name."""
    if image is not None and image.edition_id:
        return image.edition_id
    match = re.fullmatch(r"Windows 1[01] (.+)", image_name or "")
    return EDITION_NAMES.get(match.group(1)) if match else None


def check_product_key(key: str | None, edition: str | None,
                      field: str = "product_key") -> str | None:
    """A given key in its canonical form (upper case); ``InvalidConfig`` for one that is not
    a Windows key, or that is the generic key of another edition than the image's."""
    if key is None:
        return None
    text = key.strip().upper()
    if not PRODUCT_KEY.fullmatch(text):
        raise InvalidConfig(field, "a Windows product key is five groups of five of"
                            f" {' '.join(KEY_ALPHABET)} (XXXXX-XXXXX-XXXXX-XXXXX-XXXXX)")
    other = EDITION_OF_KEY.get(text)
    if other is not None and edition is not None and other != edition:
        raise InvalidConfig(field, f"{text} is the generic key of Windows {_label(other)},"
                            f" and the chosen edition is Windows {_label(edition)}: leave"
                            " the key out (setup uses the generic key of the chosen"
                            " edition) or give yours")
    return text


def _label(edition: str) -> str:
    """``Core`` -> ``Home (Core)``: Microsoft's name with the image's EDITIONID."""
    name = next((name for name, ident in EDITION_NAMES.items() if ident == edition), None)
    return f"{name} ({edition})" if name else edition


def windows_zone(iana: str | None) -> str | None:
    """The Windows ID of an IANA zone (``Europe/Berlin`` -> ``W. Europe Standard Time``)."""
    from tzlocal.windows_tz import tz_win  # CLDR windowsZones, as tzlocal ships it

    return tz_win.get(iana or "")


def host_zone(root: str | Path = "/") -> str | None:
    """This computer's system time zone as an IANA name: what QEMU's ``localtime`` clock
    follows (``/etc/localtime``'s zoneinfo link, else ``/etc/timezone``), never a shell's
    ``TZ``; None when it cannot be told. ``root``: a tree shaped like the real one."""
    import os

    link = Path(root) / "etc" / "localtime"
    try:
        target = os.path.normpath(os.path.join(link.parent, os.readlink(link)))
        if "/zoneinfo/" in target:
            return target.split("/zoneinfo/", 1)[1]
    except OSError:
        pass
    try:
        return (Path(root) / "etc" / "timezone").read_text().strip() or None
    except OSError:
        return None


@dataclass(frozen=True)
class AnswerValues:
    """What the answer file says (``answer_values``)."""

    computer_name: str
    user: str
    edition: str  # the image name
    edition_id: str | None
    product_key: str  # the user's, else the edition's generic key
    generic_key: bool
    ui_language: str  # the image's language Setup and Windows are shown in
    locale: str  # formats
    keyboard: str
    timezone: str
    timezone_source: str  # "given", "the host's (Europe/Berlin)", "UTC: ..."


def disc_language(label: str | None) -> str | None:
    """The language a Microsoft disc's volume label names (``CCCOMA_X64FRE_DE-DE_DV9``)."""
    match = re.search(r"_([a-z]{2,3}-[a-z]{2})_", (label or "").lower())
    return f"{match.group(1)[:-2]}{match.group(1)[-2:].upper()}" if match else None


def answer_values(vm_name: str, setup: UnattendedConfig, image=None,
                  product_key: str | None = None, zone: str | None = None,
                  label: str | None = None) -> AnswerValues:
    """Decide the answer file's values (``InvalidConfig`` naming the field). ``image``: the
    chosen edition's ``WimImage`` (None: its XML could not be read); ``zone``: the host's
    IANA zone (``host_zone()``), for when no time zone is given; ``label``: the disc's
    volume label, whose language counts when the image's cannot be read."""
    edition = setup.edition or ""
    ident = edition_id(edition, image)
    key = check_product_key(product_key, ident)
    generic = key is None
    if key is None:
        key = GENERIC_KEYS.get(ident or "")
        if key is None:
            raise InvalidConfig("product_key", f"no generic installation key is known for"
                                f" {edition!r} (edition {ident or 'unknown'}): give your"
                                " key with --product-key")
    languages = image.languages if image is not None else ()
    ui = setup.ui_language or (setup.locale if setup.locale in languages else None) or (
        image.default_language if image is not None else None) \
        or (languages[0] if languages else None) or disc_language(label) or "en-US"
    if languages and ui not in languages:
        raise InvalidConfig("unattended.ui_language", f"{ui!r} is not a language of"
                            f" {edition!r} on this disc; it has: {', '.join(languages)}"
                            " (--locale sets the formats and keyboard in any language)")
    if setup.timezone:
        timezone, source = check_timezone(setup.timezone), "given"
    else:
        found = windows_zone(zone)
        timezone = found or "UTC"
        source = f"this computer's zone, {zone}" if found else \
            f"UTC: this computer's zone {zone!r} has no Windows ID" if zone else \
            "UTC: this computer's zone is unknown"
    computer = computer_name(vm_name)
    if setup.user.lower() == computer.lower():
        raise InvalidConfig("unattended.user", f"{setup.user!r} is the computer's name too"
                            f" ({computer}, from the VM's name): Windows then makes the"
                            " account without administrator rights and setup stops; pick"
                            " another account name")
    return AnswerValues(computer, setup.user, edition, ident, key, generic, ui, setup.locale,
                        setup.keyboard or setup.locale, timezone, source)
