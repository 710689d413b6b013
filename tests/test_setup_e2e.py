"""Unattended setup on a real libvirtd with real QEMU (TCG): the stages from libvirt's own
events, a real QEMU guest agent (Debian's qemu-ga in the tiny guest), and the Windows
setup media detached at "ready" on a real UEFI + TPM domain. CI runs them; elsewhere they
skip with the reason."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import libvirt
import pytest

from conftest import lifecycle_on
from test_e2e import BOOT_TIMEOUT, tiny_guest  # noqa: F401 (the session fixture)
from vm_manager.core.connection import LibvirtConnection
from vm_manager.core.domain_xml import read_domain
from vm_manager.core.guest_setup import SetupTracker
from support.domains import domain_xml
from support.tiny_guest import STAGE_FILE

pytestmark = pytest.mark.daemon


class Stages:
    """Every SetupChange, and an Event per stage to wait on (no sleeping)."""

    def __init__(self, tracker: SetupTracker, name: str):
        self.seen: list = []
        self.reached: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        tracker.subscribe(self._on)
        self.name = name

    def _on(self, change) -> None:
        if change.name != self.name:
            return
        with self._lock:
            self.seen.append(change)
            self.reached.setdefault(change.new, threading.Event()).set()

    def wait(self, stage: str, timeout: float) -> bool:
        with self._lock:
            event = self.reached.setdefault(stage, threading.Event())
        return event.wait(timeout)


@pytest.fixture
def conn(system_daemon):
    with LibvirtConnection(system_daemon) as connection:
        yield connection


def remove(conn: LibvirtConnection, name: str) -> None:
    def cleanup(c):
        try:
            dom = c.lookupByName(name)
        except libvirt.libvirtError:
            return
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM)
    conn.execute(cleanup)


def test_a_real_guest_agent_moves_the_setup_to_ready(conn, tiny_guest, tmp_path):  # noqa: F811
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
        assert [c.new for c in stages.seen] == ["installing", "ready"]
        assert "first-logon steps are done" in stages.seen[-1].note
        live = read_domain(conn.execute(lambda c: c.lookupByName(name).XMLDesc(0)))
        agent = next(c for c in live.channels if c.target_name == "org.qemu.guest_agent.0")
        assert agent.state == "connected"  # a real agent answers in there
        assert tracker.read_stage_file(name) == "done"
        fresh = SetupTracker(conn)  # what another NeuronOS reads: the metadata
        setup, _ = fresh.info(name)
        assert setup.stage == "ready" and [s for s, _, _ in setup.steps] == ["installing",
                                                                           "ready"]
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
    from vm_manager.core.store import VMStore
    from vm_manager.core.vm_config import VMConfig
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
