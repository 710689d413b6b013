"""The same action through the CLI and through the desktop app ends the same way.

Three places where the two faces used to disagree (architecture issue):
1. the settings dialog rewrote a VM's GPU as its address only, dropping --gpu-rom,
   --nvidia-compat and --allow-boot-gpu;
2. the USB panel hot-plugged without updating the VM's saved settings;
3. "Show display" started the Looking Glass client without tying it to the VM's lifecycle.
Each test does the action once per face and compares saved settings and domain XML.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("PySide6", reason="the gui extra is not installed")

from vm_manager.actions import Context  # noqa: E402
from vm_manager.cli import main  # noqa: E402
from vm_manager.base import guard  # noqa: E402
from vm_manager.base.connection import LibvirtConnection  # noqa: E402
from vm_manager.base.store import VMStore  # noqa: E402
from support.fakes import FakeUSBDevice, add_pci_devices, add_usb_devices  # noqa: E402
from support.fakes import FakeLGHost, FakeSpiceServer, nvidia_turing_gpu  # noqa: E402
from support.fakes import looking_glass_stand_in  # noqa: E402

pytestmark = pytest.mark.usefixtures("ui_thread_never_blocks")
UUID = re.compile(r"<uuid>[0-9a-f-]{36}</uuid>")


def cli(argv, conn, **env):
    out, err = io.StringIO(), io.StringIO()
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        with guard.allowed():  # the CLI runs on this thread; the window may not
            code = main(argv, connection=conn, out=out, err=err)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert code == 0, err.getvalue()
    return out.getvalue()


def faces(make_host, tmp_path, root):
    """Each face in turn with its own folder, environment (host root, images and settings
    folders), test-driver host and settings store."""
    for face in ("cli", "gui"):
        folder = tmp_path / face
        env = {"NEURONOS_HOST_ROOT": str(root), "NEURONOS_IMAGES_DIR": str(folder / "images"),
               "NEURONOS_CONFIG_DIR": str(folder / "config")}
        with guard.allowed():
            conn = LibvirtConnection(make_host(cpus=16, memory_mb=65536)).open()
        yield face, folder, env, conn, VMStore(folder / "config")


def outcome(conn, store, images) -> tuple[str, dict]:
    """What a face left of VM ``g``: its XML and saved settings, with the UUID and its own
    images folder taken out (closes ``conn``)."""
    with guard.allowed():
        xml = conn.execute(lambda c: c.lookupByName("g").XMLDesc(0))
        settings = store.load("g").to_dict()
        conn.close()
    return (UUID.sub("", xml).replace(str(images), "@IMAGES@"),
            {**settings, "disk_path": settings["disk_path"].replace(str(images), "@")})


def test_a_settings_change_keeps_the_gpu_options_in_both_faces(qtbot, make_host, tmp_path):
    from vm_manager.actions import host
    from vm_manager.gui.dialogs import SettingsDialog

    root = add_pci_devices(tmp_path / "host", nvidia_turing_gpu(boot_vga=True))  # one GPU
    rom = tmp_path / "gpu.rom"
    rom.write_bytes(b"\x55\xaa")
    results = {}
    for face, folder, env, conn, store in faces(make_host, tmp_path, root):
        cli(["create", "g", "--template", "windows10", "--memory", "4G", "--disk-size", "20G",
             "--gpu", "01:00.0", "--gpu-rom", str(rom), "--nvidia-compat", "--allow-boot-gpu",
             "--domain-type", "qemu", "--network", "none"], conn, **env)
        if face == "cli":
            cli(["configure", "g", "--memory", "6G"], conn, **env)
        else:
            ctx = Context(connection=conn, store=store, images_dir=folder / "images",
                          host_root=root)
            with guard.allowed():  # what the window's worker reads before the dialog opens
                saved, devices = store.load("g"), host.devices(ctx)
            dialog = SettingsDialog(ctx, saved, devices)
            qtbot.addWidget(dialog)
            dialog.memory.setText("6G")  # the only change the user makes
            dialog.apply()
            qtbot.waitUntil(lambda: dialog.result is not None, timeout=10000)
        results[face] = outcome(conn, store, folder / "images")
    (cli_xml, cli_saved), (gui_xml, gui_saved) = results["cli"], results["gui"]
    assert gui_saved == cli_saved
    assert gui_xml == cli_xml
    assert cli_saved["memory_mb"] == 6144
    assert cli_saved["gpu_passthrough"] == {"pci_address": "0000:01:00.0",
                                            "rom_file": str(rom), "nvidia_compat": True,
                                            "allow_boot_gpu": True}
    assert f"<rom bar='on' file='{rom}'/>" in cli_xml and "<hidden state='on'/>" in cli_xml
    assert cli_xml.count("<hostdev mode='subsystem' type='pci' managed='yes'>") == 4


@pytest.mark.daemon
def test_usb_attach_updates_the_saved_settings_in_both_faces(qtbot, system_daemon, tmp_path):
    """On the real daemon (the test driver cannot attach devices), to stopped VMs."""
    from vm_manager.actions import delete, usb
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.gui.dialogs import USBPanel

    root = add_usb_devices(tmp_path / "host", [FakeUSBDevice(1, "2", "046d", "c077", devnum=3,
                                                             product_name="M105 Mouse")])
    store = VMStore(tmp_path / "config")
    names = {face: f"neuron-e2e-usb-{face}-{uuid.uuid4().hex[:6]}" for face in ("cli", "gui")}
    with guard.allowed():
        conn = LibvirtConnection(system_daemon).open()
        ctx = Context(connection=conn, store=store, images_dir=tmp_path / "images",
                      host_root=root)
        for name in names.values():
            ctx.creator().create(VMConfig(name=name, vm_type="linux", disk_size_gb=1,
                                          network="none", domain_type="qemu"))
    try:
        cli(["usb", "attach", names["cli"], "046d:c077"], conn,
            NEURONOS_HOST_ROOT=str(root), NEURONOS_CONFIG_DIR=str(tmp_path / "config"))
        with guard.allowed():  # what the window's worker reads before the panel opens
            devices, attached = usb.list_usb(ctx), usb.attached(ctx, names["gui"])
        panel = USBPanel(ctx, names["gui"], devices, attached)
        qtbot.addWidget(panel)
        from PySide6.QtCore import Qt

        panel.list.item(0).setCheckState(Qt.Checked)
        qtbot.waitUntil(lambda: bool(panel.outcomes or panel.errors), timeout=20000)
        assert panel.errors == [] and panel.outcomes[0].settings_saved
        with guard.allowed():
            saved = {face: [u.__dict__ for u in store.load(name).usb_devices]
                     for face, name in names.items()}
            hostdevs = {face: [h for h in usb_hostdevs(conn, name)]
                        for face, name in names.items()}
    finally:
        with guard.allowed():
            for name in names.values():
                delete.delete(ctx, delete.DeleteRequest(name, delete_disks=True, force=True))
            ctx.close()
            conn.close()
    assert saved["gui"] == saved["cli"] == [{"vendor_id": "046d", "product_id": "c077",
                                             "bus": None, "port": None,
                                             "name": "M105 Mouse"}]
    assert hostdevs["gui"] == hostdevs["cli"] == [("046d", "c077", None, None)]


def usb_hostdevs(conn, name):
    from vm_manager.base.domain_xml import read_domain

    xml = conn.execute(lambda c: c.lookupByName(name).XMLDesc(2))  # the inactive definition
    return [(h.vendor_id, h.product_id, h.bus, h.device) for h in read_domain(xml).usb_hostdevs]


@pytest.fixture
def lg_world(make_host, tmp_path):
    """A running test-driver VM with Looking Glass settings, its shared memory file where
    the fake client (run as the desktop user) can open it, and the guest's host app."""
    from vm_manager.base.vm_config import VMConfig

    name = f"lgvm-{uuid.uuid4().hex[:6]}"
    shm, shared, client = looking_glass_stand_in(name)
    spice = FakeSpiceServer()  # the client needs its SPICE port to answer, as B7 does
    store = VMStore(tmp_path / "config")
    store.save(VMConfig(name=name, vm_type="windows10", gpu_passthrough={"pci_address":
                                                                         "01:00.0"},
                        looking_glass={"enabled": True}))
    with guard.allowed():
        conn = LibvirtConnection(make_host()).open()
        conn.execute(lambda c: c.defineXML(
            f"<domain type='test'><name>{name}</name><memory unit='MiB'>512</memory><vcpu>1"
            f"</vcpu><os><type>hvm</type></os><devices><graphics type='spice' port='{spice.port}'"
            " autoport='no' listen='127.0.0.1'/></devices></domain>"))
    host = FakeLGHost(shm).start()
    run_as = "nobody" if os.geteuid() == 0 else None
    yield name, conn, store, client, run_as, tmp_path / "lg-logs"
    host.stop()
    spice.close()
    with guard.allowed():
        conn.close()
    shm.unlink(missing_ok=True)
    shutil.rmtree(shared, ignore_errors=True)


