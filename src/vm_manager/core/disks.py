"""A VM's disks: planned with the format their images really have (never guessed), and
definitions whose format disagrees with their file's, with their repair.

``plan_disk`` decides the disk of a plan from the host facts: a new qcow2 (an overlay on a
cloud image whose format qemu-img read), an existing image of the format qemu-img (or a
remote host's volume) reads in it, a whole block device (raw), or, for a VM being changed,
the format its definition names (what it runs with). A format nothing could read is
refused, naming the field: a qcow2 image used as raw shows the guest its header.

A qcow2 file that a definition calls raw is booted as raw: the guest sees the qcow2
container's header as its disk and its writes corrupt the image (an earlier ``configure``
rewrote every NeuronOS disk as raw). ``find_mismatches`` compares what a
definition says with what qemu-img reads from each file (``Host.image_formats``: the I/O);
``disk_repairs`` decides, purely, which of them a ``configure`` may put back by itself.

Only a disk NeuronOS made (its saved settings have a size: it was created as qcow2) whose
file still reads as qcow2 and builds on nothing but the cloud image it was made on is put
back. Anything else is told with its fix, never changed: a guest that wrote a qcow2 header
onto a raw disk could otherwise name any host file as its backing file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .backing import ImageInfo
from ..base.domain_xml import DomainInfo
from ..base.errors import InvalidConfig
from .host_facts import HostFacts
from ..base.vm_config import VMConfig


@dataclass(frozen=True)
class DiskPlan:
    path: str
    format: str
    create: bool  # True: made by this creation (removed on failure); False: the user's
    size_gb: int | None = None
    device: bool = False  # a whole block device (--disk-device), not an image file
    backing: str | None = None  # a new overlay on this image (a cloud image), never written
    backing_format: str | None = None


def regular_file(field_name: str, path: str, fact) -> None:
    """Only a regular file of the user's: never a folder, a device, a FIFO, or /proc, nor a
    file the desktop user could not use themselves."""
    if fact.kind == "file" and not fact.pseudo:
        if fact.unreadable:
            raise InvalidConfig(field_name, f"{path}: {fact.unreadable}; give a file of yours")
        return
    why = {"missing": fact.why_missing or "does not exist", "dir": "is a folder",
           "block": "is a block device", "other": "is a device, FIFO or socket"}.get(
        fact.kind, "is not a regular file")
    if fact.pseudo and fact.kind == "file":
        why = "lies in /proc, /sys or /dev"
    raise InvalidConfig(field_name, f"{path} {why}; give a regular file")


def known_format(field_name: str, path: str, facts: HostFacts) -> str:
    """A disk image's format as what reads it says (qemu-img, a remote volume); unknown is
    refused, never taken for raw (a qcow2 image used as raw corrupts it)."""
    fact = facts.path(path)
    if fact.format:
        return fact.format
    why = fact.format_problem or ((fact.why_missing or "it does not exist")
                                  if fact.kind == "missing" else "it could not be read")
    raise InvalidConfig(field_name, f"cannot tell the format of {path} ({why}); NeuronOS"
                        f" never guesses a disk's format: check it with `qemu-img info {path}`")


def image_format(field_name: str, path: str, facts: HostFacts, existing: bool) -> str:
    """A VM being changed keeps the format its definition names for the image (what it runs
    with now: a change never rewrites it); else the image's own."""
    if existing and facts.definition is not None:
        defined = next((disk.format for disk in facts.definition.disks
                        if disk.device == "disk" and disk.source == path and disk.format), None)
        if defined:
            return defined
    return known_format(field_name, path, facts)


