"""PCI reading and GPU viability on sysfs trees shaped like the kernel's."""

from __future__ import annotations

import io
import json

import pytest

from vm_manager.cli import main
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.errors import InvalidConfig, OperationFailed
from vm_manager.passthrough.gpu_attach import detach, list_gpus, plan_passthrough, reattach
from vm_manager.passthrough.pci import iommu_groups, read_devices
from support.fakes import FakePCIDevice as Dev
from support.fakes import add_pci_devices, nvidia_turing_gpu

VGA, DISPLAY_3D, AUDIO, SATA, BRIDGE, NIC, HOST = 0x030000, 0x030200, 0x040300, 0x010601, \
    0x060400, 0x020000, 0x060000


def intel_igpu(group=0, boot=True):
    return Dev("0000:00:02.0", 0x8086, 0x3E92, VGA, "i915", group, boot)


def root_port(address="0000:00:01.0", group=1):
    return Dev(address, 0x8086, 0x1901, BRIDGE, "pcieport", group)


@pytest.fixture
def host(tmp_path):
    def build(devices, pci_ids: str | None = None):
        root = add_pci_devices(tmp_path / "root", devices)
        if pci_ids is not None:
            ids = root / "usr" / "share" / "misc" / "pci.ids"
            ids.parent.mkdir(parents=True, exist_ok=True)
            ids.write_text(pci_ids)
        return root
    return build


PCI_IDS = """# test database
10de  NVIDIA Corporation
\t1e87  TU104 [GeForce RTX 2080 Rev. A]
\t\t10de 12a4  a subsystem line, ignored
8086  Intel Corporation
\t3e92  CoffeeLake-S GT2 [UHD Graphics 630]
C 03  Display controller
"""


def test_sysfs_shape_is_the_kernels(host):
    root = host([intel_igpu(), *nvidia_turing_gpu()])
    link = root / "sys" / "bus" / "pci" / "devices" / "0000:01:00.0"
    assert link.is_symlink()
    assert (link / "iommu_group").is_symlink() and (link / "driver").is_symlink()
    assert (root / "sys/kernel/iommu_groups/14/devices/0000:01:00.3").is_symlink()
    devices = read_devices(root)
    gpu = devices[next(a for a in devices if str(a) == "0000:01:00.0")]
    assert (gpu.vendor_id, gpu.device_id, gpu.driver, gpu.iommu_group) == (0x10DE, 0x1E87,
                                                                             "nvidia", 14)
    assert gpu.reset_methods == ("flr", "bus") and gpu.boot_vga is False
    audio = [d for d in devices.values() if d.pci_class == AUDIO][0]
    assert audio.boot_vga is False  # the kernel has boot_vga for VGA-class functions only
    assert {g: [str(a) for a in m] for g, m in iommu_groups(root).items()}[14] == [
        "0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3"]


def test_intel_igpu_and_nvidia_turing(host):
    root = host([intel_igpu(), root_port(), *nvidia_turing_gpu()], PCI_IDS)
    gpus = {g.address: g for g in list_gpus(root)}
    assert set(gpus) == {"0000:00:02.0", "0000:01:00.0"}
    nvidia = gpus["0000:01:00.0"]
    assert nvidia.viable and not nvidia.blockers
    assert [str(f.address) for f in nvidia.functions] == [
        "0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3"]
    assert nvidia.device.name == "NVIDIA Corporation TU104 [GeForce RTX 2080 Rev. A]"
    igpu = gpus["0000:00:02.0"]
    assert igpu.device.boot_vga and any("boot GPU" in w for w in igpu.warnings)
    plan = plan_passthrough("01:00.0", root)
    assert plan.ready and plan.hostdevs == [str(f.address) for f in nvidia.functions]
    refused = plan_passthrough("00:02.0", root)
    assert not refused.ready and "single-GPU opt-in" in refused.refused_reason
    data = nvidia.to_dict()
    for key in ("address", "vendor_id", "device_id", "name", "driver", "iommu_group",
                "boot_vga", "functions", "group_devices", "viable", "blockers"):
        assert key in data


def test_names_fall_back_to_ids_without_pci_ids(host):
    root = host([*nvidia_turing_gpu()])
    gpu = list_gpus(root)[0]
    assert gpu.device.name == "VGA controller [10de:1e87]"