def test_the_display_follows_the_vm_in_both_faces(qtbot, lg_world, monkeypatch):
    from vm_manager.core.looking_glass import LGState, LookingGlassManager
    from vm_manager.gui.app import MainWindow

    name, conn, store, client, run_as, logs = lg_world

    def start_vm():
        with guard.allowed():
            conn.execute(lambda c: c.lookupByName(name).create())

    def stop_vm():
        with guard.allowed():
            conn.execute(lambda c: c.lookupByName(name).destroy())

    # the CLI: `neuron-vm display NAME` runs until the VM stops, then exits 0
    monkeypatch.setenv("NEURONOS_LG_CLIENT", str(client))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(store.config_dir))
    monkeypatch.setenv("XDG_STATE_HOME", str(logs))
    start_vm()
    out, code = io.StringIO(), []
    argv = ["display", name] + (["--user", run_as] if run_as else [])
    thread = threading.Thread(target=lambda: code.append(main(argv, connection=conn, out=out,
                                                               err=io.StringIO())))
    thread.start()
    qtbot.waitUntil(lambda: f"{name}: running" in out.getvalue(), timeout=15000)
    stop_vm()
    thread.join(timeout=30)
    assert code == [0] and f"{name}: stopped" in out.getvalue()

    # the window: "Show display" opens the same way and closes with the VM too
    start_vm()
    managers = []

    def factory(run_as=None, connection=None, desktop_user=run_as):
        managers.append(LookingGlassManager(client=client, log_dir=logs,
                                            run_as=run_as or desktop_user,
                                            connection=connection, stop_timeout=2))
        return managers[-1]

    ctx = Context(connection=conn, store=store, looking_glass=factory)
    win = MainWindow(context=ctx)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitUntil(lambda: win.model.row_for(name) is not None, timeout=5000)
    win.select(name)
    win.commands.on_display()
    qtbot.waitUntil(lambda: bool(managers) and managers[0].get_state(name) == LGState.RUNNING,
                    timeout=15000)
    import re

    # the details pane follows the client's state changes (events, no polling)
    qtbot.waitUntil(lambda: re.search(r"Client\s+running", win.details.toPlainText()),
                    timeout=10000)
    stop_vm()  # stopped outside the window: the client goes with the VM
    qtbot.waitUntil(lambda: managers[0].get_state(name) == LGState.STOPPED, timeout=15000)
    win.close()


