"""While a pinned VM runs, the host's own processes are kept off its cores (issue 31,
``--isolate``): systemd's ``AllowedCPUs=`` of ``system.slice``, ``user.slice`` and
``init.scope`` is set, for the running system only, to the CPUs the VM does not get, and put
back when it stops. QEMU itself runs in ``machine.slice`` (systemd-machined's), untouched.

The undo is written before anything changes, one file per VM (by UUID) in the settings
folder's ``cpu-isolation/``; a NeuronOS that died while the VM ran leaves it there, and the
next NeuronOS start (any VM's start, the desktop app opening) puts every unit back for each
VM that no longer runs. What cannot be put back is logged with the command that would.

Facts (systemd.resource-control(5), systemctl(1); the commands the Arch wiki's "CPU pinning /
Isolating pinned CPUs" uses): ``systemctl set-property --runtime -- UNIT AllowedCPUs=LIST``
changes the running system only (gone at reboot; root, or polkit's
org.freedesktop.systemd1.manage-units); ``systemctl show --property=AllowedCPUs --value
UNIT`` prints the value set (empty: no restriction), and a unit given every online CPU is
not restricted.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from ..base.errors import OperationFailed
from ..base.log import get_logger

log = get_logger(__name__)
UNITS = ("system.slice", "user.slice", "init.scope")


@dataclass(frozen=True)
class Record:
    vm: str
    uuid: str
    host_cpus: str  # what the units were limited to
    before: dict[str, str]  # unit -> its AllowedCPUs= before ("" : not restricted)
    every_cpu: str  # the online CPUs: what an unrestricted unit is given back


class CPUIsolation:
    def __init__(self, folder: Path | str, systemctl: str = "systemctl",
                 online: str | None = None):
        self.folder = Path(folder)
        self.systemctl = systemctl
        self.online = online  # the host's online CPUs (default: read from /sys)

    def _run(self, *argv: str) -> str:
        path = shutil.which(self.systemctl)
        if path is None:
            raise OperationFailed("keeping the host's processes off a VM's cores needs systemd"
                                  " (systemctl), which this computer does not have; start it"
                                  " without: `neuron-vm configure NAME --no-isolate`")
        done = subprocess.run([path, *argv], capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise OperationFailed(f"systemctl {' '.join(argv)} failed:"
                                  f" {(done.stderr or done.stdout).strip()}")
        return done.stdout.strip()

    def _record_path(self, uuid: str) -> Path:
        return self.folder / f"{uuid}.json"

    def apply(self, vm: str, uuid: str, host_cpus: str) -> Record:
        """Limit the host's units to ``host_cpus``; the undo is on disk first. A failure
        puts back what was changed and raises ``OperationFailed``."""
        before = {unit: self._run("show", "--property=AllowedCPUs", "--value", unit)
                  for unit in UNITS}
        record = Record(vm, uuid, host_cpus, before, self.online or _online_cpus())
        self.folder.mkdir(parents=True, exist_ok=True)
        partial = self._record_path(uuid).with_suffix(".partial")
        partial.write_text(json.dumps(asdict(record), indent=1))
        os.replace(partial, self._record_path(uuid))
        try:
            for unit in UNITS:
                self._run("set-property", "--runtime", "--", unit, f"AllowedCPUs={host_cpus}")
        except OperationFailed:
            self.restore(uuid)
            raise
        log.info("%s runs alone on its cores: the host's units limited to CPUs %s", vm,
                 host_cpus)
        return record

    def restore(self, uuid: str) -> list[str]:
        """Every unit back as the record says; the record goes once all are. Returns what
        could not be put back, each with the command that would."""
        try:
            record = Record(**json.loads(self._record_path(uuid).read_text()))
        except FileNotFoundError:
            return []
        except (OSError, ValueError, TypeError) as error:
            log.warning("the CPU isolation record of %s is unreadable (%s): removed", uuid,
                        error)
            self._record_path(uuid).unlink(missing_ok=True)
            return []
        left = []
        for unit in UNITS:
            value = record.before.get(unit) or record.every_cpu
            try:
                self._run("set-property", "--runtime", "--", unit, f"AllowedCPUs={value}")
            except OperationFailed as error:
                left.append(f"{unit} ({error}): `sudo systemctl set-property --runtime -- {unit}"
                            f" AllowedCPUs={value}`")
        if left:
            log.error("%s: the host's CPUs could not all be given back: %s", record.vm,
                      "; ".join(left))
        else:
            self._record_path(uuid).unlink(missing_ok=True)
            log.info("%s stopped: the host's units have every CPU again", record.vm)
        return left

    def restore_stale(self, running: set[str]) -> list[str]:
        """Put back the units of every recorded VM whose UUID is not in ``running`` (a
        NeuronOS that died while it ran, a VM stopped behind its back)."""
        left = []
        for path in sorted(self.folder.glob("*.json")):
            if path.stem not in running:
                left += self.restore(path.stem)
        return left

    def recorded(self) -> list[str]:
        return sorted(path.stem for path in self.folder.glob("*.json"))


def _online_cpus() -> str:
    try:
        return Path("/sys/devices/system/cpu/online").read_text().strip()
    except OSError:
        return f"0-{(os.cpu_count() or 1) - 1}"
