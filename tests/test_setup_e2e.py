"""Unattended setup on a real libvirtd with real QEMU (TCG): the stages from libvirt's own
events, a real QEMU guest agent (Debian's qemu-ga in the tiny guest), and the Windows
setup media detached at "ready" on a real UEFI + TPM domain. CI runs them; elsewhere they
skip with the reason."""

from __future__ import annotations

import base64
import json
import os
import pwd
import threading
import uuid
from pathlib import Path

import libvirt
import pytest

from conftest import lifecycle_on
from test_e2e import BOOT_TIMEOUT
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.domain_xml import read_domain
from vm_manager.core.guest_setup import SetupTracker
from support.domains import domain_xml, remove_domain as remove
from support.tiny_guest import STAGE_FILE

pytestmark = pytest.mark.daemon
# /run/cloud-init/result.json as Debian 12's cloud-init 22.4 wrote it on the real test guest
# (tests/support/cloud_guest.py)
CLEAN_RESULT = json.dumps({"v1": {
    "datasource": "DataSourceNoCloud [seed=/dev/vdb][dsmode=net]", "errors": []}}, indent=1)


def run_in_guest(conn, name: str, *argv: str) -> int:
    """Run a command in the guest through its agent; its exit code. guest-exec answers at
    once and nothing signals the end: asked again every 0.1 s, for at most 30 s."""
    import time

    pid = agent(conn, name, "guest-exec", path=argv[0], arg=list(argv[1:]))["pid"]
    for _ in range(300):
        status = agent(conn, name, "guest-exec-status", pid=pid)
        if status.get("exited"):
            return status.get("exitcode", -1)
        time.sleep(0.1)
    raise TimeoutError(f"{argv} did not end in the guest")


def agent(conn, name: str, command: str, **arguments):
    """One QEMU guest agent command through libvirt; its "return"."""
    import libvirt_qemu

    reply = conn.execute(lambda c: libvirt_qemu.qemuAgentCommand(
        c.lookupByName(name), json.dumps({"execute": command, "arguments": arguments}),
        10, 0))
    return json.loads(reply)["return"]


class Stages:
    """Every SetupChange, and an Event per stage to wait on (no sleeping)."""

    def __init__(self, tracker: SetupTracker, name: str):
        self.seen: list = []
        self.reached: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        tracker.subscribe(self._on)
        self.name = name

    def _on(self, change) -> None:
        if change.name != self.name:
            return
        with self._lock:
            self.seen.append(change)
            self.reached.setdefault(change.new, threading.Event()).set()
            self._changed.notify_all()

    def wait_note(self, stage: str, words: str, timeout: float) -> bool:
        """Wait for a change to ``stage`` whose note holds ``words``."""
        with self._changed:
            return self._changed.wait_for(lambda: any(
                c.new == stage and words in c.note for c in self.seen), timeout)

    def wait(self, stage: str, timeout: float) -> bool:
        with self._lock:
            event = self.reached.setdefault(stage, threading.Event())
        return event.wait(timeout)


@pytest.fixture
def conn(system_daemon):
    with LibvirtConnection(system_daemon) as connection:
        yield connection


def test_a_real_guest_agent_moves_the_setup_to_ready(conn, tiny_guest, tmp_path):
    """started -> installing (the lifecycle event), then the agent-lifecycle "connected"
    event from a real qemu-ga; the stage file is read through that agent and says "done":
    ready. Kept in the domain's metadata, where a fresh reader finds it."""
    name = f"neuron-setup-{uuid.uuid4().hex[:8]}"
    xml = domain_xml(name, tiny_guest, tmp_path / "serial.log", agent=True,
                     setup_stage="created")
    conn.execute(lambda c: c.defineXML(xml))
    tracker = SetupTracker(conn, stage_file=STAGE_FILE, boot_prompt_s=0).start()
    stages = Stages(tracker, name)
    try:
        with lifecycle_on(conn.uri) as lifecycle:
            lifecycle.start(name, timeout=BOOT_TIMEOUT)
        assert stages.wait("installing", 30), stages.seen
        assert stages.wait("ready", BOOT_TIMEOUT), stages.seen
        seen = [c.new for c in stages.seen]  # first-logon too when the agent was slow to
        assert seen[0] == "installing" and seen[-1] == "ready"  # answer the first read
        assert set(seen) <= {"installing", "first-logon", "ready"}
        assert "first-logon steps are done" in stages.seen[-1].note
        live = read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(0)))
        agent = next(c for c in live.channels if c.target_name == "org.qemu.guest_agent.0")
        assert agent.state == "connected"  # a real agent answers in there
        assert tracker.read_stage_file(name) == "done"
        fresh = SetupTracker(conn)  # what another NeuronOS reads: the metadata
        setup, _ = fresh.info(name)
        assert setup.stage == "ready" and [s for s, _, _ in setup.steps] == seen
        inactive = read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(
            libvirt.VIR_DOMAIN_XML_INACTIVE)))
        assert inactive.setup.stage == "ready"  # the config too, not only the live domain
    finally:
        tracker.close()
        remove(conn, name)


