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
READ, EXECUTE = 4, 1


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
    import pwd

    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        return None  # no such account here (a container's root): nothing to compare with
    if entry.pw_uid == 0:
        return None
    groups = set(os.getgrouplist(user, entry.pw_gid))
    last = READ | EXECUTE if folder.is_dir() else READ
    for path, want in [*((parent, EXECUTE) for parent in reversed(folder.parents)),
                       (folder, last)]:
        info = os.stat(path)
        if path == folder and info.st_uid == entry.pw_uid:
            return None  # their own folder or file
        acl = read_acl(path)
        if not allows(info, entry.pw_uid, groups, want, acl):
            try:
                owner = pwd.getpwuid(info.st_uid).pw_name
            except KeyError:
                owner = str(info.st_uid)
            verb = "read" if path == folder else "get through"
            rules = ", and its ACL does not let them" if acl else ""
            return (f"{user} cannot {verb} {path} (owner {owner},"
                    f" mode {stat.S_IMODE(info.st_mode):04o}{rules})")
    return None