def test_amd_gpu_with_audio(host):
    root = host([intel_igpu(), Dev("0000:03:00.0", 0x1002, 0x73BF, VGA, "amdgpu", 12, False),
                 Dev("0000:03:00.1", 0x1002, 0xAB28, AUDIO, "snd_hda_intel", 12)])
    amd = [g for g in list_gpus(root) if g.address == "0000:03:00.0"][0]
    assert amd.viable
    assert plan_passthrough("0000:03:00.0", root).hostdevs == ["0000:03:00.0", "0000:03:00.1"]


def test_gpu_sharing_its_group_with_a_sata_controller_is_not_viable(host):
    root = host([intel_igpu(), *nvidia_turing_gpu(group=7),
                 Dev("0000:02:00.0", 0x1022, 0x43B7, SATA, "ahci", 7)])
    nvidia = [g for g in list_gpus(root) if g.address == "0000:01:00.0"][0]
    assert not nvidia.viable
    assert [b.address for b in nvidia.blockers] == ["0000:02:00.0"]
    assert "SATA controller" in nvidia.blockers[0].reason and "ahci" in nvidia.blockers[0].reason
    plan = plan_passthrough("01:00.0", root, allow_boot_gpu=True)
    assert not plan.ready and "0000:02:00.0" in plan.refused_reason
    assert "0000:02:00.0" not in plan.hostdevs


def test_nic_on_its_driver_blocks_but_unbound_member_does_not(tmp_path):
    for driver, viable in (("e1000e", False), ("vfio-pci", True), (None, True)):
        root = add_pci_devices(tmp_path / str(driver), [
            intel_igpu(), *nvidia_turing_gpu(group=7),
            Dev("0000:04:00.0", 0x8086, 0x15B8, NIC, driver, 7)])
        nvidia = [g for g in list_gpus(root) if g.address == "0000:01:00.0"][0]
        assert nvidia.viable is viable, driver


def test_bridge_on_pcieport_in_the_group_is_viable(host):
    root = host([intel_igpu(), root_port(group=14), *nvidia_turing_gpu(group=14)])
    nvidia = [g for g in list_gpus(root) if g.address == "0000:01:00.0"][0]
    assert nvidia.viable and "0000:00:01.0" in [str(d.address) for d in nvidia.group_devices]


def test_single_gpu_host(host):
    root = host(nvidia_turing_gpu(boot_vga=True))
    (gpu,) = list_gpus(root)
    assert gpu.viable
    assert any("only GPU" in w for w in gpu.warnings)
    assert not plan_passthrough("01:00.0", root).ready
    assert plan_passthrough("01:00.0", root, allow_boot_gpu=True).ready


def test_a_compute_card_is_no_display_gpu(host):
    """As `gpu list --json` showed on a real NVIDIA H200 (a VM without an IOMMU): class
    0x0302, driver nvidia, no IOMMU group, no boot_vga file. It drives no display, so it is
    not "the host's only display"; it has none for Looking Glass either."""
    from support.fakes import FakePCIDevice

    root = host([FakePCIDevice("0000:00:06.0", 0x10DE, 0x2335, 0x030200, "nvidia", None)])
    (gpu,) = list_gpus(root)
    assert gpu.device.subclass == 0x02 and not gpu.viable
    assert not any("only GPU" in w for w in gpu.warnings), gpu.warnings
    assert any("3D controller: it has no display outputs" in w for w in gpu.warnings)
    assert [b.reason for b in gpu.blockers] == ["the IOMMU is off: no IOMMU groups exist"]


def test_iommu_off_means_nothing_is_viable(host):
    devices = [Dev(d.address, d.vendor, d.device, d.pci_class, d.driver, None, d.boot_vga)
               for d in [intel_igpu(), *nvidia_turing_gpu()]]
    root = host(devices)
    assert iommu_groups(root) == {}
    gpus = list_gpus(root)
    assert gpus and not any(g.viable for g in gpus)
    assert all("IOMMU is off" in " ".join(g.warnings) for g in gpus)
    assert not plan_passthrough("01:00.0", root).ready


def test_3d_controller_class_gpu(host):
    root = host([intel_igpu(), Dev("0000:05:00.0", 0x10DE, 0x20B0, DISPLAY_3D, "nvidia", 20)])
    gpu = [g for g in list_gpus(root) if g.address == "0000:05:00.0"][0]
    assert gpu.device.class_name == "3D controller" and gpu.viable


def test_unknown_gpu_address(host):
    root = host([intel_igpu()])
    with pytest.raises(InvalidConfig) as caught:
        plan_passthrough("09:00.0", root)
    assert caught.value.field == "gpu.pci_address"


