"""Telling a hung QEMU from a slow guest, in the long TCG boots of the cloud-guest tests.

Seen once in CI (Debian 13's QEMU 10.0.13, TCG, 2 vCPUs, on a busy 2-core machine): 3.5 s
into the kernel's boot the guest's console stopped, and QEMU never answered its monitor
again: libvirt waited on its answer to the power button for 50 minutes (`virsh` and
NeuronOS alike: libvirt gives monitor commands no deadline), and after a daemon restart its
reconnect thread held the domain's job for good, so every later `GetXMLDesc` of it took 30 s
and failed. The same image booted cleanly in every other run, on both platforms.

Such a hang is QEMU's, not NeuronOS's, and a test cannot judge a journey whose emulator
stopped. So a boot is watched: when the serial console has not grown for ``SILENCE_S``
seconds, QEMU's monitor is asked for its status (``query-status`` through libvirt, 60 s);
a monitor that does not answer is ``QemuHung``, carrying what each QEMU thread waits on
(``/proc/PID/task/*``), and the test may try its boot once more. A slow or quiet guest
answers and is waited for as before: nothing of NeuronOS's own is ever retried for this.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

SILENCE_S = 300.0  # a booting TCG guest writes to its console far more often than this
PROBE_S = 60.0


class QemuHung(Exception):
    """QEMU stopped answering its monitor while the guest's console was silent."""


def _threads(name: str) -> str:
    try:
        pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
    except (OSError, ValueError):
        return "(no QEMU pid file)"
    lines = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            comm = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            wchan = (task / "wchan").read_text().strip() or "-"
        except OSError:
            continue
        # stat after the name: state is field 3, utime and stime fields 14 and 15 (proc(5))
        lines.append(f"{comm} {fields[0]} wchan={wchan} cpu={int(fields[11]) + int(fields[12])}")
    return f"QEMU pid {pid}: " + "; ".join(lines)


def monitor_silent(name: str, probe_s: float = PROBE_S) -> str | None:
    """None when QEMU's monitor answers within ``probe_s``; else why it is taken for hung."""
    probe = ["virsh", "-c", "qemu:///system", "qemu-monitor-command", name,
             '{"execute":"query-status"}']
    try:
        result = subprocess.run(probe, capture_output=True, text=True, timeout=probe_s)
    except subprocess.TimeoutExpired:
        return f"its monitor did not answer query-status within {probe_s:.0f} s; {_threads(name)}"
    if "cannot acquire state change lock" in result.stderr:
        return f"libvirt waits on it: {result.stderr.strip()}; {_threads(name)}"
    return None


class Watch:
    """One boot of ``name`` whose console goes to ``serial``."""

    def __init__(self, name: str, serial: Path, silence: float = SILENCE_S,
                 probe_s: float = PROBE_S):
        self.name, self.serial, self.silence, self.probe_s = name, serial, silence, probe_s
        self._size, self._since = self._now_size(), time.monotonic()

    def _now_size(self) -> int:
        try:
            return self.serial.stat().st_size
        except OSError:
            return 0

    def check(self) -> None:
        """Raise ``QemuHung`` when the console has been silent for ``silence`` seconds and
        QEMU's monitor does not answer."""
        size, now = self._now_size(), time.monotonic()
        if size != self._size:
            self._size, self._since = size, now
            return
        if now - self._since < self.silence:
            return
        why = monitor_silent(self.name, self.probe_s)
        if why:
            tail = self.serial.read_bytes()[-300:].decode(errors="replace") \
                if self.serial.exists() else ""
            raise QemuHung(f"{self.name}: the console was silent for {now - self._since:.0f} s"
                           f" and {why}; the console ended with: {tail!r}")
        self._since = now  # it answered: a quiet guest; look again after another silence


def run_watched(argv: list[str], watch: Watch, timeout: float,
                env: dict | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run(argv, capture_output=True, text=True, timeout=timeout)`` of a
    command that boots ``watch.name``, but ended early by ``QemuHung``."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                out, err = process.communicate(timeout=min(15.0, max(0.1, deadline
                                                                     - time.monotonic())))
                return subprocess.CompletedProcess(argv, process.returncode, out, err)
            except subprocess.TimeoutExpired:
                if time.monotonic() >= deadline:
                    raise
            watch.check()
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
