"""A VM's own screen in virt-viewer (its SPICE display): for every VM, also while Windows
is installing and before Looking Glass works (DESIGN.md 7). ``--wait --reconnect`` make the
viewer wait for the VM to start and follow it across reboots; ``--connect`` reaches remote
hosts too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .context import Context

INSTALL = ("virt-viewer is not installed: sudo apt install virt-viewer (Debian/Ubuntu),"
           " sudo pacman -S virt-viewer (Arch)")


@dataclass
class ConsoleSession:
    name: str
    argv: list[str]
    pid: int
    code: int | None  # the viewer's exit status when waited for
    message: str


def viewer_argv(uri: str, name: str, viewer: str = "virt-viewer") -> list[str]:
    """``--attach`` on this machine: libvirt hands the viewer its connection (a SPICE
    server with ``<listen type='none'/>`` has no other way in); ``--`` ends the options (a VM
    named ``-x``, defined through virsh, is a name, not an option)."""
    from ..base.primitives import is_remote

    attach = [] if is_remote(uri) else ["--attach"]
    return [viewer, "--connect", uri, "--wait", "--reconnect", *attach, "--", name]


def _unreachable_remotely(ctx: Context, name: str) -> str | None:
    """Why the viewer cannot reach this remote VM's screen (None: it can): a SPICE server
    with no address is handed out through libvirt's local socket only."""
    from ..base.domain_xml import read_domain
    from ..base.primitives import is_remote

    if not is_remote(ctx.uri):
        return None
    connection = ctx.connection
    info = read_domain(connection.execute(
        lambda conn: connection.lookup(conn, name).XMLDesc(0), idempotent=True))
    if info.graphics and all(g.listen_type == "none" for g in info.graphics):
        return (f"{name}'s screen has no network port (only libvirt on its own machine"
                " hands it out, so no other account can reach it): open it there, e.g."
                f" `ssh -X HOST neuron-vm console {name}`")
    return None


def find_viewer(environ: dict | None = None) -> str | None:
    env = os.environ if environ is None else environ
    return env.get("NEURONOS_VIRT_VIEWER") or shutil.which("virt-viewer", path=env.get("PATH"))


def open_console(ctx: Context, name: str, wait: bool = False) -> ConsoleSession:
    """Open the viewer for ``name`` (it must exist: ``VMNotFound`` otherwise). ``wait``:
    return when the window closes. Raises ``OperationFailed`` when virt-viewer is missing
    or there is no display to open a window on."""
    from ..base import guard
    from ..base.errors import OperationFailed

    ctx.lifecycle.require(name)
    unreachable = _unreachable_remotely(ctx, name)
    if unreachable:
        raise OperationFailed(unreachable)
    viewer = find_viewer()
    if viewer is None:
        raise OperationFailed(INSTALL)
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise OperationFailed("no desktop display here (DISPLAY and WAYLAND_DISPLAY are"
                              " unset): run it in your desktop session")
    argv = viewer_argv(ctx.uri, name, viewer)
    guard.check("virt-viewer")
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    if wait:
        try:
            code = process.wait()
        except BaseException:  # Ctrl-C, SIGTERM, SIGHUP: the viewer and its children go too
            _end_group(process)
            raise
        return ConsoleSession(name, argv, process.pid, code,
                              f"the console window closed (exit status {code})")
    return ConsoleSession(name, argv, process.pid, None,
                          f"console opened in virt-viewer (pid {process.pid})")


def _end_group(process: subprocess.Popen) -> None:
    """SIGTERM to the viewer's process group (it and whatever it started), SIGKILL after 5 s."""
    import signal

    for signum, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            return
        try:
            process.wait(grace)
            return
        except subprocess.TimeoutExpired:
            continue
