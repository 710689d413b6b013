"""Disks through libvirt storage pools (issue 17): the images folder's pool found or
defined, volumes made and removed through it. Pool logic on the test driver (its pools live
in memory); the real thing on the real daemon, with no qemu-img for NeuronOS to call."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from conftest import lifecycle_on
from support.domains import remove_domain, remove_pool
from vm_manager.base import storage_xml
from vm_manager.core import storage
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.errors import VMCreationError
from vm_manager.base.store import VMStore
from vm_manager.base.vm_config import VMConfig
from vm_manager.core.vm_creator import VMCreator
from vm_manager.core.vm_destroyer import VMDestroyer


@pytest.fixture
def test_conn(make_host):
    with LibvirtConnection(make_host()) as connection:
        yield connection


def test_the_images_folder_pool_is_found_or_defined(test_conn):
    def run(fn):
        return test_conn.execute(fn)

    # a pool someone defined for the folder is found (by its path), not duplicated
    run(lambda c: c.storagePoolDefineXML("<pool type='dir'><name>default</name><target>"
                                         "<path>/var/lib/libvirt/images</path></target></pool>"))
    found = run(lambda c: storage.images_pool(c, "/var/lib/libvirt/images/"))
    assert found.name() == "default" and found.isActive()
    made = run(lambda c: storage.images_pool(c, "/srv/vm images"))
    assert made.name() == "neuronos-images" and made.isActive() and made.autostart()
    assert storage._target(made) == "/srv/vm images"
    # the same folder again: the same pool; another folder: another name
    assert run(lambda c: storage.images_pool(c, "/srv/vm images").name()) == "neuronos-images"
    assert run(lambda c: storage.images_pool(c, "/srv/other").name()) == "neuronos-images-2"
    # an inactive pool of the folder is started, not redefined
    run(lambda c: c.storagePoolLookupByName("neuronos-images-2").destroy())
    again = run(lambda c: storage.images_pool(c, "/srv/other"))
    assert again.name() == "neuronos-images-2" and again.isActive()
    assert sorted(run(lambda c: c.listStoragePools())) == [
        "default", "neuronos-images", "neuronos-images-2"]


def test_volumes_are_made_once_and_removed_through_the_pool(test_conn):
    path = "/srv/images/<vm> & co.qcow2"
    claims = []
    made = storage.create_volume(test_conn, path, 8, claim=lambda: claims.append(path))
    assert made == path and claims == [path]
    volume = test_conn.execute(lambda c: c.storageVolLookupByPath(path))
    assert volume.info()[1] == 8 << 30  # capacity, sparse
    xml = volume.XMLDesc(0)
    assert "<format type='qcow2'/>" in xml and "<mode>0600</mode>" in xml
    with pytest.raises(VMCreationError, match="never overwrites"):
        storage.create_volume(test_conn, path, 8, claim=lambda: claims.append("again"))
    assert claims == [path]  # refused before anything was claimed
    assert storage.delete_volume(test_conn, path) is True
    assert storage.delete_volume(test_conn, path) is False  # no pool holds it now


def test_storage_xml_is_escaped_and_reads_back():
    xml = storage_xml.volume_xml("a'b<c>.qcow2", 20, backing="/srv/base & co.qcow2",
                                 backing_format="qcow2")
    assert "<name>a'b&lt;c&gt;.qcow2</name>" in xml
    assert '<backingStore><path>/srv/base &amp; co.qcow2</path><format type="qcow2" />' in xml
    assert "<lazy_refcounts />" in xml and '<capacity unit="G">20</capacity>' in xml
    described = storage_xml.read_volume(xml.replace("<target>", "<target><path>/v</path>"))
    assert described == storage_xml.VolumeInfo("/v", "qcow2", "/srv/base & co.qcow2", "qcow2")
    with pytest.raises(ValueError, match="never guessed"):  # an overlay on an unknown format
        storage_xml.volume_xml("o.qcow2", 20, backing="/srv/base.img")
    raw = storage_xml.raw_volume_xml("m&m.iso", 4096)
    assert storage_xml.read_volume(raw).format == "raw" and "m&amp;m.iso" in raw
    pool = storage_xml.pool_xml("p<1>", "/srv/images & co/")
    assert storage_xml.pool_folder(pool) == "/srv/images & co" and "p&lt;1&gt;" in pool


@pytest.mark.daemon
def test_create_and_delete_on_the_real_daemon_go_through_the_pool(system_daemon, tmp_path,
                                                                  monkeypatch):
    """With no qemu-img for NeuronOS to run (off the PATH, and a path that does not exist):
    the disk is a volume libvirt made in the folder's pool (defined by NeuronOS, started,
    autostart), a real sparse qcow2 file, 0600. Delete without --delete-disks keeps it;
    with it the volume goes through the pool."""
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    images = Path(f"/var/lib/libvirt/images/neuron-pool-{uuid.uuid4().hex[:6]}")
    names = [f"neuron-pool-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    conn = LibvirtConnection(system_daemon)
    store = VMStore(tmp_path / "config")
    try:
        creator = VMCreator(conn, store=store, images_dir=images, qemu_img="/nonexistent")
        for name in names:
            creator.create(VMConfig(name=name, vm_type="linux", disk_size_gb=1, network="none",
                                    domain_type="qemu"), force=True)
        pool = conn.execute(lambda c: storage.find_pool(c, images))
        assert pool is not None and pool.isActive() and pool.autostart()
        assert pool.name().startswith("neuronos-images")
        disks = [images / f"{name}.qcow2" for name in names]
        pool.refresh(0)
        assert sorted(pool.listVolumes()) == sorted(d.name for d in disks)
        for disk in disks:
            assert disk.read_bytes()[:4] == b"QFI\xfb"  # made by libvirt's qemu-img
            assert disk.stat().st_mode & 0o777 == 0o600
            assert disk.stat().st_blocks * 512 < 16 << 20  # sparse
        assert conn.execute(lambda c: c.storageVolLookupByPath(str(disks[0])).info()[1]) \
            == 1 << 30
        with lifecycle_on(system_daemon) as lifecycle:
            destroyer = VMDestroyer(conn, store=store, lifecycle=lifecycle, images_dir=images)
            kept = destroyer.destroy(names[0], delete_disks=False)
            gone = destroyer.destroy(names[1], delete_disks=True)
        assert any(path == str(disks[0]) for path, _ in kept.kept) and disks[0].exists()
        assert str(disks[1]) in gone.removed and not disks[1].exists()
        pool.refresh(0)
        assert pool.listVolumes() == [disks[0].name]
    finally:
        _remove_all(conn, names, images)
        assert not os.path.exists(images)


@pytest.mark.daemon
def test_setup_restart_wipes_a_volume_through_its_pool(system_daemon, tmp_path, monkeypatch):
    """`setup-restart --wipe-disk` of a cloud-image VM on the real daemon: the disk volume is
    made anew by libvirt in its pool (same name and size, on the same cloud image), with no
    qemu-img for NeuronOS to run."""
    import io
    import json
    import subprocess

    from vm_manager.cli import main

    images = Path(f"/var/lib/libvirt/images/neuron-wipe-{uuid.uuid4().hex[:6]}")
    name = f"neuron-wipe-{uuid.uuid4().hex[:6]}"
    base = tmp_path / "debian-12-genericcloud-amd64.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "256M"], check=True)
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0example dev@laptop\n")
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    conn = LibvirtConnection(system_daemon)

    def run(*argv) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        return main(list(argv), connection=conn, out=out, err=err), out.getvalue(), \
            err.getvalue()

    disk = images / f"{name}.qcow2"
    try:
        code, _, err = run("create", name, "--template", "linux", "--cloud-image", str(base),
                           "--network", "none", "--domain-type", "qemu", "--unattended",
                           "--user", "dev", "--ssh-key", str(key))
        assert code == 0, err
        with open(disk, "ab") as file:  # a half-done setup wrote into it
            file.write(b"\x01" * (8 << 20))
        grown = disk.stat().st_size
        path = os.environ["PATH"]
        monkeypatch.setenv("PATH", str(tmp_path / "no-qemu-img"))
        code, out, err = run("setup-restart", name, "--wipe-disk")
        monkeypatch.setenv("PATH", path)
        assert code == 0, err
        assert f"made the disk {disk} empty again" in out
        assert disk.stat().st_size < grown
        info = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json",
                                          str(disk)], capture_output=True, text=True,
                                         check=True).stdout)
        assert info["format"] == "qcow2" and info["backing-filename"] == str(base)
        pool = conn.execute(lambda c: storage.find_pool(c, images))
        pool.refresh(0)
        assert disk.name in pool.listVolumes()
    finally:
        remove_domain(conn, name)
        remove_pool(conn, images)
        conn.close()
        shutil.rmtree(images, ignore_errors=True)


@pytest.mark.daemon
def test_a_disk_another_vm_builds_on_is_kept_without_qemu_img(system_daemon, tmp_path,
                                                               monkeypatch):
    """The backing chains come from libvirt's volumes: with no qemu-img on the PATH, deleting
    a VM whose disk is the base of another VM's overlay keeps that disk, naming the VM."""
    images = Path(f"/var/lib/libvirt/images/neuron-chain-{uuid.uuid4().hex[:6]}")
    base_vm, child_vm = (f"neuron-chain-{uuid.uuid4().hex[:6]}" for _ in range(2))
    conn = LibvirtConnection(system_daemon)
    store = VMStore(tmp_path / "config")
    try:
        creator = VMCreator(conn, store=store, images_dir=images, qemu_img="/nonexistent")
        creator.create(VMConfig(name=base_vm, vm_type="linux", disk_size_gb=1, network="none",
                                domain_type="qemu"), force=True)
        base_disk = str(images / f"{base_vm}.qcow2")
        child_disk = str(images / f"{child_vm}.qcow2")
        storage.create_volume(conn, child_disk, 1, backing=base_disk, backing_format="qcow2")
        conn.execute(lambda c: c.defineXML(
            f"<domain type='qemu'><name>{child_vm}</name><memory unit='MiB'>256</memory>"
            "<os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>"
            f"<driver name='qemu' type='qcow2'/><source file='{child_disk}'/>"
            "<target dev='vda' bus='virtio'/></disk></devices></domain>"))
        monkeypatch.setenv("PATH", str(tmp_path / "no-qemu-img"))
        with lifecycle_on(system_daemon) as lifecycle:
            destroyer = VMDestroyer(conn, store=store, lifecycle=lifecycle, images_dir=images,
                                    qemu_img="/nonexistent")
            result = destroyer.destroy(base_vm, delete_disks=True)
        kept = dict(result.kept)
        assert base_disk in kept and child_vm in kept[base_disk], result
        assert os.path.exists(base_disk)
    finally:
        for name in (base_vm, child_vm):
            remove_domain(conn, name)
        remove_pool(conn, images)
        conn.close()
        shutil.rmtree(images, ignore_errors=True)


