"""What is checked and made on this computer just before a VM boots (issue 28), by every
start: ``neuron-vm start``, ``create --start``, ``setup-restart --start`` and the window.

- Each shared folder is checked again: still the folder it was (no symlink on the way),
  still the desktop user's own, nothing inside it they could not open. A folder swapped for
  a symlink after the VM was made would otherwise reach what it now points at.
- A VM NeuronOS made before SPICE lost its network port (127.0.0.1, no password: every
  local account could watch and type) gets ``<listen type='none'/>`` before it boots; one
  made before its shares were served by NeuronOS's virtiofsd launcher (as the folder's
  owner, ``core.virtiofs_launcher``; before, as root) gets the launcher. A share the
  launcher would refuse (a folder root owns, the launcher not installed) is said in words
  here, not as QEMU's "Connection refused".
- The Looking Glass shared memory file is made anew for the desktop user and QEMU only
  (``passthrough.ivshmem.claim_shared_memory``): a file someone else made first, and may
  keep mapped, is never the one QEMU uses.

Nothing is done for a remote VM (its files are the other machine's) or a running one.
"""

from __future__ import annotations

from pathlib import Path

from ..base.log import get_logger
from .context import Context

log = get_logger(__name__)


def prepare(ctx: Context, name: str) -> list[str]:
    """Check the VM's shares and make its shared memory; what the user must hear of it (a
    definition changed), in words. Raises
    ``OperationFailed`` naming a share that may not be shared any more, or
    ``LookingGlassError`` for a shared memory file that cannot be replaced."""
    from ..base.access import desktop_user, share_problem
    from ..base.domain_merge import shares_through, spice_without_port
    from ..base.domain_xml import read_domain
    from ..base.errors import InvalidConfig, OperationFailed
    from ..base.primitives import is_remote
    from ..core.virtiofs_launcher import INSTALLED_PATH
    from ..passthrough import ivshmem

    if is_remote(ctx.uri):
        return []
    connection = ctx.connection

    def facts(conn):
        dom = connection.lookup(conn, name)
        return dom.isActive(), dom.XMLDesc(0)

    active, xml = connection.execute(facts, idempotent=True)
    if active:
        return []
    domain, user, done = read_domain(xml), desktop_user(), []
    if domain.neuronos_template and any(g.type == "spice" and g.listen_type != "none"
                                        for g in domain.graphics):
        done.append(_change(ctx, name, spice_without_port, f"{name}'s screen had a network"
                            " port every local account could reach: it is now reached"
                            " through libvirt only"))
    launcher = INSTALLED_PATH
    served = ctx.uri.startswith("qemu")  # the test driver runs no virtiofsd
    if served and domain.neuronos_template and any(
            share.driver == "virtiofs" and share.binary != launcher
            for share in domain.filesystems):
        done.append(_change(ctx, name, lambda xml: shares_through(xml, launcher),
                            f"{name}'s shared folders were served as root: they are now"
                            " served as the folder's owner"))
        domain = read_domain(connection.execute(lambda conn: connection.lookup(
            conn, name).XMLDesc(0), idempotent=True))
    for share in domain.filesystems:
        if share.type in (None, "mount") and share.source:
            problem = share_problem(share.source, user) or (
                _launcher_problem(share.source, launcher)
                if served and share.binary == launcher else None)
            if problem:
                raise OperationFailed(
                    f"{name} was not started: its shared folder {share.source} (tag"
                    f" {share.target}) cannot be shared: {problem}; fix the folder,"
                    f" or remove it (neuron-vm share remove {name} {share.target})")
    _check_hugepages(ctx, name, domain)
    try:
        shm = ivshmem.shm_name(name)
    except InvalidConfig:
        return done  # a name made outside NeuronOS: no file of ours
    if domain.shmem(shm) is not None:
        path = ivshmem.shm_path(name, Path(ctx.shm_dir) if ctx.shm_dir else ivshmem.SHM_DIR)
        log.info("%s", ivshmem.claim_shared_memory(path, ivshmem.user_credentials(user),
                                                   ivshmem.qemu_account()))
    return done


