"""Issue 27, item 4: SIGTERM and SIGHUP are handled like Ctrl-C by the long-running
commands: they end what they started (the viewer and its children, following a setup), say
their last state and exit 128+n. The real entry point runs in a child process (the signal
handlers are installed there, as for a user), against libvirt's test driver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.media import virtio_win_iso, windows_iso


def neuron_vm(*argv, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vm_manager", *argv],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", **env))


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_console_wait_takes_its_viewer_and_the_viewers_children_along(tmp_path, signum):
    """`console --wait`: the viewer (a stand-in that starts a child, as virt-viewer's
    helpers do) and its child end with neuron-vm, which exits 128+n."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    viewer = bin_dir / "virt-viewer"
    viewer.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {tmp_path}/child\n"
                      f"echo $$ > {tmp_path}/viewer\nwait\n")
    viewer.chmod(0o755)
    process = neuron_vm("-c", "test:///default", "console", "test", "--wait", env={
        "PATH": f"{bin_dir}:{os.environ['PATH']}", "DISPLAY": ":99"})
    wait_for(lambda: (tmp_path / "child").exists() and (tmp_path / "viewer").exists()
             and (tmp_path / "child").read_text().strip(), "the viewer to start")
    pids = [int((tmp_path / name).read_text()) for name in ("viewer", "child")]
    process.send_signal(signum)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 128 + signum, err
    assert f"stopped by {signal.Signals(signum).name}" in err
    wait_for(lambda: not any(alive(pid) for pid in pids), "the viewer and its child to end",
             10)


@pytest.mark.timeout(180)
def test_create_start_following_a_setup_says_where_it_stopped(tmp_path):
    """`create --unattended --start` following the stages: SIGTERM stops following (the VM
    runs on, its setup goes on), says the stage and how to look again, exits 143. It was
    left defined and running without a word."""
    isos = tmp_path / "isos"
    isos.mkdir()
    password = tmp_path / "password"
    password.write_text("Sw0rdfish\n")
    password.chmod(0o600)
    process = neuron_vm(
        "-c", "test:///default", "create", "w11", "--template", "windows11",
        "--iso", str(windows_iso(isos / "win11.iso")),
        "--virtio-iso", str(virtio_win_iso(isos / "virtio-win.iso")), "--network", "none",
        "--force", "--unattended", "--user", "anna", "--password-file", str(password),
        "--start", env={"NEURONOS_IMAGES_DIR": str(tmp_path / "images"),
                        "NEURONOS_CONFIG_DIR": str(tmp_path / "config")})
    lines = []

    def following() -> bool:
        line = process.stdout.readline()
        lines.append(line)
        return "following the setup of w11" in line or process.poll() is not None

    wait_for(following, "create to follow the setup", 120)
    assert process.poll() is None, "".join(lines) + process.stderr.read()
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "w11: stopped following at stage installing; the VM runs on and its setup goes on" \
        " (`neuron-vm setup-status w11`)" in out, out
    assert "stopped by SIGTERM" in err


@pytest.mark.timeout(120)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_display_closes_its_looking_glass_client(tmp_path, signum):
    """`display`: the Looking Glass client (the fake that behaves like B7) ends with
    neuron-vm, no pid file is left, and the exit is 128+n. It was left running (PPID 1,
    window up) with its pid file behind."""
    import shutil
    import uuid

    from support.fakes import FakeLGHost, FakeSpiceServer, looking_glass_stand_in
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig

    name = f"lgsig-{uuid.uuid4().hex[:6]}"
    shm, shared, client = looking_glass_stand_in(name)
    spice = FakeSpiceServer()
    VMStore(tmp_path / "config").save(VMConfig(
        name=name, vm_type="windows10", gpu_passthrough={"pci_address": "01:00.0"},
        looking_glass={"enabled": True}))
    node = tmp_path / "node.xml"  # the VM runs in every connection's copy of the test host
    node.write_text(
        "<node xmlns:test='http://libvirt.org/schemas/domain/test/1.0'><domain type='test'>"
        f"<name>{name}</name><memory unit='MiB'>512</memory><vcpu>1</vcpu><os><type>hvm"
        f"</type></os><devices><graphics type='spice' port='{spice.port}' autoport='no'"
        " listen='127.0.0.1'/></devices><test:runstate>1</test:runstate></domain></node>")
    host = FakeLGHost(shm).start()
    logs = tmp_path / "logs"
    argv = ["-c", f"test://{node}", "display", name]
    if os.geteuid() == 0:
        argv += ["--user", "nobody"]  # the client refuses root, as B7 does
    process = neuron_vm(*argv, env={"NEURONOS_LG_CLIENT": str(client),
                                    "NEURONOS_CONFIG_DIR": str(tmp_path / "config"),
                                    "XDG_STATE_HOME": str(logs)})
    try:
        lines = []

        def running() -> bool:
            line = process.stdout.readline()
            lines.append(line)
            return f"{name}: running" in line or process.poll() is not None

        wait_for(running, "the client to run", 60)
        assert process.poll() is None, "".join(lines) + process.stderr.read()
        pid_file = logs / "neuronos" / "looking-glass" / f"{name}.pid"
        client_pid = int(pid_file.read_text())
        assert alive(client_pid)
        process.send_signal(signum)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 128 + signum, err
        assert f"stopped by {signal.Signals(signum).name}" in err
        wait_for(lambda: not alive(client_pid), "the client to end", 10)
        assert not pid_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
        host.stop()
        spice.close()
        shm.unlink(missing_ok=True)
        shutil.rmtree(shared, ignore_errors=True)
