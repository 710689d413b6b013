"""The copies a snapshot keeps of a VM's UEFI variables (a file) and TPM state (a folder):
byte copies that keep modes and owners (QEMU's user must still open what is put back), put
in place whole or not at all."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


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
