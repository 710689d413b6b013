"""The one action layer: everything the CLI and the desktop app do, done once.

Each action takes a ``Context`` (one libvirt host, see ``context``) and typed input, does
the work through the managers below it (creator, destroyer, lifecycle, Looking Glass,
passthrough), and returns a result object that says what happened. The faces only parse
input and render results, so ``neuron-vm`` and ``neuron-vm-gui`` cannot disagree.

    from vm_manager.actions import Context, power
    ctx = Context("qemu:///system")
    result = power.start(ctx, power.StartRequest("win11"))

Modules: ``vms`` (list, details, watch), ``power`` (start/stop/...), ``create`` (create,
reconfigure), ``delete``, ``display`` (Looking Glass), ``usb``, ``gpu``, ``host`` (doctor,
shared-memory permissions), ``templates``. This package imports nothing heavy itself.
"""

from .context import Context

__all__ = ["Context"]
