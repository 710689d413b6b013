"""`configure` on the real daemon changes exactly what it is asked and nothing else.

An earlier `configure` rebuilt the whole definition from the saved settings and planned an
existing disk of unknown format as raw: every NeuronOS qcow2 disk became raw (its guest then
corrupts it), installer CD-ROMs came back after setup, hand-made devices went. Here every
kind of disk and every template gets the same sequence of changes on the real daemon, each
compared with the definition before it: only the asked parts differ, the disks (with their
formats), the NIC and its MAC, the setup record and what was added by hand stay as they
were, and a change of nothing is no change at all (the same XML).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest
from lxml import etree

from conftest import unavailable
from support.definitions import devices, differences, setup_record
from support.domains import remove_domain, remove_pool
from support.fakes import FakeUSBDevice, add_pci_devices, add_usb_devices, nvidia_turing_gpu
from vm_manager.cli import main
from vm_manager.base.connection import LibvirtConnection

pytestmark = pytest.mark.daemon

# Each step: (name, configure arguments or a share command, the parts allowed to differ).
# A PCI device added on q35 may bring a pcie-root-port controller with it (libvirt adds one).
STEPS = (
    ("nothing", ["configure"], set()),
    ("memory", ["configure", "--memory", "@MORE@", "--force"], {"memory", "currentMemory"}),
    ("cpus", ["configure", "--cpus", "3", "--force"], {"vcpu", "cpu"}),  # its topology
    ("usb", ["configure", "--usb", "046d:c077"], {"hostdev:usb"}),
    ("no usb", ["configure", "--no-usb"], {"hostdev:usb"}),
    ("gpu", ["configure", "--gpu", "01:00.0"],
     {"hostdev:pci", "controller", "metadata", "memballoon"}),
    ("looking glass", ["configure", "--looking-glass"],
     {"shmem", "video", "input", "controller"}),
    ("no looking glass", ["configure", "--no-looking-glass"], {"shmem", "video", "input"}),
    ("no gpu", ["configure", "--gpu", "none"], {"hostdev:pci", "metadata", "memballoon"}),
    ("share", ["share", "add", "@FOLDER@", "--tag", "work"],
     {"filesystem", "memoryBacking", "controller"}),
    ("no share", ["share", "remove", "work"], {"filesystem", "memoryBacking"}),
    ("nothing again", ["configure"], set()),
)


class World:
    """The real daemon, a host root with a GPU and a USB device, an isolated network that
    is defined but never started, and the files each kind of disk needs."""

    def __init__(self, uri: str, folder: Path):
        self.folder = folder
        self.images = Path(f"/var/lib/libvirt/images/neuron-reconf-{uuid.uuid4().hex[:6]}")
        self.root = add_pci_devices(folder / "host", nvidia_turing_gpu())
        add_usb_devices(self.root, [FakeUSBDevice(1, "2", "046d", "c077", devnum=3,
                                                  product_name="M105 Mouse")])
        self.conn = LibvirtConnection(uri).open()
        self.network = f"neuron-reconf-{uuid.uuid4().hex[:6]}"
        self.conn.execute(lambda c: c.networkDefineXML(
            f"<network><name>{self.network}</name><bridge name='nrc{uuid.uuid4().hex[:8]}'/>"
            "</network>"))  # no <forward>, no <ip>: a bare bridge; never started here
        self.share = folder / "Work Files"
        self.share.mkdir()
        # a folder root owns is never served (issue 28): this one is nobody's, 65534
        os.chown(self.share, 65534, 65534)
        self.names: list[str] = []
        self.loops: list[str] = []

    def run(self, monkeypatch, *argv) -> tuple[int, str, str]:
        monkeypatch.setenv("NEURONOS_HOST_ROOT", str(self.root))
        monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(self.images))
        out, err = io.StringIO(), io.StringIO()
        code = main([str(arg) for arg in argv], connection=self.conn, out=out, err=err)
        return code, out.getvalue(), err.getvalue()

    def xml(self, name: str) -> str:
        return self.conn.execute(lambda c: c.lookupByName(name).XMLDesc(
            libvirt.VIR_DOMAIN_XML_INACTIVE))

    def image(self, name: str, fmt: str = "qcow2", backing: Path | None = None) -> Path:
        path = self.folder / name
        extra = ["-b", str(backing), "-F", "qcow2"] if backing else []
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, *extra, str(path), "256M"],
                       check=True)
        return path

    def loop_device(self) -> str:
        backing = self.folder / f"block-{len(self.loops)}.img"
        backing.write_bytes(b"")
        subprocess.run(["truncate", "-s", "64M", str(backing)], check=True)
        done = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                              text=True)
        if done.returncode != 0:
            reason = f"losetup could not make a block device: {done.stderr.strip()}"
            unavailable(reason)
        self.loops.append(done.stdout.strip())
        return self.loops[-1]

    def hand_edit(self, name: str) -> None:
        """What a user adds with virsh edit: a random number generator, a serial number on
        each disk, write-back caching on file disks."""
        root = etree.fromstring(self.xml(name).encode())
        for disk in root.iterfind("devices/disk[@device='disk']"):
            etree.SubElement(disk, "serial").text = "NEURON-HAND"
            if disk.get("type") == "file":
                disk.find("driver").set("cache", "writeback")
        rng = etree.SubElement(root.find("devices"), "rng", model="virtio")
        etree.SubElement(rng, "backend", model="random").text = "/dev/urandom"
        self.conn.execute(lambda c: c.defineXML(etree.tostring(root, encoding="unicode")))

    def close(self) -> None:
        try:
            for name in self.names:  # snapshots, NVRAM and TPM state go with it
                remove_domain(self.conn, name)
            self.conn.execute(lambda c: c.networkLookupByName(self.network).undefine())
        finally:
            remove_pool(self.conn, self.images)
            self.conn.close()
            shutil.rmtree(self.images, ignore_errors=True)
            for loop in self.loops:
                subprocess.run(["losetup", "-d", loop], check=False)


@pytest.fixture
def world(system_daemon, tmp_path):
    made = World(system_daemon, tmp_path)
    yield made
    made.close()


def _windows_media(world: World) -> list:
    from support.media import virtio_win_iso, windows_iso

    installer = windows_iso(world.folder / "Win11_24H2.iso")
    virtio = virtio_win_iso(world.folder / "virtio-win.iso")
    secret = world.folder / "password"
    secret.write_text("correct horse\n")
    secret.chmod(0o600)
    return ["--disk-size", "64G", "--iso", installer, "--virtio-iso", virtio, "--unattended",
            "--user", "anna",
            "--password-file", secret]


def _cloud_image(world: World) -> list:
    key = world.folder / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0example dev@laptop\n")
    return ["--cloud-image", world.image("debian-12-genericcloud-amd64.qcow2"), "--unattended",
            "--user", "dev", "--ssh-key", key]


def _pool_volume(world: World) -> list:
    from vm_manager.base import storage_xml
    from vm_manager.core import storage

    world.images.mkdir(parents=True, exist_ok=True)
    pool = world.conn.execute(lambda c: storage.images_pool(c, world.images))
    pool.createXML(storage_xml.volume_xml("given.qcow2", 1), 0)
    return ["--disk", world.images / "given.qcow2"]


# kind -> (template, the create arguments for its disk and media)
KINDS = {
    "new qcow2 (a pool volume)": ("linux", lambda w: ["--disk-size", "1G"]),
    "existing raw file": ("linux", lambda w: ["--disk", w.image("raw.img", "raw")]),
    "existing qcow2": ("linux", lambda w: ["--disk", w.image("mine.qcow2")]),
    "qcow2 overlay on a backing file": ("linux", lambda w: [
        "--disk", w.image("overlay.qcow2", backing=w.image("base.qcow2"))]),
    "cloud-image overlay with its seed": ("linux", _cloud_image),
    "block device": ("linux", lambda w: ["--disk-device", w.loop_device()]),
    "existing volume of a pool": ("linux", _pool_volume),
    "windows11 with installer, virtio ISO and setup medium": ("windows11", _windows_media),
    "windows11": ("windows11", lambda w: ["--disk-size", "64G"]),
    "windows10": ("windows10", lambda w: ["--disk-size", "64G"]),
    "macos": ("macos", lambda w: ["--disk-size", "64G", "--opencore",
                                   w.image("OpenCore.qcow2")]),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_change_touches_only_what_it_asks(world, monkeypatch, kind):
    template, disk_args = KINDS[kind]
    name = f"neuron-reconf-{uuid.uuid4().hex[:6]}"
    world.names.append(name)
    memory = 1024 if template == "linux" else 4096  # MiB
    code, _, err = world.run(monkeypatch, "create", name, "--template", template, "--memory",
                             memory, "--cpus", "2",
                             "--network", world.network, "--domain-type", "qemu",
                             "--force", *disk_args(world))
    assert code == 0, err
    world.hand_edit(name)
    first = world.xml(name)
    disks, nic, record = devices(first, "disk"), devices(first, "interface"), setup_record(first)
    assert len(nic) == 1 and b"<mac" in etree.tostring(
        etree.fromstring(first.encode()).find("devices/interface"))
    before = first
    for step, argv, allowed in STEPS:
        argv = [{"@FOLDER@": str(world.share), "@MORE@": memory + 512}.get(arg, arg)
                for arg in argv]
        code, out, err = world.run(monkeypatch, *argv[:2], name, *argv[2:]) \
            if argv[0] == "share" else world.run(monkeypatch, argv[0], name, *argv[1:])
        assert code == 0, f"{kind}, step {step}: {err}"
        after = world.xml(name)
        changed = differences(before, after)
        assert changed <= allowed, f"{kind}, step {step}: {changed - allowed} changed too"
        if not allowed:
            assert after == before, f"{kind}, step {step}: the definition changed"
            assert "nothing to change" in out, out
        else:
            assert changed, f"{kind}, step {step}: nothing changed"
        assert devices(after, "disk") == disks, f"{kind}, step {step}: the disks changed"
        assert devices(after, "interface") == nic, f"{kind}, step {step}: the NIC changed"
        assert setup_record(after) == record, f"{kind}, step {step}: the setup record changed"
        assert devices(after, "rng"), f"{kind}, step {step}: the hand-made rng is gone"
        before = after
    # in the end: the memory and vCPUs it was given, with their topology (and root ports
    # libvirt added and keeps)
    assert differences(first, before) - {"controller"} == {"memory", "currentMemory", "vcpu",
                                                           "cpu"}


# --- every command that rewrites a definition ------------------------------------------------

def _gui(world, name, act, qtbot):
    """Open the desktop app's Settings dialog on ``name`` as the window does, let ``act``
    change it, press OK and wait for the worker."""
    pytest.importorskip("PySide6", reason="the gui extra is not installed")
    from vm_manager.actions import Context, host
    from vm_manager.base.store import VMStore
    from vm_manager.gui.dialogs import SettingsDialog

    ctx = Context(connection=world.conn, store=VMStore(), images_dir=world.images,
                  host_root=world.root)
    dialog = SettingsDialog(ctx, ctx.store.load(name), host.devices(ctx))
    qtbot.addWidget(dialog)
    act(dialog)
    dialog.apply()
    qtbot.waitUntil(lambda: dialog.result is not None or bool(dialog.error.text().strip(
        "Saving…")), timeout=20000)
    assert dialog.result is not None, dialog.error.text()


def _usb_panel(world, name, qtbot):
    pytest.importorskip("PySide6", reason="the gui extra is not installed")
    from PySide6.QtCore import Qt

    from vm_manager.actions import Context, usb
    from vm_manager.base.store import VMStore
    from vm_manager.gui.dialogs import USBPanel

    ctx = Context(connection=world.conn, store=VMStore(), images_dir=world.images,
                  host_root=world.root)
    panel = USBPanel(ctx, name, usb.list_usb(ctx), usb.attached(ctx, name))
    qtbot.addWidget(panel)
    panel.list.item(0).setCheckState(Qt.Checked)
    qtbot.waitUntil(lambda: bool(panel.outcomes or panel.errors), timeout=20000)
    assert panel.errors == []


def _cli(*argv):
    return lambda world, mp, name, qtbot: world.run(mp, *[name if a == "@VM@" else
                                                         str(world.share) if a == "@FOLDER@"
                                                         else a for a in argv])


# row -> (what is done first; the command; the parts it may change)
COMMANDS = {
    "configure --memory": (None, _cli("configure", "@VM@", "--memory", "1536M"),
                           {"memory", "currentMemory"}),
    "share add": (None, _cli("share", "add", "@VM@", "@FOLDER@"),
                  {"filesystem", "memoryBacking", "controller"}),
    "share remove": (_cli("share", "add", "@VM@", "@FOLDER@", "--tag", "w"),
                     _cli("share", "remove", "@VM@", "w"), {"filesystem", "memoryBacking"}),
    "usb attach (stopped)": (None, _cli("usb", "attach", "@VM@", "046d:c077"), {"hostdev:usb"}),
    "usb detach (stopped)": (_cli("usb", "attach", "@VM@", "046d:c077"),
                             _cli("usb", "detach", "@VM@", "046d:c077"), {"hostdev:usb"}),
    "setup-restart": (None, _cli("setup-restart", "@VM@"), {"metadata"}),
    # a snapshot holds disks, UEFI variables and TPM state: a revert leaves the settings
    "snapshot revert": (lambda w, mp, name, qtbot: [
        _cli("snapshot", "create", "@VM@", "s1")(w, mp, name, qtbot),
        _cli("configure", "@VM@", "--memory", "2G")(w, mp, name, qtbot),
        _cli("share", "add", "@VM@", "@FOLDER@")(w, mp, name, qtbot)],
        _cli("snapshot", "revert", "@VM@", "s1"), set()),
    "desktop Settings, OK unchanged": (None, lambda w, mp, name, qtbot: _gui(
        w, name, lambda dialog: None, qtbot), set()),
    "desktop Settings, a folder added": (None, lambda w, mp, name, qtbot: _gui(
        w, name, lambda dialog: dialog.add_share(str(w.share)), qtbot),
        {"filesystem", "memoryBacking", "controller"}),
    "desktop USB panel (stopped)": (None, lambda w, mp, name, qtbot: _usb_panel(w, name, qtbot),
                                    {"hostdev:usb"}),
}


@pytest.mark.parametrize("row", list(COMMANDS))
def test_every_command_that_rewrites_a_definition_keeps_the_rest(world, monkeypatch, qtbot,
                                                                 row):
    first, command, allowed = COMMANDS[row]
    name = f"neuron-rewrite-{uuid.uuid4().hex[:6]}"
    world.names.append(name)
    cloud = _cloud_image(world) if row == "setup-restart" else ["--disk-size", "1G"]
    code, _, err = world.run(monkeypatch, "create", name, "--template", "linux", "--memory",
                             "1G", "--cpus", "1", "--network", world.network,
                             "--domain-type", "qemu", *cloud)
    assert code == 0, err
    world.hand_edit(name)
    if first is not None:
        made = first(world, monkeypatch, name, qtbot)
        for step in made if isinstance(made, list) else [made]:
            if isinstance(step, tuple):  # a command line's (code, out, err)
                assert step[0] == 0, f"{row}, before: {step[2]}"
    before = world.xml(name)
    done = command(world, monkeypatch, name, qtbot)
    if isinstance(done, tuple):
        assert done[0] == 0, done[2]
    after = world.xml(name)
    changed = differences(before, after)
    assert changed <= allowed, f"{row}: {changed - allowed} changed too"
    assert changed or not allowed, f"{row}: nothing changed"
    if not allowed and row != "snapshot revert":  # nothing defined: the very same XML
        assert after == before  # (a revert defines the same devices; libvirt may order them)
    assert devices(after, "disk") == devices(before, "disk"), f"{row}: the disks changed"
    assert [d.get("type") for d in etree.fromstring(after.encode()).iterfind(
        "devices/disk[@device='disk']/driver")][0] == "qcow2"
    assert devices(after, "interface") == devices(before, "interface")
    assert devices(after, "rng") == devices(before, "rng")
