"""A VM's SPICE server for one user only: a unix socket in a folder only that user reaches,
whose every connection libvirt joins to the VM's SPICE server.

Why (issue 28): SPICE on 127.0.0.1 without a password let every local account watch and
type into every VM. NeuronOS's domains now have ``<listen type='none'/>``: QEMU's SPICE
server has no address at all, and the only way in is ``virDomainOpenGraphicsFD``, which
libvirt grants to read-write connections only (the same rights that can start or delete
the VM). virt-viewer asks libvirt for that socket itself (``--attach``); the Looking Glass
client takes a path instead (``spice:host=PATH spice:port=0``: "The SPICE server port (0 =
unix socket)", the B6/B7 client's own option table), so this relay gives it one.

SPICE opens one connection per channel (main, inputs, playback, ...): each accepted
connection gets its own descriptor from libvirt, and bytes are copied both ways until
either side closes.
"""

from __future__ import annotations

import os
import selectors
import socket
import tempfile
import threading
from pathlib import Path
from typing import Callable

from ..base.log import get_logger

log = get_logger(__name__)


class SpiceRelay:
    """``open_fd()`` gives a connected descriptor to the VM's SPICE server (it raises when
    the VM is gone). ``owner`` (uid, gid): who may connect; None: this process's user."""

    def __init__(self, vm_name: str, open_fd: Callable[[], int],
                 owner: tuple[int, int] | None = None, folder: Path | str | None = None):
        self.vm_name = vm_name
        self._open_fd = open_fd
        # a fresh 0700 folder: nobody else can reach, replace or pre-create the socket
        self.folder = Path(tempfile.mkdtemp(prefix="neuronos-spice-", dir=folder))
        self.path = self.folder / "spice.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(str(self.path))
            os.chmod(self.path, 0o600)
            if owner is not None:
                os.chown(self.path, *owner)
                os.chown(self.folder, *owner)
            self._listener.listen(8)
        except OSError:
            self.close()
            raise
        self._closed = threading.Event()
        self._pumps: list[tuple[threading.Thread, socket.socket, socket.socket]] = []
        self._thread = threading.Thread(target=self._accept, daemon=True,
                                        name=f"spice relay {vm_name}")
        self._thread.start()

    def __enter__(self) -> SpiceRelay:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.socket(fileno=self._open_fd())
            except Exception as error:  # the VM stopped: the client hears a closed socket
                log.warning("%s: no SPICE connection from libvirt: %s", self.vm_name, error)
                client.close()
                continue
            pump = threading.Thread(target=_pump, args=(client, server), daemon=True,
                                    name=f"spice relay {self.vm_name}")
            self._pumps = [item for item in self._pumps if item[0].is_alive()]
            self._pumps.append((pump, client, server))
            pump.start()

    def close(self) -> None:
        """Stop taking connections, end the open ones, remove the socket and its folder."""
        closed = getattr(self, "_closed", None)
        if closed is not None:
            closed.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        thread = getattr(self, "_thread", None)
        if thread is not None and thread is not threading.current_thread():
            thread.join(5)
        for pump, *ends in getattr(self, "_pumps", []):
            for end in ends:  # wakes the pump: it reads the end of both streams
                try:
                    end.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            pump.join(5)
        self.path.unlink(missing_ok=True)
        try:
            self.folder.rmdir()
        except OSError:
            pass


def _pump(client: socket.socket, server: socket.socket) -> None:
    """Copy both ways until either side closes (or the relay shuts both down)."""
    peer = {client: server, server: client}
    with selectors.DefaultSelector() as selector, client, server:
        for end in peer:
            selector.register(end, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                try:
                    data = key.fileobj.recv(65536)
                    if data:
                        peer[key.fileobj].sendall(data)
                except OSError:
                    data = b""
                if not data:
                    return
