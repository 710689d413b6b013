"""One Host, chosen once from the URI: this computer's sysfs and files, or another
computer's libvirt (core/host.py). The rest of the library asks it."""

from __future__ import annotations

from support.fakes import FakeUSBDevice, add_pci_devices, add_usb_devices, nvidia_turing_gpu
from vm_manager.core.host import LocalHost, RemoteHost, host_for


def test_the_uri_chooses_the_host_and_a_remote_one_connects_only_when_asked(tmp_path):
    asked = []

    def connect():
        asked.append(True)
        raise AssertionError("a remote host's libvirt was asked")

    remote = host_for("qemu+ssh://anna@workstation/system", connect)
    assert isinstance(remote, RemoteHost) and remote.remote
    assert remote.name == "workstation" and remote.usb_present() is None
    assert remote.firmware(None) == () and asked == []  # nothing was read
    local = host_for("qemu:///system", connect, tmp_path)
    assert isinstance(local, LocalHost) and not local.remote and local.name == "this computer"
    assert asked == []


def test_a_local_host_reads_its_sysfs_under_its_root(tmp_path):
    root = add_pci_devices(tmp_path / "host", nvidia_turing_gpu())
    add_usb_devices(root, [FakeUSBDevice(1, "2", "046d", "c077", devnum=3)])
    host = host_for("qemu:///system", None, root)
    assert [str(a) for a in sorted(host.pci().devices)] == [
        f"0000:01:00.{n}" for n in range(4)]
    assert host.usb_present() == frozenset({("046d", "c077")})
    assert [d.sysfs_name for d in host.usb()] == ["1-2"]
