"""Restarting an unattended setup that failed or was interrupted (``neuron-vm
setup-restart``): the VM and its disk stay, the stage goes back to "created", a setup
medium that is gone is made again, and only with ``wipe_disk`` is the VM's own disk (one
NeuronOS made, in its images folder) made empty again, so the installer starts afresh.

Without ``wipe_disk`` a Windows disk that holds a half-done installation boots first and
Windows Setup resumes from it where it can; a cloud-init seed always gets a new
instance-id, so cloud-init runs again.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..base import guard
from . import storage
from ..base.errors import InvalidConfig, LifecycleError, VMCreationError
from .guest_setup import SetupTracker
from .host import host_for, setup_medium_path
from ..base.vm_config import VMConfig
from ..base.log import get_logger

log = get_logger(__name__)


def restart_setup(tracker: SetupTracker, config: VMConfig, *, images_dir: Path, loader,
                  secrets=None, wipe_disk: bool = False, qemu_img: str = "qemu-img",
                  stopped: bool = False, stage_timeout_s: int | None = None) -> str:
    """Put ``config``'s VM back at stage "created" (it must be shut off). Returns what was
    done, in words. ``InvalidConfig`` for a setup that finished (a cloud image VM's may
    start again from an empty overlay, ``wipe_disk``) or a missing password."""
    name = config.name
    setup, live = tracker.info(name)
    if setup is None:
        raise InvalidConfig("NAME", f"{name} was not created with --unattended")
    if setup.stage == "ready" and not (wipe_disk and setup.kind == "cloud-init"):
        raise InvalidConfig("NAME", f"the setup of {name} finished; there is nothing to"
                            " restart" + (" (--wipe-disk sets a cloud image VM up again from"
                                          " an empty overlay)" if setup.kind == "cloud-init"
                                          else ": its installer is detached; to install"
                                          " again, delete the VM and create it anew"))
    if live["active"]:
        raise LifecycleError(f"{name} is running: stop it first (or give --force)")
    done = ["powered the running VM off first (--force)"] if stopped else []
    if wipe_disk:
        done.append(_wipe_disk(config, images_dir, qemu_img, tracker.connection))
    medium = _derived_medium(setup.medium, images_dir, name)
    # 1: create (since its "created" step is recorded, the first one is create's own)
    created = [step for step in setup.steps if step[0] == "created"]
    attempt = 2 + len(created) - (1 if setup.steps and setup.steps[0][0] == "created" else 0)
    host = host_for(tracker.connection.uri, tracker.connection, qemu_img=qemu_img)
    if setup.kind == "cloud-init" or not host.has_file(str(medium)):
        def build(target: Path) -> None:
            _build_medium(config, target, live["domain"].uuid, loader, secrets, attempt,
                          host.opener())

        host.put_file(str(medium), build, replace=True)
        done.append(f"made the setup medium {medium} again")
        if setup.kind == "cloud-init":
            done.append(f"cloud-init gets a new instance-id (iid-{live['domain'].uuid}"
                        f"-{attempt}), so it runs again")
    else:
        done.append(f"kept the setup medium {medium}")
    if not any(disk.source == str(medium) for disk in live["domain"].disks):
        _attach_medium(tracker, name, setup.kind, str(medium), live["domain"], loader)
        done.append("attached it again")
    if stage_timeout_s:
        from .setup_stages import duration

        done.append(f"every stage may now take {duration(stage_timeout_s)}")
    tracker.reset(name, "setup restarted: " + "; ".join(done), stage_timeout_s)
    return "; ".join(done)


def _derived_medium(recorded: str | None, images_dir: Path, name: str) -> Path:
    """The medium's path as NeuronOS derives it (the images folder, ``NAME-setup.iso``):
    the path in the domain's metadata is only compared with it, never trusted (issue 28: a
    planted path made root replace an arbitrary file)."""
    derived = setup_medium_path(images_dir, name)
    if recorded and recorded != str(derived):
        where = Path(recorded).parent
        hint = (f" (it was made with NEURONOS_IMAGES_DIR={where}: run it with that)"
                if Path(recorded).name == derived.name and not where.is_symlink() else "")
        raise InvalidConfig("NAME", f"{name}'s metadata names the setup medium {recorded},"
                            f" not {derived} where NeuronOS puts it; it is not touched{hint}")
    return derived


def _attach_medium(tracker: SetupTracker, name: str, kind: str | None, medium: str, domain,
                   loader) -> None:
    """Put a setup medium that a failed setup detached back into the definition: the seed
    as a read-only virtio disk, the Windows medium as a SATA CD-ROM."""
    import libvirt

    from .planning import CDROMSpec, DiskSpec

    taken = {disk.target for disk in domain.disks}
    if kind == "cloud-init":
        target = next(f"vd{c}" for c in "bcdefghijklmnop" if f"vd{c}" not in taken)
        fragment = loader.render_fragment("seed_disk", DiskSpec(medium, "raw", "virtio",
                                                                target, None))
    else:
        target = next(f"sd{c}" for c in "abcdefghijklmnop" if f"sd{c}" not in taken)
        fragment = loader.render_fragment("cdroms", [CDROMSpec(medium, "sata", target, None)])
    guard.check("attach the setup medium")
    tracker.connection.execute(lambda conn: tracker.connection.lookup(conn, name)
                               .attachDeviceFlags(fragment, libvirt.VIR_DOMAIN_AFFECT_CONFIG))


def refuse_wiping_snapshots(connection, name: str) -> None:
    """A disk made empty again loses the snapshots inside it while libvirt still lists
    them (a revert then fails): ``InvalidConfig`` naming them while any exist."""
    names = connection.execute(lambda c: [snap.getName() for snap in connection.lookup(
        c, name).listAllSnapshots(0)])
    if names:
        raise InvalidConfig("--wipe-disk", f"{name} has snapshots ({', '.join(sorted(names))}),"
                            " held inside its disk: wiping the disk would destroy them; delete"
                            f" them first (`neuron-vm snapshot delete {name} SNAP`), or keep"
                            " the disk")


def _wipe_disk(config: VMConfig, images_dir: Path, qemu_img: str, connection=None) -> str:
    """Make the VM's own disk empty again (same size; on the same cloud image): through its
    storage pool when it is a volume (libvirt makes it anew, where the VM runs), else with
    qemu-img here."""
    disk = Path(config.disk_path or "")
    managed = Path(os.path.realpath(images_dir))
    if not config.disk_size_gb or managed not in Path(os.path.realpath(disk)).parents:
        raise InvalidConfig("--wipe-disk", f"{disk} is not a disk NeuronOS made for"
                            f" {config.name} in {images_dir}; it is never wiped")
    if connection is not None and _wipe_volume(connection, config, str(disk)):
        log.info("wiped the disk %s of %s through its pool", disk, config.name)
        return f"made the disk {disk} empty again"
    backing = []
    if config.cloud_image_path:
        from .backing import ImageUnreadable, image_info

        try:  # the image's own format, as qemu-img reads it: never guessed
            fmt = image_info(config.cloud_image_path, qemu_img).format
        except ImageUnreadable as error:
            raise VMCreationError(f"cannot tell the format of the cloud image"
                                  f" {config.cloud_image_path} ({error}): the disk {disk} was"
                                  " not wiped") from None
        backing = ["-b", os.path.abspath(config.cloud_image_path), "-F", fmt]
    fresh = disk.with_name(f".{disk.name}.fresh")
    guard.check("qemu-img")
    try:
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on",
                        *backing, str(fresh), f"{config.disk_size_gb}G"],
                       capture_output=True, text=True, check=True, timeout=120)
        os.chmod(fresh, 0o600)
        os.replace(fresh, disk)  # the old content goes only once the new disk exists
    except subprocess.CalledProcessError as error:
        fresh.unlink(missing_ok=True)
        raise VMCreationError(f"qemu-img could not make {disk} again:"
                              f" {error.stderr.strip() or error}") from None
    log.info("wiped the disk %s of %s", disk, config.name)
    return f"made the disk {disk} empty again"


def _wipe_volume(connection, config: VMConfig, disk: str) -> bool:
    """The disk as a new, empty volume of its pool (same name, size and backing); False when
    no pool holds it (or the URI keeps files itself, as the test driver does)."""
    from ..base.storage_xml import read_volume, volume_xml

    if not storage.uses_pools(connection.uri):
        return False

    def wipe(conn) -> bool:
        volume = storage.lookup_volume(conn, disk)
        if volume is None:
            return False
        pool = volume.storagePoolLookupByVolume()
        described = read_volume(volume.XMLDesc(0))
        backing, backing_format = described.backing, described.backing_format
        if backing and not backing_format:  # checked before anything is lost
            raise VMCreationError(f"{disk} builds on {backing}, whose format its pool does not"
                                  " name; it is never guessed: the disk was not wiped")
        volume.delete(0)  # what it held is what --wipe-disk asked to lose
        pool.createXML(volume_xml(os.path.basename(disk), config.disk_size_gb, backing,
                                  backing_format), 0)
        return True

    return connection.execute(wipe)


def _build_medium(config: VMConfig, medium: Path, vm_uuid: str, loader, secrets,
                  attempt: int, opener=None) -> None:
    from ..guest.media import build_medium

    setup = config.unattended
    if secrets is None and (config.vm_type.value != "linux" or not setup.ssh_key_path):
        raise InvalidConfig("password", "the setup medium is made again: it needs the"
                            " account's password (--password-file, or asked on a terminal)")
    medium.unlink(missing_ok=True)  # ours: the name is the VM's setup medium
    guard.check("build the setup medium")
    build_medium(medium, config, vm_uuid=vm_uuid, loader=loader, secrets=secrets,
                 attempt=attempt, opener=opener)
