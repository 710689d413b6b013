"""Talking to a running guest without a network: small files through its QEMU guest agent
(``guest-file-open``/``-read``/``-close``, DESIGN.md 7), and keys through libvirt's
``sendKey`` (a Windows installer's boot prompt)."""

from __future__ import annotations

import base64
import json
import threading
import time

import libvirt

from ..base.connection import LibvirtConnection
from ..base.errors import VMManagerError
from ..base.log import get_logger

log = get_logger(__name__)


def read_file(connection: LibvirtConnection, name: str, path: str,
              timeout: int = 5) -> str | None:
    """The text of a small guest file (UTF-8 or UTF-16; at most 64 KiB), None when it
    cannot be read (no agent yet, no such file)."""
    import libvirt_qemu

    def agent(conn, command: dict):
        dom = connection.lookup(conn, name)
        reply = libvirt_qemu.qemuAgentCommand(dom, json.dumps(command), timeout, 0)
        return json.loads(reply)["return"]

    try:
        handle = connection.execute(lambda c: agent(c, {
            "execute": "guest-file-open", "arguments": {"path": path, "mode": "r"}}))
        try:
            data = connection.execute(lambda c: agent(c, {
                "execute": "guest-file-read", "arguments": {"handle": handle,
                                                            "count": 65536}}))
        finally:
            connection.execute(lambda c: agent(c, {
                "execute": "guest-file-close", "arguments": {"handle": handle}}))
    except (VMManagerError, ValueError, KeyError) as error:
        log.debug("%s of %s not readable yet: %s", path, name, error)
        return None
    raw = base64.b64decode(data.get("buf-b64", ""))
    for encoding in ("utf-8-sig", "utf-16"):
        try:
            return raw.decode(encoding).replace("\0", "").strip()
        except UnicodeDecodeError:
            continue
    return None


def press_key(connection: LibvirtConnection, name: str, key: int, seconds: float,
              cancel: threading.Event) -> None:
    """Press ``key`` (a Linux input key code) once a second for ``seconds``, while the VM
    runs and ``cancel`` is not set."""
    deadline = time.monotonic() + seconds

    def press(conn):
        dom = connection.lookup(conn, name)
        if dom.isActive():
            dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 0, [key], 1, 0)
        return bool(dom.isActive())

    while time.monotonic() < deadline and not cancel.wait(1.0):
        try:
            if not connection.execute(press):
                return
        except VMManagerError as error:
            log.debug("could not press key %d in %s: %s", key, name, error)
            return
