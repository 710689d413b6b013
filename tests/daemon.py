"""Control of the real libvirtd for end-to-end tests (CI starts it with `libvirtd -d`)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import libvirt

PIDFILES = (Path("/run/libvirtd.pid"), Path("/var/run/libvirtd.pid"))


def libvirtd_pid() -> int | None:
    for pidfile in PIDFILES:
        try:
            pid = int(pidfile.read_text().strip())
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except (OSError, ValueError):
            continue
        if comm == "libvirtd":
            return pid
    return None


def kill_libvirtd(timeout: float = 10.0) -> None:
    """SIGKILL the daemon (what a crash looks like) and wait until it is gone."""
    pid = libvirtd_pid()
    if pid is None:
        raise RuntimeError("no libvirtd to kill (no pid file naming a live libvirtd)")
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists():
        # a killed child stays a zombie until its parent (init) reaps it
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"libvirtd {pid} did not die")
        time.sleep(0.01)


def start_libvirtd(uri: str = "qemu:///system", timeout: float = 30.0) -> None:
    """`libvirtd -d`, then wait until it answers on ``uri``."""
    Path("/run/libvirt").mkdir(parents=True, exist_ok=True)
    subprocess.run(["libvirtd", "-d"], check=True)
    deadline = time.monotonic() + timeout
    while True:
        try:
            libvirt.open(uri).close()
            return
        except libvirt.libvirtError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"libvirtd did not answer on {uri} within {timeout}s")
            time.sleep(0.05)  # no event exists for "a daemon started listening"


def need_restartable_daemon() -> None:
    """Skip (outside CI) or fail (in CI) unless this test may SIGKILL and restart libvirtd."""
    from conftest import unavailable

    problem = may_restart_daemon()
    if problem:
        unavailable(problem, f"cannot restart libvirtd: {problem}")


def may_restart_daemon() -> str | None:
    """Why this test may not kill libvirtd here, or None if it may."""
    if os.geteuid() != 0:
        return "restarting libvirtd needs root"
    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not ci and os.environ.get("NEURONOS_TEST_RESTART_LIBVIRTD") != "1":
        return ("it would SIGKILL this machine's libvirtd; runs in CI, or set "
                "NEURONOS_TEST_RESTART_LIBVIRTD=1")
    if libvirtd_pid() is None:
        return "libvirtd was not started with a pid file (libvirtd -d)"
    return None
