"""LibvirtConnection, get_connection, at the design notes' path: the module is
``vm_manager.base.connection``, under both names (the same module object)."""
import sys

from ..base import connection

sys.modules[__name__] = connection
