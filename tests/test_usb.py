"""USB devices from a sysfs tree shaped like the kernel's; hostdev XML; attach call path."""

from __future__ import annotations

import io
import json

import libvirt
import pytest

from vm_manager.cli import main
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.errors import InvalidConfig, OperationFailed
from vm_manager.passthrough.usb_attach import (
    attach_device,
    device_xml_for,
    find_usb,
    hostdev_xml,
    list_usb,
)
from vm_manager.templates.validator import validate_xml
from support.fakes import FakeDomain, FakeUSBDevice, add_usb_devices

USB_IDS = "046d  Logitech, Inc.\n\tc077  M105 Optical Mouse\n"


@pytest.fixture
def usb_root(tmp_path):
    root = add_usb_devices(tmp_path / "root", [
        FakeUSBDevice(1, "2", "046d", "c077", devnum=3),  # no strings: name from usb.ids
        FakeUSBDevice(1, "3", "046d", "c077", devnum=4),  # an identical second mouse
        FakeUSBDevice(1, "4", "05e3", "0610", devnum=5, device_class="09",
                      product_name="USB2.0 Hub"),
        FakeUSBDevice(1, "4.1", "1050", "0407", devnum=6, manufacturer="Yubico",
                      product_name="YubiKey OTP+FIDO+CCID", serial="123"),
        FakeUSBDevice(2, "1", "0781", "5583", devnum=2, manufacturer="SanDisk",
                      product_name="Ultra Fit"),
    ])
    ids = root / "usr" / "share" / "misc" / "usb.ids"
    ids.parent.mkdir(parents=True)
    ids.write_text(USB_IDS)
    return root


def test_list_skips_root_hubs_and_interfaces(usb_root):
    devices = list_usb(usb_root)
    assert [d.sysfs_name for d in devices] == ["1-2", "1-3", "1-4", "1-4.1", "2-1"]
    by_name = {d.sysfs_name: d for d in devices}
    assert by_name["1-2"].name == "Logitech, Inc. M105 Optical Mouse"
    assert by_name["1-4.1"].name == "Yubico YubiKey OTP+FIDO+CCID"
    assert by_name["1-4.1"].serial == "123" and by_name["1-4.1"].port == "4.1"
    assert by_name["1-4"].is_hub and not by_name["2-1"].is_hub


def test_two_identical_devices_are_told_apart_by_port(usb_root):
    with pytest.raises(InvalidConfig, match="1-2, 1-3"):
        find_usb("046d:c077", usb_root)
    second = find_usb("1-3", usb_root)
    assert (second.bus, second.devnum) == (1, 4)
    xml = device_xml_for(second, exact=True)
    assert "<address bus='1' device='4'/>" in xml
    assert find_usb("1050:0407", usb_root).manufacturer == "Yubico"
    with pytest.raises(InvalidConfig, match="neither"):
        find_usb("mouse", usb_root)


def test_hostdev_xml_passes_schema_and_test_driver(make_host):
    devices = hostdev_xml("046d", "c077") + hostdev_xml("1050", "0407", bus=1, devnum=6)
    xml = ("<domain type='test'><name>u</name><memory unit='MiB'>512</memory><vcpu>1</vcpu>"
           f"<os><type>hvm</type></os><devices>{devices}</devices></domain>")
    validate_xml(xml)
    with LibvirtConnection(make_host()) as conn:
        dom = conn.execute(lambda c: c.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE))
        assert dom.XMLDesc(0).count("<hostdev mode='subsystem' type='usb'") == 2


def test_attach_reaches_libvirt(make_host):
    """The test driver cannot hot-plug: the call path still gets there, refused clearly."""
    with LibvirtConnection(make_host([FakeDomain("vm")])) as conn:
        with pytest.raises(OperationFailed):
            attach_device(conn, "vm", hostdev_xml("046d", "c077"))


def test_real_sys_read_only():
    for device in list_usb("/"):
        assert len(device.vendor_id) == 4 and device.bus >= 1


def test_cli_usb_list(usb_root, monkeypatch):
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(usb_root))
    out = io.StringIO()
    assert main(["usb", "list", "--json"], out=out, err=io.StringIO()) == 0
    data = json.loads(out.getvalue())
    assert {d["sysfs_name"] for d in data} == {"1-2", "1-3", "1-4", "1-4.1", "2-1"}
    out = io.StringIO()
    assert main(["usb", "list"], out=out, err=io.StringIO()) == 0
    assert "(hub)" in out.getvalue() and "SanDisk Ultra Fit" in out.getvalue()
    err = io.StringIO()
    assert main(["usb", "attach", "vm"], out=io.StringIO(), err=err) == 2
