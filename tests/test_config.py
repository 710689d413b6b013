"""VMConfig and friends: every bad value is an InvalidConfig naming its field."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vm_manager.base.errors import InvalidConfig
from vm_manager.base.vm_config import (
    DisplayMode,
    GPUPassthroughConfig,
    HostResources,
    LookingGlassConfig,
    PCIAddress,
    USBDeviceConfig,
    VMConfig,
    VMState,
    VMType,
    parse_size_mb,
    validate_name,
)


def gpu(address="0000:01:00.0"):
    return GPUPassthroughConfig(pci_address=address)


# --- names ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a", "win11", "Gaming-PC_2.0", "x" * 64, "9lives"])
def test_valid_names(name):
    assert VMConfig(name=name).name == name


@pytest.mark.parametrize(
    "name", ["", "-lead", ".hidden", "x" * 65, "a b", "../etc", "a/b", "<x>", "a'b", "é", None, 5]
)
def test_invalid_names_name_the_field(name):
    with pytest.raises(InvalidConfig) as caught:
        VMConfig(name=name)
    assert caught.value.field == "name"
    assert "letters, digits" in str(caught.value)


# --- sizes ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, mib",
    [("8G", 8192), ("8GiB", 8192), ("8gb", 8192), ("8192M", 8192), ("8192", 8192),
     ("1T", 1048576), ("1.5G", 1536), (" 4G ", 4096), (4096, 4096), ("2048MiB", 2048)],
)
def test_sizes(text, mib):
    assert parse_size_mb(text, "memory_mb") == mib


@pytest.mark.parametrize("text", ["", "G", "8X", "-1G", "0", "0.3M", "8 G B", True, None, [], "1e3"])
def test_bad_sizes(text):
    with pytest.raises(InvalidConfig) as caught:
        parse_size_mb(text, "memory_mb")
    assert caught.value.field == "memory_mb"


def test_disk_size_units_default_to_gib():
    assert VMConfig(name="d", disk_size_gb=40).disk_size_gb == 40
    assert VMConfig(name="d", disk_size_gb="40960M").disk_size_gb == 40
    with pytest.raises(InvalidConfig, match="whole GiB") as caught:
        VMConfig(name="d", disk_size_gb="1500M")
    assert caught.value.field == "disk_size_gb"


# --- per-type minimums and defaults -------------------------------------------------------

def test_windows11_minimums():
    with pytest.raises(InvalidConfig, match="below the minimum for Windows 11: 4096 MiB \\(4 GiB\\)") as caught:
        VMConfig(name="w", vm_type="windows11", memory_mb="2G")
    assert caught.value.field == "memory_mb"
    with pytest.raises(InvalidConfig) as caught:
        VMConfig(name="w", vm_type="windows11", vcpus=1)
    assert caught.value.field == "vcpus"
    with pytest.raises(InvalidConfig) as caught:
        VMConfig(name="w", vm_type="windows11", disk_size_gb=32)
    assert caught.value.field == "disk_size_gb"
    ok = VMConfig(name="w", vm_type=VMType.WINDOWS11, memory_mb="4G", vcpus=2, disk_size_gb=64)
    assert (ok.memory_mb, ok.vcpus, ok.disk_size_gb) == (4096, 2, 64)


def test_windows10_and_linux_minimums():
    with pytest.raises(InvalidConfig, match="2048"):
        VMConfig(name="w", vm_type="windows10", memory_mb=2047)
    assert VMConfig(name="w", vm_type="windows10", memory_mb=2048).memory_mb == 2048
    with pytest.raises(InvalidConfig, match="512"):
        VMConfig(name="l", vm_type="linux", memory_mb=511)
    assert VMConfig(name="l", vm_type="linux", memory_mb=512).memory_mb == 512


def test_defaults_applied_per_type():
    win = VMConfig(name="w", vm_type="windows11")
    assert (win.memory_mb, win.vcpus, win.disk_size_gb) == (8192, 4, 128)
    linux = VMConfig(name="l")
    assert linux.vm_type is VMType.LINUX and linux.memory_mb == 2048
    existing = VMConfig(name="l", disk_path="/var/lib/libvirt/images/l.qcow2")
    assert existing.disk_size_gb is None


def test_vm_type_error_lists_allowed_values():
    with pytest.raises(InvalidConfig) as caught:
        VMConfig(name="x", vm_type="dos")
    assert caught.value.field == "vm_type"
    for allowed in ("windows11", "windows10", "linux", "macos"):
        assert allowed in str(caught.value)


def test_host_limits_unless_forced():
    host = HostResources(memory_mb=8192, cpus=4)
    config = VMConfig(name="big", memory_mb="16G", vcpus=2)
    with pytest.raises(InvalidConfig, match="more than the host has") as caught:
        config.check_host_limits(host)
    assert caught.value.field == "memory_mb"
    config.check_host_limits(host, force=True)  # forcing accepts it
    with pytest.raises(InvalidConfig) as caught:
        VMConfig(name="cpu", vcpus=8).check_host_limits(host)
    assert caught.value.field == "vcpus"


# --- paths ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "path, reason", [("relative.iso", "absolute"), ("/a/../etc/passwd", "'..'"),
                     ("/a\nb", "control"), ("", "absolute")],
)
def test_bad_paths(path, reason):
    with pytest.raises(InvalidConfig, match=reason) as caught:
        VMConfig(name="p", iso_path=path)
    assert caught.value.field == "iso_path"


def test_paths_with_xml_characters_are_kept_verbatim():
    # Escaping is the templates' job (autoescape); the config keeps the user's real path.
    config = VMConfig(name="p", iso_path="/isos/it's <my> & iso.iso")
    assert config.iso_path == "/isos/it's <my> & iso.iso"


# --- PCI and USB --------------------------------------------------------------------------

@pytest.mark.parametrize(
    "text, normal",
    [("01:00.0", "0000:01:00.0"), ("0000:01:00.1", "0000:01:00.1"),
     ("ABCD:FF:1F.7", "abcd:ff:1f.7"), (" 0a:00.3 ", "0000:0a:00.3")],
)
def test_pci_addresses_normalize(text, normal):
    assert str(PCIAddress.parse(text)) == normal
    assert gpu(text).pci_address == normal


@pytest.mark.parametrize("text", ["1:00.0", "01:00", "01:20.0", "01:00.8", "0000:01:00:0", "x", ""])
def test_bad_pci_addresses(text):
    with pytest.raises(InvalidConfig) as caught:
        gpu(text)
    assert caught.value.field == "gpu.pci_address"


def test_pci_domain_is_kept():
    address = PCIAddress.parse("0001:02:03.4")
    assert (address.domain, address.bus, address.slot, address.function) == (1, 2, 3, 4)
    assert address.slot_address == "0001:02:03"


def test_usb_ids_and_duplicates():
    device = USBDeviceConfig(vendor_id="0x046D", product_id="C52B")
    assert (device.vendor_id, device.product_id) == ("046d", "c52b")
    with pytest.raises(InvalidConfig) as caught:
        USBDeviceConfig(vendor_id="46d", product_id="c52b")
    assert caught.value.field == "usb.vendor_id"
    with pytest.raises(InvalidConfig, match="listed twice"):
        VMConfig(name="u", usb_devices=[device, USBDeviceConfig("046d", "c52b")])
    # two identical devices on different ports are two devices
    VMConfig(
        name="u",
        usb_devices=[USBDeviceConfig("046d", "c52b", bus=1, port="2"),
                     USBDeviceConfig("046d", "c52b", bus=1, port="3")],
    )


# --- Looking Glass ------------------------------------------------------------------------

def test_looking_glass_needs_a_gpu():
    with pytest.raises(InvalidConfig) as caught:
        VMConfig(name="lg", display_mode=DisplayMode.LOOKING_GLASS)
    assert caught.value.field == "looking_glass.enabled"
    config = VMConfig(name="lg", display_mode="looking-glass", gpu_passthrough=gpu())
    assert config.looking_glass.enabled


def test_shm_size_power_of_two():
    assert LookingGlassConfig(shm_size_mb=64).shm_size_mb == 64
    with pytest.raises(InvalidConfig, match="power of two") as caught:
        LookingGlassConfig(shm_size_mb=48)
    assert caught.value.field == "looking_glass.shm_size_mb"


# --- round trip ---------------------------------------------------------------------------

def full_config() -> VMConfig:
    return VMConfig(
        name="gaming",
        vm_type="windows11",
        memory_mb="16G",
        vcpus=8,
        disk_size_gb=256,
        iso_path="/isos/win11.iso",
        virtio_iso_path="/isos/virtio-win.iso",
        display_mode="looking-glass",
        domain_type="qemu",
        network="none",
        gpu_passthrough=GPUPassthroughConfig("01:00.0", rom_file="/roms/gpu.rom",
                                             nvidia_compat=True),
        usb_devices=[USBDeviceConfig("046d", "c52b", bus=1, port="1.4", name="Mouse")],
        looking_glass=LookingGlassConfig(enabled=True, width=3840, height=2160, hdr=True),
    )


def test_round_trip_full():
    config = full_config()
    data = config.to_dict()
    assert data["vm_type"] == "windows11" and data["gpu_passthrough"]["pci_address"] == "0000:01:00.0"
    import json

    again = VMConfig.from_dict(json.loads(json.dumps(data)))
    assert again == config
    assert again.to_dict() == data


def test_from_dict_rejects_unknown_and_missing():
    with pytest.raises(InvalidConfig) as caught:
        VMConfig.from_dict({"name": "x", "ram": 4})
    assert caught.value.field == "ram"
    with pytest.raises(InvalidConfig) as caught:
        VMConfig.from_dict({"vm_type": "linux"})
    assert caught.value.field == "name"
    with pytest.raises(InvalidConfig) as caught:
        VMConfig.from_dict({"name": "x", "gpu_passthrough": {"pci": "01:00.0"}})
    assert caught.value.field == "gpu.pci"
    with pytest.raises(InvalidConfig):
        VMConfig.from_dict(["not", "a", "dict"])


def test_vm_state_from_libvirt():
    assert VMState.from_libvirt(1) is VMState.RUNNING
    assert VMState.from_libvirt(5) is VMState.SHUTOFF
    assert VMState.from_libvirt(7) is VMState.PMSUSPENDED
    assert VMState.from_libvirt(99) is VMState.NOSTATE
    assert VMState.SHUTOFF.label == "shut off"


# --- properties: any input validates or raises InvalidConfig, nothing else ------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@given(st.text())
def test_any_name_validates_or_raises_invalid_config(text):
    try:
        assert validate_name(text) == text
    except InvalidConfig as error:
        assert error.field == "name"


@given(st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.booleans()))
def test_any_size_parses_or_raises_invalid_config(value):
    try:
        assert parse_size_mb(value, "memory_mb") > 0
    except InvalidConfig as error:
        assert error.field == "memory_mb"


@given(st.text())
def test_any_pci_text_parses_or_raises_invalid_config(text):
    try:
        address = PCIAddress.parse(text)
    except InvalidConfig:
        return
    assert PCIAddress.parse(str(address)) == address


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {"name": st.text(max_size=10) | st.just("vm1")},
        optional={
            key: json_values
            for key in ("vm_type", "memory_mb", "vcpus", "disk_size_gb", "iso_path",
                        "display_mode", "network", "gpu_passthrough", "usb_devices",
                        "looking_glass", "domain_type")
        },
    )
)
def test_any_dict_builds_or_raises_invalid_config(data):
    try:
        config = VMConfig.from_dict(data)
    except InvalidConfig:
        return
    assert VMConfig.from_dict(config.to_dict()) == config
