"""What the app calls devices and says when there are none: GPUs and USB devices by the
names people know (pci.ids / usb.ids), ids second, and the lists' empty states."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QListWidgetItem


def gpu_label(gpu) -> str:
    """A GPU by the name people know (pci.ids), its address and ids second."""
    return f"{gpu.device.name}  ({gpu.address}, {gpu.device.ids})"


def usb_label(device, port: bool = False) -> str:
    """A USB device by its name (usb.ids or its own), the ids (and port) second."""
    where = f"{device.sysfs_name}, " if port else ""
    return f"{device.name}  ({where}{device.vendor_id}:{device.product_id})"


NO_USB = "No USB devices are plugged in (hubs are not listed): plug one in and open this again"


def empty_row(text: str) -> QListWidgetItem:
    """A list's empty state: one greyed row that says why it is empty."""
    item = QListWidgetItem(text)
    item.setFlags(Qt.NoItemFlags)
    return item


def no_gpu_reason(gpus) -> str:
    """Why no GPU can be picked, in words (the wizard's empty state), or "" when one can."""
    if any(gpu.viable and not gpu.device.boot_vga for gpu in gpus):
        return ""
    if not gpus:
        return "No GPU was found on this computer: the VM shows its screen in a SPICE window."
    if not all(gpu.iommu_on for gpu in gpus):
        return ("The IOMMU is off, so no GPU can be passed through: turn on VT-d (Intel) or"
                " AMD-Vi (AMD) in the firmware setup (Host check… explains).")
    if all(gpu.device.boot_vga for gpu in gpus):
        return ("Your only GPU shows this computer's own desktop: passing one through needs a"
                " second GPU (or the single-GPU mode of `neuron-vm create --allow-boot-gpu`).")
    return "No GPU can be passed through now; the reasons are listed below."


# The wizard's names for the settings an error is about (the CLI says its flags)
FIELD_LABELS = {
    "name": "Name", "memory_mb": "Memory", "vcpus": "vCPUs", "disk_size_gb": "Disk size",
    "iso_path": "Installer ISO", "virtio_iso_path": "virtio-win ISO", "network": "Network",
    "disk_path": "Existing disk", "opencore_path": "OpenCore image", "domain_type": "Speed",
    "vm_type": "System", "gpu_passthrough": "GPU", "looking_glass": "Looking Glass",
    "usb_devices": "USB devices", "unattended": "Unattended setup", "secure_boot": "Firmware",
    "unattended.user": "Account", "password": "Password", "unattended.locale": "Formats",
    "unattended.timezone": "Time zone", "unattended.edition": "Edition",
    "unattended.keyboard": "Keyboard", "unattended.ui_language": "Windows language",
    "product key": "Product key", "unattended.lg_host_installer": "Looking Glass host installer",
    "unattended.winfsp_installer": "WinFsp installer", "shares.path": "Shared folder",
    "unattended.gpu_driver_installer": "GPU driver", "cloud_image_path": "Cloud image",
    "unattended.ssh_key_path": "SSH public key", "SNAP": "Snapshot name",
}


def field_label(field: str | None) -> str:
    """The field as the app names it: never the config's own key (``memory_mb``)."""
    if not field:
        return "Settings"
    known = FIELD_LABELS.get(field) or FIELD_LABELS.get(field.split(".", 1)[0])
    return known or field.rsplit(".", 1)[-1].replace("_", " ").capitalize()