def test_real_sys_read_only():
    """On this machine's real /sys: no crash, and sane values for whatever is there."""
    devices = read_devices("/")
    for device in devices.values():
        assert 0 <= device.vendor_id <= 0xFFFF and 0 <= device.pci_class <= 0xFFFFFF
    gpus = list_gpus("/")
    for gpu in gpus:
        assert gpu.device.is_gpu and gpu.functions


def test_node_device_detach_goes_through_libvirt(make_host):
    """The test driver lists the node device but cannot detach (VIR_ERR_NO_SUPPORT): the
    call path reaches libvirt and the refusal is one clear error."""
    uri = make_host(pci_devices=nvidia_turing_gpu())
    with LibvirtConnection(uri) as conn:
        names = conn.execute(lambda c: c.listDevices("pci", 0))
        assert "pci_0000_01_00_0" in names
        with pytest.raises(OperationFailed, match="cannot detach 0000:01:00.0"):
            detach(conn, "0000:01:00.0")
        with pytest.raises(OperationFailed, match="cannot give 0000:01:00.0 back"):
            reattach(conn, "01:00.0")


def test_cli_gpu_list_and_plan(host, monkeypatch):
    root = host([intel_igpu(), *nvidia_turing_gpu(group=7),
                 Dev("0000:02:00.0", 0x1022, 0x43B7, SATA, "ahci", 7)])
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
    out, err = io.StringIO(), io.StringIO()
    assert main(["gpu", "list", "--json"], out=out, err=err) == 0, err.getvalue()
    data = {g["address"]: g for g in json.loads(out.getvalue())}
    assert data["0000:01:00.0"]["viable"] is False
    assert data["0000:01:00.0"]["blockers"][0]["address"] == "0000:02:00.0"
    out = io.StringIO()
    assert main(["gpu", "list"], out=out, err=io.StringIO()) == 0
    assert "NOT viable" in out.getvalue() and "0000:02:00.0" in out.getvalue()
    out, err = io.StringIO(), io.StringIO()
    assert main(["gpu", "plan", "01:00.0"], out=out, err=err) == 1
    assert "not viable" in out.getvalue() + err.getvalue()


# --- the same verdicts from libvirt's node devices (issue 17: remote hosts) ------------------

TOPOLOGY = [
    intel_igpu(group=0, boot=True), root_port(group=1),
    *nvidia_turing_gpu(bus=1, group=14),
    Dev("0000:02:00.0", 0x1002, 0x73BF, VGA, None, 7), Dev("0000:02:00.1", 0x1002, 0xAB28,
                                                            AUDIO, None, 7),
    Dev("0000:03:00.0", 0x1022, 0x43B7, SATA, None, 7),  # unbound: stays with the host
]


def verdicts(gpus):
    return [(str(g.address), g.viable, [b.address for b in g.blockers],
             [str(f.address) for f in g.functions], g.device.iommu_group) for g in gpus]


def test_node_devices_give_the_sysfs_verdicts(host, tmp_path):
    """One topology, read two ways: this machine's sysfs tree, and libvirt's node devices
    (test driver; what a remote host reports). The verdicts, functions and groups agree; what
    libvirt does not tell (boot VGA) is unknown there, not guessed."""
    from vm_manager.actions import Context
    from vm_manager.actions.gpu import list_gpus as listed
    from support.fakes import FakeHost, write_node_file

    uri = write_node_file(tmp_path / "node.xml", FakeHost(pci_devices=TOPOLOGY))
    sysfs = listed(Context(uri, host_root=host(TOPOLOGY)), source="sysfs")
    with LibvirtConnection(uri) as conn:
        remote = listed(Context(connection=conn), source="libvirt")
    assert verdicts(remote) == verdicts(sysfs)
    assert [g.device.boot_vga for g in remote] == [None, None, None]
    assert [g.device.boot_vga for g in sysfs][0] is True


NODEDEV = """<device>
  <name>pci_0000_01_00_0</name>
  <path>/sys/devices/pci0000:00/0000:00:01.0/0000:01:00.0</path>
  <parent>pci_0000_00_01_0</parent>
  <driver><name>nvidia</name></driver>
  <capability type='pci'>
    <class>0x030000</class>
    <domain>0</domain><bus>1</bus><slot>0</slot><function>0</function>
    <product id='0x1e87'>TU104 [GeForce RTX 2080 Rev. A]</product>
    <vendor id='0x10de'>NVIDIA Corporation</vendor>
    <iommuGroup number='14'>
      <address domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
      <address domain='0x0000' bus='0x03' slot='0x00' function='0x0'/>
    </iommuGroup>
  </capability>
</device>"""
SATA_NODEDEV = """<device><name>pci_0000_03_00_0</name><driver><name>ahci</name></driver>
  <capability type='pci'><class>0x010601</class><domain>0</domain><bus>3</bus><slot>0</slot>
  <function>0</function><product id='0x43b7'/><vendor id='0x1022'>AMD</vendor>
  <iommuGroup number='14'/></capability></device>"""


