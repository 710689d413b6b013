"""The one program NeuronOS runs as root: a few fixed operations, each argument checked.

Why (issue 28): the guided fixes ran ``pkexec <the venv's neuron-vm> ...``; the venv is in
the user's own clone, so anything running as the user could change that program and be run
as root at the next fix. Now ``scripts/setup-host.sh`` installs a root-owned copy of the
package under ``/usr/lib/neuronos`` and this helper as ``/usr/libexec/neuronos/
neuron-vm-helper`` (``#!/usr/bin/python3 -I``: no environment, no user site, nothing of the
user's on its path), with its own polkit action; the fixes call ``/usr/bin/pkexec`` on it.

It only acts for the user polkit asked for (``PKEXEC_UID``, set by pkexec), or, run by root
itself through sudo (no pkexec: the caller is root already), for the user behind sudo
(``SUDO_UID``); never for one named on its command line:

- ``groups``: that user into the ``libvirt`` and ``kvm`` groups (which makes them
  root-equivalent on qemu:///system: said so where the fix is offered);
- ``shm-rule VM``: the systemd-tmpfiles rule for VM's Looking Glass shared memory, for that
  user, applied at once;
- ``gpu-prepare ADDR`` and ``gpu-unprepare``: a GPU bound to vfio-pci from the next boot on,
  and undone (``passthrough.isolation``);
- ``handoff VM``, ``handoff-end VM``: the single-GPU handoff's unit started and stopped
  (``core.handoff``); ``handoff-run VM`` and ``handoff-restore VM`` are that unit's main
  process and stop path, run by systemd. They act for no user, on the VM named.

Only the standard library and the package's own pure modules are imported, except by the
handoff operations, which need the system's libvirt-python (Debian's python3-libvirt).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

HANDOFF = ("handoff", "handoff-end", "handoff-run", "handoff-restore")
OPERATIONS = ("groups", "shm-rule", "gpu-prepare", "gpu-unprepare", *HANDOFF)
USAGE = ("usage: neuron-vm-helper groups | shm-rule VM | gpu-prepare ADDR | gpu-unprepare"
         " | handoff VM | handoff-end VM (run through pkexec)")


def _user() -> str:
    """The account polkit authorised this run for."""
    import pwd

    uid = _caller_uid()
    if not uid.isdigit() or int(uid) == 0:
        raise SystemExit("neuron-vm-helper: run it through pkexec, as your desktop user")
    try:
        return pwd.getpwuid(int(uid)).pw_name
    except KeyError:
        raise SystemExit(f"neuron-vm-helper: no account with uid {uid}") from None


def _caller_uid() -> str:
    """PKEXEC_UID; run by root itself through sudo (root needs no polkit), SUDO_UID."""
    uid = os.environ.get("PKEXEC_UID", "")
    if not uid and os.getuid() == 0:
        uid = os.environ.get("SUDO_UID", "")
    return uid


def main(argv: list[str]) -> int:
    from ..base.errors import VMManagerError

    if not argv or argv[0] not in OPERATIONS:
        print(USAGE, file=sys.stderr)
        return 2
    operation, args = argv[0], argv[1:]
    wanted = {"groups": 0, "shm-rule": 1, "gpu-prepare": 1, "gpu-unprepare": 0}.get(operation)
    if wanted is None and args:  # the handoff: VM, then options
        wanted = len(args) if all(arg.startswith("--") for arg in args[1:]) else -1
    if len(args) != wanted:
        print(USAGE, file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("neuron-vm-helper: it runs as root (through pkexec)", file=sys.stderr)
        return 2
    # the handoff acts for no user (as root, on the VM named): run by pkexec, sudo, root
    # itself, or by systemd as its unit
    if not _caller_uid().isdigit() and operation not in HANDOFF:
        print("neuron-vm-helper: run it through pkexec", file=sys.stderr)
        return 2
    try:
        for line in _run(operation, args):
            print(line)
    except VMManagerError as error:
        print(f"neuron-vm-helper: {error}", file=sys.stderr)
        return 2 if type(error).__name__ == "InvalidConfig" else 1
    return 0


def _run(operation: str, args: list[str]) -> list[str]:
    if operation in HANDOFF:
        import importlib.util
        import logging

        from . import handoff

        if importlib.util.find_spec("libvirt") is None:
            raise handoff.HandoffError("the single-GPU handoff needs libvirt's Python module"
                                       " for the system's Python: apt install python3-libvirt"
                                       " (Arch: pacman -S libvirt-python)")

        # the unit's own processes log their steps to its journal; the user's call says only
        # what went wrong
        level = logging.INFO if operation in HANDOFF[2:] else logging.WARNING
        logging.basicConfig(level=level, format="%(levelname)s %(message)s")
        return handoff.serve(operation, args[0], args[1:])
    user = _user() if operation in ("groups", "shm-rule") else None
    if operation == "groups":
        usermod = shutil.which("usermod", path="/usr/sbin:/sbin:/usr/bin") or "usermod"
        subprocess.run([usermod, "-aG", "libvirt,kvm", user], check=True)
        return [f"{user} is now in the libvirt and kvm groups: log out and back in"]
    if operation == "shm-rule":
        from ..base.primitives import validate_name
        from ..passthrough.ivshmem import write_tmpfiles_rule

        path, _ = write_tmpfiles_rule(validate_name(args[0], "VM"), user, "/", apply=True)
        tmpfiles = shutil.which("systemd-tmpfiles", path="/usr/bin:/bin")
        if tmpfiles:
            subprocess.run([tmpfiles, "--create", str(path)], check=False)
        return [f"wrote {path}"]
    from ..passthrough import isolation

    if operation == "gpu-prepare":
        from ..base.values import PCIAddress

        address = str(PCIAddress.parse(args[0]))
        return isolation.apply(isolation.plan_isolation(address))
    return isolation.unprepare()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