class _SlowOutput(io.StringIO):
    """A terminal that takes its time: a state printed on another thread must still be
    whole in the output when the command returns."""

    def write(self, text: str) -> int:
        time.sleep(0.2)
        return super().write(text)


def test_display_prints_every_state_in_order_before_it_exits(lg_world, monkeypatch):
    """A run that ends in error (the client's user cannot open the shared memory): every
    state line is in the output, whole and in order, when `display` returns (issue 13:
    the last line, or its newline, was lost)."""
    name, conn, store, client, run_as, logs = lg_world
    if run_as is None:
        pytest.skip("a shared memory file this user cannot open needs root to make")
    shm = Path("/dev/shm") / f"looking-glass-{name}"
    os.chmod(shm, 0o600)  # root's only: the desktop user's client cannot open it
    monkeypatch.setenv("NEURONOS_LG_CLIENT", str(client))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(store.config_dir))
    monkeypatch.setenv("XDG_STATE_HOME", str(logs))
    with guard.allowed():
        conn.execute(lambda c: c.lookupByName(name).create())
    out, err, code = _SlowOutput(), io.StringIO(), []
    thread = threading.Thread(target=lambda: code.append(main(  # as the CLI: off the UI thread
        ["display", name, "--user", run_as], connection=conn, out=out, err=err)))
    thread.start()
    thread.join(timeout=30)
    text = out.getvalue()
    assert code == [1], (text, err.getvalue())
    assert text.endswith("\n"), text
    states = [line.split(": ", 1)[1].split(" ", 1)[0] for line in text.splitlines()]
    assert states == ["waiting-for-host", "error"], text
    assert "cannot open it read-write" in text.splitlines()[-1]