def plan_disk(config: VMConfig, facts: HostFacts, *, existing: bool = False,
               lenient: bool = False) -> DiskPlan | None:
    if config.disk_path is not None:
        fact = facts.path(config.disk_path)
        if config.disk_device:
            if not lenient and fact.kind != "block":
                raise InvalidConfig("disk_device", f"{config.disk_path} is not a block device")
            if not lenient and fact.unreadable:
                raise InvalidConfig("disk_device", f"{config.disk_path}: {fact.unreadable}")
            if not lenient and not existing and fact.in_use:
                raise InvalidConfig("disk_device", f"{config.disk_path} is in use by this host"
                                    f" ({fact.in_use}); NeuronOS never gives it to a VM")
            # a whole device is the VM's own disk, raw by definition (its partitions and
            # whatever they hold are the guest's)
            return DiskPlan(config.disk_path, "raw", create=False, device=True)
        if not (lenient or existing):
            if fact.kind == "block":
                raise InvalidConfig("disk_path", f"{config.disk_path} is a block device: pass"
                                    " it with --disk-device if the VM is to own the whole"
                                    " device")
            regular_file("disk_path", config.disk_path, fact)
            if fact.in_use:
                raise InvalidConfig("disk_path", f"{config.disk_path}: {fact.in_use} (as its"
                                    " disk, or as the image its disk builds on), and two VMs"
                                    " writing one image corrupt it; give a copy of it, or"
                                    " one VM's own disk")
        return DiskPlan(config.disk_path, image_format("disk_path", config.disk_path, facts,
                                                        existing), create=False)
    if not config.disk_size_gb:
        return None
    path = facts.images_dir / f"{config.name}.qcow2"  # the name is validated
    if facts.path(path).kind != "missing":
        raise InvalidConfig(
            "name", f"{path} already exists; NeuronOS never overwrites a disk (pick another"
            " name, or pass it as an existing disk)"
        )
    image = config.cloud_image_path
    return DiskPlan(str(path), "qcow2", create=True, size_gb=config.disk_size_gb,
                    backing=image,
                    backing_format=known_format("cloud_image_path", image, facts)
                    if image else None)


# --- definitions that name the wrong format --------------------------------------------

@dataclass(frozen=True)
class FormatMismatch:
    vm: str
    path: str
    defined: str  # what the definition says (raw)
    actual: str  # what the file is (qcow2)
    repairable: bool  # ``neuron-vm configure VM`` puts it back
    why_not: str | None = None  # why it is not put back by itself

    def describe(self) -> str:
        return (f"the disk {self.path} of {self.vm} is defined as {self.defined} but the file"
                f" is {self.actual}: booted so, the guest would corrupt it")

    def fix(self) -> str:
        if self.repairable:
            return (f"`neuron-vm configure {self.vm}` (no options) puts it back to"
                    f" {self.actual}; do not start {self.vm} before")
        return (f"{self.why_not}; if the file is yours and trusted, set"
                f" <driver type='{self.actual}'/> with `virsh edit {self.vm}`")

    def repaired(self) -> str:
        return f"the disk {self.path} was defined as {self.defined}: put back to {self.actual}"

    def to_dict(self) -> dict:
        return {**self.__dict__, "problem": self.describe(), "fix": self.fix()}


def find_mismatches(name: str, definition: DomainInfo, images: dict[str, ImageInfo],
                    settings: VMConfig | None = None,
                    cloud_image: frozenset[str] = frozenset()) -> list[FormatMismatch]:
    """Each file disk that ``definition`` calls raw (or names no format of) while qemu-img
    reads another format in it (pure). ``cloud_image``: the names of the settings' cloud
    image (as given, and with its symlinks resolved)."""
    mismatches = []
    for disk in definition.disks:
        image = images.get(disk.source or "")
        defined = disk.format or "raw"  # libvirt opens a disk with no type as raw
        if disk.device != "disk" or image is None or image.format == defined \
                or defined != "raw":
            continue
        actual = image.format
        why_not = _why_not_repaired(disk.source, settings, image.backing, cloud_image)
        mismatches.append(FormatMismatch(name, disk.source, defined, actual, why_not is None,
                                         why_not))
    return mismatches


def disk_repairs(config: VMConfig, facts: HostFacts) -> list[FormatMismatch]:
    """The disks a ``configure`` of ``config``'s VM puts back by itself (pure): its own disk,
    defined as raw, whose file NeuronOS made as qcow2 (``facts.definition`` and the disk's
    path fact)."""
    if facts.definition is None or not config.disk_path or config.disk_device:
        return []
    fact = facts.path(config.disk_path)
    if not fact.format:
        return []
    image = config.cloud_image_path
    names = frozenset(filter(None, (image, facts.path(image).real if image else None)))
    found = find_mismatches(config.name, facts.definition,
                            {config.disk_path: ImageInfo(fact.format, fact.backing)}, config,
                            names)
    return [mismatch for mismatch in found if mismatch.repairable]


def cloud_image_names(settings: VMConfig | None) -> frozenset[str]:
    """The settings' cloud image as given and with its symlinks resolved (reads links)."""
    image = settings.cloud_image_path if settings else None
    return frozenset((image, os.path.realpath(image))) if image else frozenset()


def _why_not_repaired(path: str, settings: VMConfig | None, backing: str | None,
                      cloud_image: frozenset[str]) -> str | None:
    if settings is None or settings.disk_path != path or settings.disk_size_gb is None:
        return "NeuronOS did not make this disk, so it cannot know its format"
    if backing and backing not in cloud_image:
        return (f"the file now builds on {backing}, which NeuronOS did not make it on (the"
                " guest may have written that header)")
    return None
