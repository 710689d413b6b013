"""Where a real Windows Setup would stop on an answer file: the stand-in for Windows Setup,
which cannot run here. ``where_setup_stops`` reads the answer file, the install image's WIM
XML and the VM's domain XML with its own parsing (not the product's) and returns every rule
the file breaks, each with the source that says Setup stops there.

The rules encode Microsoft's answer-file reference (learn.microsoft.com, "Unattended
Windows Setup Reference") and field reports of installs that stopped; they were not
observed on a real Windows Setup here (none can run on these machines).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

from vm_manager.guest.windows_answers import EDITION_OF_KEY, KEY_ALPHABET

U = "{urn:schemas-microsoft-com:unattend}"
MS = "https://learn.microsoft.com/windows-hardware/customize/desktop/unattend/"
# Microsoft-Windows-Shell-Setup ComputerName: at most 15 characters, none of these
COMPUTER_FORBIDDEN = set(' {|}~[\\]^\':;<=>?@!"#$%`()+/.,*&')
ACCOUNT_FORBIDDEN = set('"/\\[]:;|=,+*?<>@')  # Microsoft's local account name rules
RESERVED = {"administrator", "guest", "defaultaccount", "defaultuser0", "system",
            "wdagutilityaccount", "administrators", "users", "everyone"}
NETBIOS_RESERVED = {"anonymous", "batch", "builtin", "dialup", "interactive", "internet",
                    "local", "network", "null", "proxy", "restricted", "self", "server",
                    "service", "system", "users", "world"}


@dataclass(frozen=True)
class Stop:
    rule: str
    why: str
    source: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.why} ({self.source})"


def _component(root: ET.Element, setting_pass: str, name: str) -> ET.Element | None:
    for settings in root.findall(f"{U}settings"):
        if settings.get("pass") != setting_pass:
            continue
        for component in settings.findall(f"{U}component"):
            if component.get("name") == name:
                return component
    return None


def _text(element: ET.Element | None, path: str) -> str | None:
    if element is None:
        return None
    found = element.find("/".join(U + part for part in path.split("/")))
    return found.text.strip() if found is not None and found.text else None


def _wim_images(wim_xml: str) -> dict[str, dict]:
    images = {}
    for image in ET.fromstring(wim_xml.lstrip("\ufeff")).findall("IMAGE"):
        name = (image.findtext("NAME") or "").strip()
        images[name] = {
            "edition": image.findtext("WINDOWS/EDITIONID"),
            "languages": [item.text for item in image.findall("WINDOWS/LANGUAGES/LANGUAGE")],
        }
    return images


def where_setup_stops(answer_xml: str, wim_xml: str, domain_xml: str | None = None,
                      medium_files: list[str] | None = None) -> list[Stop]:
    """Every place a real Windows Setup would stop on ``answer_xml`` for that image."""
    root = ET.fromstring(answer_xml)
    stops: list[Stop] = []
    setup = _component(root, "windowsPE", "Microsoft-Windows-Setup")
    winpe = _component(root, "windowsPE", "Microsoft-Windows-International-Core-WinPE")
    oobe_intl = _component(root, "oobeSystem", "Microsoft-Windows-International-Core")
    shell = _component(root, "oobeSystem", "Microsoft-Windows-Shell-Setup")
    special = _component(root, "specialize", "Microsoft-Windows-Shell-Setup")
    images = _wim_images(wim_xml)

    name = None
    for meta in (setup.iter(f"{U}MetaData") if setup is not None else ()):
        if _text(meta, "Key") == "/IMAGE/NAME":
            name = _text(meta, "Value")
    image = images.get(name or "")
    if image is None:
        stops.append(Stop("image-name", f"/IMAGE/NAME {name!r} is not an image of the disc"
                          f" ({', '.join(images)}): Setup asks which to install",
                          MS + "microsoft-windows-setup-imageinstall-osimage-installfrom-"
                          "metadata"))

    key = _text(setup, "UserData/ProductKey/Key")
    if not key:
        stops.append(Stop("product-key", "no product key: a VM has none in its firmware, so"
                          " Setup stops at the product-key page",
                          "unattend-generator #359; winode PR #10; " + MS
                          + "microsoft-windows-setup-userdata-productkey"))
    elif not re.fullmatch(rf"[{KEY_ALPHABET}]{{5}}(-[{KEY_ALPHABET}]{{5}}){{4}}", key):
        stops.append(Stop("product-key", f"{key!r} is not a Windows product key",
                          MS + "microsoft-windows-setup-userdata-productkey-key"))
    elif image is not None and key in EDITION_OF_KEY and image["edition"] and \
            EDITION_OF_KEY[key] != image["edition"]:
        stops.append(Stop("product-key", f"the generic key of {EDITION_OF_KEY[key]} does not"
                          f" install the {image['edition']} image",
                          "Media Creation Tool sources/product.ini"))

    for where, component, path in (("windowsPE SetupUILanguage", winpe,
                                    "SetupUILanguage/UILanguage"),
                                   ("windowsPE UILanguage", winpe, "UILanguage"),
                                   ("oobeSystem UILanguage", oobe_intl, "UILanguage")):
        language = _text(component, path)
        if image is not None and image["languages"] and language not in image["languages"]:
            stops.append(Stop("ui-language", f"{where} {language!r} is not a language of the"
                              f" image ({', '.join(image['languages'])}): Setup shows the"
                              " language page, or restarts in a loop",
                              "unattend-generator #36, #64, #270; " + MS
                              + "microsoft-windows-international-core-winpe-setupuilanguage"))

    computer = _text(special, "ComputerName") or ""
    if computer != "*" and (not 0 < len(computer) <= 15 or computer.isdigit()
                            or set(computer) & COMPUTER_FORBIDDEN
                            or computer.lower() in NETBIOS_RESERVED):
        stops.append(Stop("computer-name", f"{computer!r} is not a computer name Windows takes",
                          MS + "microsoft-windows-shell-setup-computername"))
    from tzlocal.windows_tz import win_tz  # Windows' own IDs (CLDR windowsZones)

    zone = _text(special, "TimeZone") or ""
    if zone.removesuffix("_dstoff") not in win_tz:  # Setup takes its IDs, spelt exactly
        stops.append(Stop("time-zone", f"{zone!r} is not a Windows time zone ID",
                          MS + "microsoft-windows-shell-setup-timezone"))

    accounts = {}
    for account in (shell.iter(f"{U}LocalAccount") if shell is not None else ()):
        accounts[(_text(account, "Name") or "").lower()] = _text(account, "Group") or ""
    for account in accounts:
        if (not account or len(account) > 20 or set(account) & ACCOUNT_FORBIDDEN
                or account in RESERVED or not account.strip(". ")):
            stops.append(Stop("account-name", f"{account!r} is not an account Windows makes",
                              MS + "microsoft-windows-shell-setup-useraccounts-localaccounts-"
                              "localaccount-name"))
        if account == computer.lower():
            stops.append(Stop("account-is-computer", f"the account {account!r} is the"
                              " computer's name: Windows makes it outside Administrators, OOBE"
                              " makes defaultuser0 and the first-logon commands never run",
                              "unattend-generator issues on equal names; Microsoft Q&A"))
    autologon = (_text(shell, "AutoLogon/Username") or "").lower()
    commands = list(shell.iter(f"{U}SynchronousCommand")) if shell is not None else []
    if commands:
        if autologon not in accounts:
            stops.append(Stop("first-logon", f"AutoLogon signs in {autologon!r}, an account"
                              " the file does not make: nobody logs on, no command runs",
                              MS + "microsoft-windows-shell-setup-autologon-username"))
        elif "administrators" not in accounts[autologon].lower().split(";"):
            stops.append(Stop("first-logon", f"{autologon!r} is not an administrator: its"
                              " FirstLogonCommands do not run",
                              MS + "microsoft-windows-shell-setup-firstlogoncommands-"
                              "synchronouscommand"))
    for command in commands:
        line = _text(command, "CommandLine") or ""
        if len(line) > 1024:
            stops.append(Stop("command-length", f"a first-logon command of {len(line)}"
                              " characters (1024 at most)",
                              MS + "microsoft-windows-shell-setup-firstlogoncommands-"
                              "synchronouscommand-commandline"))

    partitions = {int(_text(p, "Order") or 0): _text(p, "Type")
                  for p in (setup.iter(f"{U}CreatePartition") if setup is not None else ())}
    target = int(_text(setup, "ImageInstall/OSImage/InstallTo/PartitionID") or 0)
    if partitions.get(target) != "Primary":
        stops.append(Stop("install-to", f"partition {target} is not a primary partition the"
                          " file creates: \"Windows cannot be installed to this disk\"",
                          MS + "microsoft-windows-setup-imageinstall-osimage-installto"))

    if domain_xml is not None:
        domain = ET.fromstring(domain_xml)
        files = [path.lower() for path in (medium_files or [])]
        virtio_scsi = any(c.get("model") == "virtio-scsi"
                          for c in domain.findall("devices/controller[@type='scsi']"))
        for disk in domain.findall("devices/disk[@device='disk']"):
            bus = disk.find("target").get("bus")
            driver = {"virtio": "viostor", "scsi": "vioscsi" if virtio_scsi else None}.get(bus)
            if driver and not any(f"/$winpedriver$/{driver}/" in path for path in files):
                stops.append(Stop("disk-driver", f"the disk is on {bus} and $WinPEDriver$ has"
                                  f" no {driver}: Setup finds no disk to install to",
                                  "learn.microsoft.com, Add device drivers to Windows during"
                                  " Windows Setup ($WinPEDriver$)"))
    return stops
