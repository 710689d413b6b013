"""The difference between two renderings applied to a definition libvirt holds (pure):
only what the change asks moves; what libvirt added and what was made by hand stays."""

from __future__ import annotations

import pytest
from lxml import etree

from vm_manager.base.domain_merge import disks_on_iothread, merge_definition, set_disk_format
from vm_manager.base.domain_xml import DomainXMLError

# What libvirt holds: its own units, addresses and aliases, a disk with the user's cache
# mode, a NIC with its MAC, a device added by hand, a setup record and another tool's
# metadata (with its own prefix).
CURRENT = """<domain type='kvm'>
  <name>win</name>
  <metadata>
    <neuronos:vm xmlns:neuronos="https://neuronos.org/xmlns/vm/1.0">
      <neuronos:type>windows11</neuronos:type>
      <neuronos:template>windows11-basic</neuronos:template>
    </neuronos:vm>
    <neuronos-setup:setup xmlns:neuronos-setup="https://neuronos.org/xmlns/setup/1.0" kind="windows" stage="ready"/>
    <libosinfo:libosinfo xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0">
      <libosinfo:os id="http://microsoft.com/win/11"/>
    </libosinfo:libosinfo>
  </metadata>
  <memory unit='KiB'>4194304</memory>
  <currentMemory unit='KiB'>4194304</currentMemory>
  <vcpu placement='static' cpuset='2-5'>4</vcpu>
  <features>
    <acpi/>
    <hyperv mode='custom'>
      <relaxed state='on'/>
    </hyperv>
  </features>
  <clock offset='localtime'>
    <timer name='rtc' tickpolicy='catchup'/>
  </clock>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2' cache='writeback' discard='unmap'/>
      <source file='/var/lib/libvirt/images/win.qcow2'/>
      <target dev='vda' bus='virtio'/>
      <boot order='1'/>
      <address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/>
    </disk>
    <interface type='network'>
      <mac address='52:54:00:12:34:56'/>
      <source network='default'/>
      <model type='virtio'/>
      <address type='pci' domain='0x0000' bus='0x01' slot='0x00' function='0x0'/>
    </interface>
    <input type='tablet' bus='usb'>
      <address type='usb' bus='0' port='1'/>
    </input>
    <input type='mouse' bus='ps2'/>
    <video>
      <model type='qxl' ram='65536' vram='65536' vgamem='16384' heads='1' primary='yes'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x0'/>
    </video>
    <hostdev mode='subsystem' type='usb' managed='yes'>
      <source startupPolicy='optional'>
        <vendor id='0x046d'/>
        <product id='0xc52b'/>
      </source>
      <address type='usb' bus='0' port='2'/>
    </hostdev>
    <rng model='virtio'>
      <backend model='random'>/dev/urandom</backend>
    </rng>
    <memballoon model='virtio'>
      <address type='pci' domain='0x0000' bus='0x05' slot='0x00' function='0x0'/>
    </memballoon>
  </devices>
</domain>"""


def rendering(memory=4096, vcpus=4, usb=True, video="qxl", template="windows11-basic",
              vendor_id=False, shmem=False, timers=("rtc",)) -> str:
    """What the templates render for a VM like CURRENT (only the parts these tests vary)."""
    usb_xml = ("<hostdev mode='subsystem' type='usb' managed='yes'><source"
               " startupPolicy='optional'><vendor id='0x046d'/><product id='0xc52b'/></source>"
               "</hostdev>") if usb else ""
    shmem_xml = ("<shmem name='looking-glass-win'><model type='ivshmem-plain'/>"
                 "<size unit='M'>64</size></shmem>") if shmem else ""
    return f"""<domain type='kvm'><name>win</name>
  <metadata><neuronos:vm xmlns:neuronos='https://neuronos.org/xmlns/vm/1.0'>
    <neuronos:type>windows11</neuronos:type><neuronos:template>{template}</neuronos:template>
  </neuronos:vm></metadata>
  <memory unit='MiB'>{memory}</memory><currentMemory unit='MiB'>{memory}</currentMemory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <features><acpi/><hyperv mode='custom'><relaxed state='on'/>
    {"<vendor_id state='on' value='NeuronOS'/>" if vendor_id else ""}</hyperv></features>
  <clock offset='localtime'>{"".join(f"<timer name='{t}'/>" for t in timers)}</clock>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2' discard='unmap'/>
      <source file='/var/lib/libvirt/images/win.qcow2'/><target dev='vda' bus='virtio'/>
      <boot order='1'/></disk>
    <interface type='network'><source network='default'/><model type='virtio'/></interface>
    <input type='tablet' bus='usb'/>
    <video><model type='{video}'/></video>
    {usb_xml}{shmem_xml}
    <memballoon model='virtio'/>
  </devices></domain>"""


