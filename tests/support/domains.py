"""Hand-written domain XML for tests that need a domain no NeuronOS template makes.

Whole domains in the product come from the templates (``vm_manager/templates``); these are
test fixtures only: the tiny guest booted directly, and a domain with nothing to boot.
Built with ElementTree, so every value is escaped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from .tiny_guest import TinyGuest


def domain_xml(
    name: str,
    guest: TinyGuest,
    serial_log: Path,
    memory_mb: int = 256,
    domain_type: str = "qemu",
    spice: bool = False,
    agent: bool = False,
    setup_stage: str | None = None,
    disks: tuple[str, ...] = (),
    cmdline: str = "console=ttyS0 quiet panic=-1",
) -> str:
    """A libvirt domain for the tiny guest: direct kernel boot, no disk, no NIC, ACPI on,
    the serial console written to ``serial_log``; ``spice``: QEMU's SPICE server as the
    templates make it (no address: reached through libvirt); ``agent``: the QEMU guest-agent channel;
    ``setup_stage``: an unattended setup's metadata at that stage (kind windows);
    ``disks``: raw images as virtio disks (a cloud-init seed). Built with ElementTree:
    every value is escaped."""
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = str(memory_mb)
    ET.SubElement(domain, "vcpu").text = "1"
    if setup_stage:
        from vm_manager.base.domain_xml import SETUP_NS

        ET.SubElement(ET.SubElement(domain, "metadata"), f"{{{SETUP_NS}}}setup", kind="windows",
                      stage=setup_stage)
    os_elem = ET.SubElement(domain, "os")
    ET.SubElement(os_elem, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(os_elem, "kernel").text = str(guest.kernel)
    ET.SubElement(os_elem, "initrd").text = str(guest.initrd)
    ET.SubElement(os_elem, "cmdline").text = cmdline
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")  # without it there is no power button to press
    ET.SubElement(domain, "on_poweroff").text = "destroy"
    ET.SubElement(domain, "on_reboot").text = "restart"
    ET.SubElement(domain, "on_crash").text = "destroy"
    devices = ET.SubElement(domain, "devices")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(serial_log), append="on")
    ET.SubElement(serial, "target", port="0")
    for number, image in enumerate(disks):
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="raw")
        ET.SubElement(disk, "source", file=image)
        ET.SubElement(disk, "target", dev=f"vd{'abcdefgh'[number]}", bus="virtio")
        ET.SubElement(disk, "readonly")
    if agent:
        channel = ET.SubElement(devices, "channel", type="unix")
        ET.SubElement(channel, "target", type="virtio", name="org.qemu.guest_agent.0")
    if spice:  # the product's own SPICE display (the templates' macro): no network port
        from vm_manager.templates.loader import TemplateLoader

        fragment = TemplateLoader().render_fragment("spice_display", "vga")
        devices.extend(ET.fromstring(f"<devices>{fragment}</devices>"))
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def no_os_domain_xml(name: str, domain_type: str = "qemu") -> str:
    """A domain with no disk and no kernel: the firmware finds nothing to boot and idles,
    and nothing answers the ACPI power button (a guest that ignores a graceful stop)."""
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = name
    ET.SubElement(domain, "memory", unit="MiB").text = "64"
    ET.SubElement(domain, "vcpu").text = "1"
    os_elem = ET.SubElement(domain, "os")
    ET.SubElement(os_elem, "type", arch="x86_64", machine="q35").text = "hvm"
    ET.SubElement(ET.SubElement(domain, "features"), "acpi")
    devices = ET.SubElement(domain, "devices")
    ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")


def remove_domain(conn, name: str) -> None:
    """Destroy (if running) and undefine ``name`` with its NVRAM, TPM state and snapshot
    metadata, through a ``LibvirtConnection``; a name libvirt does not know is no error."""
    import libvirt

    def cleanup(c):
        try:
            dom = c.lookupByName(name)
        except libvirt.libvirtError:
            return
        if dom.isActive():
            dom.destroy()
        dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_TPM
                          | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)

    conn.execute(cleanup)


def remove_pool(conn, folder) -> None:
    """Stop and undefine the storage pool of ``folder`` (its files stay), through a
    ``LibvirtConnection``; none there is no error."""
    from vm_manager.core import storage

    pool = conn.execute(lambda c: storage.find_pool(c, folder))
    if pool is not None:
        if pool.isActive():
            pool.destroy()
        pool.undefine()