@pytest.mark.daemon
def test_a_volume_reads_like_a_local_file(system_daemon, tmp_path):
    """VolumeFile (what an ISO reader gets for a remote host's installer): every read, seek
    and tell agrees with the same file read here, across block edges; an ISO read through it
    shows the same editions; and upload_file puts a file made here into the pool byte for
    byte (0600)."""
    import io
    import random

    from support.media import windows_iso
    from vm_manager.guest.windows import inspect_installer

    folder = Path(f"/var/lib/libvirt/images/neuron-volfile-{uuid.uuid4().hex[:6]}")
    folder.mkdir(mode=0o711)
    data = random.Random(7).randbytes(3 * storage.VolumeFile.BLOCK + 1234)
    (folder / "blob.raw").write_bytes(data)
    iso = windows_iso(folder / "Win11.iso", editions=("Windows 11 Home", "Windows 11 Pro"))
    conn = LibvirtConnection(system_daemon)
    try:
        conn.execute(lambda c: storage.images_pool(c, folder))  # lists both as volumes
        with storage.VolumeFile(conn, str(folder / "blob.raw")) as remote, \
                open(folder / "blob.raw", "rb") as local:
            picks = random.Random(8)
            for _ in range(40):
                offset = picks.randrange(len(data) + 10)
                size = picks.choice([1, 17, 4096, storage.VolumeFile.BLOCK + 3, 10**7])
                remote.seek(offset)
                local.seek(offset)
                assert remote.read(size) == local.read(size) and remote.tell() == local.tell()
            assert remote.seek(-5, io.SEEK_END) == len(data) - 5 and remote.read() == data[-5:]
        opener = storage.volume_opener(conn)
        assert inspect_installer(str(iso), opener) == inspect_installer(iso)
        assert inspect_installer(str(iso), opener).editions == ("Windows 11 Home",
                                                                "Windows 11 Pro")
        with pytest.raises(FileNotFoundError):
            storage.VolumeFile(conn, str(folder / "not-there.iso"))

        sent = storage.upload_file(conn, str(folder / "sent.iso"),
                                   lambda target: target.write_bytes(data))
        assert Path(sent).read_bytes() == data and os.stat(sent).st_mode & 0o777 == 0o600
        with pytest.raises(VMCreationError, match="already exists"):
            storage.upload_file(conn, sent, lambda target: target.write_bytes(b"other"))
        storage.upload_file(conn, sent, lambda target: target.write_bytes(b"other"),
                            replace=True)
        assert Path(sent).read_bytes() == b"other"
    finally:
        remove_pool(conn, folder)
        conn.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.daemon
