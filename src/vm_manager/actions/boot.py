"""What is checked and made on this computer just before a VM boots (issue 28), by every
start: ``neuron-vm start``, ``create --start``, ``setup-restart --start`` and the window.

- Each shared folder is checked again: still the folder it was (no symlink on the way),
  still the desktop user's own, nothing inside it they could not open. A folder swapped for
  a symlink after the VM was made would otherwise reach what it now points at.
- A VM NeuronOS made before SPICE lost its network port (127.0.0.1, no password: every
  local account could watch and type) gets ``<listen type='none'/>`` before it boots.
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
    from ..base.domain_xml import read_domain
    from ..base.errors import InvalidConfig, OperationFailed
    from ..base.primitives import is_remote
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
        done.append(_spice_without_port(ctx, name))
    for share in domain.filesystems:
        if share.type in (None, "mount") and share.source:
            problem = share_problem(share.source, user)
            if problem:
                raise OperationFailed(
                    f"{name} was not started: its shared folder {share.source} (tag"
                    f" {share.target}) may not be shared any more: {problem}; fix the folder,"
                    f" or remove it (neuron-vm share remove {name} {share.target})")
    try:
        shm = ivshmem.shm_name(name)
    except InvalidConfig:
        return done  # a name made outside NeuronOS: no file of ours
    if domain.shmem(shm) is not None:
        path = ivshmem.shm_path(name, Path(ctx.shm_dir) if ctx.shm_dir else ivshmem.SHM_DIR)
        log.info("%s", ivshmem.claim_shared_memory(path, ivshmem.user_credentials(user),
                                                   ivshmem.qemu_account()))
    return done


def _spice_without_port(ctx: Context, name: str) -> str:
    import libvirt

    from ..base.domain_merge import spice_without_port

    connection = ctx.connection

    def change(conn):
        dom = connection.lookup(conn, name)
        conn.defineXML(spice_without_port(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)))

    connection.execute(change)
    said = (f"{name}'s screen had a network port every local account could reach: it is"
            " now reached through libvirt only")
    log.warning("%s", said)
    return said
