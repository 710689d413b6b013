"""Looking Glass shared memory (IVSHMEM): its size, its name and its path.

Facts (DESIGN.md 4.2, Looking Glass B5-B7 docs): the frame buffer needs width x height x 4
bytes (8 for HDR) x 2 frames, plus 10 MiB, rounded up to a power of two in MiB (QEMU
refuses other sizes). libvirt's ``<shmem name='N'>`` becomes ``/dev/shm/N``.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import LookingGlassError
from ..base.primitives import validate_name

SHM_DIR = Path("/dev/shm")
EXTRA_MIB = 10  # LGMP queues and headers, per the Looking Glass docs


def shm_size_mb(width: int, height: int, hdr: bool = False) -> int:
    """MiB of shared memory for a ``width`` x ``height`` guest desktop."""
    if width <= 0 or height <= 0:
        raise ValueError(f"resolution must be positive, got {width}x{height}")
    frame_bytes = width * height * (8 if hdr else 4) * 2
    needed = frame_bytes / (1024 * 1024) + EXTRA_MIB
    return 1 << math.ceil(math.log2(needed))


def shm_name(vm_name: str) -> str:
    """The per-VM shmem name (a shared ``looking-glass`` name would mix VMs' frames)."""
    return f"looking-glass-{validate_name(vm_name)}"


def shm_path(vm_name: str, shm_dir: Path = SHM_DIR) -> Path:
    return Path(shm_dir) / shm_name(vm_name)


# --- permissions ------------------------------------------------------------------------------
# libvirt creates /dev/shm/<name> at VM start, owned by its QEMU user, mode 0644: the desktop
# user's client cannot open it read-write (DESIGN.md 2). The Looking Glass docs' fix is a
# systemd-tmpfiles rule that creates the file first with the right owner.

TMPFILES_DIR = Path("etc/tmpfiles.d")


def tmpfiles_rule(vm_name: str, user: str, group: str = "kvm") -> str:
    for label, value in (("user", user), ("group", group)):
        if not value or any(ch.isspace() for ch in value) or "/" in value:
            raise ValueError(f"{label} {value!r} is not a valid account name")
    return f"f {shm_path(vm_name)} 0660 {user} {group} -\n"


def tmpfiles_path(vm_name: str, root: Path | str = "/") -> Path:
    return Path(root) / TMPFILES_DIR / f"neuronos-{shm_name(vm_name)}.conf"


def write_tmpfiles_rule(vm_name: str, user: str, root: Path | str = "/",
                        apply: bool = False) -> tuple[Path, str]:
    """The rule file and its text; written only with ``apply`` (a dry run shows it)."""
    path = tmpfiles_path(vm_name, root)
    text = ("# Written by NeuronOS: lets the desktop user's Looking Glass client open the\n"
            "# VM's shared memory read-write (created before libvirt does).\n"
            + tmpfiles_rule(vm_name, user))
    if apply:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path, text


@dataclass(frozen=True)
class Credentials:
    """What a process started for a user carries: as a login does (``initgroups``), its
    primary group AND every group it is a member of. The access check and the client's
    launch both use this one answer, so they cannot disagree (DESIGN.md 4.1: a client
    started without its supplementary groups cannot open a ``root:kvm 0660`` file)."""

    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]
    home: str


def user_credentials(user: str) -> Credentials:
    """``user`` by name or number; refuses one that does not exist."""
    import pwd

    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise LookingGlassError(f"no user named {user!r} to run the client as") from None
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Credentials(entry.pw_name, entry.pw_uid, entry.pw_gid, groups, entry.pw_dir)


def _user_can_read_write(info: os.stat_result, user: str) -> bool:
    """Unix permission bits for another user (root running the client as the desktop
    user must judge for that user, not for itself)."""
    who = user_credentials(user)
    if who.uid == 0:
        return True
    if info.st_uid == who.uid:
        bits = (info.st_mode >> 6) & 0o7
    elif info.st_gid in who.groups:
        bits = (info.st_mode >> 3) & 0o7
    else:
        bits = info.st_mode & 0o7
    return bits & 0o6 == 0o6


def access_problem(path: Path | str, user: str | None = None) -> str | None:
    """None when ``user`` (default: this process) can open ``path`` read-write; else what
    is wrong and the fix, naming the file, its owner and its mode."""
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        return None  # nothing to open yet: the VM is not running
    except OSError as error:
        return f"cannot look at {path}: {error.strerror}"
    if user is None and os.access(path, os.R_OK | os.W_OK):
        return None
    if user is not None and _user_can_read_write(info, user):
        return None
    try:
        import grp
        import pwd

        owner = pwd.getpwuid(info.st_uid).pw_name
        group = grp.getgrgid(info.st_gid).gr_name
    except (KeyError, ImportError):
        owner, group = str(info.st_uid), str(info.st_gid)
    mode = stat.filemode(info.st_mode)
    vm = path.name[len("looking-glass-"):] if path.name.startswith("looking-glass-") else "VM"
    who = f"user {user}" if user else "this user"
    return (f"{path} is {owner}:{group} {mode}, so {who} cannot open it read-write;"
            f" fix: `neuron-vm shm-permissions {vm} --apply` (a systemd-tmpfiles rule), then"
            " restart the VM")


def kvmfr_device(root: Path | str = "/") -> Path | None:
    """``/dev/kvmfr0`` when the KVMFR module made it (a character device; a plain file of
    that name means the VM started before the module was loaded)."""
    path = Path(root) / "dev" / "kvmfr0"
    try:
        return path if stat.S_ISCHR(path.stat().st_mode) else None
    except OSError:
        return None
