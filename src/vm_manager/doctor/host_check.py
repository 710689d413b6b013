"""Is this host ready for VMs with passthrough? (``neuron-vm doctor``)

Each check reads the host under a root folder (tests build fake roots) and returns ok, warn
or fail with a one-line fix. Nothing here changes the host. Facts: DESIGN.md 4.3 (CPU flags,
/dev/kvm, IOMMU groups, vfio-pci, "amd_iommu=on" is not a documented value), 5 (firmware
descriptors, swtpm) and 6 (the default network is never started by us).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from ..base.access import desktop_user  # noqa: F401 (callers import it from here)
from ..base import guard
from ..base.errors import LookingGlassError
from ..base.primitives import dotted_version, plural
from ..passthrough.pci import host_root, iommu_groups

OK, WARN, FAIL = "ok", "warn", "fail"


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail,
                "fix": self.fix}


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _cpu_vendor(root: Path) -> str:
    match = re.search(r"^vendor_id\s*:\s*(\S+)", _read(root / "proc" / "cpuinfo"), re.M)
    return match.group(1) if match else ""


def check_cpu(root: Path) -> Check:
    flags = set()
    for line in _read(root / "proc" / "cpuinfo").splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    if "vmx" in flags:
        return Check("CPU virtualization", OK, "Intel VT-x (vmx)")
    if "svm" in flags:
        return Check("CPU virtualization", OK, "AMD-V (svm)")
    return Check("CPU virtualization", FAIL, "the CPU shows neither vmx nor svm (no KVM)",
                 "enable Intel VT-x or AMD-V (SVM) in the firmware (BIOS/UEFI) setup; until"
                 " then VMs run slowly (software emulation)")


def check_kvm(root: Path) -> Check:
    path = root / "dev" / "kvm"
    try:
        mode = path.stat().st_mode
    except OSError:
        return Check("/dev/kvm", FAIL, "missing", "load the module: sudo modprobe kvm_intel"
                     " (Intel) or kvm_amd (AMD); check CPU virtualization first")
    if not stat.S_ISCHR(mode):
        return Check("/dev/kvm", FAIL, "exists but is not a device", "reboot, or reload kvm")
    if not os.access(path, os.R_OK | os.W_OK):
        return Check("/dev/kvm", FAIL, "present, but this user cannot use it",
                     "sudo usermod -aG kvm $USER, then log in again")
    return Check("/dev/kvm", OK, "present, and this user may open it")


def check_kvm_runs(root: Path) -> Check:
    """Whether KVM really runs VMs here (``kvm_probe``): /dev/kvm can exist on a host
    whose KVM fails every VM at its start."""
    from .kvm_probe import SOFTWARE_FIX, kvm_problem

    problem = kvm_problem(root)
    if problem:
        return Check("KVM", FAIL, f"cannot run VMs: {problem}", SOFTWARE_FIX)
    return Check("KVM", OK, "runs VMs (KVM API 12, System Management Mode for Secure Boot)")


def check_iommu(root: Path) -> Check:
    groups = iommu_groups(root)
    cmdline = _read(root / "proc" / "cmdline").split()
    if groups:
        return Check("IOMMU", OK, f"{len(groups)} IOMMU groups")
    intel = _cpu_vendor(root) == "GenuineIntel"
    detail = "no IOMMU groups: the IOMMU is off"
    if intel and "intel_iommu=on" not in cmdline:
        fix = "add intel_iommu=on iommu=pt to the kernel command line, then reboot"
    elif intel:
        fix = "intel_iommu=on is set: enable VT-d in the firmware setup"
    else:
        fix = ("enable IOMMU / AMD-Vi in the firmware setup (Linux turns it on by itself;"
               " amd_iommu=on is not a real option)")
    return Check("IOMMU", FAIL, detail, fix)


def check_interrupt_remapping(root: Path) -> Check | None:
    """Intel only, from the DMAR units' extended capability register (bit 3: IR)."""
    units = sorted((root / "sys" / "class" / "iommu").glob("dmar*/intel-iommu/ecap"))
    if not units:
        return None  # not detectable here
    try:
        supported = all(int(_read(unit).strip(), 16) & 0x8 for unit in units)
    except ValueError:
        return None
    if supported:
        return Check("Interrupt remapping", OK, "supported by every DMAR unit")
    return Check("Interrupt remapping", WARN, "not supported by the IOMMU",
                 "passthrough may need vfio_iommu_type1 allow_unsafe_interrupts=1 (less safe)")


def _kernel_release(root: Path) -> str | None:
    if root == Path("/"):
        return os.uname().release
    modules = sorted((root / "lib" / "modules").glob("*"))
    return modules[0].name if modules else None


