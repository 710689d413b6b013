"""The guest-facing parts of a creation plan, decided from the host facts alone (no I/O):
the unattended setup (is the installer a Windows disc holding that edition, does the
virtio-win ISO carry the setup drivers for that Windows version, does the Looking Glass
host installer match the client) and the shared folders (virtiofs: an existing folder,
never the system's, libvirt's or the images folder). ``InvalidConfig`` names the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..base.errors import InvalidConfig
from ..base.primitives import dotted_version
from ..guest.windows_answers import AnswerValues, answer_values
from .disks import regular_file
from .host import setup_medium_path
from .host_facts import HostFacts
from .virtiofs_launcher import INSTALLED_PATH as VIRTIOFS_LAUNCHER
from ..base.vm_config import VMConfig

LG_DOWNLOADS = "https://looking-glass.io/downloads"
WINFSP_DOWNLOADS = "https://winfsp.dev/rel/"


@dataclass(frozen=True)
class ShareSpec:
    source: str  # the host folder, symlinks resolved
    tag: str
    readonly: bool = False
    # what libvirt runs in virtiofsd's place: serves the folder as its owner (issue 28)
    binary: str = VIRTIOFS_LAUNCHER


READ_ONLY_SHARES = 11_000_000  # libvirt 11.0: <readonly/> on a virtiofs filesystem


# Host folders never shared (nor anything inside them): the system's, and libvirt's own.
NEVER_SHARED = ("/etc", "/boot", "/dev", "/proc", "/sys", "/run", "/var/lib/libvirt",
                "/var/run/libvirt")


@dataclass(frozen=True)
class SetupPlan:
    medium: str  # the setup medium to make (0600; removed when setup ends)
    edition: str | None  # Windows
    looking_glass_host: bool  # the medium carries the Looking Glass host installer
    notes: tuple[str, ...] = ()
    kind: str = "windows"  # or cloud-init
    ssh_keys: tuple[str, ...] = ()
    answers: AnswerValues | None = None  # Windows: what the answer file says

    def describe(self) -> list[str]:
        if self.kind == "cloud-init":
            lines = [f"unattended setup: cloud-init seed {self.medium} (the account, its"
                     f" {len(self.ssh_keys)} SSH key(s), the guest agent; removed when setup"
                     " ends)"]
        else:
            lines = [f"unattended setup: {self.edition}, medium {self.medium} (answer file,"
                     " drivers, first-logon steps; removed when setup ends)"]
            if self.answers is not None:
                values = self.answers
                lines.append(f"Windows in {values.ui_language} (a language of the image),"
                             f" formats {values.locale}, keyboard {values.keyboard}, time zone"
                             f" {values.timezone} ({values.timezone_source}), computer"
                             f" {values.computer_name}, account {values.user}")
        return lines + [f"note: {note}" for note in self.notes]


def plan_setup(config: VMConfig, facts: HostFacts, warnings: list[str],
               product_key: str | None = None) -> SetupPlan | None:
    """The unattended setup's plan; ``product_key``: the Windows key given (checked against
    the image's edition here, before anything is made)."""
    setup = config.unattended
    if setup is None:
        return None
    medium = setup_medium_path(facts.images_dir, config.name)
    if facts.path(medium).kind != "missing":
        raise InvalidConfig("name", f"{medium} already exists; NeuronOS never overwrites it"
                            " (remove it, or pick another name)")
    media = facts.guest_media
    notes: list[str] = []
    if config.vm_type.value == "linux":
        keys = media.ssh_keys if media else ()
        return SetupPlan(str(medium), None, False, kind="cloud-init", ssh_keys=keys)
    installer = media.installer if media else None
    if installer is not None:
        if not installer.is_windows:
            raise InvalidConfig("iso_path", f"{config.iso_path} is not a Windows installer: it"
                                " has no sources/install.wim or install.esd (volume"
                                f" {installer.label!r})")
        if installer.editions and setup.edition not in installer.editions:
            raise InvalidConfig("unattended.edition", f"{setup.edition!r} is not on"
                                f" {Path(config.iso_path).name}; it holds: "
                                + ", ".join(installer.editions))
        if not installer.editions:
            warnings.append(f"the editions on {Path(config.iso_path).name} could not be read;"
                            f" setup stops at the installer if {setup.edition!r} is not one")
    image = installer.edition(setup.edition) if installer is not None else None
    answers = answer_values(config.name, setup, image, product_key,
                            media.local_zone if media else None,
                            installer.label if installer is not None else None)
    if answers.generic_key:
        notes.append(f"no product key given: {setup.edition} is installed with its generic"
                     " key (it installs, it does not activate; enter yours later in"
                     " Settings > Activation)")
    else:
        notes.append(f"{setup.edition} is installed with the product key you gave")
    if image is None or not image.languages:
        warnings.append(f"the languages of {setup.edition!r} could not be read: Setup is"
                        f" told {answers.ui_language}; it asks if the disc lacks it")
    virtio = media.virtio if media else None
    if virtio is not None:
        from ..guest.windows import WINDOWS_FOLDER

        folder = WINDOWS_FOLDER[config.vm_type.value]
        if virtio.missing:
            raise InvalidConfig("virtio_iso_path", f"{config.virtio_iso_path} has no"
                                f" {', '.join(virtio.missing)} driver for"
                                f" {config.vm_type.label} ({folder}/amd64); use a virtio-win"
                                " ISO that supports it")
        if not virtio.guest_tools:
            warnings.append(f"{Path(config.virtio_iso_path).name} has no"
                            " virtio-win-guest-tools.exe: the guest agent is not installed,"
                            " so setup progress after the first logon is not seen")
    if setup.lg_host_installer is not None:
        fact = facts.path(setup.lg_host_installer)
        if fact.kind != "file":
            raise InvalidConfig("unattended.lg_host_installer", f"{setup.lg_host_installer}"
                                " does not exist or is not a file")
        regular_file("unattended.lg_host_installer", setup.lg_host_installer, fact)
        host = media.lg_host_release if media else None
        client = media.lg_client_release if media else None
        if host is None:
            raise InvalidConfig("unattended.lg_host_installer", "cannot tell which Looking"
                                f" Glass release {Path(setup.lg_host_installer).name} is (its"
                                " name carries none): give --lg-host-release, e.g. B7")
        from ..display.lg_client import release_number

        if client is not None and release_number(host) != release_number(client):
            raise InvalidConfig("unattended.lg_host_installer", f"the Looking Glass host"
                                f" installer is {host} but this host's client is {client}: they"
                                f" must be the same release (get the {client} host from"
                                f" {LG_DOWNLOADS})")
        if client is None:
            notes.append(f"the Looking Glass client's release is unknown here, so the {host}"
                         " host installer was not checked against it")
    elif config.looking_glass.enabled:
        release = media.lg_client_release if media else None
        notes.append("setup does not install the Looking Glass host: get the"
                     f" {release or 'same release as your client'} host from {LG_DOWNLOADS}"
                     " and pass --lg-host-installer, or install it in the guest yourself")
    _gpu_driver(config, facts, notes)
    _windows_shares(config, facts, notes, warnings)
    if setup.bypass_hardware_checks:
        warnings.append("Windows 11's TPM, Secure Boot and RAM checks are bypassed"
                        " (--bypass-hardware-checks): only for hosts without swtpm")
    return SetupPlan(str(medium), setup.edition, setup.lg_host_installer is not None,
                     tuple(notes), answers=answers)


