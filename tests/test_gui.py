"""The desktop app under pytest-qt (QT_QPA_PLATFORM=offscreen), on test-driver hosts."""

from __future__ import annotations

import subprocess

import pytest

pytest.importorskip("PySide6", reason="the gui extra is not installed")

from conftest import IN_CI  # noqa: E402
from daemon import kill_libvirtd, may_restart_daemon, start_libvirtd  # noqa: E402
from vm_manager.core.connection import LibvirtConnection  # noqa: E402
from vm_manager.core.primitives import VMState  # noqa: E402
from vm_manager.core.store import VMStore  # noqa: E402
from vm_manager.core.vm_config import VMConfig  # noqa: E402
from vm_manager.gui.app import MainWindow  # noqa: E402
from vm_manager.gui.dialogs import DeleteDialog  # noqa: E402

S = VMState


@pytest.fixture
def window(qtbot, three_vm_uri, tmp_path):
    conn = LibvirtConnection(three_vm_uri)
    store = VMStore(tmp_path / "config")
    store.save(VMConfig(name="alpha", vm_type="windows10"))
    win = MainWindow(connection=conn, store=store)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.model.rowCount() == 3, timeout=5000)
    yield win
    win.close()
    conn.close()


def state_of(win, name):
    return win.model.row_for(name).state


def enabled(win) -> set[str]:
    return {key for key, action in win.actions_by_key.items() if action.isEnabled()}


def test_list_shows_every_vm_with_saved_details(window):
    rows = {row.name: row for row in window.model.rows}
    assert set(rows) == {"alpha", "beta", "gamma"}
    assert rows["alpha"].vm_type == "windows10" and rows["gamma"].state == S.PAUSED
    assert window.model.data(window.model.index(0, 1)) == "Windows 10"
    assert window.banner.isHidden()


def test_change_made_outside_the_gui_shows_up_by_event(window, qtbot):
    conn = window.connection
    conn.execute(lambda c: c.lookupByName("alpha").suspend())  # not through the window
    qtbot.waitUntil(lambda: state_of(window, "alpha") == S.PAUSED, timeout=2000)
    assert not window._reload_timer.isActive()  # updated in place, no relisting


@pytest.mark.parametrize("name, on, off", [
    ("alpha", {"stop", "force_stop", "pause", "reboot", "display"},
     {"start", "resume", "delete"}),
    ("beta", {"start", "delete"}, {"stop", "pause", "resume", "reboot", "display"}),
    ("gamma", {"resume", "force_stop"}, {"start", "pause", "stop", "delete"}),
])
def test_actions_follow_the_state_table(window, name, on, off):
    window.select(name)
    now = enabled(window)
    assert on <= now and not (off & now), now


def test_start_from_the_window_runs_off_the_ui_thread(window, qtbot):
    window.select("beta")
    window.on_start()
    qtbot.waitUntil(lambda: state_of(window, "beta") == S.RUNNING, timeout=5000)
    qtbot.waitUntil(lambda: "beta" not in window.busy, timeout=5000)
    assert "stop" in enabled(window)


def test_illegal_outcome_is_reported_not_raised(window, qtbot):
    window.select("beta")
    window.lifecycle.states.begin("beta", "start", timeout=30)  # someone else is starting it
    window.on_start()
    qtbot.waitUntil(lambda: window.last_error is not None, timeout=5000)
    assert "in progress" in window.last_error


def test_delete_dialog_defaults(qtbot, make_host, tmp_path, monkeypatch):
    from vm_manager.core.vm_destroyer import VMDestroyer

    images = tmp_path / "images"
    images.mkdir()
    own = images / "own.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(own), "1G"], check=True)
    iso = tmp_path / "installer.iso"
    iso.write_bytes(b"")
    with LibvirtConnection(make_host()) as conn:
        conn.execute(lambda c: c.defineXML(
            "<domain type='test'><name>d</name><memory unit='MiB'>512</memory><vcpu>1</vcpu>"
            "<os><type>hvm</type></os><devices>"
            f"<disk type='file' device='disk'><source file='{own}'/><target dev='vda'/></disk>"
            f"<disk type='file' device='cdrom'><source file='{iso}'/><target dev='sda'/>"
            "<readonly/></disk></devices></domain>"))
        dialog = DeleteDialog(VMDestroyer(conn, images_dir=images), "d")
        qtbot.addWidget(dialog)
        assert dialog.disks_box.isChecked() is False and dialog.delete_disks is False
        items = [dialog.disk_list.item(i) for i in range(dialog.disk_list.count())]
        texts = [item.text() for item in items]
        assert texts[0].startswith("keep: ") and str(own) in texts[0]
        cdrom = items[1]
        assert "CD-ROM" in cdrom.text() and not (cdrom.flags() & __import__(
            "PySide6.QtCore").QtCore.Qt.ItemIsEnabled)
        dialog.disks_box.setChecked(True)
        assert dialog.disk_list.item(0).text().startswith("delete: ")
        assert dialog.disk_list.item(1).text().startswith("keep: ")


def test_unreachable_libvirt_shows_a_banner_and_stays_alive(qtbot, tmp_path):
    win = MainWindow(uri="bogus:///nowhere", store=VMStore(tmp_path))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: not win.banner.isHidden(), timeout=5000)
    assert "bogus:///nowhere" in win.banner.label.text()
    assert win.actions_by_key["refresh"].isEnabled() and not win.actions_by_key["start"].isEnabled()
    win.close()


def test_daemon_restart_banner_and_recovery(qtbot, system_daemon, tmp_path):
    problem = may_restart_daemon()
    if problem:
        if IN_CI:
            pytest.fail(f"CI=true but cannot restart libvirtd: {problem}")
        pytest.skip(problem)
    win = MainWindow(uri=system_daemon, store=VMStore(tmp_path))
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.lifecycle is not None and win.banner.isHidden()
                    and win.statusBar().currentMessage().endswith(system_daemon), timeout=10000)
    try:
        kill_libvirtd()
        qtbot.waitUntil(lambda: not win.banner.isHidden(), timeout=10000)
        assert "reconnecting" in win.banner.label.text()
    finally:
        start_libvirtd(system_daemon)
    qtbot.waitUntil(lambda: win.banner.isHidden(), timeout=20000)
    win.close()


def test_qt_bindings_keep_none_alive(qtbot):
    """PySide6 6.12.0 on Python 3.11 drops a reference to None on every void call and the app
    dies with "none_dealloc" after a few thousand calls (pyproject pins it out)."""
    import sys

    from PySide6.QtWidgets import QLabel

    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(5000):
        label.setText("x")
    assert sys.getrefcount(None) - before > -100