def check_vfio(root: Path) -> Check:
    if (root / "sys" / "module" / "vfio_pci").exists():
        return Check("vfio-pci", OK, "loaded")
    release = _kernel_release(root)
    if release:
        folder = root / "lib" / "modules" / release
        listing = _read(folder / "modules.dep") + _read(folder / "modules.builtin")
        if re.search(r"vfio[-_]pci\.ko", listing):
            return Check("vfio-pci", OK, "available (libvirt loads it when a VM needs it)")
    where = root / "lib" / "modules" / (release or "<release>")
    return Check("vfio-pci", FAIL, f"not loaded, and no vfio-pci module in {where}",
                 "use a kernel built with CONFIG_VFIO_PCI (every distribution kernel has it)")


def firmware_dir(root: Path) -> Path:
    return root / "usr" / "share" / "qemu" / "firmware"


def _uefi_descriptors(root: Path | str) -> list[tuple[str, dict]]:
    """(file name, content) of each of QEMU's firmware descriptors that offers UEFI (what
    libvirt picks OVMF from for ``<os firmware='efi'>``, DESIGN.md 5)."""
    found = []
    for path in sorted(firmware_dir(Path(root)).glob("*.json")):
        try:
            data = json.loads(_read(path))
        except ValueError:
            continue
        if isinstance(data, dict) and "uefi" in data.get("interface-types", []):
            found.append((path.name, data))
    return found


def uefi_descriptors(root: Path | str) -> tuple[str, ...]:
    """The file names of the host's UEFI firmware descriptors."""
    return tuple(name for name, _ in _uefi_descriptors(root))


def uefi_builds(root: Path | str) -> frozenset[tuple[bool, bool]]:
    """The (Secure Boot, Microsoft's keys enrolled) pairs the UEFI builds of the host's
    firmware descriptors offer (their ``features``: ``secure-boot``, ``enrolled-keys``)."""
    features = [set(data.get("features") or ()) for _, data in _uefi_descriptors(root)]
    return frozenset(("secure-boot" in each, "enrolled-keys" in each) for each in features)


def check_firmware(root: Path) -> Check:
    folder = firmware_dir(root)
    uefi = uefi_descriptors(root)
    if uefi:
        secure = any("secure" in name for name in uefi)
        return Check("UEFI firmware (OVMF)", OK,
                     f"{len(uefi)} descriptors{', Secure Boot available' if secure else ''}")
    return Check("UEFI firmware (OVMF)", FAIL, f"no UEFI firmware descriptors in {folder}",
                 "install OVMF: sudo apt install ovmf (Debian/Ubuntu), sudo pacman -S edk2-ovmf"
                 " (Arch)")


def check_swtpm(root: Path) -> Check:
    found = (root / "usr" / "bin" / "swtpm").exists() or (
        root == Path("/") and shutil.which("swtpm") is not None)
    if found:
        return Check("swtpm (TPM 2.0)", OK, "installed")
    return Check("swtpm (TPM 2.0)", WARN, "not installed: Windows 11 VMs need it",
                 "sudo apt install swtpm swtpm-tools (Debian/Ubuntu), sudo pacman -S swtpm (Arch)")


def check_console_viewer(root: Path, environ: dict | None = None) -> Check:
    """virt-viewer shows a VM's own screen (`neuron-vm console`), e.g. while Windows installs."""
    env = os.environ if environ is None else environ
    found = (root / "usr" / "bin" / "virt-viewer").exists() or (
        root == Path("/") and (env.get("NEURONOS_VIRT_VIEWER")
                               or shutil.which("virt-viewer", path=env.get("PATH"))))
    if found:
        return Check("console viewer", OK, "virt-viewer")
    return Check("console viewer", WARN, "virt-viewer is not installed: `neuron-vm console`"
                 " cannot show a VM's own screen (e.g. while Windows installs)",
                 "sudo apt install virt-viewer (Debian/Ubuntu), sudo pacman -S virt-viewer"
                 " (Arch)")