def gpu_driver_switches(config: VMConfig, facts: HostFacts) -> tuple[str, tuple[str, ...]]:
    """The vendor of the VM's GPU and its driver package's silent switches."""
    from ..guest.windows import GPU_DRIVER_SWITCHES
    from ..passthrough.gpu_attach import find_gpu_in

    field = "unattended.gpu_driver_installer"
    if config.gpu_passthrough is None:
        raise InvalidConfig(field, "the GPU driver goes with a passed-through GPU (--gpu ADDR)")
    vendor = find_gpu_in(facts.pci, config.gpu_passthrough.pci_address).device.vendor_id \
        if facts.pci is not None else None
    if vendor not in GPU_DRIVER_SWITCHES:
        raise InvalidConfig(field, "NeuronOS knows the silent install of NVIDIA's and AMD's"
                            " driver packages only; install this GPU's driver in the guest"
                            " yourself")
    return GPU_DRIVER_SWITCHES[vendor]


def _gpu_driver(config: VMConfig, facts: HostFacts, notes: list[str]) -> None:
    given = config.unattended.gpu_driver_installer
    if given is None:
        if config.gpu_passthrough is not None:
            notes.append("no --gpu-driver-installer: Windows Update brings the GPU's driver"
                         " once the VM has a network (Looking Glass shows nothing before)")
        return
    vendor, switches = gpu_driver_switches(config, facts)
    fact = facts.path(given)
    if fact.kind != "file":
        raise InvalidConfig("unattended.gpu_driver_installer", f"{given} does not exist or is"
                            " not a file")
    regular_file("unattended.gpu_driver_installer", given, fact)
    notes.append(f"first logon installs the {vendor} driver silently ({Path(given).name}"
                 f" {' '.join(switches)})")


