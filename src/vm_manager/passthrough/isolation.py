"""Boot-time isolation of a GPU for vfio-pci (``neuron-vm gpu prepare ADDR [--apply]``).

Managed hostdevs already move a GPU to vfio-pci when its VM starts. Some cards (and some
host drivers that will not let go) need vfio-pci to claim them at boot instead. This plans
exactly what that takes, writes it only with ``apply``, backs up every file it changes and
records an undo (``unprepare``):

- one file of ours, ``/etc/modprobe.d/neuronos-vfio.conf``: ``options vfio-pci ids=...`` for
  every function of the card and ``softdep <driver> pre: vfio-pci`` so vfio-pci loads first;
- the kernel parameters for the detected bootloader (GRUB: /etc/default/grub;
  systemd-boot: the entries' ``options`` lines);
- vfio in the initramfs for mkinitcpio (a ``conf.d`` drop-in), dracut (a ``.conf`` drop-in)
  or initramfs-tools (lines in /etc/initramfs-tools/modules), and the rebuild command.

``ids=`` claims every device with those ids, so it is refused when the host keeps a device
with the same vendor:device id (two identical GPUs).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..base import guard
from ..base.errors import InvalidConfig, VMManagerError
from .gpu_attach import find_gpu
from .pci import VFIO_DRIVERS, host_root, read_devices

MODPROBE_FILE = "etc/modprobe.d/neuronos-vfio.conf"
STATE_FILE = "var/lib/neuronos/gpu-prepare.json"
VFIO_MODULES = ("vfio_pci", "vfio", "vfio_iommu_type1")
HEADER = "# Written by NeuronOS (neuron-vm gpu prepare); `neuron-vm gpu unprepare` removes it.\n"


class IsolationError(VMManagerError):
    """The host cannot be prepared this way (the message says what to do instead)."""


@dataclass
class FileChange:
    path: Path  # inside the host root
    new_text: str
    old_text: str | None  # None: the file is created

    @property
    def action(self) -> str:
        return "create" if self.old_text is None else "edit"


@dataclass
class IsolationPlan:
    gpu_address: str
    gpu_name: str
    ids: list[str]
    drivers: list[str]
    kernel_params: list[str]
    bootloader: str
    initramfs: str
    changes: list[FileChange] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        lines = [f"prepare {self.gpu_address} ({self.gpu_name}) for vfio-pci at boot",
                 f"  vfio-pci ids: {','.join(self.ids)}"]
        for change in self.changes:
            lines.append(f"  {change.action} {change.path}:")
            if change.old_text is None:
                lines.extend(f"    | {line}" for line in change.new_text.splitlines())
            else:
                old, new = set(change.old_text.splitlines()), change.new_text.splitlines()
                lines.extend(f"    + {line}" for line in new if line not in old)
        if self.kernel_params:
            lines.append(f"  kernel parameters ({self.bootloader}): {' '.join(self.kernel_params)}")
        for command in self.commands:
            lines.append(f"  then run: {' '.join(command)}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return lines


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _with_params(value: str, params: list[str]) -> str:
    words = value.split()
    return " ".join(words + [p for p in params if p not in words])


def plan_isolation(address: str, root: Path | str | None = None) -> IsolationPlan:
    base = host_root(root)
    gpu = find_gpu(address, base)
    own = {f.address for f in gpu.functions}
    ids = sorted({f.ids for f in gpu.functions})
    for device in read_devices(base).values():
        if device.address not in own and device.ids in ids:
            raise IsolationError(
                f"the host's {device.address} ({device.name}) has the same id {device.ids} as"
                f" the GPU's functions: vfio-pci ids= would take it from the host too. Leave"
                " boot-time isolation off: the VM's managed hostdevs move exactly this card"
                f" at start, or run `neuron-vm gpu detach {gpu.address}` by hand"
            )
    drivers = sorted({f.driver for f in gpu.functions if f.driver and f.driver not in VFIO_DRIVERS})
    modprobe = HEADER + f"options vfio-pci ids={','.join(ids)}\n" + "".join(
        f"softdep {driver} pre: vfio-pci\n" for driver in drivers)
    plan = IsolationPlan(str(gpu.address), gpu.device.name, ids, drivers, [], "unknown",
                         "unknown")
    old = _read(base / MODPROBE_FILE)
    if old != modprobe:
        plan.changes.append(FileChange(base / MODPROBE_FILE, modprobe, old))

    cpuinfo = _read(base / "proc" / "cpuinfo") or ""
    cmdline = (_read(base / "proc" / "cmdline") or "").split()
    wanted = (["intel_iommu=on"] if "GenuineIntel" in cpuinfo else []) + ["iommu=pt"]
    plan.kernel_params = [p for p in wanted if p not in cmdline]
    _plan_bootloader(plan, base)
    _plan_initramfs(plan, base)
    if not gpu.viable:
        plan.notes.append("the GPU's IOMMU group is not viable yet: "
                          + "; ".join(b.reason for b in gpu.blockers))
    return plan


def _plan_bootloader(plan: IsolationPlan, base: Path) -> None:
    grub = base / "etc" / "default" / "grub"
    entries = sorted([*(base / "boot" / "loader" / "entries").glob("*.conf"),
                      *(base / "efi" / "loader" / "entries").glob("*.conf")])
    if grub.is_file():
        plan.bootloader = "GRUB"
        text = grub.read_text()
        pattern = re.compile(r'^(GRUB_CMDLINE_LINUX_DEFAULT=)"([^"]*)"', re.M)
        if pattern.search(text):
            new = pattern.sub(lambda m: f'{m.group(1)}"{_with_params(m.group(2), plan.kernel_params)}"',
                              text, count=1)
        else:
            new = text + f'GRUB_CMDLINE_LINUX_DEFAULT="{" ".join(plan.kernel_params)}"\n'
        if plan.kernel_params and new != text:
            plan.changes.append(FileChange(grub, new, text))
            if (base / "usr" / "sbin" / "update-grub").exists():
                plan.commands.append(["update-grub"])
            else:
                plan.commands.append(["grub-mkconfig", "-o", "/boot/grub/grub.cfg"])
    elif entries:
        plan.bootloader = "systemd-boot"
        for entry in entries:
            text = entry.read_text()
            new = re.sub(r"^(options\s+)(.*)$",
                         lambda m: m.group(1) + _with_params(m.group(2), plan.kernel_params),
                         text, flags=re.M)
            if plan.kernel_params and new != text:
                plan.changes.append(FileChange(entry, new, text))
    elif plan.kernel_params:
        plan.notes.append("no GRUB or systemd-boot found: add these kernel parameters in your"
                          f" bootloader by hand: {' '.join(plan.kernel_params)}")


def _plan_initramfs(plan: IsolationPlan, base: Path) -> None:
    if (base / "etc" / "mkinitcpio.conf").is_file():
        plan.initramfs = "mkinitcpio"
        path = base / "etc" / "mkinitcpio.conf.d" / "neuronos-vfio.conf"
        text = HEADER + f"MODULES+=({' '.join(VFIO_MODULES)})\n"
        plan.changes.append(FileChange(path, text, _read(path)))
        plan.commands.append(["mkinitcpio", "-P"])
    elif (base / "etc" / "dracut.conf.d").is_dir() or (base / "usr" / "bin" / "dracut").exists():
        plan.initramfs = "dracut"
        path = base / "etc" / "dracut.conf.d" / "neuronos-vfio.conf"  # dracut reads *.conf
        text = HEADER + f'force_drivers+=" {" ".join(VFIO_MODULES)} "\n'
        plan.changes.append(FileChange(path, text, _read(path)))
        plan.commands.append(["dracut", "-f", "--regenerate-all"])
    elif (base / "etc" / "initramfs-tools" / "modules").is_file():
        plan.initramfs = "initramfs-tools"
        path = base / "etc" / "initramfs-tools" / "modules"
        text = path.read_text()
        present = {line.strip() for line in text.splitlines()}
        missing = [m for m in VFIO_MODULES if m not in present]
        if missing:
            joined = text if text.endswith("\n") or not text else text + "\n"
            plan.changes.append(FileChange(path, joined + "".join(f"{m}\n" for m in missing),
                                           text))
        plan.commands.append(["update-initramfs", "-u", "-k", "all"])
    else:
        plan.notes.append("no mkinitcpio, dracut or initramfs-tools found: make sure vfio_pci"
                          " is in your initramfs")


def apply(plan: IsolationPlan, root: Path | str | None = None,
          run_commands: bool | None = None) -> list[str]:
    """Write the plan: back up each changed file, write atomically, record the undo, then
    run the rebuild commands (only on the real root unless told)."""
    base = host_root(root)
    state = base / STATE_FILE
    if state.exists():
        raise IsolationError(f"already prepared (see {state}): run `neuron-vm gpu unprepare`"
                             " first")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = {"gpu": plan.gpu_address, "files": [], "commands": plan.commands}
    lines = []
    for change in plan.changes:
        path = change.path
        entry = {"path": str(path), "created": change.old_text is None, "backup": None}
        if change.old_text is not None:
            backup = path.with_name(f"{path.name}.neuronos-backup-{stamp}")
            shutil.copy2(path, backup)
            entry["backup"] = str(backup)
            lines.append(f"backed up {path} to {backup}")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.neuronos-tmp")
        tmp.write_text(change.new_text)
        if change.old_text is not None:
            shutil.copymode(entry["backup"], tmp)
        os.replace(tmp, path)
        record["files"].append(entry)
        lines.append(f"wrote {path}")
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps(record, indent=2) + "\n")
    lines.append(f"recorded the undo in {state}")
    if run_commands is None:
        run_commands = base == Path("/")
    for command in plan.commands:
        if not run_commands:
            lines.append(f"run by hand: {' '.join(command)}")
            continue
        guard.check(command[0])
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        status = "ok" if result.returncode == 0 else f"FAILED ({result.returncode})"
        lines.append(f"ran {' '.join(command)}: {status}")
    lines.append("reboot for the change to take effect")
    return lines


def unprepare(root: Path | str | None = None) -> list[str]:
    """Undo ``apply``: restore every backed-up file, remove the files it created."""
    base = host_root(root)
    state = base / STATE_FILE
    try:
        record = json.loads(state.read_text())
    except FileNotFoundError:
        raise InvalidConfig("gpu unprepare", "nothing to undo: no GPU was prepared") from None
    except ValueError as error:
        raise IsolationError(f"{state} is unreadable: {error}") from None
    lines = []
    for entry in reversed(record.get("files", [])):
        path = Path(entry["path"])
        if entry.get("created"):
            path.unlink(missing_ok=True)
            lines.append(f"removed {path}")
        elif entry.get("backup"):
            os.replace(entry["backup"], path)
            lines.append(f"restored {path}")
    state.unlink()
    for command in record.get("commands", []):
        lines.append(f"now run: {' '.join(command)}")
    lines.append("reboot for the change to take effect")
    return lines