def check_libvirt(uri: str) -> tuple[Check, ...]:
    """libvirtd reachable, the state of the 'default' network (never started here), and
    NeuronOS's storage pools whose folder is gone (only when there are such)."""
    from ..base.errors import ConnectionFailed, OperationFailed

    try:
        from ..base.connection import LibvirtConnection
    except ImportError as error:  # a Python without libvirt-python (sysfs checks still run)
        return (Check("libvirtd", FAIL, f"libvirt-python is not installed here ({error})",
                      "run neuron-vm from the virtual environment setup-host.sh makes, or"
                      " pip install libvirt-python (needs libvirt-dev and pkg-config)"),
                Check("default network", WARN, "unknown: libvirt-python is not installed"))

    connection = LibvirtConnection(uri, auto_reconnect=False)
    try:
        connection.open()
    except ConnectionFailed as error:
        return (Check("libvirtd", FAIL, str(error),
                      "sudo systemctl enable --now libvirtd (and be in the libvirt group)"),
                Check("default network", WARN, "unknown: libvirtd is not reachable"))
    try:
        def facts(conn):
            version = conn.getLibVersion()
            try:
                hyper = conn.getVersion()
            except Exception:  # noqa: BLE001 - the test driver has no hypervisor version
                hyper = 0
            try:
                net = conn.networkLookupByName("default")
                network = "active" if net.isActive() else "inactive"
            except Exception:  # noqa: BLE001 - missing network
                network = "missing"
            return version, hyper, network, _stale_pools(conn, uri), _displays(conn, uri)

        version, hyper, network, stale, displays = connection.execute(facts)
    except OperationFailed as error:
        return (Check("libvirtd", FAIL, str(error)), Check("default network", WARN, "unknown"))
    finally:
        connection.close()

    detail = f"reachable at {uri}: libvirt {dotted_version(version)}"
    if hyper:
        detail += f", hypervisor {dotted_version(hyper)}"
    libvirt_check = Check("libvirtd", OK, detail)
    if network == "active":
        net_check = Check("default network", OK, "active")
    else:
        net_check = Check(
            "default network", WARN,
            f"{network}: VMs on the 'default' network will not start (NeuronOS never starts"
            " it for you)",
            "sudo virsh net-start default && sudo virsh net-autostart default, or create VMs"
            " with --network none",
        )
    found = (libvirt_check, net_check, *check_spice(displays))
    if stale:  # shown only when there is something to say
        return *found, Check(
            "storage pools", WARN, "NeuronOS's pools of folders that are gone:"
            f" {', '.join(stale)} (a new disk in such a folder makes the folder again)",
            "; ".join(f"sudo virsh pool-destroy {name}; sudo virsh pool-undefine {name}"
                      for name in stale.values()))
    return found


def check_spice(displays: tuple[str, ...] | None) -> tuple[Check, ...]:
    """SPICE among QEMU's display types (every NeuronOS VM's own screen is SPICE; Debian 13
    ships it as its own package, and without it libvirt refuses to define the VM: "spice
    graphics are not supported with this QEMU"); nothing when not known."""
    if displays is None:
        return ()
    if "spice" in displays:
        return (Check("SPICE graphics", OK, "offered by QEMU"),)
    return (Check("SPICE graphics", FAIL, "QEMU here has no SPICE: NeuronOS VMs cannot be"
                  " defined", "sudo apt install qemu-system-modules-spice (Debian 13+); Arch:"
                  " sudo pacman -S qemu-ui-spice-core qemu-chardev-spice qemu-audio-spice"
                  " qemu-hw-display-qxl"),)


def _displays(conn, uri: str) -> tuple[str, ...] | None:
    """The display types QEMU's domain capabilities list (None: not QEMU, or not said)."""
    from ..base.domcaps import read_domain_capabilities

    if not uri.startswith("qemu"):
        return None
    for virttype in ("kvm", "qemu"):
        try:
            xml = conn.getDomainCapabilities(None, "x86_64", "q35", virttype, 0)
        except Exception:  # noqa: BLE001 - this virt type is not offered: try the next
            continue
        return read_domain_capabilities(xml).graphics
    return None


# Where the launcher looks for the real virtiofsd (core/virtiofs_launcher.REAL_VIRTIOFSD: it
# imports nothing of the package, and a test keeps the two equal)
VIRTIOFSD_PATHS = ("/usr/libexec/virtiofsd", "/usr/lib/virtiofsd", "/usr/lib/qemu/virtiofsd")


def check_virtiofsd(root: Path) -> list[Check]:
    """A virtiofsd for shared folders (NeuronOS's launcher runs it: QEMU's own on Debian
    12, its own package on Debian 13 and Arch); said only when it is missing."""
    if any((root / path.lstrip("/")).exists() for path in VIRTIOFSD_PATHS):
        return []
    return [Check("virtiofsd (shared folders)", WARN, "not installed: only shared folders"
                  " need it", "sudo apt install virtiofsd (Debian 13+); Arch: sudo pacman -S"
                  " virtiofsd")]


def _stale_pools(conn, uri: str) -> dict[str, str]:
    """NeuronOS's storage pools (neuronos-images*) whose folder no longer exists on this
    computer: {folder: pool name}; none for a remote host (its folders are not here)."""
    from ..base.primitives import is_remote
    from ..base.storage_xml import pool_folder

    if is_remote(uri) or uri.startswith("test:"):
        return {}
    stale = {}
    for pool in conn.listAllStoragePools(0):
        if pool.name().startswith("neuronos-images"):
            folder = pool_folder(pool.XMLDesc(0))
            if folder and not os.path.isdir(folder):
                stale[folder] = pool.name()
    return stale