def _windows_shares(config: VMConfig, facts: HostFacts, notes: list[str],
                    warnings: list[str]) -> None:
    """Windows sees virtiofs through WinFsp (the user's to give, like the Looking Glass
    host), the viofs driver and the VirtIO-FS service (both on the virtio-win ISO)."""
    setup, media = config.unattended, facts.guest_media
    tags = [share.tag for share in config.shares]
    given = setup.winfsp_installer
    if given is not None:
        if facts.path(given).kind != "file":
            raise InvalidConfig("unattended.winfsp_installer", f"{given} does not exist or is"
                                " not a file")
        regular_file("unattended.winfsp_installer", given, facts.path(given))
        if media is not None and media.winfsp_is_msi is False:
            raise InvalidConfig("unattended.winfsp_installer", f"{Path(given).name} is not a"
                                " Windows Installer (.msi) file: give WinFsp's winfsp-*.msi"
                                f" from {WINFSP_DOWNLOADS}")
    if not tags:
        if given is not None:
            notes.append("WinFsp is installed, though the VM shares no folder yet (`neuron-vm"
                         " share add` later)")
        return
    if given is not None:
        notes.append("setup installs WinFsp, the viofs driver and the VirtIO-FS service:"
                     f" Windows shows the shared folder {tags[0]!r} as a drive")
    else:
        notes.append("Windows shows shared folders only with WinFsp: get its installer"
                     f" (.msi) from {WINFSP_DOWNLOADS} and pass --winfsp-installer, or"
                     " install it in the guest yourself, then start the VirtIO-FS Service")
    if len(tags) > 1:
        warnings.append("Windows shows one shared folder through the VirtIO-FS service"
                        f" ({tags[0]!r}); {', '.join(map(repr, tags[1:]))} need a service"
                        " instance each (virtio-win's virtiofs guide)")


def plan_shares(config: VMConfig, facts: HostFacts, warnings: list[str]
                 ) -> tuple[ShareSpec, ...]:
    """Every shared folder must be an existing folder, never the system's or libvirt's own,
    nor the images folder; a whole home folder is allowed with a warning."""
    if config.shares and facts.remote:
        raise InvalidConfig("shares", "shared folders of a remote host are checked on that"
                            " host (owner, rights, system folders): not from here yet; add"
                            " them with virt-manager on it")
    specs: list[ShareSpec] = []
    images = str(facts.images_dir).rstrip("/")
    for share in config.shares:
        fact = facts.path(share.path)
        real = (fact.real or share.path).rstrip("/") or "/"
        twin = next((spec for spec in specs if spec.source == real), None)
        if twin is not None:
            raise InvalidConfig("shares.path", f"{share.path} is shared already, as"
                                f" {twin.tag!r}" + (f" ({real})" if real != share.path else "")
                                + ": a folder is shared once")
        if fact.kind != "dir":
            raise InvalidConfig("shares.path", f"{share.path} is not a folder that exists")
        if share.readonly and (facts.libvirt_version or 0) < READ_ONLY_SHARES:
            raise InvalidConfig("shares.readonly", "read-only shared folders need libvirt 11.0"
                                f" or newer; this host has {_version(facts.libvirt_version)}:"
                                " share it writable, or make the files read-only on the host")
        inside = [root for root in (*NEVER_SHARED, images)
                  if real == root or real.startswith(root + "/")]
        if real == "/" or inside or (images.startswith(real + "/")):
            why = "the whole computer" if real == "/" else \
                f"inside {inside[0]}" if inside else f"it holds the images folder {images}"
            raise InvalidConfig("shares.path", f"{share.path} ({real}) cannot be shared:"
                                f" {why}; share a folder of your own")
        if fact.unreadable:
            raise InvalidConfig("shares.path", f"{share.path} cannot be shared:"
                                f" {fact.unreadable}; share a folder you can open yourself")
        if real in ("/root", "/home") or (real.startswith("/home/") and real.count("/") == 2):
            warnings.append(f"{real} is a whole home folder: the VM can read and change"
                            " everything in it")
        specs.append(ShareSpec(real, share.tag, share.readonly))
    return tuple(specs)


def _version(number: int | None) -> str:
    if not number:
        return "a libvirt of unknown version"
    return f"libvirt {dotted_version(number)}"