def test_create_with_the_defaults_is_the_same_vm_in_both_faces(qtbot, make_host, tmp_path):
    """A Linux VM with a GPU and Looking Glass, nothing else chosen: the CLI and the wizard
    save the same settings (the system's defaults from one table: memory, vCPUs, disk size)
    and define the same XML."""
    from vm_manager.actions import host
    from vm_manager.gui.dialogs import CreateWizard

    root = add_pci_devices(tmp_path / "host", nvidia_turing_gpu())
    results = {}
    for face, folder, env, conn, store in faces(make_host, tmp_path, root):
        if face == "cli":
            cli(["create", "g", "--template", "linux", "--gpu", "01:00.0", "--looking-glass",
                 "--network", "none"], conn, **env)
        else:
            ctx = Context(connection=conn, store=store, images_dir=folder / "images",
                          host_root=root)
            with guard.allowed():
                devices = host.devices(ctx)
            wiz = CreateWizard(ctx, devices)
            qtbot.addWidget(wiz)
            wiz.show()
            page = wiz.system_page
            page.template.setCurrentIndex(page.template.findData("linux"))
            page.name.setText("g")
            page.network.setCurrentIndex(page.network.findData("none"))
            assert page.memory.text() == "2G"  # the table's, within the host
            assert page.isComplete(), page.error.text()
            wiz.next()
            choices = wiz.devices_page
            choices.gpu.setCurrentIndex(choices.gpu.findData("0000:01:00.0"))
            choices.looking_glass.setChecked(True)
            choices.resolution.setCurrentText("2560x1440")
            wiz.next()
            wiz.next()
            qtbot.waitUntil(lambda: wiz.summary_page.plan is not None, timeout=10000)
            wiz.summary_page.start.setChecked(False)  # as the CLI without --start
            wiz.summary_page.validatePage()  # Create: made on a worker
            qtbot.waitUntil(lambda: wiz.result is not None, timeout=20000)
        results[face] = outcome(conn, store, folder / "images")
    (cli_xml, cli_saved), (gui_xml, gui_saved) = results["cli"], results["gui"]
    assert gui_saved == cli_saved
    assert (cli_saved["memory_mb"], cli_saved["vcpus"], cli_saved["disk_size_gb"]) == (
        2048, 2, 32)
    assert "display_mode" not in cli_saved and cli_saved["looking_glass"]["enabled"]
    assert gui_xml == cli_xml


def test_info_is_the_details_pane_as_text(make_host, tmp_path):
    """`neuron-vm info` prints the very sections and rows the desktop app's details pane
    shows (one typed result, `actions.details`)."""
    from vm_manager.actions import details

    env = {"NEURONOS_IMAGES_DIR": str(tmp_path / "images")}
    with guard.allowed():
        conn = LibvirtConnection(make_host()).open()
    cli(["create", "w", "--template", "windows11", "--network", "none"], conn, **env)
    text = cli(["info", "w"], conn, **env)
    with guard.allowed():
        pane = details.details(Context(connection=conn, store=VMStore()), "w")
        conn.close()
    printed = [block.splitlines() for block in text.strip().split("\n\n")]
    assert [lines[0] for lines in printed] == [section.title for section in pane.sections]
    for lines, section in zip(printed, pane.sections):
        assert [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:]] \
            == [(label, value) for label, value in section.rows]


def test_display_of_a_paused_vm_waits_for_it_to_run_again(lg_world, monkeypatch):
    """Issue 27, item 5: `display` of a paused VM was refused ("is not running"); it now
    says it waits, and the window opens when the VM is resumed."""
    name, conn, store, client, run_as, logs = lg_world
    monkeypatch.setenv("NEURONOS_LG_CLIENT", str(client))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(store.config_dir))
    monkeypatch.setenv("XDG_STATE_HOME", str(logs))
    with guard.allowed():
        conn.execute(lambda c: c.lookupByName(name).create())
        conn.execute(lambda c: c.lookupByName(name).suspend())
    out, code = io.StringIO(), []
    argv = ["display", name] + (["--user", run_as] if run_as else [])
    thread = threading.Thread(target=lambda: code.append(main(argv, connection=conn, out=out,
                                                               err=io.StringIO())))
    thread.start()
    deadline = time.monotonic() + 15
    while f"{name} is paused: the window opens when it runs again" not in out.getvalue():
        assert time.monotonic() < deadline and thread.is_alive(), out.getvalue()
        time.sleep(0.05)
    with guard.allowed():
        conn.execute(lambda c: c.lookupByName(name).resume())
    while f"{name}: running" not in out.getvalue():
        assert time.monotonic() < deadline + 15 and thread.is_alive(), out.getvalue()
        time.sleep(0.05)
    with guard.allowed():
        conn.execute(lambda c: c.lookupByName(name).destroy())
    thread.join(timeout=30)
    assert code == [0], out.getvalue()
    assert f"(its log: {logs}" in out.getvalue() or "/.local/state/neuronos/looking-glass/" \
        in out.getvalue(), out.getvalue()  # the client's log: said where it is
