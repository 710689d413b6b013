"""Planning is pure: plan_creation(config, facts) on hand-made facts, with no libvirt, no
sysfs and no files. An audit hook proves it opens, lists and runs nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from vm_manager.base.errors import InvalidConfig
from vm_manager.core.host_facts import HostFacts, PathFact
from vm_manager.core.planning import plan_creation
from vm_manager.base.vm_config import HostResources, PCIAddress, VMConfig
from vm_manager.passthrough.pci import PCIDevice, PCISnapshot

IMAGES = Path("/srv/images")
ISO = "/media/Win11 & co.iso"


def device(address, vendor, device_id, pci_class, driver, group, boot_vga=None):
    return PCIDevice(PCIAddress.parse(address), vendor, device_id, 0, 0, pci_class, driver,
                     group, boot_vga, ())


def snapshot(*devices: PCIDevice) -> PCISnapshot:
    groups: dict[int, list[PCIAddress]] = {}
    for dev in devices:
        groups.setdefault(dev.iommu_group, []).append(dev.address)
    return PCISnapshot({dev.address: dev for dev in devices}, groups)


TURING = snapshot(
    device("0000:00:02.0", 0x8086, 0x3E92, 0x030000, "i915", 0, True),
    device("0000:01:00.0", 0x10DE, 0x1E87, 0x030000, "nvidia", 1, False),
    device("0000:01:00.1", 0x10DE, 0x10F8, 0x040300, "snd_hda_intel", 1),
    device("0000:01:00.2", 0x10DE, 0x1AD8, 0x0C0330, "xhci_hcd", 1),
    device("0000:01:00.3", 0x10DE, 0x1AD9, 0x0C8000, "nvidia-gpu", 1),
    device("0000:02:00.0", 0x1002, 0x73BF, 0x030000, "amdgpu", 2),
    device("0000:03:00.0", 0x1022, 0x43B7, 0x010601, "ahci", 2),  # shares the AMD's group
)


def facts(**overrides) -> HostFacts:
    values = dict(uri="test:///nowhere", kvm_usable=True,
                  hyperv_features=frozenset({"relaxed", "vapic", "spinlocks", "vpindex",
                                             "synic", "stimer", "vendor_id"}),
                  resources=HostResources(memory_mb=32768, cpus=16), libvirt_version=9000000,
                  images_dir=IMAGES, domain_names=frozenset({"taken"}), pci=TURING,
                  paths={ISO: PathFact("file"), "/roms/gpu.rom": PathFact("file")})
    values.update(overrides)
    return HostFacts(**values)


def windows(**kwargs) -> VMConfig:
    kwargs.setdefault("name", "win")
    kwargs.setdefault("iso_path", ISO)
    return VMConfig(vm_type="windows11", network="none", **kwargs)


@pytest.fixture
def no_io():
    """Records every file open, directory listing, program start and socket the code under
    test makes (Python's audit events)."""
    events: list[tuple] = []
    watching = [False]

    def hook(event, args):
        if watching[0] and event in ("open", "os.listdir", "os.scandir", "subprocess.Popen",
                                     "socket.connect", "os.exec", "os.posix_spawn"):
            events.append((event, args[:1]))

    sys.addaudithook(hook)  # hooks cannot be removed; this one only records while watching

    class Watch:
        def __enter__(self):
            watching[0] = True
            return events

        def __exit__(self, *exc):
            watching[0] = False

    return Watch()


def test_a_full_windows_plan_touches_nothing(no_io):
    config = windows(gpu_passthrough={"pci_address": "01:00.0", "rom_file": "/roms/gpu.rom",
                                      "nvidia_compat": True},
                     looking_glass={"enabled": True}, memory_mb="8G")
    with no_io as events:
        Path(__file__).read_bytes()
    assert events, "the audit hook must see a file being opened"
    events.clear()
    with no_io as events:
        plan = plan_creation(config, facts(), vm_uuid="00000000-0000-4000-8000-000000000001")
    assert events == []
    ctx = plan.context
    assert plan.template == "windows11-passthrough" and plan.domain_type == "kvm"
    assert ctx.uuid == plan.uuid == "00000000-0000-4000-8000-000000000001"
    assert [str(f) for f in ctx.gpu.functions] == [f"0000:01:00.{n}" for n in range(4)]
    assert ctx.gpu.rom_file == "/roms/gpu.rom" and ctx.looking_glass.size_mb == 64
    assert plan.disk.path == "/srv/images/win.qcow2" and plan.disk.create
    names = [feature.name for feature in ctx.hyperv]
    assert names == ["relaxed", "vapic", "spinlocks", "vpindex", "synic", "stimer", "vendor_id"]
    assert [c.path for c in ctx.cdroms] == [ISO] and ctx.cdroms[0].boot_order == 2
    assert ctx.cpu_mode == "host-passthrough" and ctx.network is None


@pytest.mark.parametrize("change, field, words", [
    ({"name": "taken"}, "name", "already exists"),
    ({"iso_path": "/media/gone.iso"}, "iso_path", "does not exist"),
    ({"memory_mb": "64G"}, "memory_mb", "more than the host has"),
    ({"gpu_passthrough": {"pci_address": "02:00.0"}}, "gpu.pci_address", "not viable"),
    ({"gpu_passthrough": {"pci_address": "00:02.0"}}, "gpu.pci_address", "boot GPU"),
    ({"gpu_passthrough": {"pci_address": "05:00.0"}}, "gpu.pci_address", "not a GPU"),
    ({"gpu_passthrough": {"pci_address": "01:00.0", "rom_file": "/roms/x.rom"}},
     "gpu.rom_file", "does not exist"),
    ({"disk_path": "/srv/mine.img"}, "disk_path", "does not exist"),
])
def test_refusals_name_the_field(change, field, words):
    with pytest.raises(InvalidConfig, match=words) as caught:
        plan_creation(windows(**change), facts())
    assert caught.value.field == field


def test_a_disk_in_the_way_is_never_overwritten():
    busy = facts(paths={ISO: PathFact("file"), "/srv/images/win.qcow2": PathFact("file")})
    with pytest.raises(InvalidConfig, match="never overwrites"):
        plan_creation(windows(), busy)


def test_an_existing_disk_keeps_its_format_from_the_facts():
    mine = facts(paths={ISO: PathFact("file"), "/srv/mine.img": PathFact("file", "raw")})
    plan = plan_creation(windows(disk_path="/srv/mine.img"), mine)
    assert (plan.disk.path, plan.disk.format, plan.disk.create) == ("/srv/mine.img", "raw", False)


def test_no_kvm_falls_back_to_emulation_and_says_so():
    plan = plan_creation(windows(), facts(kvm_usable=False))
    assert plan.domain_type == "qemu" and plan.context.cpu_mode == "maximum"
    assert any("software emulation" in warning for warning in plan.warnings)


def test_a_host_without_ovmf_is_told_before_anything_is_made():
    warned = plan_creation(windows(), facts(uri="qemu:///system"))
    assert any("OVMF" in warning for warning in warned.warnings)
    fine = plan_creation(windows(), facts(uri="qemu:///system",
                                          uefi_firmware=("60-edk2-x86_64.json",)))
    assert not any("OVMF" in warning for warning in fine.warnings)


def test_unknown_capabilities_take_the_safe_hyperv_set_and_no_vendor_id():
    config = windows(gpu_passthrough={"pci_address": "01:00.0", "nvidia_compat": True})
    plan = plan_creation(config, facts(hyperv_features=None))
    assert [f.name for f in plan.context.hyperv] == ["relaxed", "vapic", "spinlocks",
                                                      "vendor_id"]
    few = plan_creation(config, facts(hyperv_features=frozenset({"spinlocks"})))
    assert [f.name for f in few.context.hyperv] == ["spinlocks"]  # this host's TCG list


def test_reconfigure_plan_keeps_the_given_uuid_and_its_own_name():
    config = windows(name="taken", disk_path="/srv/images/taken.qcow2")
    mine = facts(paths={ISO: PathFact("file"),
                        "/srv/images/taken.qcow2": PathFact("file", "qcow2")})
    plan = plan_creation(config, mine, existing=True, vm_uuid="u-1")
    assert plan.uuid == "u-1" and not plan.disk.create and plan.disk.format == "qcow2"


# --- disk formats are read, never guessed ------------------------------------------------------

@pytest.mark.parametrize("field, config, fact", [
    ("disk_path", {"disk_path": "/srv/mine.qcow2"}, "/srv/mine.qcow2"),
    ("cloud_image_path", {"vm_type": "linux", "cloud_image_path": "/srv/debian.qcow2",
                          "iso_path": None}, "/srv/debian.qcow2"),
    ("opencore_path", {"vm_type": "macos", "opencore_path": "/srv/OpenCore.qcow2",
                       "iso_path": None}, "/srv/OpenCore.qcow2"),
])
def test_an_image_whose_format_cannot_be_read_is_refused_never_taken_for_raw(field, config,
                                                                            fact):
    why = "qemu-img: Could not open: Unsupported qcow2 version 9"
    unread = facts(paths={ISO: PathFact("file"), fact: PathFact("file", format_problem=why)})
    kind = config.pop("vm_type", "windows11")
    with pytest.raises(InvalidConfig, match="cannot tell the format") as caught:
        plan_creation(VMConfig(name="v", vm_type=kind, network="none",
                               **{"iso_path": ISO, **config}), unread)
    assert caught.value.field == field and why in str(caught.value)


def test_the_formats_read_from_the_images_are_the_ones_planned():
    mine = facts(paths={"/srv/OpenCore.img": PathFact("file", "qcow2"),
                        "/srv/base.img": PathFact("file", "qcow2")})
    mac = plan_creation(VMConfig(name="m", vm_type="macos", network="none",
                                 opencore_path="/srv/OpenCore.img"), mine)
    assert mac.context.opencore_format == "qcow2"  # its name says nothing
    lin = plan_creation(VMConfig(name="l", vm_type="linux", network="none",
                                 cloud_image_path="/srv/base.img"), mine)
    assert (lin.disk.backing, lin.disk.backing_format) == ("/srv/base.img", "qcow2")


def test_a_vm_being_changed_keeps_the_format_its_definition_names():
    from vm_manager.base.domain_xml import read_domain

    disk = "/srv/images/taken.qcow2"
    definition = read_domain(f"""<domain type='kvm'><name>taken</name><devices>
      <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{disk}'/><target dev='vda' bus='virtio'/></disk></devices></domain>""")
    # what qemu-img would say does not matter, nor could it be read
    unread = facts(paths={ISO: PathFact("file"), disk: PathFact("file", format_problem="x")},
                   definition=definition)
    old = windows(name="taken", disk_path=disk)
    new = windows(name="taken", disk_path=disk, memory_mb="6G")
    plan = plan_creation(new, unread, existing=True, previous=old, vm_uuid="u-1")
    assert plan.disk.format == "qcow2" and not plan.disk.create


def test_a_change_checks_only_what_it_changes():
    """The installer ISO deleted after setup, a GPU whose group is no longer viable, more
    vCPUs than the host has given earlier with --force: a change of memory still plans."""
    old = windows(iso_path="/media/gone.iso", vcpus=32,
                  gpu_passthrough={"pci_address": "02:00.0"}, disk_path="/srv/d.qcow2")
    new = windows(iso_path="/media/gone.iso", vcpus=32, memory_mb="6G",
                  gpu_passthrough={"pci_address": "02:00.0"}, disk_path="/srv/d.qcow2")
    host = facts(paths={"/srv/d.qcow2": PathFact("file", "qcow2")})
    plan = plan_creation(new, host, existing=True, previous=old, vm_uuid="u-1")
    assert plan.config.memory_mb == 6144 and plan.context.gpu is not None
    with pytest.raises(InvalidConfig) as caught:  # the same config, as a new VM, is refused
        plan_creation(new, host, force=True)
    assert caught.value.field == "iso_path"


def test_a_lenient_plan_of_saved_settings_keeps_a_gpu_gone_from_the_host():
    """What a VM's saved settings made, to compare a change with: a card no longer on the
    host is taken from the definition's hostdevs on its slot."""
    from vm_manager.base.domain_xml import read_domain

    hostdevs = "".join(
        f"<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0x0000'"
        f" bus='0x07' slot='0x00' function='0x{n}'/></source></hostdev>" for n in range(2))
    definition = read_domain(f"<domain type='kvm'><name>win</name><devices>{hostdevs}"
                             "</devices></domain>")
    config = windows(gpu_passthrough={"pci_address": "07:00.0"}, disk_path="/srv/w.qcow2")
    host = facts(definition=definition, paths={"/srv/w.qcow2": PathFact("file", "qcow2")})
    plan = plan_creation(config, host, existing=True, lenient=True)
    assert [str(f) for f in plan.context.gpu.functions] == ["0000:07:00.0", "0000:07:00.1"]
