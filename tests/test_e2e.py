"""End to end on a real libvirtd with real QEMU (TCG) booting the tiny guest.

CI starts the daemons; elsewhere these skip with the reason. The guest is built from
Debian packages into a cache folder on first use (vm_manager.tiny_guest).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import sys
import threading
import uuid

import pytest

from conftest import lifecycle_on
from daemon import kill_libvirtd, need_restartable_daemon, start_libvirtd
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.errors import LifecycleError
from vm_manager.base.primitives import VMState
from vm_manager.core.state_machine import VMStateMachine
from vm_manager.core.vm_lifecycle import ShutdownMethod
from support.domains import domain_xml, no_os_domain_xml, remove_domain
from support.tiny_guest import READY_MARKER
from support.tiny_guest import wait_for_console

pytestmark = pytest.mark.daemon
S = VMState
BOOT_TIMEOUT = 120  # TCG on a 2-core CI machine; the guest is usually ready in ~5 s


@pytest.fixture
def system(system_daemon):
    with lifecycle_on(system_daemon) as manager:
        yield manager


@pytest.fixture
def define(system, tmp_path):
    """define(kind) -> (name, serial_log); every domain is destroyed and undefined after."""
    names = []

    def make(xml_for) -> tuple[str, object]:
        name = f"neuron-e2e-{uuid.uuid4().hex[:8]}"
        serial = tmp_path / f"{name}.serial.log"
        conn = system.connection
        conn.execute(lambda c: c.defineXML(xml_for(name, serial)))
        names.append(name)
        return name, serial

    yield make
    conn = LibvirtConnection(system.connection.uri)
    for name in names:
        try:
            remove_domain(conn, name)
        except Exception as error:  # noqa: BLE001 - cleanup must not hide the test's result
            print(f"cleanup of {name} failed: {error}")
    conn.close()


def test_start_ready_pause_resume_and_graceful_stop(system, define, tiny_guest):
    name, serial = define(lambda n, s: domain_xml(n, tiny_guest, s))
    assert system.get_state(name) == S.SHUTOFF
    # a watcher on its own connection, as `neuron-vm events` and the app are
    with LibvirtConnection(system.connection.uri) as conn:
        watcher = VMStateMachine(conn)
        assert watcher.state(name) == S.SHUTOFF
        seen, running = [], threading.Event()
        watcher.subscribe(lambda change: (seen.append(change), running.set())
                          if change.name == name and change.new == S.RUNNING else None)
        started = system.start(name, timeout=BOOT_TIMEOUT)
        assert running.wait(30)
        watcher.close()
    # libvirt says RESUMED (unpaused) before STARTED: the walk saw a start named a resume
    assert seen[0].old == S.SHUTOFF and seen[0].reason.startswith("started"), seen
    assert started.state == S.RUNNING
    wait_for_console(serial, READY_MARKER, timeout=BOOT_TIMEOUT)
    assert system.pause(name).state == S.PAUSED
    with pytest.raises(LifecycleError, match="paused"):
        system.start(name)
    assert system.resume(name).state == S.RUNNING
    stopped = system.stop(name, timeout=60)
    assert stopped.state == S.SHUTOFF
    assert stopped.forced is False and stopped.method == "graceful"
    assert stopped.elapsed_s < 60


def test_a_stop_pressed_while_the_guest_boots_is_pressed_again(system, define, tiny_guest,
                                                                caplog):
    """Walk: a stop right after the start always waited its whole timeout and forced the
    guest off: the power button, pressed before the booting kernel listens for it, is lost.
    It is pressed again every 10 s, so the guest shuts down by itself once it listens."""
    name, serial = define(lambda n, s: domain_xml(n, tiny_guest, s))
    system.start(name, timeout=BOOT_TIMEOUT)
    caplog.set_level("INFO", logger="vm_manager.core.vm_lifecycle")
    stopped = system.stop(name, timeout=BOOT_TIMEOUT + 60)  # pressed at once
    assert READY_MARKER in serial.read_text(errors="replace")  # it had booted meanwhile
    assert stopped.state == S.SHUTOFF and stopped.forced is False, stopped
    assert stopped.elapsed_s < BOOT_TIMEOUT + 60
    print(f"stopped {stopped.elapsed_s:.1f} s after the start; presses:",
          [r.getMessage() for r in caplog.records if "pressing it again" in r.getMessage()])


def test_guest_that_ignores_acpi_is_forced_after_the_timeout(system, define):
    name, _ = define(lambda n, s: no_os_domain_xml(n))
    system.start(name, timeout=BOOT_TIMEOUT)
    result = system.stop(name, timeout=3)
    assert result.forced is True and result.method == "forced"
    assert result.state == S.SHUTOFF
    assert result.elapsed_s >= 3
    assert "forced" in result.message


def test_a_qemu_that_no_longer_answers_is_still_stopped(system, define):
    """A QEMU whose monitor never answers (seen in CI: a TCG QEMU hung during a boot, and
    libvirt waited for its answer to the power button for ever, holding delete --force):
    here a stopped process (SIGSTOP). A graceful stop with a 5 s timeout powers it off by
    force, and a force-stop is never held behind the hung request."""
    name, _ = define(lambda n, s: no_os_domain_xml(n))
    system.start(name, timeout=BOOT_TIMEOUT)
    pid = int(open(f"/run/libvirt/qemu/{name}.pid").read())
    os.kill(pid, signal.SIGSTOP)
    try:
        result = system.stop(name, timeout=5)
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    assert result.forced is True and result.state == S.SHUTOFF
    assert system.get_state(name) == S.SHUTOFF
    # the same with a force-stop while another graceful request hangs in this process
    system.start(name, timeout=BOOT_TIMEOUT)
    pid = int(open(f"/run/libvirt/qemu/{name}.pid").read())
    os.kill(pid, signal.SIGSTOP)
    outcome: list[object] = []

    def graceful_stop():
        try:
            outcome.append(system.stop(name, timeout=600).state)
        except LifecycleError as error:
            outcome.append(error)

    stopping = threading.Event()
    token = system.states.subscribe(
        lambda change: stopping.set() if change.name == name and change.new == S.STOPPING
        else None)
    graceful = threading.Thread(target=graceful_stop, daemon=True)
    graceful.start()
    assert stopping.wait(30), "the graceful stop never began"
    system.states.unsubscribe(token)
    try:
        assert system.stop(name, method=ShutdownMethod.FORCE).state == S.SHUTOFF
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
    graceful.join(60)
    assert not graceful.is_alive(), "the graceful stop still waits on a QEMU that is gone"
    # it ended: cut short by the force-stop, or it saw the VM off
    assert outcome and (outcome[0] == S.SHUTOFF or "cut short" in str(outcome[0])), outcome


def test_a_hung_qemu_is_told_from_a_quiet_guest(system, define, tmp_path):
    """The cloud-guest tests' watch (tests/support/qemu_watch.py) takes a silent console
    for a hung QEMU only when QEMU's monitor does not answer: a quiet guest is waited for."""
    from support.qemu_watch import QemuHung, Watch

    name, _ = define(lambda n, s: no_os_domain_xml(n))  # no console: always silent
    system.start(name, timeout=BOOT_TIMEOUT)
    watch = Watch(name, tmp_path / "never-written.log", silence=0, probe_s=10)
    watch.check()  # its monitor answers: no QemuHung
    pid = int(open(f"/run/libvirt/qemu/{name}.pid").read())
    os.kill(pid, signal.SIGSTOP)
    try:
        with pytest.raises(QemuHung, match="did not answer query-status") as hung:
            watch.check()
        assert f"QEMU pid {pid}: " in str(hung.value) and " T wchan=" in str(hung.value)
    finally:
        system.stop(name, method=ShutdownMethod.FORCE)
        os.kill(pid, signal.SIGCONT) if os.path.exists(f"/proc/{pid}") else None


