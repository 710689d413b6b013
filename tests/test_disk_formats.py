"""VMs an earlier `configure` left with a qcow2 disk defined as raw: `info`, `doctor` and the
details pane say so with the fix, and `configure` with no options puts it back, but only
for a disk NeuronOS made whose file still builds on what it was made on. On the test driver
with real image files (qemu-img)."""

from __future__ import annotations

import io
import json
import subprocess

import libvirt
import pytest

from vm_manager.cli import main
from vm_manager.base.connection import LibvirtConnection


@pytest.fixture
def world(make_host, tmp_path, monkeypatch):
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    with LibvirtConnection(make_host(cpus=8, memory_mb=16384)) as conn:
        yield conn


def run(conn, *argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(arg) for arg in argv], connection=conn, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def driver_type(conn, name: str) -> str:
    xml = conn.execute(lambda c: c.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return xml.split("<driver name='qemu' type='")[1].split("'")[0]


def as_raw(conn, name: str) -> None:
    """What the old `configure` did to the definition."""
    xml = conn.execute(lambda c: c.lookupByName(name).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    conn.execute(lambda c: c.defineXML(xml.replace("type='qcow2'", "type='raw'", 1)))


def test_a_neuronos_disk_defined_as_raw_is_told_and_put_back(world, tmp_path):
    assert run(world, "create", "v", "--template", "linux", "--disk-size", "1G",
               "--network", "none")[0] == 0
    as_raw(world, "v")
    code, out, err = run(world, "info", "v")
    assert code == 0 and "v.qcow2 (raw" in out
    assert "is defined as raw but the file is qcow2" in err and "neuron-vm configure v" in err
    code, out, _ = run(world, "--json", "doctor")
    check = next(c for c in json.loads(out) if c["name"] == "disk formats")
    assert check["status"] == "fail" and "neuron-vm configure v" in check["fix"]
    from vm_manager.actions import Context, details

    pane = details.details(Context(connection=world), "v")  # the desktop app's details pane
    rows = dict(pane.section("Disks").rows)
    assert "defined as raw but the file is qcow2" in rows["Problem"]
    assert "Fix: `neuron-vm configure v`" in rows["Problem"]

    code, _, err = run(world, "snapshot", "create", "v", "s1")  # not "convert it": it is
    assert code == 2 and "is a qcow2 file that the definition of v calls raw" in err
    code, out, err = run(world, "configure", "v")
    assert code == 0, err
    assert "changed: the disk" in out and "put back to qcow2" in out
    assert driver_type(world, "v") == "qcow2"
    assert run(world, "info", "v")[2] == ""
    code, out, _ = run(world, "--json", "doctor")
    assert next(c for c in json.loads(out) if c["name"] == "disk formats")["status"] == "ok"
    code, out, _ = run(world, "configure", "v")  # now there is nothing to do
    assert code == 0 and "nothing to change" in out


def test_a_disk_neuronos_did_not_make_is_told_never_changed(world, tmp_path):
    mine = tmp_path / "mine.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(mine), "64M"], check=True)
    assert run(world, "create", "m", "--template", "linux", "--disk", mine,
               "--network", "none")[0] == 0
    assert driver_type(world, "m") == "qcow2"  # read from the file
    as_raw(world, "m")
    code, _, err = run(world, "info", "m")
    assert "NeuronOS did not make this disk" in err and "virsh edit m" in err
    code, out, _ = run(world, "configure", "m", "--memory", "3G")
    assert code == 0 and driver_type(world, "m") == "raw"  # told, not guessed


def test_a_disk_whose_header_now_names_another_backing_file_is_not_put_back(world, tmp_path):
    """A guest that booted the qcow2 as raw could have written a header naming any host
    file as its backing file: such a disk is never switched back by itself."""
    assert run(world, "create", "g", "--template", "linux", "--disk-size", "1G",
               "--network", "none")[0] == 0
    as_raw(world, "g")
    disk = tmp_path / "images" / "g.qcow2"
    secret = tmp_path / "host-secret.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(secret), "1G"], check=True)
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", str(secret), "-F",
                    "qcow2", str(disk)], check=True)
    code, _, err = run(world, "info", "g")
    assert f"now builds on {secret}" in err
    assert run(world, "configure", "g")[0] == 0 and driver_type(world, "g") == "raw"


def test_a_file_whose_format_cannot_be_read_is_refused_with_exit_2(world, tmp_path):
    broken = tmp_path / "broken.qcow2"
    broken.write_bytes(b"QFI\xfb\x00\x00\x00\x09" + b"\0" * 512)  # qcow2 magic, no such version
    code, _, err = run(world, "create", "b", "--template", "linux", "--disk", broken,
                       "--network", "none")
    assert code == 2 and err.startswith("neuron-vm: --disk (disk_path): cannot tell the format")
    assert "Unsupported qcow2 version" in err
    assert "b" not in world.execute(lambda c: [d.name() for d in c.listAllDomains()])


def test_without_qemu_img_an_existing_disk_is_refused_never_raw(world, tmp_path, monkeypatch):
    mine = tmp_path / "mine.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(mine), "64M"], check=True)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    code, _, err = run(world, "create", "n", "--template", "linux", "--disk", mine,
                       "--network", "none")
    assert code == 2 and "qemu-img is not installed (package qemu-utils)" in err


def test_configure_says_what_a_change_brings_and_refuses_what_cannot_be(world, tmp_path,
                                                                         monkeypatch):
    from support.fakes import FakeUSBDevice, add_usb_devices

    root = add_usb_devices(tmp_path / "host", [FakeUSBDevice(1, "2", "046d", "c077", devnum=3,
                                                             product_name="M105 Mouse")])
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
    assert run(world, "create", "u", "--template", "linux", "--disk-size", "1G",
               "--network", "none")[0] == 0
    code, out, err = run(world, "configure", "u", "--usb", "1234:5678")
    assert code == 0 and "changed: added hostdev" in out
    assert "warning: USB 1234:5678 is not plugged in now" in err
    code, _, err = run(world, "configure", "u", "--memory", "3G")  # said once, not again
    assert code == 0 and err == ""
    code, _, err = run(world, "configure", "u", "--looking-glass")
    assert code == 2 and err.startswith("neuron-vm: --looking-glass") and "--gpu" in err


def test_snapshots_of_a_vm_with_no_disk_or_a_setup_seed_are_refused_in_words(world, tmp_path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"")
    assert run(world, "create", "k", "--template", "linux", "--network", "none",
               "--disk-size", "0", "--kernel", kernel)[0] == 0
    code, _, err = run(world, "snapshot", "create", "k", "s1")
    assert code == 2 and "k has no disks: there is nothing to take a snapshot of" in err
    assert not (tmp_path / "images" / "k.snapshots").exists()
    code, out, _ = run(world, "info", "k")  # the kernel it boots is named
    assert "Kernel:" in out and str(kernel) in out
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    key = tmp_path / "id.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHx0example dev@laptop\n")
    assert run(world, "create", "c", "--template", "linux", "--network", "none",
               "--cloud-image", base, "--unattended", "--user", "dev", "--ssh-key", key)[0] == 0
    code, _, err = run(world, "snapshot", "create", "c", "s1")
    assert code == 2 and "the unattended setup of c is not finished" in err
    assert "qemu-img convert" not in err