def test_windows_setup_media_are_detached_at_ready(conn, tmp_path):
    """A Windows 11 VM made by `create --unattended` (OVMF with Secure Boot, swtpm, the
    installer, the virtio ISO, the setup medium, the agent channel) really starts; the
    start moves it to "installing" (the Enter key for the disc's prompt goes through
    libvirt's sendKey). At "ready" the three CD-ROMs leave the config, are ejected live,
    and the medium, which holds the password, is deleted."""
    from vm_manager.actions.create import SetupSecrets
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.core.vm_creator import VMCreator
    from support.media import virtio_win_iso, windows_iso

    folder = Path(f"/var/lib/libvirt/images/neuron-setup-{uuid.uuid4().hex[:6]}")
    folder.mkdir(mode=0o711)
    name = f"neuron-win-{uuid.uuid4().hex[:6]}"
    try:
        installer = windows_iso(folder / "win11.iso")
        virtio = virtio_win_iso(folder / "virtio-win.iso")
        for path in (installer, virtio):
            path.chmod(0o644)
        store = VMStore(tmp_path / "config")
        creator = VMCreator(conn, store=store, images_dir=folder)
        config = VMConfig(name=name, vm_type="windows11", iso_path=str(installer),
                          virtio_iso_path=str(virtio), network="none", domain_type="qemu",
                          memory_mb=4096, vcpus=2, disk_size_gb=64,
                          unattended={"user": "anna"})
        result = creator.create(config, force=True, secrets=SetupSecrets("pw"))
        medium = folder / f"{name}-setup.iso"
        assert medium.exists() and str(medium) in result.xml
        tracker = SetupTracker(conn, boot_prompt_s=3, detach_paths=lambda n: {
            str(installer), str(virtio)}).start()
        stages = Stages(tracker, name)
        try:
            with lifecycle_on(conn.uri) as lifecycle:
                lifecycle.start(name, timeout=BOOT_TIMEOUT)
            assert stages.wait("installing", 30), stages.seen
            live = read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(0)))
            assert live.tpm is not None and live.os.secure_boot
            assert len([d for d in live.disks if d.device == "cdrom" and d.source]) == 3
            tracker.finish(name, "test: Windows said done")  # no Windows image here
            assert stages.wait("ready", 30)
            live = read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(0)))
            assert [d.source for d in live.disks if d.device == "cdrom"] == [None] * 3
            inactive = read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(
                libvirt.VIR_DOMAIN_XML_INACTIVE)))
            assert [d.device for d in inactive.disks] == ["disk"]
            assert inactive.disks[0].boot_order == 1  # the disk is first
            assert not medium.exists() and installer.exists() and virtio.exists()
        finally:
            tracker.close()
    finally:
        remove(conn, name)
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def test_a_real_kernel_reads_the_cloud_init_seed(conn, tiny_guest, tmp_path):
    """`create --template linux --cloud-image IMG --unattended`: the tiny guest (booted
    directly, as a cloud image's own kernel would be) mounts the cidata disk and prints
    meta-data's instance-id. Its real qemu-ga connecting is not the end: cloud-init has not
    finished (there is no cloud-init in there). Past the stage's deadline setup fails (the
    seed goes); when cloud-init's result then appears (written here through the agent, as
    the real guest's cloud-init 22.4 wrote it), the late success still makes it ready. The
    cloud image under the overlay is never written. (Real cloud-init, its errors and a
    deadline in real time: tests/test_cloud_guest.py.)"""
    import hashlib
    import subprocess

    from vm_manager.actions.create import SetupSecrets
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.core.vm_creator import VMCreator
    from support.tiny_guest import SEED_MARKER, wait_for_console

    folder = Path(f"/var/lib/libvirt/images/neuron-cloud-{uuid.uuid4().hex[:6]}")
    folder.mkdir(mode=0o711)
    name = f"neuron-cloud-{uuid.uuid4().hex[:6]}"
    serial = folder / "serial.log"
    base = folder / "cloud.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "128M"], check=True)
    base.chmod(0o644)
    digest = hashlib.sha256(base.read_bytes()).hexdigest()
    key = tmp_path / "key.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0example dev@host\n")
    tracker = SetupTracker(conn).start()
    stages = Stages(tracker, name)
    try:
        creator = VMCreator(conn, store=VMStore(tmp_path / "config"), images_dir=folder)
        config = VMConfig(name=name, vm_type="linux", cloud_image_path=str(base),
                          kernel_path=str(tiny_guest.kernel), initrd_path=str(tiny_guest.initrd),
                          kernel_cmdline="console=ttyS0 quiet panic=-1",
                          serial_log_path=str(serial), network="none", domain_type="qemu",
                          memory_mb=512, vcpus=1, disk_size_gb=1,
                          unattended={"user": "dev", "ssh_key_path": str(key)})
        result = creator.create(config, force=True, secrets=SetupSecrets("pw"))
        seed = folder / f"{name}-setup.iso"
        assert seed.exists()
        with lifecycle_on(conn.uri) as lifecycle:
            lifecycle.start(name, timeout=BOOT_TIMEOUT)
        wait_for_console(serial, SEED_MARKER, timeout=BOOT_TIMEOUT)
        line = next(line for line in serial.read_text(errors="replace").splitlines()
                    if SEED_MARKER in line)
        import yaml

        value = line.split(SEED_MARKER, 1)[1].strip()  # as meta-data holds it: YAML
        assert yaml.safe_load(value) == f"iid-{result.uuid}"
        waiting = "cloud-init is still setting the guest up"
        # the agent-lifecycle event of the real qemu-ga: still installing, and says why
        assert stages.wait_note("installing", waiting, BOOT_TIMEOUT), stages.seen
        assert tracker.status(name).stage == "installing"  # no result.json: not done
        # an hour later (the clock moved on): past the stage's deadline, setup fails
        from vm_manager.core import setup_stages

        real = setup_stages.time.time
        try:
            setup_stages.time.time = lambda: real() + 3600 * 2
            late = tracker.status(name)
        finally:
            setup_stages.time.time = real
        assert late.stage == "failed" and setup_stages.LATE in late.steps[-1][2], late
        assert not seed.exists()  # it held the account's key: gone at the failure
        run_in_guest(conn, name, "/bin/mkdir", "-p", "/run/cloud-init")
        handle = agent(conn, name, "guest-file-open", path="/run/cloud-init/result.json",
                       mode="w")
        agent(conn, name, "guest-file-write", handle=handle, **{
            "buf-b64": base64.b64encode(CLEAN_RESULT.encode()).decode()})
        agent(conn, name, "guest-file-close", handle=handle)
        setup = tracker.status(name)  # caught up through the agent: finished late, ready
        assert setup.stage == "ready", setup
        note = setup.steps[-1][2]
        assert note.startswith("cloud-init finished and the guest agent answers (after its"
                               " deadline had passed)"), note
        assert [step[0] for step in setup.steps][-2:] == ["failed", "ready"]
        assert not seed.exists()
        inactive = read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(
            libvirt.VIR_DOMAIN_XML_INACTIVE)))
        assert [d.source for d in inactive.disks] == [str(folder / f"{name}.qcow2")]
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json",
                                          str(folder / f"{name}.qcow2")], capture_output=True,
                                         text=True, check=True).stdout)
        assert info["backing-filename"] == str(base)
    finally:
        tracker.close()
        remove(conn, name)
        assert hashlib.sha256(base.read_bytes()).hexdigest() == digest  # never written
        import shutil

        shutil.rmtree(folder, ignore_errors=True)


