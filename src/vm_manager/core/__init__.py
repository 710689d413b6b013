"""The managers: lifecycle, creation and change, deletion, the host and its facts,
planning, storage, snapshots, guest setup, the Looking Glass supervisor.

Import the submodules directly (``from vm_manager.core.vm_creator import VMCreator``);
this package imports nothing itself so that a light command stays light.
"""
