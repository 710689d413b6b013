"""VMDestroyer: the delete matrix keeps everything it must."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from vm_manager.cli import main
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.errors import LifecycleError
from vm_manager.base.store import VMStore
from vm_manager.base.vm_config import VMConfig
from vm_manager.core.vm_destroyer import VMDestroyer
from vm_manager.core.vm_lifecycle import VMLifecycleManager


def disk_xml(path, device="disk", readonly=False, shareable=False, target="vda"):
    extra = ("<readonly/>" if readonly else "") + ("<shareable/>" if shareable else "")
    return (f"<disk type='file' device='{device}'><source file='{path}'/>"
            f"<target dev='{target}' bus='virtio'/>{extra}</disk>")


def define(conn, name, disks, running=False):
    xml = (f"<domain type='test'><name>{name}</name><memory unit='MiB'>512</memory>"
           f"<vcpu>1</vcpu><os><type>hvm</type></os><devices>{''.join(disks)}</devices>"
           "</domain>")
    dom = conn.execute(lambda c: c.defineXML(xml))
    if running:
        conn.execute(lambda c: c.lookupByName(name).create())
    return dom


def qcow2(path, backing=None):
    argv = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        argv += ["-b", str(backing), "-F", "qcow2"]
    subprocess.run([*argv, str(path), "1G"], check=True)
    return path


@pytest.fixture
def world(tmp_path, make_host):
    images = tmp_path / "images"
    images.mkdir()
    shm = tmp_path / "shm"
    shm.mkdir()
    conn = LibvirtConnection(make_host()).open()
    store = VMStore(tmp_path / "config")
    lifecycle = VMLifecycleManager(conn)
    destroyer = VMDestroyer(conn, store=store, lifecycle=lifecycle, images_dir=images,
                            shm_dir=shm, rules_root=tmp_path)
    yield conn, images, shm, store, destroyer
    lifecycle.close()
    conn.close()


def names(conn):
    return set(conn.execute(lambda c: [d.name() for d in c.listAllDomains()]))


def test_default_keeps_every_disk_but_removes_settings_and_shm(world, tmp_path):
    conn, images, shm, store, destroyer = world
    own = qcow2(images / "vm.qcow2")
    define(conn, "vm", [disk_xml(own)])
    store.save(VMConfig(name="vm"))
    (shm / "looking-glass-vm").write_bytes(b"LGMP")
    rule = tmp_path / "etc/tmpfiles.d/neuronos-looking-glass-vm.conf"  # shm-permissions --apply
    rule.parent.mkdir(parents=True)
    rule.write_text("f /dev/shm/looking-glass-vm 0600 alice - -\n")
    plan = destroyer.plan("vm")
    assert plan.shm_rule == str(rule) and f"  remove shared memory rule {rule}" in plan.describe()
    assert [d.delete for d in plan.disks] == [False]
    assert "--delete-disks" in plan.disks[0].reason
    assert plan.firmware_state.startswith("kept")
    result = destroyer.destroy("vm")
    assert own.exists()
    assert "vm" not in names(conn)
    assert not store.path_for("vm").exists() and not (shm / "looking-glass-vm").exists()
    assert not rule.exists() and str(rule) in result.removed  # the next "vm" is not alice's
    assert (str(own), plan.disks[0].reason) in result.kept


def test_delete_matrix(world, tmp_path):
    conn, images, shm, store, destroyer = world
    own = qcow2(images / "own.qcow2")
    shared = qcow2(images / "shared.qcow2")
    base = qcow2(images / "base.qcow2")
    outside = qcow2(tmp_path / "outside.qcow2")
    iso = images / "installer.iso"
    iso.write_bytes(b"")
    readonly = qcow2(images / "ro.qcow2")
    shareable = qcow2(images / "sh.qcow2")
    define(conn, "victim", [
        disk_xml(own, target="vda"), disk_xml(shared, target="vdb"),
        disk_xml(base, target="vdc"), disk_xml(outside, target="vdd"),
        disk_xml(iso, device="cdrom", target="vde"), disk_xml(readonly, readonly=True,
                                                              target="vdf"),
        disk_xml(shareable, shareable=True, target="vdg"),
    ])
    define(conn, "neighbour", [disk_xml(shared)])
    child = qcow2(images / "child.qcow2", backing=base)  # another VM's overlay on our base
    define(conn, "overlay", [disk_xml(child)])

    plan = destroyer.plan("victim", delete_disks=True)
    decisions = {d.path: d for d in plan.disks}
    assert decisions[str(own)].delete
    assert not decisions[str(shared)].delete and "neighbour" in decisions[str(shared)].reason
    assert not decisions[str(base)].delete and "overlay" in decisions[str(base)].reason
    assert not decisions[str(outside)].delete and "outside" in decisions[str(outside)].reason
    assert not decisions[str(iso)].delete and "CD-ROM" in decisions[str(iso)].reason
    assert not decisions[str(readonly)].delete and "read-only" in decisions[str(readonly)].reason
    assert not decisions[str(shareable)].delete
    assert plan.firmware_state == "deleted"

    result = destroyer.destroy("victim", delete_disks=True)
    assert result.removed.count(str(own)) == 1 and not own.exists()
    for keep in (shared, base, outside, iso, readonly, shareable, child):
        assert keep.exists(), keep
    assert names(conn) == {"neighbour", "overlay"}


@pytest.mark.parametrize("why", ["no qemu-img", "unreadable image"])
def test_an_unknown_backing_chain_keeps_the_disks(world, why):
    """Another VM's disk whose backing chain cannot be read (qemu-img missing, or the image
    it reads is damaged) might build on this VM's disk: `--delete-disks` keeps the disk and
    says why, instead of taking the chain for empty."""
    from vm_manager.core.vm_destroyer import VMDestroyer

    conn, images, shm, store, destroyer = world
    own = qcow2(images / "own.qcow2")
    define(conn, "victim", [disk_xml(own)])
    other = images / "other.qcow2"
    if why == "no qemu-img":
        qcow2(other, backing=own)
        destroyer = VMDestroyer(conn, store=store, images_dir=images, shm_dir=shm,
                                qemu_img="/nonexistent/qemu-img")
        expected = "/nonexistent/qemu-img is not installed (package qemu-utils)"
    else:
        other.write_bytes(b"QFI\xfb" + b"\xff" * 508)  # a qcow2 header that makes no sense
        expected = "qemu-img: Could not open"
    define(conn, "other", [disk_xml(other)])

    plan = destroyer.plan("victim", delete_disks=True)
    [decision] = plan.disks
    assert not decision.delete
    assert decision.reason.startswith(f"the backing chain of VM 'other'\'s disk {other} could"
                                      f" not be read ({expected}")
    assert decision.reason.endswith(", so it may build on this disk")
    result = destroyer.destroy("victim", delete_disks=True)
    assert own.exists() and (str(own), decision.reason) in result.kept
    assert names(conn) == {"other"}


def snapshot_xml(name, overlay, source, uuid, memory=None, state="shutoff"):
    """A snapshot as `virsh snapshot-create-as --disk-only` (or with --memspec) leaves it:
    the overlay it made, the VM's disk as it was inside its <domain>."""
    mem = (f"<memory snapshot='external' file='{memory}'/>" if memory else
           "<memory snapshot='no'/>")
    return (f"<domainsnapshot><name>{name}</name><state>{state}</state><creationTime>"
            f"1733443200</creationTime>{mem}<disks>"
            f"<disk name='vda' snapshot='external' type='file'><source file='{overlay}'/>"
            f"</disk></disks><domain type='test'><name>ext</name><uuid>{uuid}</uuid>"
            "<memory unit='MiB'>512"
            "</memory><os><type>hvm</type></os><devices>"
            f"{disk_xml(source)}</devices></domain></domainsnapshot>")