def test_the_console_shows_the_vm_screen_in_virt_viewer(conn, tiny_guest, tmp_path, xserver,
                                                        monkeypatch):
    """`neuron-vm console NAME` opens virt-viewer on the VM's own SPICE display (a real
    virt-viewer under Xvfb, on the running tiny guest, which writes its boot log on the
    screen): the window appears with the VM's name and its picture is not blank."""
    import io
    import os
    import shutil
    import signal
    import subprocess
    import sys

    from conftest import unavailable
    from vm_manager.cli import main

    grab = """
import sys
from PySide6.QtGui import QGuiApplication
app = QGuiApplication([])
image = app.primaryScreen().grabWindow(int(sys.argv[1])).toImage()
image.save(sys.argv[2])
top = image.height() // 6  # below the viewer's own header bar: the guest's picture
pixels = [image.pixel(x, y) & 0xFFFFFF for x in range(0, image.width(), 2)
          for y in range(top, image.height(), 2)]
lit = sum(1 for p in pixels if p > 0x202020)
print(image.width(), image.height(), len(set(pixels)), lit, len(pixels))
"""

    if shutil.which("virt-viewer") is None:
        reason = "virt-viewer is not installed (scripts/setup-host.sh installs it)"
        unavailable(reason)
    pytest.importorskip("PySide6", reason="the screenshot uses Qt")
    name = f"neuron-console-{uuid.uuid4().hex[:8]}"
    xml = domain_xml(name, tiny_guest, tmp_path / "serial.log", spice=True,
                     cmdline="console=tty0 console=ttyS0 panic=-1")
    conn.execute(lambda c: c.defineXML(xml))
    monkeypatch.setenv("DISPLAY", xserver)
    env = {key: value for key, value in os.environ.items() if not key.startswith("QT_")}
    env.update(DISPLAY=xserver, QT_QPA_PLATFORM="xcb")  # the grab runs on X, as a desktop
    pid = None
    try:
        with lifecycle_on(conn.uri) as lifecycle:
            lifecycle.start(name, timeout=BOOT_TIMEOUT)
        out, err = io.StringIO(), io.StringIO()
        assert main(["console", name], connection=conn, out=out, err=err) == 0, err.getvalue()
        pid = int(out.getvalue().split("pid ")[1].split(")")[0])
        found = subprocess.run(["xdotool", "search", "--sync", "--onlyvisible", "--name", name],
                               env=env, capture_output=True, text=True, timeout=60)
        assert found.returncode == 0, "no virt-viewer window with the VM's name"
        window = found.stdout.split()[0]
        colours = lit = 0
        for _ in range(30):  # the guest's picture arrives over SPICE after the window maps
            shot = tmp_path / "console.png"
            grabbed = subprocess.run([sys.executable, "-c", grab, window, str(shot)], env=env,
                                     capture_output=True, text=True, timeout=60)
            assert grabbed.returncode == 0, grabbed.stderr
            _, _, colours, lit, total = (int(n) for n in grabbed.stdout.split())
            if colours >= 2 and lit > total // 500:  # the guest wrote text on its screen
                break
            subprocess.run(["sleep", "1"])
        assert colours >= 2 and lit > total // 500, "the guest's picture stayed blank"
        print(f"console screenshot {shot}: {colours} colours, {lit}/{total} lit pixels")
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        remove(conn, name)