def check_groups(root: Path, user: str) -> Check:
    if user == "root":
        return Check("user groups", OK, "root needs no group")
    members: dict[str, set[str]] = {}
    primary_gid = None
    for line in _read(root / "etc" / "passwd").splitlines():
        parts = line.split(":")
        if len(parts) > 3 and parts[0] == user:
            primary_gid = parts[3]
    for line in _read(root / "etc" / "group").splitlines():
        parts = line.split(":")
        if len(parts) >= 4:
            names = set(filter(None, parts[3].split(",")))
            if parts[2] == primary_gid:
                names.add(user)
            members[parts[0]] = names
    missing = [group for group in ("libvirt", "kvm") if user not in members.get(group, set())]
    if not missing:
        return Check("user groups", OK, f"{user} is in libvirt and kvm")
    return Check("user groups", WARN, f"{user} is not in: {', '.join(missing)}",
                 f"sudo usermod -aG {','.join(missing)} {user}, then log in again")


def check_looking_glass_client(environ: dict | None = None) -> Check:
    from ..display.lg_client import client_release, find_client

    client = find_client(environ)
    if client is None:
        return Check("Looking Glass client", WARN, "not found (only Looking Glass VMs need it)",
                     "install looking-glass-client (Arch: AUR looking-glass), or set"
                     " NEURONOS_LG_CLIENT to its path")
    user = None  # the client tells its release only to a non-root user: ask as the desktop user
    if os.geteuid() == 0:
        from ..passthrough.ivshmem import user_credentials

        try:
            user = desktop_user(environ)
            user = user if user_credentials(user).uid != 0 else None
        except LookingGlassError:
            user = None
        if user is None:
            return Check("Looking Glass client", WARN, f"{client}: its release cannot be read"
                         " as root (it tells it only to a non-root user)",
                         "run `neuron-vm doctor` as your desktop user, or through sudo from it")
    release = client_release(client, user=user)
    if release is None:
        return Check("Looking Glass client", WARN, f"{client} does not say its release",
                     "reinstall it; the guest's host application must be the same release")
    return Check("Looking Glass client", OK, f"{client}, release {release} (the guest's host"
                 " application must be the same release)")


def check_desktop_libraries(qt: Path | None = None) -> Check:
    """Can the desktop app's Qt platform plugins (X11 and Wayland) load? (``ldd``)"""
    from .qt_libraries import install_hint, missing_libraries, qt_dir

    qt = qt or qt_dir()
    if qt is None:
        return Check("Desktop app libraries", WARN, "the desktop app (PySide6) is not installed",
                     "pip install 'neuronos-vm-manager[gui]' (scripts/setup-host.sh does)")
    guard.check("ldd")
    try:
        missing = missing_libraries(qt)
    except OSError as error:
        return Check("Desktop app libraries", WARN, f"cannot run ldd: {error}")
    if missing:
        return Check("Desktop app libraries", FAIL, "neuron-vm-gui cannot start: the Qt"
                     f" platform plugins miss {', '.join(missing)}", install_hint(missing))
    return Check("Desktop app libraries", OK, "the Qt platform plugins for X11 and Wayland find"
                 " every library they need")


def check_shared_memory(root: Path) -> Check:
    from ..passthrough.ivshmem import access_problem, kvmfr_device

    folder = root / "dev" / "shm"
    files = sorted(folder.glob("looking-glass-*"))
    problems = [p for p in (access_problem(path) for path in files) if p]
    kvmfr = kvmfr_device(root)
    extra = f"; KVMFR device {kvmfr}" if kvmfr else ""
    if problems:
        return Check("Looking Glass shared memory", WARN, problems[0] + extra,
                     "neuron-vm shm-permissions VM --apply")
    if files:
        return Check("Looking Glass shared memory", OK,
                     f"{plural(len(files), 'file')}, all readable and writable{extra}")
    return Check("Looking Glass shared memory", OK, f"none yet (made when a VM starts){extra}")


def run_checks(root: Path | str | None = None, uri: str | None = None,
               environ: dict | None = None) -> list[Check]:
    from ..base.primitives import resolve_uri

    guard.check("host checks")
    base = host_root(root)
    checks = [check_cpu(base), check_kvm(base)]
    if all(check.status == OK for check in checks):  # else the two say why already
        checks.append(check_kvm_runs(base))
    checks.append(check_iommu(base))
    remapping = check_interrupt_remapping(base)
    if remapping is not None:
        checks.append(remapping)
    checks += [check_vfio(base), check_firmware(base), check_swtpm(base),
               *check_virtiofsd(base), check_console_viewer(base, environ)]
    checks += list(check_libvirt(resolve_uri(uri)))
    checks += [check_groups(base, desktop_user(environ)), check_looking_glass_client(environ),
               check_shared_memory(base), check_desktop_libraries()]
    return checks
