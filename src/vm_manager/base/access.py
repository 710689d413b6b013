"""Whether the desktop user could open a folder themselves: a shared folder must not become
a way into someone else's files (the VM's file server runs as root).

Decided as the kernel decides it (``fs/posix_acl.c``, ``posix_acl_permission``): from the
owner and mode bits, or from the folder's POSIX access ACL where it has one (the
``system.posix_acl_access`` extended attribute: a named user's or group's entry, limited by
the mask), for the folder itself (read and enter) and every folder above it (enter).
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from pathlib import Path

# ACL entry tags (linux/posix_acl.h) and the xattr's version (linux/posix_acl_xattr.h)
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
XATTR_VERSION = 2
READ, WRITE, EXECUTE = 4, 2, 1


def read_acl(path: Path | str) -> list[tuple[int, int, int]] | None:
    """The access ACL of ``path`` as (tag, permission bits, id) entries; None when it has
    none (its mode bits say everything) or the filesystem keeps no ACLs."""
    try:
        data = os.getxattr(path, "system.posix_acl_access", follow_symlinks=False)
    except OSError as error:
        if error.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return None
        raise
    if len(data) < 4 or (len(data) - 4) % 8 or struct.unpack_from("<I", data)[0] != \
            XATTR_VERSION:
        return None  # not an ACL the kernel would write: judge by the mode bits
    return [struct.unpack_from("<HHI", data, offset) for offset in range(4, len(data), 8)]


def write_user_acl(fd: int, uid: int, perm: int) -> None:
    """Give one more user ``perm`` (rwx bits) on the open file ``fd``: owner rw, that user,
    group nothing, mask ``perm``, others nothing (what ``setfacl -m u:UID:rw`` on a 0600 file
    writes; the kernel turns the mask into the group mode bits)."""
    undefined = 0xFFFFFFFF
    owner = (os.fstat(fd).st_mode >> 6) & 7
    entries = [(USER_OBJ, owner, undefined), (USER, perm, uid), (GROUP_OBJ, 0, undefined),
               (MASK, perm, undefined), (OTHER, 0, undefined)]
    data = struct.pack("<I", XATTR_VERSION) + b"".join(struct.pack("<HHI", *entry)
                                                        for entry in entries)
    os.setxattr(fd, "system.posix_acl_access", data)


def allows(info: os.stat_result, uid: int, groups: set[int], want: int,
           acl: list[tuple[int, int, int]] | None) -> bool:
    """Whether a user (``uid`` in ``groups``, not root) may ``want`` (READ|EXECUTE bits)."""
    if not acl:
        if info.st_uid == uid:
            bits = info.st_mode >> 6
        else:
            bits = info.st_mode >> (3 if info.st_gid in groups else 0)
        return bits & want == want
    mask = next((perm for tag, perm, _ in acl if tag == MASK), None)

    def masked(perm: int) -> bool:
        return perm & (7 if mask is None else mask) & want == want

    found = False
    for tag, perm, ident in acl:  # sorted as the kernel keeps them: owner, users, groups
        if tag == USER_OBJ and info.st_uid == uid:
            return perm & want == want
        if tag == USER and ident == uid:
            return masked(perm)
        if (tag == GROUP_OBJ and info.st_gid in groups) or (tag == GROUP and ident in groups):
            found = True
            if perm & want == want:
                return masked(perm)
        if tag == OTHER:
            return not found and perm & want == want
    return False


def desktop_user(environ: dict | None = None) -> str:
    """The person at the desktop: the one behind sudo, else this process's user."""
    import getpass

    env = os.environ if environ is None else environ
    return env.get("SUDO_USER") or env.get("USER") or getpass.getuser()


def unreadable_to(folder: Path, user: str) -> str | None:
    """Why ``user`` could not open ``folder`` themselves (None when they own it or can read
    it), naming the first folder on the way that stops them, its owner and its mode. A
    file needs to be readable; a folder readable and enterable."""
    return denied_to(folder, user, READ | EXECUTE if folder.is_dir() else READ)