def test_external_snapshot_files_are_listed_and_deleted_with_the_disks(world, tmp_path):
    """A VM with external snapshots made outside NeuronOS (virsh): its disk is the top of a
    chain. `--delete-disks` lists and deletes every file its snapshots made (the images
    below, an overlay no longer in the chain, a memory file) and keeps the cloud image its
    first disk was made on (outside the images folder, or in it: no snapshot made it)."""
    import libvirt

    conn, images, shm, store, destroyer = world
    cloud = qcow2(tmp_path / "cloud.qcow2")
    cloud_inside = qcow2(images / "cloud-inside.qcow2")
    base = qcow2(images / "ext.qcow2", backing=cloud)
    over1 = qcow2(images / "ext.s1", backing=base)
    top = qcow2(images / "ext.s2", backing=over1)
    left = qcow2(images / "ext.s0", backing=base)  # a branch a revert left
    memory = images / "ext.s2.mem"
    memory.write_bytes(b"QEVM")
    other_disk = qcow2(images / "second.qcow2", backing=cloud_inside)
    dom = define(conn, "ext", [disk_xml(top), disk_xml(other_disk, target="vdb")])
    uuid = dom.UUIDString()
    for xml in (snapshot_xml("s0", left, base, uuid), snapshot_xml("s1", over1, base, uuid),
                snapshot_xml("s2", top, over1, uuid, memory=memory, state="running")):
        dom.snapshotCreateXML(xml, libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE)

    keep_plan, plan = destroyer.plan_both("ext")
    decisions = {d.path: d for d in plan.disks}
    assert set(decisions) == {str(p) for p in (top, other_disk, over1, base, cloud,
                                               cloud_inside, left, memory)}
    for path, kind in ((over1, "snapshot overlay"), (base, "image below"),
                       (left, "snapshot overlay"), (memory, "snapshot memory")):
        assert decisions[str(path)].delete and decisions[str(path)].device == kind, path
    assert "snapshot 's0'" in decisions[str(left)].reason
    assert "snapshot 's2'" in decisions[str(memory)].reason
    assert not decisions[str(cloud)].delete and "outside" in decisions[str(cloud)].reason
    assert not decisions[str(cloud_inside)].delete
    assert "no snapshot of this VM made it" in decisions[str(cloud_inside)].reason
    assert not any(d.delete for d in keep_plan.disks)  # refused anyway: it has snapshots
    text = "\n".join(plan.describe())
    assert f"DELETE snapshot memory {memory}" in text and f"keep   image below {cloud}" in text

    result = destroyer.destroy("ext", delete_disks=True)
    for gone in (top, other_disk, over1, base, left, memory):
        assert not gone.exists() and str(gone) in result.removed, gone
    assert cloud.exists() and cloud_inside.exists() and not result.failed
    assert "ext" not in names(conn)


