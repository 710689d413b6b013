"""The single-GPU handoff, planned: every step with its undo, for this host (issue 32).

Giving the only GPU to a VM means taking it from the desktop. The steps, in the order of
the guides' libvirt hook scripts (QaidVoid/Complete-Single-GPU-Passthrough start.sh and
stop.sh), each with its undo written down before it runs, so any failure gives back what
was taken (the undos, newest first):

1. stop the display manager (``display-manager.service``'s unit);
2. unbind fbcon from the virtual consoles that have it (``(M) frame buffer device``);
3. unbind the firmware framebuffer, when one is still there (a native GPU driver deletes
   it at boot, kernel 5.19+: drivers/video/aperture.c; then there is nothing to unbind);
4. unload NVIDIA's modules (``nvidia_drm nvidia_modeset nvidia_uvm nvidia``): the nvidia
   driver cannot give up a card they hold (the "non-zero usage count" hang, QaidVoid #44).
   amdgpu, i915, xe, nouveau, snd_hda_intel and xhci_hcd are never unloaded: unloading
   takes every device of that driver, and amdgpu "is in use" (QaidVoid #38); libvirt's
   detach unbinds them from the card's functions alone;
5. detach every function of the card through libvirt's node-device API
   (``virNodeDeviceDetachFlags``, vfio), never from a libvirt hook: "A hook script must not
   call back into libvirt [...] A deadlock is likely to occur" (libvirt.org/hooks.html);
6. start the VM; when it stops, everything is given back in reverse.

Before the first run it says what the card's resets allow: a function without
``reset_method`` cannot be reset between runs, and AMD's Polaris, Vega and Navi 10/12/14/23
cards need gnif/vendor-reset loaded with ``device_specific`` first in ``reset_method`` (its
README and udev rule; the device IDs below are its src/device-db.h).

Pure: it is a function of the card's PCI functions and what holds the display
(passthrough/display_host.py). The commands are those a person would type as root.
"""

from __future__ import annotations

import shlex
from dataclasses import asdict, dataclass

from ..passthrough.display_host import DisplayHost
from ..passthrough.gpu_attach import node_name
from ..passthrough.pci import PCIDevice

NVIDIA_MODULES = ("nvidia_drm", "nvidia_modeset", "nvidia_uvm", "nvidia")  # unload order
# gnif/vendor-reset src/device-db.h: the AMD cards it resets, by generation
VENDOR_RESET_IDS = {
    "Polaris 10": (0x67C0, 0x67C1, 0x67C2, 0x67C4, 0x67C7, 0x67D0, 0x67DF, 0x67C8, 0x67C9,
                   0x67CA, 0x67CC, 0x67CF, 0x6FDF),
    "Polaris 11": (0x67E0, 0x67E3, 0x67E8, 0x67EB, 0x67EF, 0x67FF, 0x67E1, 0x67E7, 0x67E9),
    "Polaris 12": (0x6980, 0x6981, 0x6985, 0x6986, 0x6987, 0x6995, 0x6997, 0x699F),
    "Vega 10": (0x6860, 0x6861, 0x6862, 0x6863, 0x6864, 0x6867, 0x6868, 0x6869, 0x686A,
                0x686B, 0x686C, 0x686D, 0x686E, 0x686F, 0x687F),
    "Vega 20": (0x66A0, 0x66A1, 0x66A2, 0x66A3, 0x66A4, 0x66A7, 0x66AF, 0x738C),
    "Navi 10": (0x7310, 0x7312, 0x7318, 0x7319, 0x731A, 0x731B, 0x731E, 0x731F, 0x15BF,
                0x15DD, 0x15DE, 0x15E7, 0x1636, 0x1638, 0x164C),
    "Navi 12": (0x7360, 0x7362),
    "Navi 14": (0x7340, 0x7341, 0x7347, 0x734F),
    "Navi 23": (0x73FF,),
}


NO_SYSTEMD = ("this computer does not run systemd (no /run/systemd/system): the handoff runs"
              " as a systemd unit that outlives the desktop, so it cannot run here")


@dataclass(frozen=True)
class HandoffStep:
    what: str  # in words
    do: str  # the command that does it
    undo: str  # the command that gives it back
    why: str = ""
    # what core.handoff does, as data: (operation, *arguments), and what gives it back
    action: tuple[str, ...] = ()
    reverse: tuple[str, ...] = ()


@dataclass(frozen=True)
class HandoffPlan:
    vm: str
    gpu: str  # the card's first function
    needed: bool  # False: the card is not the one showing the desktop
    steps: tuple[HandoffStep, ...] = ()
    warnings: tuple[str, ...] = ()  # what the user must know before the first run
    notes: tuple[str, ...] = ()  # what needs no step, and why

    def describe(self) -> list[str]:
        if not self.needed:
            return [f"{self.vm}: its GPU {self.gpu} is not the one showing this desktop:"
                    " nothing is handed over; it starts like any GPU VM", *self.notes]
        lines = [f"{self.vm}: handing the GPU {self.gpu} over takes the desktop away while"
                 " the VM runs (the screen goes black, then shows the VM); each step's undo"
                 " is written down before it runs, and any failure, the VM's stop or the"
                 " handoff ending gives everything back, newest first:"]
        for number, step in enumerate(self.steps, 1):
            lines.append(f"  {number}. {step.what}" + (f" ({step.why})" if step.why else ""))
            lines.append(f"       do:   {step.do}")
            lines.append(f"       undo: {step.undo}")
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  warning: {warning}" for warning in self.warnings]
        return lines

    def to_dict(self) -> dict:
        return asdict(self)