def test_a_change_of_nothing_is_the_definition_itself():
    change = merge_definition(CURRENT, rendering(), rendering())
    assert change.xml == CURRENT and not change.changed and change.changes == ()


def test_memory_takes_its_unit_with_its_number_and_vcpu_keeps_its_cpuset():
    change = merge_definition(CURRENT, rendering(), rendering(memory=6144, vcpus=6))
    root = etree.fromstring(change.xml.encode())
    assert (root.find("memory").get("unit"), root.findtext("memory")) == ("MiB", "6144")
    assert root.findtext("currentMemory") == "6144"
    assert (root.find("vcpu").get("cpuset"), root.findtext("vcpu")) == ("2-5", "6")
    assert change.changes == ("memory", "currentMemory", "vcpu")
    before = etree.fromstring(CURRENT.encode())
    for element in before:  # every other part, exactly as it was
        if element.tag not in ("memory", "currentMemory", "vcpu"):
            assert etree.tostring(root.find(element.tag)) == etree.tostring(element)


def test_a_device_the_change_drops_is_found_whatever_libvirt_added_and_removed():
    change = merge_definition(CURRENT, rendering(), rendering(usb=False))
    root = etree.fromstring(change.xml.encode())
    assert root.find("devices/hostdev") is None
    assert root.find("devices/rng") is not None  # made by hand: stays
    assert root.find("devices/interface/mac").get("address") == "52:54:00:12:34:56"
    assert root.find("devices/disk/driver").get("cache") == "writeback"
    assert change.changes == ("removed hostdev mode=subsystem type=usb managed=yes"
                              " source(startupPolicy=optional) vendor(id=0x046d)"
                              " product(id=0xc52b)",)


def test_a_device_the_change_adds_is_appended_once():
    change = merge_definition(CURRENT, rendering(), rendering(shmem=True))
    root = etree.fromstring(change.xml.encode())
    assert [e.get("name") for e in root.iterfind("devices/shmem")] == ["looking-glass-win"]
    assert root.find("devices/shmem/size").text == "64"
    again = merge_definition(change.xml, rendering(), rendering(shmem=True))
    assert again.xml.count("<shmem ") == 1 and again.changes == ()  # it is there already


def test_a_swapped_device_keeps_the_ones_of_its_kind_libvirt_added():
    change = merge_definition(CURRENT, rendering(), rendering(video="vga"))
    root = etree.fromstring(change.xml.encode())
    assert [v.find("model").get("type") for v in root.iterfind("devices/video")] == ["vga"]
    assert [(i.get("type"), i.get("bus")) for i in root.iterfind("devices/input")] == [
        ("tablet", "usb"), ("mouse", "ps2")]


def test_nested_features_and_metadata_change_one_child_and_keep_other_namespaces():
    change = merge_definition(CURRENT, rendering(),
                              rendering(template="windows11-passthrough", vendor_id=True))
    root = etree.fromstring(change.xml.encode())
    ns = {"n": "https://neuronos.org/xmlns/vm/1.0"}
    assert root.findtext("metadata/n:vm/n:template", namespaces=ns) == "windows11-passthrough"
    assert root.find("features/hyperv/vendor_id").get("value") == "NeuronOS"
    assert root.find("features/hyperv/relaxed") is not None
    assert 'xmlns:libosinfo="http://libosinfo.org/xmlns/libvirt/domain/1.0"' in change.xml
    assert 'neuronos-setup:setup' in change.xml and 'stage="ready"' in change.xml
    assert change.changes == ("metadata/vm/template", "added features/hyperv/vendor_id")


def test_an_element_of_repeated_tags_is_replaced_whole_when_its_rendering_changed():
    change = merge_definition(CURRENT, rendering(), rendering(timers=("rtc", "pit")))
    root = etree.fromstring(change.xml.encode())
    assert [t.get("name") for t in root.iterfind("clock/timer")] == ["rtc", "pit"]
    assert change.changes == ("replaced clock",)


def test_a_device_already_gone_is_reported_not_an_error():
    bare = CURRENT.replace(CURRENT[CURRENT.index("    <hostdev"):CURRENT.index("    <rng")], "")
    change = merge_definition(bare, rendering(), rendering(usb=False))
    assert not change.changed and change.missing == (
        "hostdev mode=subsystem type=usb managed=yes",)