def test_the_opencore_image_the_user_gave_is_kept(world):
    """A macOS VM boots through the user's OpenCore image: `--delete-disks` removes the VM's
    own disk but keeps that image (it boots every macOS VM made with it), even in the
    images folder and with no other VM using it."""
    conn, images, shm, store, destroyer = world
    own = qcow2(images / "mac.qcow2")
    opencore = qcow2(images / "OpenCore.qcow2")
    dom = define(conn, "mac", [disk_xml(own), disk_xml(opencore, target="sdz")])
    store.save(VMConfig(name="mac", vm_type="macos", opencore_path=str(opencore),
                        disk_path=str(own)), uuid=dom.UUIDString())
    plan = destroyer.plan("mac", delete_disks=True)
    decisions = {d.path: d for d in plan.disks}
    assert decisions[str(own)].delete
    assert not decisions[str(opencore)].delete
    assert decisions[str(opencore)].reason.startswith("the OpenCore image you gave")
    destroyer.destroy("mac", delete_disks=True)
    assert opencore.exists() and not own.exists()


def test_running_vm_needs_force(world):
    conn, images, _, _, destroyer = world
    own = qcow2(images / "run.qcow2")
    define(conn, "run", [disk_xml(own)], running=True)
    with pytest.raises(LifecycleError, match="stop it first"):
        destroyer.destroy("run", delete_disks=True)
    assert "run" in names(conn) and own.exists()
    result = destroyer.destroy("run", delete_disks=True, force=True)
    assert result.stopped and not own.exists() and "run" not in names(conn)


def cli(argv, conn):
    out, err = io.StringIO(), io.StringIO()
    return main(argv, connection=conn, out=out, err=err), out.getvalue(), err.getvalue()


def test_cli_delete(world, monkeypatch):
    conn, images, _, _, _ = world
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    own = qcow2(images / "c.qcow2")
    define(conn, "c", [disk_xml(own)])
    code, out, _ = cli(["delete", "c", "--dry-run", "--delete-disks"], conn)
    assert code == 0 and "DELETE disk" in out and "c" in names(conn)
    monkeypatch.setattr("sys.stdin", io.StringIO(""))  # not a terminal
    code, _, err = cli(["delete", "c"], conn)
    assert code == 2 and "--yes" in err and "c" in names(conn)
    code, out, _ = cli(["delete", "c", "--yes"], conn)
    assert code == 0 and "kept" in out and own.exists() and "c" not in names(conn)
    code, _, _ = cli(["delete", "c", "--yes"], conn)
    assert code == 3