def plan_handoff(vm: str, functions: list[PCIDevice], host: DisplayHost) -> HandoffPlan:
    """The handoff of the card whose functions are ``functions`` (every function of its
    slot, first the GPU) to VM ``vm``, on a host whose display is held as ``host`` says."""
    gpu = functions[0]
    warnings = tuple(_reset_warnings(functions, host))
    if not gpu.boot_vga:
        return HandoffPlan(vm, str(gpu.address), False, warnings=warnings)
    steps: list[HandoffStep] = []
    notes: list[str] = []
    if not host.systemd:
        warnings += (NO_SYSTEMD,)
    unit = host.display_manager
    if unit:
        steps.append(HandoffStep(
            f"stop the display manager {unit}", f"systemctl stop {shlex.quote(unit)}",
            f"systemctl start {shlex.quote(unit)}", "the desktop lets go of the GPU",
            ("unit-stop", unit), ("unit-start", unit)))
    else:
        warnings += ("no display manager was found (no /etc/systemd/system/"
                     "display-manager.service): a desktop started another way (startx, a"
                     " session from a text console) is not stopped by the handoff; log out"
                     " of it first",)
    for console in host.consoles:
        if console.bound and console.unbindable:
            path = f"/sys/class/vtconsole/vtcon{console.index}/bind"
            steps.append(HandoffStep(
                f"unbind the text console ({console.name[4:]}) from vtcon{console.index}",
                f"echo 0 > {path}", f"echo 1 > {path}", "the console holds the GPU's screen",
                ("write", path, "0"), ("console-bind", path)))
    for framebuffer in host.framebuffers:
        if framebuffer.driver:
            driver = f"/sys/bus/platform/drivers/{framebuffer.driver}"
            steps.append(HandoffStep(
                f"unbind the firmware framebuffer {framebuffer.device}",
                f"echo {framebuffer.device} > {driver}/unbind",
                f"echo {framebuffer.device} > {driver}/bind",
                "it holds the memory of the screen the firmware set up",
                ("write", f"{driver}/unbind", framebuffer.device),
                ("bind", f"{driver}/bind", framebuffer.device)))
    if not any(framebuffer.driver for framebuffer in host.framebuffers):
        notes.append("no firmware framebuffer is left to unbind (the GPU's driver takes it"
                     " over at boot)")
    loaded = [module for module in NVIDIA_MODULES if module in host.modules]
    if gpu.driver == "nvidia" and loaded:
        steps.append(HandoffStep(
            "unload NVIDIA's modules", f"modprobe -r {' '.join(loaded)}",
            f"modprobe -a {' '.join(reversed(loaded))}",
            "the nvidia driver cannot give up a card its modules hold",
            ("modprobe-r", *loaded), ("modprobe", *reversed(loaded))))
    for function in functions:
        node = node_name(function.address)
        if function.driver == "vfio-pci":
            notes.append(f"{function.address} is on vfio-pci already")
            continue
        held = f"from {function.driver}" if function.driver else "no driver"
        steps.append(HandoffStep(
            f"detach {function.address} ({_kind(function)}, {held}) for the VM",
            f"virsh nodedev-detach {node}", f"virsh nodedev-reattach {node}",
            "through libvirt's node-device API, outside any libvirt hook",
            ("detach", str(function.address)), ("reattach", str(function.address))))
    name = shlex.quote(vm)
    steps.append(HandoffStep(f"start {vm}", f"virsh start {name}",
                             f"virsh shutdown {name} (the VM's own shutdown)",
                             "everything above comes back when it stops",
                             ("start", vm), ("stop", vm)))
    return HandoffPlan(vm, str(gpu.address), True, tuple(steps), warnings, tuple(notes))


def _kind(device: PCIDevice) -> str:
    base, sub = device.pci_class >> 16, (device.pci_class >> 8) & 0xFF
    return {0x03: "GPU", 0x04: "audio", 0x0C: "USB" if sub == 0x03 else "serial bus"}.get(
        base, "device")


def _reset_warnings(functions: list[PCIDevice], host: DisplayHost):
    for function in functions:
        if not function.reset_methods:
            yield (f"{function.address} ({_kind(function)}) has no reset method (no"
                   " reset_method in sysfs): after the VM stops it may not work again until"
                   " the computer restarts")
    gpu = functions[0]
    generation = next((name for name, ids in VENDOR_RESET_IDS.items()
                       if gpu.vendor_id == 0x1002 and gpu.device_id in ids), None)
    if generation is None:
        return
    sysfs = f"/sys/bus/pci/devices/{gpu.address}/reset_method"
    if "vendor_reset" not in host.modules:
        yield (f"{gpu.address} is an AMD {generation} card, which does not reset cleanly"
               " (the AMD reset bug): its second VM start after a stop fails, or the host"
               " hangs, until the computer restarts. gnif/vendor-reset fixes it: load it at"
               f" boot and `echo device_specific > {sysfs}` (its udev rule does both)")
    elif gpu.reset_methods[:1] != ("device_specific",):
        yield (f"vendor-reset is loaded, but {gpu.address} does not use it: `echo"
               f" device_specific > {sysfs}` (as root; its udev rule does it at boot)")
