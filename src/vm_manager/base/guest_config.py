"""Settings for setting a guest up without questions (unattended Windows setup), and the
rules Windows puts on them. No secrets live here: the password and the product key are
given to one creation and never saved.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from .errors import InvalidConfig
from .values import not_text, parse_bool, parse_int, parse_path

# Windows account names (Microsoft's local-account rules): at most 20 characters, none of
# these, not only dots or spaces, and not a built-in account or group name.
ACCOUNT_FORBIDDEN = set('"/\\[]:;|=,+*?<>@')
RESERVED_ACCOUNTS = frozenset(name.lower() for name in (
    "Administrator", "Administrators", "Guest", "Guests", "DefaultAccount", "defaultuser0",
    "WDAGUtilityAccount", "SYSTEM", "LocalSystem", "LocalService", "NetworkService",
    "Users", "Everyone", "INTERACTIVE", "NETWORK", "SERVICE", "None", "Authenticated Users",
    "CON", "PRN", "AUX", "NUL", *(f"COM{n}" for n in range(1, 10)),
    *(f"LPT{n}" for n in range(1, 10))))
LOCALE = re.compile(r"[a-z]{2,3}(-[A-Z][a-z]{3})?-[A-Z]{2}")
KEYBOARD = re.compile(r"[a-z]{2,3}(-[A-Z][a-z]{3})?-[A-Z]{2}|[0-9a-fA-F]{4}:[0-9a-fA-F]{8}")


LG_RELEASE = r"B\d+(?:\.\d+)*(?:-rc\d+)?(?:-\d+-g[0-9a-f]+)?"  # B7, B7-rc1, B7-188-gabc
LINUX_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
RESERVED_LINUX_USERS = frozenset({"root", "daemon", "bin", "sys", "sync", "nobody", "admin"})


def check_linux_user(name: Any, field_name: str = "unattended.user") -> str:
    if not isinstance(name, str) or not LINUX_USER.fullmatch(name):
        raise InvalidConfig(field_name, f"{name!r} is not a Linux user name (a lowercase"
                            " letter or _, then up to 31 of a-z 0-9 _ -)")
    if name in RESERVED_LINUX_USERS:
        raise InvalidConfig(field_name, f"{name!r} is a system account; pick another")
    return name


def check_account_name(name: Any, field_name: str = "unattended.user") -> str:
    if not isinstance(name, str) or not name:
        raise InvalidConfig(field_name, "give the name of the Windows account to make")
    if not_text(name):
        raise InvalidConfig(field_name, f"{name!r}: {not_text(name)}")
    bad = sorted({ch for ch in name if ch in ACCOUNT_FORBIDDEN or ord(ch) < 32})
    if bad:
        shown = " ".join(repr(ch) for ch in bad)
        raise InvalidConfig(field_name, f"{name!r}: Windows account names cannot contain {shown}")
    if len(name) > 20:
        raise InvalidConfig(field_name, f"{name!r} is {len(name)} characters; Windows allows 20")
    if not name.strip(". "):
        raise InvalidConfig(field_name, "a Windows account name cannot be only dots or spaces")
    if name.lower() in RESERVED_ACCOUNTS:
        raise InvalidConfig(field_name, f"{name!r} is a name Windows reserves; pick another")
    return name


def check_timezone(value: Any, field_name: str = "unattended.timezone") -> str:
    """A Windows time zone ID (CLDR's windowsZones, as tzlocal ships it; ``_dstoff`` turns
    daylight saving off), in its own spelling. An IANA name or its city ("Europe/Berlin",
    "Berlin") is taken as the Windows ID CLDR maps it to; abbreviations ("CET", "EST") are
    refused: they name several zones."""
    import difflib

    from tzlocal.windows_tz import tz_win, win_tz

    text = value.strip() if isinstance(value, str) else ""
    base, dst = (text[:-len("_dstoff")], "_dstoff") if text.endswith("_dstoff") else (text, "")
    windows = {zone.lower(): zone for zone in win_tz}
    if base.lower() in windows:
        return windows[base.lower()] + dst
    if base and not (base.isalpha() and base.isupper() and len(base) <= 5):
        iana = {name.lower(): name for name in tz_win}
        cities = {name.rsplit("/", 1)[-1].replace("_", " ").lower(): name
                  for name in tz_win if "/" in name}
        found = iana.get(base.lower()) or cities.get(base.replace("_", " ").lower())
        if found:
            return tz_win[found] + dst
    if base.isalpha() and base.isupper() and len(base) <= 5:
        raise InvalidConfig(field_name, f"{value!r} is an abbreviation, and they name several"
                            " zones: give a zone like Europe/Berlin, or a Windows ID like"
                            " 'W. Europe Standard Time' (`tzutil /l` lists them)")
    cities = {name.rsplit("/", 1)[-1].replace("_", " "): name for name in tz_win if "/" in name}
    near = difflib.get_close_matches(base, [*win_tz, *cities, *(z for z in tz_win if "/" in z)],
                                     n=4, cutoff=0.6)
    shown = [f"{cities.get(zone, zone)} ({tz_win[cities.get(zone, zone)]})"
             if cities.get(zone, zone) in tz_win else zone for zone in near]
    raise InvalidConfig(field_name, f"{value!r} is not a time zone: give a zone like"
                        " Europe/Berlin, or a Windows ID like 'W. Europe Standard Time'"
                        " (`tzutil /l` lists them)"
                        + (f"; close: {', '.join(dict.fromkeys(shown))}" if shown else ""))


def _known(value: str, field_name: str) -> str:
    """A language-REGION pair some locale has (CPython's ``locale.locale_alias``, from X.org's
    locale.alias): ``xx-YY`` has the shape of one and is none."""
    import locale

    if ":" in value:  # a keyboard layout's hex id (0407:00000407)
        return value
    parts = value.split("-")
    if f"{parts[0]}_{parts[-1]}".lower() not in locale.locale_alias:
        raise InvalidConfig(field_name, f"{value!r} is not a language and region any locale"
                            " has; e.g. en-US, en-GB, de-DE, fr-CA")
    return value


def _text(value: Any, field_name: str, pattern: re.Pattern, example: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise InvalidConfig(field_name, f"{value!r} is not allowed; expected e.g. {example}")
    return value


@dataclass
class UnattendedConfig:
    """Setting up the guest without questions (no secrets here: the password and product
    key are never saved)."""

    user: str = "user"
    locale: str = "en-US"  # formats (and the keyboard's default); not Windows' language
    keyboard: str | None = None  # None: the locale's
    timezone: str | None = None  # a Windows ID ("W. Europe Standard Time"); None: the host's
    ui_language: str | None = None  # Windows' language; None: the installer image's default
    edition: str | None = None  # None: the template's ("Windows 11 Pro")
    lg_host_installer: str | None = None
    lg_host_release: str | None = None  # None: read from the installer's name
    winfsp_installer: str | None = None  # WinFsp's .msi: Windows needs it for shared folders
    gpu_driver_installer: str | None = None  # the GPU vendor's Windows driver package (.exe)
    bypass_hardware_checks: bool = False  # LabConfig: only for hosts without swtpm
    ssh_key_path: str | None = None  # Linux: the public key(s) to log in with
    stage_timeout_s: int | None = None  # every setup stage's deadline (None: per OS)

    def __post_init__(self) -> None:
        if not isinstance(self.user, str) or not self.user:  # the OS's rules: VMConfig
            raise InvalidConfig("unattended.user", "give the name of the account to make")
        self.ssh_key_path = parse_path(self.ssh_key_path, "unattended.ssh_key_path")
        self.locale = _known(_text(self.locale, "unattended.locale", LOCALE,
                                   "en-US or de-DE"), "unattended.locale")
        if self.keyboard is not None:
            self.keyboard = _known(_text(self.keyboard, "unattended.keyboard", KEYBOARD,
                                         "de-DE or 0407:00000407"), "unattended.keyboard")
        if self.timezone is not None:
            self.timezone = check_timezone(self.timezone)
        if self.ui_language is not None:
            self.ui_language = _text(self.ui_language, "unattended.ui_language", LOCALE,
                                     "en-US or de-DE")
        if self.edition is not None and (
                not isinstance(self.edition, str) or not 0 < len(self.edition) <= 100
                or not_text(self.edition) or "\n" in self.edition):
            raise InvalidConfig("unattended.edition", "expected an edition name like"
                                " 'Windows 11 Pro'")
        self.lg_host_installer = parse_path(self.lg_host_installer,
                                            "unattended.lg_host_installer")
        self.winfsp_installer = parse_path(self.winfsp_installer,
                                           "unattended.winfsp_installer")
        self.gpu_driver_installer = parse_path(self.gpu_driver_installer,
                                               "unattended.gpu_driver_installer")
        if self.lg_host_release is not None and not re.fullmatch(
                LG_RELEASE, str(self.lg_host_release)):
            raise InvalidConfig("unattended.lg_host_release",
                                f"{self.lg_host_release!r} is not a Looking Glass release"
                                " like B7")
        self.bypass_hardware_checks = parse_bool(self.bypass_hardware_checks,
                                                 "unattended.bypass_hardware_checks")
        if self.stage_timeout_s is not None:
            self.stage_timeout_s = parse_int(self.stage_timeout_s, "unattended.stage_timeout_s")
            if not 30 <= self.stage_timeout_s <= 7 * 86400:
                raise InvalidConfig("unattended.stage_timeout_s", "expected 30 s to 7 days")


SHARE_TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,35}")


@dataclass
class ShareConfig:
    """A host folder the guest mounts over virtiofs by its tag."""

    path: str
    tag: str | None = None  # default: the folder's name
    readonly: bool = False  # libvirt 11.0+ only (planning refuses it on older ones)

    def __post_init__(self) -> None:
        self.readonly = parse_bool(self.readonly, "shares.readonly")
        self.path = parse_path(self.path, "shares.path")
        if self.path is None:
            raise InvalidConfig("shares.path", "give the host folder to share")
        if self.tag is None:
            self.tag = re.sub(r"[^A-Za-z0-9._-]", "-", self.path.rstrip("/").rsplit("/", 1)[-1]
                              or "share")[:36].lstrip("._-") or "share"
        if not isinstance(self.tag, str) or not SHARE_TAG.fullmatch(self.tag):
            raise InvalidConfig("shares.tag", f"{self.tag!r} is not a mount tag: 1-36 of"
                                " A-Z a-z 0-9 . _ -, starting with a letter or digit")