@pytest.mark.daemon
def test_on_the_real_daemon_virsh_snapshot_chains_are_deleted_whole(system_daemon, tiny_guest,
                                                                    tmp_path):
    """Snapshots made with virsh on the real daemon: a disk-only one of the shut-off VM and
    one with its memory while the tiny guest runs (TCG); where libvirt reverts external
    snapshots (9.9 and newer), a revert to the first one too, which leaves an overlay of its
    own. `neuron-vm delete --delete-disks` names every file they made and removes them all:
    nothing of the VM is left in the images folder."""
    import os
    import uuid
    import xml.etree.ElementTree as ET
    from pathlib import Path

    from support.domains import domain_xml, remove_domain

    images = Path("/var/lib/libvirt/images")
    name = f"neuron-chain-{uuid.uuid4().hex[:6]}"
    disk = images / f"{name}.qcow2"
    qcow2(disk)
    root = ET.fromstring(domain_xml(name, tiny_guest, tmp_path / "serial.log"))
    root.find("devices").append(ET.fromstring(
        f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        f"<source file='{disk}'/><target dev='vda' bus='virtio'/></disk>"))
    virsh = ["virsh", "-q", "-c", system_daemon]

    def run(*argv):
        done = subprocess.run([*virsh, *argv], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"virsh {' '.join(argv)}: {done.stderr}"
        return done.stdout

    def ours() -> set[str]:
        return {str(path) for path in images.iterdir() if path.name.startswith(name)}

    conn = LibvirtConnection(system_daemon)
    try:
        conn.execute(lambda c: c.defineXML(ET.tostring(root, encoding="unicode")))
        run("snapshot-create-as", name, "s1", "--disk-only")
        run("start", name)
        memory = images / f"{name}.s2.mem"
        run("snapshot-create-as", name, "s2", "--memspec",
            f"file={memory},snapshot=external", "--diskspec", "vda,snapshot=external")
        assert memory.exists()
        version = conn.execute(lambda c: c.getLibVersion())
        if version >= 9_009_000:  # libvirt reverts external snapshots from 9.9 on
            run("destroy", name)
            run("snapshot-revert", name, "s1")
        files = ours()
        assert len(files) >= 4 and str(disk) in files, files  # base, 2 overlays, memory
        out = subprocess.run([sys.executable, "-m", "vm_manager", "delete", name, "-c",
                              system_daemon, "--delete-disks", "--dry-run"],
                             capture_output=True, text=True, timeout=120).stdout
        deleted = [line for line in out.splitlines() if line.startswith("  DELETE ")]
        for path in files:
            assert any(f" {path} (" in line for line in deleted), (path, out)
        done = subprocess.run([sys.executable, "-m", "vm_manager", "delete", name, "-c",
                               system_daemon, "--delete-disks", "--yes", "--force"],
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert ours() == set(), (ours(), done.stdout)
        print(f"libvirt {version}: deleted {len(files)} files: {sorted(files)}")
    finally:
        try:
            remove_domain(conn, name)
        finally:
            conn.close()
            for path in ours():
                os.unlink(path)


def test_a_snapshots_files_are_read_from_its_xml():
    """What `virsh snapshot-dumpxml` shows on libvirt 11.3 after a revert to an external
    snapshot with memory: the overlay it made, the overlay the revert made (revertDisks), its
    memory file and the disk it stood on; a CD-ROM of its domain is nobody's file."""
    from vm_manager.base.snapshot_xml import read_snapshot

    xml = ("<domainsnapshot><name>s2</name><state>running</state><creationTime>1"
           "</creationTime><memory snapshot='external' file='/i/vm.s2.mem'/><disks>"
           "<disk name='vda' snapshot='external' type='file'><driver type='qcow2'/>"
           "<source file='/i/vm.s2'/></disk><disk name='sda' snapshot='no'/></disks>"
           "<revertDisks><disk name='vda' snapshot='external' type='file'><source"
           " file='/i/vm.1796534913'/></disk></revertDisks><domain type='kvm'><name>vm"
           "</name><devices>" + disk_xml("/i/vm.s1") + disk_xml(
               "/i/win.iso", device="cdrom", target="sda") + "</devices></domain>"
           "</domainsnapshot>")
    snap = read_snapshot(xml)
    assert snap.name == "s2" and snap.memory == "/i/vm.s2.mem"
    assert snap.overlays == ["/i/vm.s2", "/i/vm.1796534913"] and snap.sources == ["/i/vm.s1"]
    assert read_snapshot("<domainsnapshot><name>i</name><memory snapshot='internal'/>"
                         "</domainsnapshot>").memory is None


def test_a_vm_without_uefi_or_tpm_has_no_such_line_in_its_plan(world):
    """A direct-kernel-boot VM (no firmware, no TPM) is not told it loses UEFI variables and
    a TPM state it never had; a UEFI VM is."""
    conn, images, shm, store, destroyer = world
    define(conn, "plain", [disk_xml(qcow2(images / "plain.qcow2"))])
    assert not any("UEFI" in line for line in destroyer.plan("plain", True).describe())
    xml = ("<domain type='test'><name>efi</name><memory unit='MiB'>512</memory><os"
           " firmware='efi'><type>hvm</type></os><devices/></domain>")
    conn.execute(lambda c: c.defineXML(xml))
    assert "  UEFI variables and TPM state: deleted" in destroyer.plan("efi", True).describe()