def denied_to(path: Path, user: str, want: int) -> str | None:
    """Why ``user`` could not ``want`` (READ, WRITE, EXECUTE bits) ``path`` themselves: the
    first folder on the way they cannot enter, or the path itself, with its owner and mode
    (issue 28: root, or QEMU, must never use for a user a file that user could not). None
    when they may, own it, or are root, or the account is unknown here."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None  # no such account here (a container's root): nothing to compare with
    if entry.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user, entry.pw_gid))
    for step, bits in [*((parent, EXECUTE) for parent in reversed(path.parents)),
                       (path, want)]:
        info = os.stat(step)
        if step == path and info.st_uid == entry.pw_uid:
            return None  # their own folder or file
        acl = read_acl(step)
        if not allows(info, entry.pw_uid, groups, bits, acl):
            try:
                owner = pwd.getpwuid(info.st_uid).pw_name
            except KeyError:
                owner = str(info.st_uid)
            verb = ("get through" if step != path else
                    "write" if bits & WRITE and not bits & READ else
                    "read and write" if bits & WRITE else "read")
            rules = ", and its ACL does not let them" if acl else ""
            return (f"{user} cannot {verb} {step} (owner {owner},"
                    f" mode {stat.S_IMODE(info.st_mode):04o}{rules})")
    return None


MAX_SCANNED = 20000  # entries of a shared folder looked at; a bigger tree is checked so far


def hidden_inside(folder: Path, user: str, limit: int = MAX_SCANNED) -> str | None:
    """Why ``user`` may not have the VM see all of ``folder``: the first entry inside it
    they could not read themselves (the VM's file server runs as root and would show it),
    named with its owner and mode; None when there is none among the first ``limit``."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    if entry.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user, entry.pw_gid))
    pending, seen = [folder], 0
    while pending and seen < limit:
        try:
            children = list(os.scandir(pending.pop()))
        except OSError:
            continue
        for child in children:
            seen += 1
            try:
                info = child.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(info.st_mode):
                continue  # the file server does not follow a link out of the folder
            directory = stat.S_ISDIR(info.st_mode)
            want = READ | EXECUTE if directory else READ
            if info.st_uid != entry.pw_uid and not allows(info, entry.pw_uid, groups, want,
                                                           read_acl(child.path)):
                try:
                    owner = pwd.getpwuid(info.st_uid).pw_name
                except KeyError:
                    owner = str(info.st_uid)
                return (f"it holds {child.path} (owner {owner}, mode"
                        f" {stat.S_IMODE(info.st_mode):04o}), which {user} cannot read")
            if directory:
                pending.append(Path(child.path))
    return None


def others_homes_inside(folder: Path, user: str, accounts=None) -> str | None:
    """Why ``folder`` is not ``user``'s to share: it is, or holds, another person's home
    (``/home`` holds everyone's); None when it holds none. ``accounts``: ``pwd`` entries
    (default: this computer's)."""
    import pwd

    real = os.path.realpath(folder).rstrip("/") or "/"
    for person in (pwd.getpwall() if accounts is None else accounts):
        home = os.path.realpath(person.pw_dir or "/").rstrip("/") or "/"
        if person.pw_name == user or person.pw_uid < 1000 or home in ("/", "/nonexistent"):
            continue  # system accounts: their folders are the system's rules' business
        if home == real or home.startswith(real.rstrip("/") + "/"):
            return (f"it is the home of {person.pw_name}, another user" if home == real else
                    f"it holds {home}, the home of {person.pw_name}, another user")
    return None


def not_owned_by(folder: Path, user: str) -> str | None:
    """Why ``folder`` is not ``user``'s own (issue 28: /usr, /var/log, /tmp were shareable
    because a user could read them); None for their own, or when ``user`` is root."""
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None
    owner = os.stat(folder).st_uid
    if entry.pw_uid in (0, owner):
        return None
    try:
        name = pwd.getpwuid(owner).pw_name
    except KeyError:
        name = str(owner)
    return f"{folder} belongs to {name}, not to {user}"


# The system's own folders (issue 28; found again by a walk run as plain root, where the
# desktop-user checks pass: `--serial-log /etc/passwd` appended the guest's console to it,
# `--disk /etc/shadow` gave it to the guest). Whoever asks, a VM never writes there (a new
# log file in /var/log excepted), nor reads there what only a file's owner and group may;
# images folders among them (/var/lib/libvirt/images) are the VMs' own.
SYSTEM_FOLDERS = ("/etc", "/boot", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64",
                  "/libx32", "/var", "/run")
# ...but these of /var are not the system's: NeuronOS's own cache (the demo's tiny guest and
# its console log) and the folder for everyone's temporary files
NOT_SYSTEM = ("/var/cache/neuronos", "/var/tmp")


def within(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def system_file_problem(real: str, want: int, exempt: tuple[str, ...] = ()) -> str | None:
    """Why a VM may not use ``real`` (symlinks resolved) for ``want`` (READ, WRITE) as a
    disk, medium or log, whoever the desktop user is, root included; None when it may.
    ``exempt``: the images folders (inside /var, they are the VMs' own)."""
    inside = next((folder for folder in SYSTEM_FOLDERS if within(real, folder)), None)
    if inside is None or any(within(real, folder) for folder in (*exempt, *NOT_SYSTEM)):
        return None
    try:
        info = os.stat(real)
    except OSError:
        info = None
    if want & WRITE:
        if info is None and within(real, "/var/log"):
            return None  # a log file of its own, made by libvirt
        return (f"{real} lies in {inside}, a folder of the system: a VM never writes there,"
                " whoever asks (root too)")
    if info is not None and inside != "/boot" and not info.st_mode & stat.S_IROTH:
        return (f"{real} lies in {inside} and only its owner and group may read it (mode"
                f" {stat.S_IMODE(info.st_mode):04o}): a VM is never given the system's"
                " private files, whoever asks (root too)")
    return None


def root_owned(folder: Path | str) -> str | None:
    """Why NeuronOS will not serve ``folder`` to a VM: it belongs to root, and a shared
    folder is served as its owner, never as root (issue 28); None otherwise."""
    if os.stat(folder).st_uid == 0:
        return ("it belongs to root, and NeuronOS serves a shared folder as its owner, never"
                " as root")
    return None


def share_problem(path: str, user: str) -> str | None:
    """Why ``path`` may not be shared with a VM for ``user`` now (None: it may): reached
    through a symlink, not a folder of theirs, or holding what they could not open
    themselves. Asked again at every start: a folder swapped for a symlink after the VM
    was made is caught there."""
    folder = Path(path)
    real = os.path.realpath(path)
    if real != os.path.normpath(path):
        return f"{path} now leads elsewhere through a symlink ({real})"
    if not folder.is_dir():
        return f"{path} is not a folder any more"
    return (not_owned_by(folder, user) or unreadable_to(folder, user)
            or others_homes_inside(folder, user) or hidden_inside(folder, user))
