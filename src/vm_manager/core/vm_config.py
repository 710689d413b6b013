"""VMConfig and friends, at the design notes' path: the module is
``vm_manager.base.vm_config``, under both names (the same module object)."""
import sys

from ..base import vm_config

sys.modules[__name__] = vm_config