def test_set_disk_format_touches_the_one_disk_only():
    raw = CURRENT.replace("type='qcow2'", "type='raw'")
    fixed = set_disk_format(raw, "/var/lib/libvirt/images/win.qcow2", "qcow2")
    root = etree.fromstring(fixed.encode())
    assert root.find("devices/disk/driver").attrib == {
        "name": "qemu", "type": "qcow2", "cache": "writeback", "discard": "unmap"}
    assert set_disk_format(raw, "/elsewhere.img", "qcow2") == etree.tostring(
        etree.fromstring(raw.encode()), encoding="unicode")


@pytest.mark.parametrize("text", ["<domain", "<network/>"])
def test_not_a_domain_is_an_error(text):
    with pytest.raises(DomainXMLError):
        merge_definition(text, rendering(), rendering())


def test_shares_through_the_launcher_changes_only_the_virtiofs_binaries():
    """boot.prepare gives an older NeuronOS VM's shares the launcher (issue 28): only each
    virtiofs filesystem gains <binary path=...> (an existing binary keeps its attributes);
    a 9p share and everything else stay as they were."""
    import re

    from vm_manager.base.domain_merge import shares_through

    before = ("<domain type='kvm'><name>v</name><memory>1</memory><devices>"
              "<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>"
              "<source dir='/home/a/x'/><target dir='x'/></filesystem>"
              "<filesystem type='mount' accessmode='passthrough'><driver type='virtiofs'/>"
              "<binary path='/usr/libexec/virtiofsd' xattr='on'/>"
              "<source dir='/home/a/y'/><target dir='y'/></filesystem>"
              "<filesystem type='mount' accessmode='mapped'><driver type='path'/>"
              "<source dir='/home/a/z'/><target dir='z'/></filesystem>"
              "<graphics type='spice'><listen type='none'/></graphics></devices></domain>")
    after = shares_through(before, "/usr/sbin/neuronos-virtiofsd")
    assert after.count("<binary path=\"/usr/sbin/neuronos-virtiofsd\"") + after.count(
        "<binary path='/usr/sbin/neuronos-virtiofsd'") == 2
    assert "xattr=" in after
    strip = re.compile(r"<binary[^>]*/>")
    assert strip.sub("", after).replace('"', "'") == strip.sub("", before)


def test_disks_from_a_revert_takes_the_new_overlay_and_keeps_the_rest():
    """libvirt's revert of an external snapshot gives the disk a new overlay in the
    snapshot's old definition: the definition of now takes that source and format only
    (cache mode, memory and the rest stay as they are now)."""
    from vm_manager.base.domain_merge import disks_from

    reverted = CURRENT.replace("/var/lib/libvirt/images/win.qcow2",
                               "/var/lib/libvirt/images/win.1733443200").replace(
        "<memory unit='KiB'>4194304</memory>", "<memory unit='KiB'>1048576</memory>")
    merged = etree.fromstring(disks_from(CURRENT, reverted).encode())
    assert merged.find("devices/disk/source").get("file") == \
        "/var/lib/libvirt/images/win.1733443200"
    assert merged.find("devices/disk/driver").attrib == {
        "name": "qemu", "type": "qcow2", "cache": "writeback", "discard": "unmap"}
    assert merged.findtext("memory") == "4194304"
    assert disks_from(CURRENT, CURRENT) == etree.tostring(etree.fromstring(CURRENT.encode()),
                                                          encoding="unicode")


def _disks(threads: str, *disks: str) -> str:
    return f"<domain>{threads}<devices>{''.join(disks)}</devices></domain>"


VIRTIO = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'{}/>"
          "<target dev='vda' bus='virtio'/></disk>")
SATA = "<disk type='file' device='disk'><driver name='qemu'/><target dev='sda' bus='sata'/></disk>"
CDROM = ("<disk type='file' device='cdrom'><driver name='qemu'/>"
         "<target dev='sdb' bus='sata'/></disk>")


@pytest.mark.parametrize("threads, disk, expected", [
    ("<iothreads>1</iothreads>", VIRTIO.format(""), "1"),  # a pinned VM: onto its thread
    ("<iothreads>2</iothreads>", VIRTIO.format(" iothread='2'"), "2"),  # by hand: kept
    ("", VIRTIO.format(" iothread='1'"), None),  # unpinned: libvirt refuses a gone thread
    ("<iothreads>1</iothreads>", SATA, None),  # only virtio disks run on an I/O thread
    ("<iothreads>1</iothreads>", CDROM, None),
])
def test_disks_follow_the_io_thread(threads, disk, expected):
    xml = disks_on_iothread(_disks(threads, disk))
    assert etree.fromstring(xml).find("devices/disk/driver").get("iothread") == expected
    assert disks_on_iothread(xml) == xml  # once is enough


def test_disks_without_a_change_are_the_same_text():
    xml = _disks("", SATA)
    assert disks_on_iothread(xml) is xml
