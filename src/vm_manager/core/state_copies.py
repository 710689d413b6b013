"""A VM's UEFI variables (a file) and TPM state (a folder) in libvirt's folders, and the
copies a snapshot keeps of them: byte copies that keep modes and owners (QEMU's user must
still open what is put back), put in place whole or not at all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..base.errors import InvalidConfig

LIBVIRT_STATE = Path("/var/lib/libvirt")  # swtpm/<uuid>/ and qemu/nvram/<name>_VARS.fd


def remove_state(path: Path) -> None:
    """The NVRAM file or TPM state a snapshot taken before them did not have (libvirt makes
    the NVRAM from its template at the next start, swtpm a fresh TPM)."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def size_of(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0


def copy_state(source: Path, target: Path) -> None:
    """A byte copy keeping modes and owners (QEMU's user must still open the restored
    files)."""
    if source.is_dir():
        shutil.copytree(source, target, symlinks=False, copy_function=_copy_file)
        _copy_owner(source, target)
    else:
        _copy_file(source, target)


def _copy_file(source, target) -> None:
    shutil.copy2(source, target)
    _copy_owner(Path(source), Path(target))


def _copy_owner(source: Path, target: Path) -> None:
    info = source.stat()
    try:
        os.chown(target, info.st_uid, info.st_gid)
    except PermissionError:
        pass  # not root: the files stay this user's


def restore_copy(saved: Path, target: Path) -> None:
    """Put ``saved`` in place of ``target`` (a file or a folder): the new one is complete
    beside it before the old one goes."""
    fresh = target.with_name(f".{target.name}.restore")
    shutil.rmtree(fresh, ignore_errors=True) if fresh.is_dir() else fresh.unlink(missing_ok=True)
    copy_state(saved, fresh)
    if target.is_dir():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(fresh, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(fresh, target)


def state_dirs(uri: str, root: Path = LIBVIRT_STATE, home: Path | None = None,
               ) -> tuple[Path, Path]:
    """libvirt's NVRAM folder and swtpm storage folder for ``uri`` (its qemu_conf.c):
    ``root``/qemu/nvram and ``root``/swtpm on a system daemon; ~/.config/libvirt/qemu/nvram
    and .../qemu/swtpm on a session one (XDG_CONFIG_HOME where set)."""
    if uri.split("?", 1)[0].rstrip("/").endswith("/session"):
        config = Path(os.environ.get("XDG_CONFIG_HOME") or (home or Path.home()) / ".config")
        return config / "libvirt" / "qemu" / "nvram", config / "libvirt" / "qemu" / "swtpm"
    return Path(root) / "qemu" / "nvram", Path(root) / "swtpm"


def state_files(domain, nvram_dir: Path, tpm_dir: Path,
                existing: bool = True) -> list[tuple[str, Path]]:
    """(kind, path) of the NVRAM file and the TPM state folder the VM has (libvirt's
    folders: ``state_dirs``); ``existing=False``: where they go, there or not (a revert
    puts back what the VM has lost since). Raises ``InvalidConfig`` for an NVRAM path the
    XML names outside libvirt's NVRAM folder (a path in the XML is not trusted)."""
    files = []
    # libvirt 9.0 writes <nvram> only into the live XML of a firmware='efi' domain; the
    # file is its documented default, $LOCALSTATEDIR/lib/libvirt/qemu/nvram/NAME_VARS.fd
    folder = nvram_dir
    nvram = Path(domain.os.nvram) if domain.os.nvram else folder / f"{domain.name}_VARS.fd"
    if nvram.parent != folder or nvram.is_symlink():  # a path in the XML is not trusted
        raise InvalidConfig("NAME", f"{domain.name}'s NVRAM file {nvram} is not a file in"
                            f" libvirt's NVRAM folder {folder}: NeuronOS neither copies"
                            " nor writes it back, so it takes no snapshot of this VM")
    if nvram.exists() or not existing:
        files.append(("nvram", nvram))
    tpm = tpm_dir / (domain.uuid or "")
    if domain.tpm is not None and domain.uuid and (tpm.is_dir() or not existing):
        files.append(("tpm", tpm))
    return files
