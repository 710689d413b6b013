"""NeuronOS VM Manager: libvirt VMs with GPU passthrough and Looking Glass.

The library lives in ``vm_manager.core``, ``vm_manager.passthrough`` and
``vm_manager.templates``; ``vm_manager.cli`` and ``vm_manager.gui`` are its two faces.
"""

__version__ = "0.1.0"