def test_node_device_xml_as_real_libvirt_writes_it():
    """`virsh nodedev-dumpxml` shape (with the driver, which the test driver drops): names
    from the remote pci.ids, the group from its listed members, and a group member on a host
    driver blocks, as in sysfs."""
    from vm_manager.passthrough.gpu_attach import gpus_in
    from vm_manager.passthrough.nodedev import snapshot_from_xml

    snapshot = snapshot_from_xml([NODEDEV, SATA_NODEDEV, "<device><name>computer</name>"
                                  "<capability type='system'/></device>"])
    [gpu] = gpus_in(snapshot)
    assert gpu.device.name == "NVIDIA Corporation TU104 [GeForce RTX 2080 Rev. A]"
    assert gpu.device.driver == "nvidia" and gpu.device.iommu_group == 14
    assert [str(a) for a in snapshot.groups[14]] == ["0000:01:00.0", "0000:03:00.0"]
    assert not gpu.viable and gpu.blockers[0].address == "0000:03:00.0"
    assert "host driver ahci" in gpu.blockers[0].reason


def test_remote_uris_are_told_apart():
    from vm_manager.base.primitives import is_remote

    for uri in ("qemu+ssh://root@host/system", "qemu+ssh://root@127.0.0.1:2222/system?keyfile=k",
                "qemu://host.lan/system", "qemu+tls://h/system", "qemu+libssh2://u@h/system"):
        assert is_remote(uri), uri
    for uri in ("qemu:///system", "qemu:///session", "qemu+unix:///system", "test:///default",
                "test:///tmp/node.xml"):
        assert not is_remote(uri), uri


def test_cli_gpu_list_from_libvirt(tmp_path):
    from support.fakes import FakeHost, write_node_file

    uri = write_node_file(tmp_path / "node.xml", FakeHost(pci_devices=TOPOLOGY))
    out, err = io.StringIO(), io.StringIO()
    assert main(["--json", "-c", uri, "gpu", "list", "--source", "libvirt"], out=out,
                err=err) == 0, err.getvalue()
    listed = {item["address"]: item for item in json.loads(out.getvalue())}
    assert listed["0000:01:00.0"]["viable"] and listed["0000:01:00.0"]["boot_vga"] is None
    assert listed["0000:02:00.0"]["functions"] == ["0000:02:00.0", "0000:02:00.1"]


@pytest.mark.parametrize("pci_ids, shown", [
    (None, "VGA controller [10de:1e87]"),
    (PCI_IDS, "NVIDIA Corporation TU104 [GeForce RTX 2080 Rev. A] · VGA controller"
              " [10de:1e87]"),
])
def test_info_names_a_vms_gpu_once(host, make_host, monkeypatch, tmp_path, pci_ids, shown):
    """Walk: without pci.ids, `info` showed 'VGA controller [10de:1e87] · VGA controller
    [10de:1e87]' for each function of the VM's GPU."""
    from vm_manager.base.connection import LibvirtConnection

    root = host([intel_igpu(), *nvidia_turing_gpu(group=7)], pci_ids)
    monkeypatch.setenv("NEURONOS_HOST_ROOT", str(root))
    monkeypatch.setenv("NEURONOS_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("NEURONOS_IMAGES_DIR", str(tmp_path / "images"))
    with LibvirtConnection(make_host(cpus=8, memory_mb=16384)) as conn:
        def run(*argv):
            out, err = io.StringIO(), io.StringIO()
            return main(list(argv), connection=conn, out=out, err=err), out.getvalue(), \
                err.getvalue()

        code, _, err = run("create", "g", "--template", "windows11", "--gpu", "01:00.0",
                           "--disk-size", "64G", "--network", "none")
        assert code == 0, err
        code, out, err = run("info", "g")
    assert code == 0, err
    line = next(line for line in out.splitlines() if "0000:01:00.0" in line)
    assert line.split("0000:01:00.0", 1)[1].strip(" :") == shown, line