def test_a_pool_whose_folder_was_deleted_is_built_again(system_daemon, tmp_path):
    """Issue 27, item 12: the images folder of a NeuronOS pool deleted by hand (the pool
    stays defined and autostarted): the next creation made libvirt's raw "cannot open
    directory" at step 'disk'. Now the folder is made again (0711) and the disk in it."""
    images = Path(f"/var/lib/libvirt/images/neuron-gone-{uuid.uuid4().hex[:6]}")
    names = [f"neuron-gone-{uuid.uuid4().hex[:6]}" for _ in range(2)]
    conn = LibvirtConnection(system_daemon)
    store = VMStore(tmp_path / "config")
    config = dict(vm_type="linux", disk_size_gb=1, network="none", domain_type="qemu")
    try:
        creator = VMCreator(conn, store=store, images_dir=images)
        creator.create(VMConfig(name=names[0], **config), force=True)
        remove_domain(conn, names[0])
        shutil.rmtree(images)  # by hand; the pool is still defined, active, autostarted
        from vm_manager.doctor.host_check import check_libvirt

        checks = check_libvirt(system_daemon)  # doctor names it, with its fix
        stale = [check for check in checks if check.name == "storage pools"]
        assert stale and str(images) in stale[0].detail and "pool-undefine" in stale[0].fix
        result = creator.create(VMConfig(name=names[1], **config), force=True)
        assert not [c for c in check_libvirt(system_daemon)  # (other tests' may be there)
                    if c.name == "storage pools" and str(images) in c.detail]
        assert Path(result.disk_path).read_bytes()[:4] == b"QFI\xfb"
        assert images.stat().st_mode & 0o777 == 0o711
        pools = conn.execute(lambda c: [p for p in c.listAllStoragePools(0)
                                        if storage_xml.pool_folder(p.XMLDesc(0)) == str(images)])
        assert len(pools) == 1 and pools[0].isActive()  # the same pool, not a second one
    finally:
        _remove_all(conn, names, images)


def _remove_all(conn, names, images: Path) -> None:
    """The test's VMs, the pool of its images folder and the folder; the connection closed."""
    for name in names:
        remove_domain(conn, name)
    remove_pool(conn, images)
    conn.close()
    shutil.rmtree(images, ignore_errors=True)
