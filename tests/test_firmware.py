"""Issue 30, item 3: each template states its firmware's Secure Boot and keys, so the result
never depends on the distribution's firmware descriptors (libvirt 9.0 gave a macOS VM the
Microsoft-keys Secure Boot build, and OpenCore could never boot), and a host whose firmware
cannot give what a VM states is told at planning.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import uuid
from pathlib import Path

import pytest

from vm_manager.base.errors import InvalidConfig
from vm_manager.base.vm_config import VMConfig
from vm_manager.core.firmware import check_firmware, secure_boot
from vm_manager.core.host_facts import HostFacts
from vm_manager.doctor.host_check import uefi_builds


@pytest.mark.parametrize("vm_type, asked, stated", [
    ("windows11", True, True), ("windows10", True, True), ("macos", True, False),
    ("linux", True, True), ("linux", False, False),
])
def test_each_system_states_its_secure_boot(vm_type, asked, stated):
    assert secure_boot(config(vm_type, secure_boot=asked)) is stated


def config(vm_type: str, **fields) -> VMConfig:
    """A VM of ``vm_type`` (macOS with its OpenCore image; ``secure_boot`` for Linux only)."""
    if vm_type == "macos":
        fields["opencore_path"] = "/var/lib/libvirt/images/OpenCore.qcow2"
    if vm_type != "linux":
        fields.pop("secure_boot", None)
    return VMConfig(name="v", vm_type=vm_type, **fields)


def facts(builds, firmware=("60-edk2-x86_64.json",)):
    return HostFacts(uri="qemu:///system", kvm_usable=True, hyperv_features=None,
                     resources=None, uefi_firmware=firmware, uefi_builds=builds)


SECURE_ONLY = frozenset({(True, True), (True, False)})


@pytest.mark.parametrize("made, builds, field, words", [
    (config("macos"), SECURE_ONLY, "vm_type", "without Secure Boot"),
    (config("linux", secure_boot=False), SECURE_ONLY, "secure_boot", "without Secure Boot"),
    (config("windows11"), frozenset({(False, False)}), "vm_type",
     "with Secure Boot and Microsoft's keys"),
])
def test_a_build_the_host_lacks_is_refused_naming_the_field(made, builds, field, words):
    with pytest.raises(InvalidConfig) as refused:
        check_firmware(made, facts(builds), [])
    assert refused.value.field == field and f"no build {words}" in refused.value.message
    assert "sudo apt install ovmf" in refused.value.message


def test_what_the_host_has_or_cannot_tell_passes_and_no_firmware_is_warned():
    both = frozenset({(True, True), (False, False)})
    for vm_type in ("windows11", "windows10", "macos", "linux"):
        check_firmware(config(vm_type), facts(both), [])
        check_firmware(config(vm_type), facts(None), [])  # a remote host: not known
    warnings = []
    check_firmware(config("macos"), facts(frozenset(), ()), warnings)
    assert warnings and "no UEFI firmware" in warnings[0]


def test_the_builds_are_read_from_the_descriptors_features(tmp_path):
    folder = tmp_path / "usr" / "share" / "qemu" / "firmware"
    folder.mkdir(parents=True)
    for name, features in [("40-secure-enrolled.json", ["enrolled-keys", "secure-boot"]),
                           ("60-plain.json", ["acpi-s3"]), ("70-bios.json", None)]:
        data = {"interface-types": ["bios"] if features is None else ["uefi"],
                "features": features or []}
        (folder / name).write_text(json.dumps(data))
    assert uefi_builds(tmp_path) == {(True, True), (False, False)}
    assert uefi_builds(Path("/")) <= {(True, True), (True, False), (False, False)}


def test_the_real_daemon_gives_each_vm_the_firmware_it_states(system_daemon, tmp_path,
                                                              monkeypatch):
    """Made and started (paused) on the real daemon, with this machine's firmware
    descriptors: macOS and Linux without Secure Boot get a build without it, Linux with it
    one with Secure Boot (the live XML names the loader libvirt chose)."""
    from vm_manager.base.connection import LibvirtConnection
    from vm_manager.cli import main
    from support.domains import remove_domain

    import shutil

    tag = uuid.uuid4().hex[:6]
    images = Path(f"/var/lib/libvirt/images/neuron-fw-{tag}")  # QEMU's user reads it
    images.mkdir(parents=True)
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(images))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    opencore = images / "OpenCore.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(opencore), "64M"],
                   check=True)
    cases = [(f"neuron-fw-mac-{tag}", ["--template", "macos", "--opencore", str(opencore),
                                       "--memory", "4G", "--cpus", "2", "--disk-size", "64"],
              False),
             (f"neuron-fw-off-{tag}", ["--template", "linux", "--secure-boot", "off",
                                       "--disk-size", "1"], False),
             (f"neuron-fw-on-{tag}", ["--template", "linux", "--disk-size", "1"], True)]
    conn = LibvirtConnection(system_daemon).open()
    try:
        for name, argv, secure in cases:
            err = io.StringIO()
            code = main(["create", name, *argv, "--network", "none", "--domain-type", "qemu",
                         "--force"],
                        connection=conn, out=io.StringIO(), err=err)
            assert code == 0, err.getvalue()
            conn.execute(lambda c, n=name: c.lookupByName(n).createWithFlags(1))  # paused
            live = conn.execute(lambda c, n=name: c.lookupByName(n).XMLDesc(0))
            loader = re.search(r"<loader[^>]*>([^<]+)</loader>", live)
            assert loader, live
            assert ("secure='yes'" in loader.group(0)) is secure, (name, loader.group(0))
            conn.execute(lambda c, n=name: c.lookupByName(n).destroy())
    finally:
        for name, _, _ in cases:
            remove_domain(conn, name)
        conn.close()
        shutil.rmtree(images, ignore_errors=True)