def _check_hugepages(ctx: Context, name: str, domain) -> None:
    """A VM whose memory is in huge pages starts only when the host has enough of them
    free: said with the fix, never as QEMU's "unable to map backing store"."""
    from ..base.errors import OperationFailed
    from ..passthrough.hugepages import (hugetlbfs_mounted, pages_needed, read_hugepages,
                                         reserve_fix)

    kib = domain.hugepages_kib
    if not kib or not ctx.uri.startswith("qemu") or not domain.memory_mib:
        return
    if not hugetlbfs_mounted(ctx.host_root):
        raise OperationFailed(
            f"{name} was not started: its memory is in huge pages and no hugetlbfs is mounted"
            " (systemd mounts one at /dev/hugepages at boot; here: `sudo mount -t hugetlbfs"
            " hugetlbfs /dev/hugepages`, then `sudo systemctl restart libvirtd`); or start it"
            f" without them: `neuron-vm configure {name} --hugepages none`")
    pool = read_hugepages(ctx.host_root).get(kib)
    size = f"{kib // 1024} MiB" if kib < 1048576 else f"{kib // 1048576} GiB"
    need = pages_needed(int(domain.memory_mib), kib)
    nodes = domain.cpu.memory_nodes
    free = 0 if pool is None else pool.free_by_node.get(int(nodes), pool.free) \
        if nodes and nodes.isdigit() else pool.free
    if free >= need:
        return
    fix = (reserve_fix(kib, pool.total + need - free) if pool is not None else
           f"this computer offers no {size} pages")
    raise OperationFailed(f"{name} was not started: its memory is in {size} huge pages and it"
                          f" needs {need} free, this computer has {free}; {fix}; or start it"
                          f" without them: `neuron-vm configure {name} --hugepages none`")


def _change(ctx: Context, name: str, rewrite, said: str) -> str:
    """The VM's definition rewritten by ``rewrite`` (a ``base.domain_merge`` function);
    ``said`` is logged and returned."""
    import libvirt

    connection = ctx.connection

    def change(conn):
        dom = connection.lookup(conn, name)
        conn.defineXML(rewrite(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)))

    connection.execute(change)
    log.warning("%s", said)
    return said


def _launcher_problem(folder: str, launcher: str) -> str | None:
    """Why NeuronOS's virtiofsd launcher would refuse to serve ``folder`` (it says so only
    in libvirt's log, and QEMU then reports "Connection refused")."""
    import os

    from ..base.access import root_owned

    if not os.access(launcher, os.X_OK):
        return (f"NeuronOS's virtiofsd launcher {launcher} is not installed (it serves a"
                " shared folder as its owner): install it with sudo bash"
                " scripts/install-helper.sh")
    return root_owned(folder)


# What QEMU says when KVM cannot run a VM it was given (issue 29, item 2): seen on a host
# whose /dev/kvm existed with neither vmx nor svm shown ("System Management Mode not
# supported by this hypervisor", from QEMU's machine setup with smm=on; the
# kvm_buf_set_msrs assertion), and QEMU's accel/kvm/kvm-all.c messages for a KVM it
# cannot open or initialise.
KVM_FAILURES = ("System Management Mode not supported by this hypervisor", "kvm_buf_set_msrs",
                "Could not access KVM kernel module", "failed to initialize kvm",
                "failed to initialize KVM")


def start(ctx: Context, name: str, **options):
    """``ctx.lifecycle.start``, with a VM that KVM cannot run here said in plain words with
    its fix (software emulation) instead of QEMU's own message."""
    from ..base.errors import OperationFailed

    import re

    try:
        return ctx.lifecycle.start(name, **options)
    except OperationFailed as error:
        network = re.search(r"network '([^']+)' is not active", str(error))
        if network:  # (a walk: libvirt's own words, no fix)
            raise OperationFailed(
                f"{name} could not start: its network {network.group(1)} is not running;"
                f" start it (sudo virsh net-start {network.group(1)}), or give {name} no"
                f" network (neuron-vm configure {name} --network none)") from error
        if "Cannot allocate memory" in str(error):
            raise OperationFailed(
                f"{name} could not start: this computer has not that much free memory for"
                f" it; give it less (neuron-vm configure {name} --memory SIZE) or close"
                " other programs") from error
        if "host doesn't support passthrough of host PCI devices" in str(error):
            raise OperationFailed(  # libvirt's words when no IOMMU is on (a walk)
                f"{name} could not start: this computer cannot pass its GPU (a PCI device) to"
                " a VM: its IOMMU is off or missing (`neuron-vm doctor`, or the app's Host"
                " check, says which and how to turn it on); or start it without the GPU:"
                f" neuron-vm configure {name} --gpu none") from error
        if not any(words in str(error) for words in KVM_FAILURES):
            raise
        raise OperationFailed(
            f"{name} could not start: KVM cannot run VMs on this computer (QEMU said:"
            f" {_last_line(str(error))}); run it with software emulation (slow): choose"
            " \"Slow: software emulation\" as its Speed in Settings, or neuron-vm"
            f" configure {name} --domain-type qemu") from error


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    last = lines[-1] if lines else text
    return last if len(last) <= 160 else last[:157] + "..."

