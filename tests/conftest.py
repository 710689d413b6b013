"""Shared fixtures: an isolated config dir per test, test-driver hosts, the real daemon."""

from __future__ import annotations

import contextlib
import os
import sys
import queue
from typing import NoReturn

import pytest

from vm_manager.base.vm_config import VMState
from support.fakes import FakeDomain, FakeHost, write_node_file

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str, in_ci: str | None = None) -> NoReturn:
    """What a test needs is missing: outside CI it skips with ``reason``; in CI
    (``CI=true``) everything must run, so it fails, saying ``in_ci`` (or the reason)."""
    if IN_CI:
        pytest.fail(f"CI=true but {in_ci or reason}")
    pytest.skip(reason)
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # GUI tests need no display
os.environ.setdefault("QT_NO_GLIB", "1")  # as vm_manager.gui.app sets it (see there)
SYSTEM_URI = "qemu:///system"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test reads or writes the user's real settings or inherits their URI."""
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))  # the window's too
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("NEURONOS_LIBVIRT_URI", raising=False)
    monkeypatch.delenv("LIBVIRT_DEFAULT_URI", raising=False)
    # the desktop user is the one running the tests (shared folders must be theirs to read)
    monkeypatch.delenv("SUDO_USER", raising=False)
    yield tmp_path / "config"
    import gc

    if not gc.isenabled():  # the desktop app collects on its UI thread (gui.gc_guard): a
        gc.collect()  # test that spins no Qt loop still leaves no cycles behind


@pytest.fixture
def make_host(tmp_path):
    """make_host(domains=[FakeDomain(...)], cpus=8, memory_mb=16384) -> test:/// URI."""
    counter = iter(range(1_000_000))

    def make(domains=(), **host_fields) -> str:
        path = tmp_path / f"node-{next(counter)}.xml"
        return write_node_file(path, FakeHost(domains=list(domains), **host_fields))

    return make


@pytest.fixture
def window(qtbot, three_vm_uri, tmp_path):
    """The desktop app's main window on the three-VM host (alpha has saved settings), shown
    and listed; closed after."""
    from vm_manager.base import guard
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.gui.app import MainWindow

    conn = LibvirtConnection(three_vm_uri)
    store = VMStore(tmp_path / "config")
    store.save(VMConfig(name="alpha", vm_type="windows10"))
    win = MainWindow(connection=conn, store=store)  # opens nothing on this thread
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.model.rowCount() == 3, timeout=5000)
    yield win
    win.close()
    with guard.allowed():
        conn.close()


@pytest.fixture
def three_vm_uri(make_host) -> str:
    return make_host(
        [
            FakeDomain("alpha", VMState.RUNNING, vcpus=2, memory_mb=2048),
            FakeDomain("beta", VMState.SHUTOFF, vcpus=1, memory_mb=1024),
            FakeDomain("gamma", VMState.PAUSED, vcpus=4, memory_mb=4096),
        ]
    )


class EventRecorder:
    """A subscriber that queues every event, and waits for the one a test expects."""

    def __init__(self):
        self.events: queue.Queue = queue.Queue()

    def __call__(self, event) -> None:
        self.events.put(event)

    def wait_for(self, predicate, timeout: float = 10.0):
        import time

        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"expected event not seen within {timeout}s; saw {seen}")
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                continue
            seen.append(event)
            if predicate(event):
                return event


@pytest.fixture
def recorder() -> EventRecorder:
    return EventRecorder()


def _daemon_problem() -> str | None:
    import libvirt

    from vm_manager.base.connection import ensure_event_loop

    ensure_event_loop()
    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError as error:
        return f"libvirtd is not reachable at {SYSTEM_URI}: {error.get_error_message()}"
    conn.close()
    return None


def _neuronos_pools() -> set[str]:
    """NeuronOS's pools now, after undefining those an earlier run that died left behind
    (their folder is gone, or is a pytest temporary folder: only tests make those)."""
    import re

    import libvirt

    conn = libvirt.open(SYSTEM_URI)
    try:
        names = set()
        for pool in conn.listAllStoragePools(0):
            if not pool.name().startswith("neuronos-images"):
                continue
            target = re.search(r"<path>([^<]*)</path>", pool.XMLDesc(0))
            folder = target.group(1) if target else ""
            if "/pytest-of-" in folder or not os.path.isdir(folder):
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
                continue
            names.add(pool.name())
        return names
    finally:
        conn.close()