# What the CLI's messages tell a user to type, in the app's words (issue 29, item 5)
CLI_PATTERNS = (  # (regular expression, the app's words)
    (r",? or neuron-vm configure \S+ --domain-type qemu", ""),
    (r" \(neuron-vm configure \S+ --network none\)", " (Settings → Network: No network)"),
    (r" \(neuron-vm configure \S+ --memory SIZE\)", " (Settings → Memory)"),
    (r" ?\(`neuron-vm start [^`]*`\)", ""),  # "start it (`neuron-vm start x`): ..."
    (r"`neuron-vm start [^`]*`", "Start"),
    (r"\(create it with --gpu ADDR --looking-glass\)",
     "(give it a GPU and Looking Glass in Settings)"),
    (r"\(delete them with --delete-disks\)", "(tick “Also delete its disks” to delete them)"),
    (r"\((?:needs )?--delete-disks\)", "(tick “Also delete its disks”)"),
    (r" or set NEURONOS_LG_CLIENT to its path", ""),
    (r" \(`tzutil /l` lists them\)", ""),
    (r"`neuron-vm configure \S+ --hugepages none`", "Settings → Memory pages: Ordinary pages"),
    (r"neuron-vm configure \S+ --gpu none", "Settings → GPU: No GPU"),
    (r" \(`neuron-vm tune` says why\)", ""),
)
CLI_WORDS = (
    ("allow it with --force", "allow it with “Allow more memory or vCPUs than this computer"
     " has”"),
    ("--force", "“Allow more memory or vCPUs than this computer has”"),
    ("create VMs with --network none", "create VMs with No network"),
    ("--network none", "No network"),
)


def for_people(message: str) -> str:
    """A library message with the CLI's commands and flags put in the app's words."""
    import re

    for pattern, words in CLI_PATTERNS:
        message = re.sub(pattern, words, message)
    for flag, words in CLI_WORDS:
        message = message.replace(flag, words)
    return message


def said(error: BaseException) -> str:
    """An error as the app says it: a field's in the app's name for it, flags in words."""
    field = getattr(error, "field", None)
    message = getattr(error, "message", None) or str(error)
    return f"{field_label(field)}: {for_people(message)}" if field else for_people(str(error))


# The Speed choice (``domain_type``), in the wizard and Settings
SPEEDS = (("kvm", "Fast: KVM (the processor's own virtualization)"),
          ("qemu", "Slow: software emulation (no KVM on this computer)"))


def speed_box(devices, current: str | None = None):
    """The Speed choice: KVM offered only where it runs VMs (a walk chose it in Settings on
    a host without it, and the VM silently stayed emulated), chosen when it does."""
    from PySide6.QtWidgets import QComboBox

    box = QComboBox()
    for value, label in SPEEDS:
        box.addItem(label, value)
    no_kvm = devices.kvm is False
    if no_kvm:
        box.model().item(0).setEnabled(False)
        box.setToolTip(f"KVM cannot run VMs on this computer: {devices.kvm_problem}.")
    else:
        box.setToolTip("KVM runs the VM on the processor itself; without it (no VT-x /"
                       " AMD-V, or inside another VM) QEMU emulates it, many times slower")
    wanted = "qemu" if no_kvm else (current or "kvm")
    box.setCurrentIndex(max(0, box.findData(wanted)))
    return box


def display_unavailable(row) -> str | None:
    """Why Show display (Looking Glass) is not offered for the VM of ``row``; None when
    it is (it may still wait for the VM to run)."""
    from ..base.primitives import is_remote

    if row is None:
        return None
    if is_remote(row.host):  # Looking Glass reads shared memory on this computer
        return "Looking Glass shows only VMs on this computer; use Console for a VM on another host"
    if not row.looking_glass:
        return ("This VM has no Looking Glass display (it shows a passed-through GPU's"
                " screen); use Console")
    return None


UTC_STAMP = r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\b"  # how snapshots record their time


def local_times(text: str) -> str:
    """``text`` with each UTC time stamp (2026-12-06T02:16:19Z) in the user's local time,
    as people read it (2026-12-06 03:16:19 with the zone's abbreviation)."""
    import datetime
    import re

    def local(match) -> str:
        stamp = datetime.datetime.strptime(match.group(0), "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc).astimezone()
        return stamp.strftime("%Y-%m-%d %H:%M:%S %Z").rstrip()

    return re.sub(UTC_STAMP, local, text)



def plan_words(plan) -> str:
    """Where a VM's vCPUs run on this computer, in one line (a ``CPUPlan``)."""
    if plan.pinned:
        return (f"On this computer: host CPUs {plan.host_cpus}, QEMU's own threads on"
                f" {plan.emulator_cpus}")
    return f"Not pinned: {plan.problem}" if plan.problem else "Not pinned"
