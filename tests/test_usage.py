"""Live usage: CPU % and memory from libvirt's bulk statistics (core.usage), pure on
made-up samples, in the window on the test driver (stopped VMs show nothing; the sampling
runs only while the window is visible; the UI thread never blocks), and on the real daemon
with the running tiny guest (its CPU time rises)."""

from __future__ import annotations

import time
import uuid

import pytest

pytest.importorskip("pytestqt")

from conftest import lifecycle_on  # noqa: E402
from support.domains import domain_xml, remove_domain  # noqa: E402
from support.tiny_guest import READY_MARKER, wait_for_console  # noqa: E402
from vm_manager.actions import Context  # noqa: E402
from vm_manager.actions.usage import Monitor  # noqa: E402
from vm_manager.base import guard  # noqa: E402
from vm_manager.base.connection import LibvirtConnection  # noqa: E402
from vm_manager.base.store import VMStore  # noqa: E402
from vm_manager.core.usage import (HISTORY, DomainSample, HostSample,  # noqa: E402
                                   UsageHistory, UsageSample)
from vm_manager.gui.app import MainWindow  # noqa: E402
from vm_manager.gui.vm_list import HISTORY_ROLE  # noqa: E402

pytestmark = pytest.mark.usefixtures("ui_thread_never_blocks")
GIB = 1 << 20  # KiB


def sample(at: float, cpu: dict[str, int], host=(0, 0)) -> UsageSample:
    return UsageSample(at, {name: DomainSample(ns, GIB, 2 * GIB) for name, ns in cpu.items()},
                       HostSample(host[0], host[1], 16 * GIB, 4 * GIB))


def test_cpu_percent_comes_from_consecutive_samples():
    history = UsageHistory()
    history.add(sample(10.0, {"a": 0, "b": 0}, host=(0, 0)), {"a": 2, "b": 1})
    assert history.view().latest("a").cpu_percent is None  # one sample: no rate yet
    # 1 s later: a used 1 s of CPU over its 2 vCPUs (50 %), b 3 s on 1 vCPU (capped at 100)
    history.add(sample(11.0, {"a": 1_000_000_000, "b": 3_000_000_000},
                       host=(4_000_000_000, 16_000_000_000)), {"a": 2, "b": 1})
    view = history.view()
    assert view.latest("a").cpu_percent == pytest.approx(50.0)
    assert view.latest("b").cpu_percent == 100.0
    assert view.latest("a").memory_used_kib == GIB
    assert view.host_cpu_percent == pytest.approx(25.0)
    assert (view.host_memory_kib, view.host_memory_used_kib) == (16 * GIB, 4 * GIB)
    history.add(sample(12.0, {"a": 1_500_000_000}), {"a": 2})  # b stopped
    assert "b" not in history.view().points  # a stopped VM shows nothing, not zeros
    for second in range(HISTORY + 10):
        history.add(sample(13.0 + second, {"a": 2_000_000_000}), {"a": 2})
    assert len(history.view().points["a"]) == HISTORY


def cell(win, name: str, column: str, role=None):
    from PySide6.QtCore import Qt

    index = win.model.index(win.model.position(name), win.model.COLUMNS.index(column))
    return win.model.data(index, Qt.DisplayRole if role is None else role)


def test_usage_columns_only_for_running_vms_and_only_while_visible(window, qtbot):
    assert window.usage_timer.isActive()
    qtbot.waitUntil(lambda: window.uri in window.model.usage
                    and len(window.model.usage[window.uri].points.get("alpha", ())) >= 2,
                    timeout=5000)
    # the test driver reports no CPU time: nothing is made up for running alpha
    assert cell(window, "alpha", "CPU") is None
    assert cell(window, "alpha", "CPU", HISTORY_ROLE) == [None] * len(
        window.model.usage[window.uri].points["alpha"])
    assert "beta" not in window.model.usage[window.uri].points  # shut off
    assert cell(window, "beta", "CPU") is None and cell(window, "beta", "CPU", HISTORY_ROLE) \
        is None
    assert cell(window, "beta", "Memory") == "1.0 GiB"  # its size, no usage
    window.hide()
    assert not window.usage_timer.isActive()
    window.show()
    assert window.usage_timer.isActive()
    window.showMinimized()
    qtbot.waitUntil(lambda: not window.usage_timer.isActive(), timeout=2000)


@pytest.mark.daemon
def test_real_statistics_of_the_running_tiny_guest(qtbot, system_daemon, tiny_guest, tmp_path):
    """One bulk call on the real daemon: the running guest's CPU time rises between two
    samples and QEMU's memory shows; a defined, stopped guest has no entry. The window shows
    the same figures."""
    running, stopped = (f"neuron-usage-{uuid.uuid4().hex[:6]}" for _ in range(2))
    serial = tmp_path / "serial.log"
    with guard.allowed():
        conn = LibvirtConnection(system_daemon)
        for name in (running, stopped):
            conn.execute(lambda c, n=name: c.defineXML(domain_xml(n, tiny_guest, serial)))
    try:
        with guard.allowed(), lifecycle_on(system_daemon) as lifecycle:
            lifecycle.start(running, timeout=120)
            wait_for_console(serial, READY_MARKER, timeout=120)
            monitor = Monitor(Context(connection=conn))
            first = monitor.sample({running: 1})
            time.sleep(1.0)  # the sampling interval itself, not a wait for a state
            second = monitor.sample({running: 1})
        assert stopped not in second.points and running in first.points
        point = second.latest(running)
        assert point.cpu_percent is not None and point.cpu_percent > 0  # its CPU time rose
        assert point.memory_used_kib and point.memory_used_kib > 10 * 1024  # QEMU's RSS
        win = MainWindow(connection=conn, store=VMStore(tmp_path / "config"))
        qtbot.addWidget(win)
        win.show()

        def shown() -> bool:
            usage = win.model.usage.get(win.uri)
            latest = usage.latest(running) if usage else None
            return latest is not None and latest.cpu_percent is not None

        qtbot.waitUntil(shown, timeout=10000)
        assert cell(win, running, "CPU").endswith(" %")
        assert " / " in cell(win, running, "Memory")
        assert cell(win, stopped, "CPU") is None
        win.close()
    finally:
        with guard.allowed():
            for name in (running, stopped):
                remove_domain(conn, name)
            conn.close()