@pytest.fixture(scope="session")
def system_daemon():
    """qemu:///system on a running libvirtd: skips outside CI, fails in CI if missing.
    The storage pools NeuronOS defined for the tests' images folders during the session are
    undefined at its end (their folders are the tests' own, already removed)."""
    problem = _daemon_problem()
    if problem:
        unavailable(f"{problem} (start it with: virtlogd -d; libvirtd -d)",
                    f"{problem}; .ci/run must start virtlogd and libvirtd")
    before = _neuronos_pools()
    yield SYSTEM_URI
    import libvirt

    try:
        conn = libvirt.open(SYSTEM_URI)
    except libvirt.libvirtError:
        return  # a test left the daemon down: nothing to tidy through it
    try:
        for pool in conn.listAllStoragePools(0):
            if pool.name().startswith("neuronos-images") and pool.name() not in before:
                if pool.isActive():
                    pool.destroy()
                pool.undefine()
    finally:
        conn.close()


@contextlib.contextmanager
def lifecycle_on(uri: str):
    """A VMLifecycleManager on its own connection to ``uri``, closed afterwards."""
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.core.vm_lifecycle import VMLifecycleManager

    conn = LibvirtConnection(uri).open()
    manager = VMLifecycleManager(conn)
    try:
        yield manager
    finally:
        manager.close()
        conn.close()


@pytest.fixture
def ui_thread_never_blocks():
    """The test fails if anything calls libvirt, reads sysfs or runs a program on the main
    (Qt) thread; what a test itself does there goes in ``guard.allowed()``."""
    import threading

    from vm_manager.base import guard

    guard.violations.clear()
    guard.forbid_blocking_calls(threading.main_thread(), strict=True)
    yield
    guard.allow_blocking_calls(threading.main_thread())
    assert guard.violations == [], guard.violations


def pytest_terminal_summary(terminalreporter) -> None:
    """The standing adversarial suite's counts (issue 12 asks for them in every report)."""
    import sys

    def reports(outcome: str, module: str) -> list:
        return [report for report in terminalreporter.stats.get(outcome, [])
                if module in report.nodeid and report.when == "call"]

    module = sys.modules.get("test_adversarial")
    if module is not None:
        counts = module.COUNTS
        terminalreporter.write_line(
            f"adversarial suite: {counts['hostile cases']} hostile CLI cases,"
            f" {counts['daemon kills']} daemon kills, {counts['corrupt kinds']} kinds of"
            f" corrupt settings; {len(reports('failed', 'test_adversarial'))} failed tests")
    attacks = reports("passed", "test_security.py") + reports("failed", "test_security.py")
    if attacks:  # issue 28: each one an attack by another local account, or a planted path
        terminalreporter.write_line(
            f"security suite: {len(attacks)} attacks and checks (tests/test_security.py);"
            f" {len(reports('failed', 'test_security.py'))} failed")


@pytest.fixture
def xserver(tmp_path):
    """A real X server (Xvfb) for the test: its DISPLAY. CI installs Xvfb and xdotool."""
    import shutil
    import subprocess

    xvfb, xdotool = shutil.which("Xvfb"), shutil.which("xdotool")
    if not (xvfb and xdotool):
        reason = "Xvfb and xdotool are needed (apt-get install xvfb xdotool)"
        unavailable(reason, f"{reason}: .ci/run installs them")
    read, write = os.pipe()
    server = subprocess.Popen([xvfb, "-displayfd", str(write), "-screen", "0", "1920x1080x24",
                               "-nolisten", "tcp"], pass_fds=(write,),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as pipe:
        display = f":{pipe.readline().strip()}"
    yield display
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture(scope="session")
def tiny_guest(system_daemon):
    """The tiny real guest (kernel + initramfs, built once from Debian packages)."""
    from support.tiny_guest import build

    try:
        return build()
    except Exception as error:  # noqa: BLE001 - reported as a skip outside CI, a failure in CI
        if IN_CI:
            raise
        pytest.skip(f"cannot build the tiny guest here: {error}")


@pytest.fixture(scope="session")
def root_helper(tmp_path_factory):
    """NeuronOS's root helper as scripts/install-helper.sh installs it (root-owned, run by
    /usr/bin/python3 -I), into a temporary root: its path."""
    import subprocess
    from pathlib import Path

    if os.geteuid() != 0:
        unavailable("installing the root-owned helper needs root", "not root (CI runs as root)")
    root = tmp_path_factory.mktemp("helper-root")
    script = Path(__file__).parent.parent / "scripts" / "install-helper.sh"
    subprocess.run(["bash", str(script), str(root)], check=True, capture_output=True)
    return root / "usr/libexec/neuronos/neuron-vm-helper"
