"""Files a user names on an option (an SSH key, a password file): read the way settings
are read. Only a regular file, opened without blocking (a FIFO in its place is refused,
never waited on), never more than a limit (``/dev/zero`` cannot grow a read without end),
nothing in ``/dev``, ``/proc`` or ``/sys`` (``/proc/self/environ`` is not a password file),
and nothing the desktop user could not read themselves (run with sudo, NeuronOS must not
become a way to read ``/etc/shadow``).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import InvalidConfig

SYSTEM_TREES = ("/dev", "/proc", "/sys")


def read_user_file(path: str | os.PathLike, field: str, limit: int,
                   user: str | None = None) -> bytes:
    """The bytes of ``path`` (at most ``limit``); ``InvalidConfig`` naming ``field`` and
    saying why otherwise. ``user``: the desktop user who must be able to read it
    (default: the one behind sudo when this runs as root; nobody else is checked)."""
    from .access import desktop_user, unreadable_to

    shown = os.fspath(path)
    real = os.path.realpath(shown)
    if any(real == tree or real.startswith(tree + "/") for tree in SYSTEM_TREES):
        tree = "/" + real.split("/")[1]
        raise InvalidConfig(field, f"{shown} is in {tree}, the kernel's: give a file of your"
                            " own")
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise InvalidConfig(field, f"cannot read {shown}: {error.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise InvalidConfig(field, f"{shown} is not a regular file (a"
                                f" {_kind(info.st_mode)}): give a file")
        if info.st_size > limit:
            raise InvalidConfig(field, f"{shown} is {info.st_size} bytes; a file for this"
                                f" holds at most {limit}")
        if user is None and os.geteuid() == 0:
            user = desktop_user()
        why = unreadable_to(Path(real), user) if user else None
        if why:
            raise InvalidConfig(field, f"{shown} cannot be used: {why}")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 65536))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:  # it grew while read
        raise InvalidConfig(field, f"{shown} holds more than {limit} bytes")
    return data


def _kind(mode: int) -> str:
    return ("folder" if stat.S_ISDIR(mode) else "FIFO" if stat.S_ISFIFO(mode) else
            "socket" if stat.S_ISSOCK(mode) else "device" if stat.S_ISCHR(mode)
            or stat.S_ISBLK(mode) else "special file")


def open_beneath(top: Path | str, relative: Path | str, flags: int, owner: tuple[int, int],
                 mode: int = 0o600) -> int:
    """Open ``top/relative`` as root on a user's behalf without following a symlink at any
    step below ``top`` (each folder is opened with O_NOFOLLOW and the next one looked up
    in it, so a folder swapped for a symlink meanwhile is refused too); missing folders
    are made 0700 and, like the file, given to ``owner`` (uid, gid). Raises ``OSError``
    (ELOOP, ENOTDIR) for a symlink on the way (issue 28: root wrote where a user's symlink
    in their own home pointed)."""
    nofollow = os.O_NOFOLLOW | os.O_CLOEXEC
    folder = os.open(top, os.O_RDONLY | os.O_DIRECTORY | nofollow)
    try:
        *parts, name = Path(relative).parts
        for part in parts:
            try:
                os.mkdir(part, 0o700, dir_fd=folder)
                os.chown(part, *owner, dir_fd=folder, follow_symlinks=False)
            except FileExistsError:
                pass
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | nofollow, dir_fd=folder)
            os.close(folder)
            folder = inner
        fd = os.open(name, flags | nofollow, mode, dir_fd=folder)
        os.fchown(fd, *owner)
        return fd
    finally:
        os.close(folder)
