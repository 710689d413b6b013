"""The VM manager's library core: connection, config, lifecycle, creation, storage.

Import the submodules directly (``from vm_manager.base.connection import get_connection``);
this package imports nothing itself so that a light command stays light.
"""
