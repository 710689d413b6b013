"""Another local account, for the security tests (issue 28): a user the test makes and
removes, and code run as that user with the system's Python (stdlib only), so what it
reaches is what the kernel lets that account reach, not what root (the test) could.

Also the first message of SPICE's link handshake (spice-protocol's spice/protocol.h:
``SpiceLinkHeader`` {magic "REDQ", major 2, minor 2, size} then ``SpiceLinkMess``
{connection_id u32, channel_type u8 (1 = main), channel_id u8, num_common_caps,
num_channel_caps, caps_offset}; the server answers a header and ``SpiceLinkReply``
{error u32 (0 = SPICE_LINK_ERR_OK), pub_key[162], ...}): proof that a SPICE server, not just
a socket, answered.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import struct
import subprocess
import uuid
from typing import Iterator

SPICE_MAGIC = b"REDQ"
LINK_MESS = struct.pack("<IBBIII", 0, 1, 0, 0, 0, 18)  # main channel, no caps; packed: 18
LINK = SPICE_MAGIC + struct.pack("<III", 2, 2, len(LINK_MESS)) + LINK_MESS

# Run as the other user: connect to a SPICE server (TCP "host:port" or a unix socket path)
# and print the link reply's error code, or the OS error's name when it could not connect.
SPICE_LOGIN = r"""
import socket, struct, sys
where = sys.argv[1]
try:
    if where.startswith("/"):
        s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(where)
    else:
        host, port = where.rsplit(":", 1); s = socket.create_connection((host, int(port)), 10)
    s.sendall(bytes.fromhex(sys.argv[2]))
    head = s.recv(16, socket.MSG_WAITALL)
    print("error", struct.unpack_from("<I", s.recv(4, socket.MSG_WAITALL))[0]
          if head[:4] == b"REDQ" else "no-spice")
except OSError as e:
    import errno; print("refused", errno.errorcode.get(e.errno, e))
"""


def spice_link(sock) -> int:
    """The SPICE server's answer to a main-channel link on ``sock``: its error code."""
    sock.sendall(LINK)
    head = _read(sock, 16)
    assert head[:4] == SPICE_MAGIC, f"not a SPICE server: {head!r}"
    return struct.unpack("<I", _read(sock, 4))[0]


def _read(sock, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {size} bytes")
        data += chunk
    return data


@contextlib.contextmanager
def local_user(prefix: str = "nsec") -> Iterator[str]:
    """A new account (its own group, no home, no login shell); removed afterwards."""
    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell",
                    "/usr/sbin/nologin", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", name], check=True)


def run_as(user: str, code: str, *args: str, timeout: float = 60,
           background: bool = False):
    """``code`` run by the system's python3 as ``user`` (its own group only)."""
    python = shutil.which("python3", path="/usr/bin:/bin") or "python3"
    argv = [python, "-c", code, *args]
    options = dict(user=user, group=user, extra_groups=[], cwd="/",
                   env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"})
    if background:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, **options)
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          check=False, **options)


def spice_login_as(user: str, where: str) -> str:
    """What ``user`` gets trying a SPICE login at ``where``: "error 0" is a login."""
    result = run_as(user, SPICE_LOGIN, where, LINK.hex())
    return (result.stdout.strip() or result.stderr.strip()).splitlines()[-1]


def is_root() -> bool:
    return os.geteuid() == 0
