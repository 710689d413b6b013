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
# QEMU opens /dev/shm/<name> if it exists, else creates it as its own user, mode 0644: every
# local account could read the guest's frames (issue 28). A file someone else made first
# stays theirs to map even after a tmpfiles rule hands it over (QEMU opens it O_RDWR as it is;
# fs.protected_regular does not help). So NeuronOS makes the file itself at every start of a
# stopped VM: new, mode 0600, owned by the desktop user, with one ACL entry for QEMU's user
# (``claim_shared_memory``); the tmpfiles rule does the same at boot for VMs started before
# NeuronOS runs (autostart).

TMPFILES_DIR = Path("etc/tmpfiles.d")
QEMU_CONF = Path("etc/libvirt/qemu.conf")


def tmpfiles_rule(vm_name: str, user: str, qemu_user: str | None = None) -> str:
    """``f`` makes the file, the desktop user's, 0600; ``a+`` adds QEMU's user to its ACL
    (tmpfiles.d(5): the argument is setfacl's entry syntax)."""
    for label, value in (("user", user), ("QEMU user", qemu_user or "x")):
        if not value or any(ch.isspace() for ch in value) or "/" in value or ":" in value:
            raise ValueError(f"{label} {value!r} is not a valid account name")
    path = shm_path(vm_name)
    rule = f"f {path} 0600 {user} - -\n"
    if qemu_user and qemu_user != user:
        rule += f"a+ {path} - - - - user:{qemu_user}:rw\n"
    return rule


def tmpfiles_path(vm_name: str, root: Path | str = "/") -> Path:
    return Path(root) / TMPFILES_DIR / f"neuronos-{shm_name(vm_name)}.conf"


def write_tmpfiles_rule(vm_name: str, user: str, root: Path | str = "/",
                        apply: bool = False) -> tuple[Path, str]:
    """The rule file and its text; written only with ``apply`` (a dry run shows it)."""
    path = tmpfiles_path(vm_name, root)
    text = ("# Written by NeuronOS: the VM's shared memory for the desktop user and QEMU only\n"
            "# (made before libvirt does; removed with the VM).\n"
            + tmpfiles_rule(vm_name, user, qemu_account(root)))
    if apply:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return path, text


def qemu_account(root: Path | str = "/") -> str | None:
    """The account QEMU runs as under qemu:///system: qemu.conf's ``user``, else the default
    libvirt was built with (its qemu.conf.in ships it as ``#user = "@QEMU_USER@"``: Debian's
    ``libvirt-qemu``, Fedora's ``qemu``); None when unknown."""
    try:
        text = (Path(root) / QEMU_CONF).read_text()
    except OSError:
        return None
    import re

    for pattern in (r'^\s*user\s*=\s*"([^"]+)"', r'^#user = "([^"]+)"'):
        found = re.search(pattern, text, re.MULTILINE)
        if found:
            return found.group(1)
    return None


def claim_shared_memory(path: Path | str, owner: Credentials, qemu_user: str | None) -> str:
    """Before a stopped VM starts: make ``path`` anew for ``owner`` and QEMU's user only
    (whatever was there goes: nobody keeps a mapping of the next session). Raises
    ``LookingGlassError`` naming the file when it cannot be replaced. Returns what it did."""
    import pwd

    path = Path(path)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        info = None
    if info is not None:
        try:
            os.unlink(path)  # /dev/shm is sticky: only its owner or root may
        except OSError as error:
            try:
                who = pwd.getpwuid(info.st_uid).pw_name
            except KeyError:
                who = str(info.st_uid)
            raise LookingGlassError(
                f"{path} belongs to {who} and cannot be replaced ({error.strerror}): whoever"
                f" made it could map the VM's screen; remove it (sudo rm {path}), then start"
                " the VM again") from None
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        if os.fstat(fd).st_uid != owner.uid:
            os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, 0o600)
        qemu_uid = _uid(qemu_user)
        if qemu_uid is not None and qemu_uid != owner.uid:
            from ..base.access import write_user_acl

            write_user_acl(fd, qemu_uid, 0o6)
    finally:
        os.close(fd)
    return (f"{path} made anew for {owner.name}" + (f" and {qemu_user}" if qemu_user else "")
            + (" (the old one removed)" if info is not None else ""))


def _uid(user: str | None) -> int | None:
    import pwd

    if not user:
        return None
    if user.lstrip("+").isdigit():
        return int(user.lstrip("+"))
    try:
        return pwd.getpwnam(user).pw_uid
    except KeyError:
        return None


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
    who_uid = os.geteuid() if user is None else user_credentials(user).uid
    foreign = stat.S_ISREG(info.st_mode) and info.st_uid not in (who_uid, 0)
    if foreign:  # another user's file (root's is root's choice): they may map the screen
        mine = False
    elif user is None:
        mine = os.access(path, os.R_OK | os.W_OK)
    else:
        mine = _user_can_read_write(info, user)
    if mine:
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
    if foreign:
        return (f"{path} is {owner}:{group} {mode}, not {who}'s own: whoever owns it can"
                " read the VM's screen; stop the VM and start it with neuron-vm, which makes"
                f" the file anew for you (`neuron-vm shm-permissions {vm} --apply` does it at"
                " boot)")
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
