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
