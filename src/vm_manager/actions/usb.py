"""USB devices: the host's list, and giving one to a VM or taking it back.

A running VM gets the device at once and keeps it (live and in its definition); a stopped
one in its definition. Either way the VM's saved settings are kept in step, whichever face
asked, so a later reconfigure or re-creation keeps the device too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .context import Context

if TYPE_CHECKING:
    from ..passthrough.usb_attach import USBDevice


@dataclass
class UsbOutcome:
    vm: str
    device: USBDevice
    attached: bool  # True: attach, False: detach
    live: bool  # hot-plugged (the VM runs), else only its definition changed
    settings_saved: bool  # the VM's saved settings were updated (NeuronOS made it)
    warning: str | None = None

    def describe(self) -> str:
        where = "live and in its config" if self.live else "in its config (it is not running)"
        verb = "attached" if self.attached else "detached"
        return f"{self.device.name} ({self.device.sysfs_name}) {verb}: {where}"


def list_usb(ctx: Context) -> list[USBDevice]:
    """The host's USB devices (no root hubs, no interfaces), named from usb.ids: this
    machine's sysfs for a local URI, libvirt's node devices for a remote one."""
    return ctx.host.usb()


def find(ctx: Context, spec: str) -> tuple[USBDevice, bool]:
    """``VID:PID`` (must be unique) or ``BUS-PORT`` -> (device, exact); exact when named by
    port: that very device, told apart from an identical one."""
    from ..passthrough.usb_attach import find_usb

    return find_usb(spec, devices=list_usb(ctx)), "-" in spec


def attached(ctx: Context, vm: str) -> set[tuple[str, str]]:
    """(vendor, product) of the USB devices the VM's definition holds now."""
    from ..base.domain_xml import read_domain

    connection = ctx.connection
    xml = connection.execute(lambda conn: connection.lookup(conn, vm).XMLDesc(0))
    return {(h.vendor_id, h.product_id) for h in read_domain(xml).usb_hostdevs}


def attach(ctx: Context, vm: str, device: USBDevice, exact: bool = False) -> UsbOutcome:
    from ..passthrough.usb_attach import attach_device, device_xml_for

    live = attach_device(ctx.connection, vm, device_xml_for(device, exact, ctx.loader))
    return _remember(ctx, vm, device, exact, True, live)


def detach(ctx: Context, vm: str, device: USBDevice, exact: bool = False) -> UsbOutcome:
    """From a running VM, returns once libvirt confirms the guest let go (its event)."""
    from ..passthrough.usb_attach import detach_device, device_xml_for

    live = detach_device(ctx.connection, vm, device_xml_for(device, exact, ctx.loader))
    return _remember(ctx, vm, device, exact, False, live)


def _remember(ctx: Context, vm: str, device: USBDevice, exact: bool, add: bool,
              live: bool) -> UsbOutcome:
    from ..base.errors import StoreError
    from ..base.vm_config import USBDeviceConfig

    try:
        config = ctx.settings(vm)
    except StoreError as error:
        return UsbOutcome(vm, device, add, live, False, str(error))
    if config is None:
        return UsbOutcome(vm, device, add, live, False)
    entry = USBDeviceConfig(device.vendor_id, device.product_id,
                            bus=device.bus if exact else None,
                            port=device.port if exact else None, name=device.name)
    key = (entry.vendor_id, entry.product_id, entry.bus, entry.port)
    kept = [u for u in config.usb_devices if (u.vendor_id, u.product_id, u.bus, u.port) != key]
    config.usb_devices = kept + ([entry] if add else [])
    ctx.store.save(config)
    return UsbOutcome(vm, device, add, live, True)