def test_a_shared_folder_reaches_a_real_guest_over_virtiofs(conn, tiny_guest, tmp_path):
    """`create --share HOST_DIR=TAG`, then `share add` of a second folder: libvirt runs
    NeuronOS's virtiofsd launcher for each, the tiny guest mounts both tags, prints a file
    the test wrote in each on the host, and writes one back that the host reads.

    Issue 28: the folders belong to a local account the test makes, and are served as that
    account: virtiofsd runs with its uid, what guest root writes (and makes setuid root) is
    that account's file on the host, and the guest's first user (1000) owns the folder's
    files in the guest. Before, virtiofsd ran as root and the file was a setuid-root one."""
    from vm_manager.actions import shares
    from vm_manager.actions.context import Context
    from vm_manager.base.store import VMStore
    from vm_manager.base.vm_config import VMConfig
    from vm_manager.core.vm_creator import VMCreator
    from support.attacker import local_user
    from support.tiny_guest import SHARE_MARKER, wait_for_console

    folder = Path(f"/var/lib/neuronos-share-{uuid.uuid4().hex[:6]}")
    shared = folder / "My Files"
    later = folder / "later"
    images = Path(f"/var/lib/libvirt/images/neuron-share-{uuid.uuid4().hex[:6]}")
    images.mkdir(mode=0o711)
    serial = images / "serial.log"
    name = f"neuron-share-{uuid.uuid4().hex[:6]}"
    with local_user("nshare") as owner:
        account = pwd.getpwnam(owner)
        for path in (shared, later):
            path.mkdir(parents=True)
            (path / "hello.txt").write_text(f"hello from {path.name}\n")
            for each in (path, path / "hello.txt"):
                os.chown(each, account.pw_uid, account.pw_gid)
        try:
            creator = VMCreator(conn, store=VMStore(tmp_path / "config"), images_dir=images)
            result = creator.create(VMConfig(
                name=name, vm_type="linux", kernel_path=str(tiny_guest.kernel),
                initrd_path=str(tiny_guest.initrd), disk_size_gb=0,
                kernel_cmdline="console=ttyS0 quiet panic=-1 neuronos.share=docs"
                               " neuronos.share=more neuronos.setuid",
                serial_log_path=str(serial), network="none", domain_type="qemu",
                memory_mb=512, shares=[{"path": str(shared), "tag": "docs"}]), force=True)
            assert "<driver type='virtiofs'/>" in result.xml and "memfd" in result.xml
            assert "<binary path='/usr/sbin/neuronos-virtiofsd'/>" in result.xml
            ctx = Context(connection=conn, store=VMStore(tmp_path / "config"),
                          images_dir=images)
            try:
                added = shares.add(ctx, name, str(later), "more")
            finally:
                ctx.close()
            assert not added.restart_needed and [s.tag for s in added.shares] == ["docs",
                                                                                 "more"]
            with lifecycle_on(conn.uri) as lifecycle:
                lifecycle.start(name, timeout=BOOT_TIMEOUT)
            for tag in ("docs", "more"):
                wait_for_console(serial, f"{SHARE_MARKER}-WRITTEN {tag}",
                                 timeout=BOOT_TIMEOUT)
            servers = virtiofsd_uids(shared, later)
            text = serial.read_text(errors="replace")
            assert f"{SHARE_MARKER} docs: hello from My Files" in text
            assert f"{SHARE_MARKER} more: hello from later" in text
            for tag in ("docs", "more"):
                assert f"{SHARE_MARKER}-OWNERS {tag} 1000:1000" in text, text
            for path in (shared, later):
                made = path / "from-guest.txt"
                assert made.read_text() == "written by the guest\n"
                info = made.stat()
                assert (info.st_uid, info.st_gid) == (account.pw_uid, account.pw_gid)
                assert info.st_mode & 0o4000 == 0 or info.st_uid != 0
                print(f"{made}: uid {info.st_uid} mode {oct(info.st_mode)}")
            assert servers == {str(shared): account.pw_uid, str(later): account.pw_uid}, \
                servers
        finally:
            remove(conn, name)
            import shutil

            shutil.rmtree(images, ignore_errors=True)
            shutil.rmtree(folder, ignore_errors=True)


def virtiofsd_uids(*folders: Path) -> dict[str, int]:
    """The real uid of each running virtiofsd serving one of ``folders``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            status = (proc / "status").read_text()
        except OSError:
            continue
        if not argv[0].endswith(b"virtiofsd") or b"python" in argv[0]:
            continue
        for folder in folders:  # QEMU's virtiofsd: -o source=DIR; the Rust one: --shared-dir
            shared = [f"source={folder}".encode(), f"--shared-dir={folder}".encode()]
            if any(want in arg for arg in argv for want in shared) or any(
                    a == b"--shared-dir" and b == str(folder).encode()
                    for a, b in zip(argv, argv[1:])):
                uid = int(next(line for line in status.splitlines()
                               if line.startswith("Uid:")).split()[1])
                found[str(folder)] = min(found.get(str(folder), uid), uid)
    return found
