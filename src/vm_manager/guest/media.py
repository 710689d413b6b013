"""The setup medium of an unattended Windows VM (DESIGN.md 7): an ISO attached as a second
CD-ROM holding ``Autounattend.xml`` at its root (Windows Setup looks there on every drive),
the virtio storage and network drivers for that Windows version in ``$WinPEDriver$`` (setup
loads them by itself), and ``neuronos\\firstlogon.ps1`` that the answer file runs at first
logon from whichever drive the medium got, with the installers it runs (Looking Glass host,
WinFsp for shared folders) and ``neuronos\\setup.json`` saying what the VM has. The
original ISOs are read, never modified. The medium holds the account's password: it is
created 0600 and removed when setup ends.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..base.guest_config import UnattendedConfig
from .iso import IsoReader, MediumFile, write_iso
from .windows import (GPU_DRIVER_SWITCHES, WINDOWS_FOLDER, lg_host_setup_bytes,
                      setup_driver_files)

LABEL = "NEURONOS_SETUP"
ANSWER_FILE = "/Autounattend.xml"
FIRST_LOGON_SCRIPT = Path(__file__).with_name("firstlogon.ps1")
# Finds neuronos\firstlogon.ps1 on any drive and runs it: no drive letter is written down.
FIRST_LOGON = (
    "powershell.exe -NoProfile -ExecutionPolicy Bypass -Command \"$s = Get-PSDrive"
    " -PSProvider FileSystem | ForEach-Object { Join-Path $_.Root 'neuronos\\firstlogon.ps1' }"
    " | Where-Object { Test-Path -LiteralPath $_ } | Select-Object -First 1; if ($s) { & $s }\""
)


def answer_file(loader, vm_name: str, setup: UnattendedConfig, secrets, installer=None,
                zone: str | None = None) -> str:
    """``Autounattend.xml`` from the ``_autounattend`` template (user-overridable).
    ``secrets``: its ``password`` and ``product_key`` (``actions.create.SetupSecrets``);
    ``installer``: the disc's ``InstallerInfo`` (the image's languages and edition);
    ``zone``: the host's IANA time zone, for when none is given."""
    from .windows_answers import answer_values

    values = answer_values(vm_name, setup, installer.edition(setup.edition) if installer
                           else None, secrets.product_key, zone,
                           installer.label if installer else None)
    return loader.render("_autounattend", {
        "computer_name": values.computer_name, "user": values.user,
        "password": secrets.password, "product_key": values.product_key,
        "edition": values.edition, "ui_language": values.ui_language,
        "locale": values.locale, "keyboard": values.keyboard, "timezone": values.timezone,
        "bypass_hardware_checks": setup.bypass_hardware_checks, "first_logon": FIRST_LOGON,
    })


def build_windows_medium(target: Path, *, loader, vm_name: str, vm_type: str,
                         setup: UnattendedConfig, secrets, virtio_iso: Path | str,
                         shares: tuple[str, ...] = (), opener=None,
                         installer_iso: Path | str | None = None) -> list[str]:
    """Write the medium to ``target`` (which must not exist; 0600). Returns its file list.
    The drivers are streamed out of the virtio-win ISO through a private temporary folder
    next to ``target``, never read whole (``opener``: the ISOs are another host's volumes).
    ``installer_iso``: the Windows disc, whose image says the language and edition."""
    from .windows import inspect_installer
    from .windows_answers import host_zone

    installer = inspect_installer(installer_iso, opener) if installer_iso else None
    answers = answer_file(loader, vm_name, setup, secrets, installer, host_zone())
    files = [
        MediumFile(ANSWER_FILE, answers.encode("utf-8")),
        MediumFile("/neuronos/firstlogon.ps1", FIRST_LOGON_SCRIPT.read_bytes()),
        MediumFile("/neuronos/setup.json", json.dumps({
            "vm": vm_name, "windows": vm_type, "virtio_folder": WINDOWS_FOLDER[vm_type],
            "user": setup.user, "looking_glass_host": setup.lg_host_installer is not None,
            "winfsp": setup.winfsp_installer is not None, "shares": list(shares),
            "gpu_driver_switches": {f"{vendor:04X}": list(switches) for vendor, (_, switches)
                                    in GPU_DRIVER_SWITCHES.items()}
            if setup.gpu_driver_installer is not None else {}},
            indent=2).encode()),
    ]
    if setup.winfsp_installer is not None:
        files.append(MediumFile("/neuronos/winfsp.msi", Path(setup.winfsp_installer)))
    if setup.gpu_driver_installer is not None:
        files.append(MediumFile("/neuronos/gpu-driver.exe", Path(setup.gpu_driver_installer)))
    if setup.lg_host_installer is not None:
        files.append(MediumFile("/neuronos/looking-glass-host-setup.exe",
                                lg_host_setup_bytes(setup.lg_host_installer)))
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".setup-") as scratch:
        with IsoReader(virtio_iso, "virtio_iso_path", opener) as iso:
            for number, (source, path) in enumerate(setup_driver_files(iso, vm_type)):
                local = Path(scratch) / f"{number:05d}"
                iso.copy_to(source, local)
                files.append(MediumFile(path, local))
        write_iso(target, LABEL, files, mode=0o600)
    return sorted(item.path for item in files)


def build_medium(target: Path, config, *, vm_uuid: str, loader, secrets,
                 attempt: int = 1, opener=None) -> list[str]:
    """The setup medium of ``config`` (a ``VMConfig`` with ``unattended``): the Windows
    medium, or a Linux VM's cloud-init seed (``attempt`` > 1: a new instance-id). 0600;
    ``target`` must not exist (``FileExistsError``). ``opener``: the VM's ISOs are another
    host's volumes (see ``IsoReader``)."""
    if config.vm_type.value == "linux":
        from .cloud_init import build_seed

        return build_seed(target, vm_name=config.name, vm_uuid=vm_uuid, setup=config.unattended,
                          password=secrets.password if secrets else None, attempt=attempt)
    return build_windows_medium(target, loader=loader, vm_name=config.name,
                                vm_type=config.vm_type.value, setup=config.unattended,
                                secrets=secrets, virtio_iso=config.virtio_iso_path,
                                shares=tuple(share.tag for share in config.shares),
                                opener=opener, installer_iso=config.iso_path)