def test_start_paused_then_resume(system, define, tiny_guest):
    name, serial = define(lambda n, s: domain_xml(n, tiny_guest, s))
    assert system.start(name, paused=True).state == S.PAUSED
    assert system.resume(name).state == S.RUNNING
    wait_for_console(serial, READY_MARKER, timeout=BOOT_TIMEOUT)
    assert system.stop(name, method=ShutdownMethod.FORCE).state == S.SHUTOFF


def test_reboot_and_reset_restart_the_guest(system, define, tiny_guest):
    name, serial = define(lambda n, s: domain_xml(n, tiny_guest, s))
    system.start(name, timeout=BOOT_TIMEOUT)
    wait_for_console(serial, READY_MARKER, timeout=BOOT_TIMEOUT)
    assert system.reboot(name).state == S.RUNNING  # ACPI: the guest powers off, libvirt restarts it
    wait_for_console(serial, READY_MARKER, count=2, timeout=BOOT_TIMEOUT)
    assert system.get_state(name) == S.RUNNING
    assert system.reset(name).state == S.RUNNING
    wait_for_console(serial, READY_MARKER, count=3, timeout=BOOT_TIMEOUT)
    assert system.stop(name, timeout=60).forced is False


def test_events_cli_streams_changes_until_ctrl_c(system, define, tiny_guest):
    name, serial = define(lambda n, s: domain_xml(n, tiny_guest, s))
    system.start(name, timeout=BOOT_TIMEOUT)
    watcher = subprocess.Popen(
        [sys.executable, "-m", "vm_manager", "--connect", system.connection.uri, "events", name,
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        # The watcher has subscribed once it has read the VM's state; events after that are
        # seen. Pause/resume until its first line arrives, so no fixed sleep is needed.
        import selectors

        selector = selectors.DefaultSelector()
        selector.register(watcher.stdout, selectors.EVENT_READ)
        first = None
        for _ in range(50):
            system.pause(name)
            system.resume(name)
            if selector.select(timeout=1.0):
                first = json.loads(watcher.stdout.readline())
                break
        assert first is not None, "no event line from `neuron-vm events`"
        assert first["name"] == name and {first["old"], first["new"]} <= {"running", "paused"}
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            _, err = watcher.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # say where it hangs: every thread's stack
            watcher.send_signal(signal.SIGUSR2)
            time.sleep(2)
            watcher.kill()
            _, err = watcher.communicate()
            pytest.fail(f"`neuron-vm events` still runs 30 s after Ctrl-C:\n{err}")
    assert watcher.returncode == 0, err
    system.stop(name, method=ShutdownMethod.FORCE)


def test_vm_survives_a_libvirtd_restart(system, define, tiny_guest):
    need_restartable_daemon()
    name, serial = define(lambda n, s: domain_xml(n, tiny_guest, s))
    system.start(name, timeout=BOOT_TIMEOUT)
    wait_for_console(serial, READY_MARKER, timeout=BOOT_TIMEOUT)
    kill_libvirtd()
    start_libvirtd(system.connection.uri)
    assert system.connection.wait_connected(30)
    # The state is re-read after the reconnect: still running, and still listed so.
    assert system.states.refresh(name) == S.RUNNING
    listing = subprocess.run(
        [sys.executable, "-m", "vm_manager", "--connect", system.connection.uri, "--json",
         "list"], capture_output=True, text=True, timeout=60,
    )
    assert {vm["name"]: vm["state"] for vm in json.loads(listing.stdout)}[name] == "running"
    stopped = system.stop(name, timeout=60)
    assert stopped.state == S.SHUTOFF and stopped.forced is False


# --- templates on the real daemon (issue 4) ---------------------------------------------------

def unique(case: str) -> str:
    return f"neuron-e2e-{case}-{uuid.uuid4().hex[:6]}"


def test_every_template_defines_on_the_real_daemon(system, tmp_path):
    from creation_cases import cases, media
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.core.vm_creator import VMCreator
    from vm_manager.core.vm_destroyer import VMDestroyer

    images = tmp_path / "images"
    store = VMStore(tmp_path / "config")
    creator = VMCreator(system.connection, store=store, images_dir=images)
    destroyer = VMDestroyer(system.connection, store=store, lifecycle=system, images_dir=images)
    for case, config in cases(media(tmp_path / "media"), gpu=False).items():
        data = config.to_dict()
        data["name"] = unique(case)
        result = creator.create(VMConfig.from_dict(data), force=True, usb_later=True)
        try:
            assert system.get_state(result.name) == S.SHUTOFF
            live = system.connection.execute(lambda c: c.lookupByName(result.name).XMLDesc(0))
            assert f"<name>{result.name}</name>" in live
        finally:
            outcome = destroyer.destroy(result.name, delete_disks=True)
        if result.disk_created:
            assert result.disk_path in outcome.removed


def test_windows11_starts_on_real_qemu(system, tmp_path):
    """UEFI with Secure Boot and Microsoft keys, TPM 2.0 (swtpm), SMM, Hyper-V: QEMU starts it
    (it idles in the firmware: there is no OS on the disk). Then it is deleted with
    everything, NVRAM included."""
    from pathlib import Path

    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.core.vm_creator import VMCreator
    from vm_manager.core.vm_destroyer import VMDestroyer

    store = VMStore(tmp_path / "config")
    images = Path("/var/lib/libvirt/images")  # QEMU's user must reach the disk
    creator = VMCreator(system.connection, store=store, images_dir=images)
    destroyer = VMDestroyer(system.connection, store=store, lifecycle=system, images_dir=images)
    name = unique("win11")
    config = VMConfig(name=name, vm_type="windows11", memory_mb=4096, vcpus=2,
                      disk_size_gb=64, domain_type="qemu", network="none")
    result = creator.create(config, force=True)
    try:
        assert system.start(name, timeout=BOOT_TIMEOUT).state == S.RUNNING
        live = system.connection.execute(lambda c: c.lookupByName(name).XMLDesc(0))
        assert "secure='yes'" in live and "<tpm model='tpm-crb'>" in live
        nvram = [line for line in live.splitlines() if "<nvram" in line]
        assert nvram, "libvirt picked no UEFI variable store"
        system.stop(name, method=ShutdownMethod.FORCE)
    finally:
        outcome = destroyer.destroy(name, delete_disks=True, force=True)
    assert result.disk_path in outcome.removed and not Path(result.disk_path).exists()
    nvram_path = nvram[0].split(">")[1].split("<")[0]
    assert not Path(nvram_path).exists(), "NVRAM kept although everything was deleted"


# --- USB hot-plug call path (issue 5) ------------------------------------------------------

USB_MOUSE = "<input type='mouse' bus='usb'/>"  # QEMU plugs it on the xHCI bus, no hardware


def test_usb_hot_plug_and_confirmed_detach(system, tmp_path, tiny_guest):
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.core.vm_creator import VMCreator
    from vm_manager.core.vm_destroyer import VMDestroyer
    from vm_manager.passthrough.usb_attach import attach_device, detach_device

    conn = system.connection
    store = VMStore(tmp_path / "config")
    name = unique("usb")
    serial = tmp_path / "serial.log"
    config = VMConfig(name=name, vm_type="linux", memory_mb=512, vcpus=1, disk_size_gb=0,
                      kernel_path=str(tiny_guest.kernel), initrd_path=str(tiny_guest.initrd),
                      kernel_cmdline="console=ttyS0 quiet", serial_log_path=str(serial),
                      network="none", domain_type="qemu")
    VMCreator(conn, store=store).create(config)

    def mice(flags=0) -> int:
        return conn.execute(lambda c: c.lookupByName(name).XMLDesc(flags)).count(
            "<input type='mouse' bus='usb'>")

    try:
        system.start(name, timeout=BOOT_TIMEOUT)
        wait_for_console(serial, READY_MARKER, timeout=BOOT_TIMEOUT)
        assert attach_device(conn, name, USB_MOUSE) is True  # hot-plugged
        assert mice() == 1 and mice(2) == 1  # live and in the config (2: INACTIVE)
        assert detach_device(conn, name, USB_MOUSE, timeout=30) is True  # event confirmed
        assert mice() == 0 and mice(2) == 0
        system.stop(name, method=ShutdownMethod.FORCE)
        assert attach_device(conn, name, USB_MOUSE) is False  # stopped: config only
        assert mice(2) == 1
        assert detach_device(conn, name, USB_MOUSE) is False and mice(2) == 0
    finally:
        VMDestroyer(conn, store=store, lifecycle=system).destroy(name, force=True)


# --- Looking Glass on QEMU's real shared memory (issue 6) -----------------------------------

def test_looking_glass_on_real_ivshmem(system, tmp_path, tiny_guest):
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from vm_manager.base.domain_xml import read_domain
    from vm_manager.core.looking_glass import LGClientConfig, LGState, LookingGlassManager
    from vm_manager.passthrough.ivshmem import (
        access_problem, claim_shared_memory, qemu_account, shm_name, shm_path, user_credentials,
    )
    from vm_manager.templates.loader import TemplateLoader
    from support.fakes import FakeLGHost

    conn = system.connection
    name = unique("lg")
    serial = tmp_path / "serial.log"
    shmem = TemplateLoader().render_fragment("shmem", {"shm_name": shm_name(name),
                                                       "size_mb": 32})
    xml = domain_xml(name, tiny_guest, serial, spice=True).replace("</devices>",
                                                                    shmem + "</devices>")
    conn.execute(lambda c: c.defineXML(xml))
    run_as = "nobody" if os.geteuid() == 0 else None
    shared = Path(tempfile.mkdtemp(prefix="neuronos-lg-"))
    os.chmod(shared, 0o777)
    client = shared / "looking-glass-client"
    shutil.copy(Path(__file__).parent / "bin" / "looking-glass-client", client)
    os.chmod(client, 0o755)
    manager = LookingGlassManager(client=client, log_dir=tmp_path / "lg", run_as=run_as,
                                  stop_timeout=2, host_timeout=30, connection=conn)
    path = shm_path(name)
    host = None
    try:
        # what every start through NeuronOS does first: the file made anew for the desktop
        # user (0600) and QEMU's user (an ACL entry), which QEMU then opens as it is
        claim_shared_memory(path, user_credentials(run_as or str(os.geteuid())), qemu_account())
        system.start(name, timeout=BOOT_TIMEOUT)
        assert path.stat().st_size == 32 * 1024 * 1024  # QEMU sized and mapped our file
        assert access_problem(path, run_as) is None  # the desktop user's own
        host = FakeLGHost(path).start()  # the guest's host application, writing its header
        config = LGClientConfig(name)  # SPICE on: no port, so through libvirt (a relay)
        manager.follow(system, lambda vm: config if vm == name else None)
        manager.start(name, config)
        assert manager.wait_for_state(name, {LGState.RUNNING, LGState.ERROR}, 60) == \
            LGState.RUNNING, manager.reason(name)
        assert read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(0))
                           ).spice_port is None  # QEMU's SPICE server has no TCP port
        log = manager.log_path(name)
        argv = [line for line in log.read_text().splitlines() if line.startswith("--- ")][-1]
        relay = argv.split("spice:host=")[1].split()[0]
        assert "spice:port=0" in argv and "neuronos-spice-" in relay  # the relay's socket
        host.stop()  # the guest's host app goes; the window stays and says so
        assert manager.wait_for_state(name, {LGState.HOST_STOPPED}, 10) == LGState.HOST_STOPPED
        host.start(new_session=True)
        assert manager.wait_for_state(name, {LGState.RUNNING}, 10) == LGState.RUNNING
        assert "failed to process spice messages" not in log.read_text()  # SPICE held
        system.stop(name, method=ShutdownMethod.FORCE)  # the VM stops: the client goes too
        assert manager.wait_for_state(name, {LGState.STOPPED}, 30) == LGState.STOPPED
    finally:
        if host is not None:
            host.stop()
        manager.stop_all()
        remove_domain(conn, name)
        path.unlink(missing_ok=True)  # QEMU's shared memory outlives the domain (RAM)
        shutil.rmtree(shared, ignore_errors=True)
