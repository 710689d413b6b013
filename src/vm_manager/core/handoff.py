"""The single-GPU handoff, carried out (issue 32): the plan of ``core.handoff_plan`` run as
root in a transient systemd unit, every undo written down before its step runs.

Why a unit: the desktop app and the CLI die with the display manager, so the handoff runs
in ``neuronos-handoff-VM.service``, made by ``systemd-run`` through the root helper
(pkexec for a desktop user). It follows the VM through libvirt's lifecycle events, never
from a libvirt hook (a hook must not call back into libvirt: libvirt.org/hooks.html).

The journal (``/run/neuronos/handoff/VM.journal``, JSON lines, each fsynced) holds, for
every step, its undo *before* the step runs; then that it was done. Giving back
(``restore``) undoes every step the journal holds and has not undone, newest first, so a
step that was under way when the handoff died is undone too (every undo is harmless on
what was never done: starting a running unit, binding a bound console or framebuffer,
reattaching an attached device). What cannot be given back is logged with the command
that would, and stays in the journal (renamed ``VM.last`` when done).

Who gives back:
- the handoff itself, when the VM stops (a STOPPED event), when a step fails, when the VM
  fails to start within its deadline, and when the unit is stopped (SIGTERM:
  ``systemctl stop``, ``neuron-vm gpu handoff-end VM``): the VM is shut down first;
- the unit's ``ExecStopPost=`` (``neuron-vm-helper handoff-restore VM``), which systemd runs
  however the main process ended (killed with SIGKILL, crashed: systemd.service(5)): it
  finds what the journal still holds.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from ..base.errors import VMManagerError
from ..base.log import get_logger
from ..base.primitives import validate_name
from .handoff_plan import HandoffPlan

log = get_logger(__name__)

JOURNAL_DIR = Path("/run/neuronos/handoff")
HELPER = "/usr/libexec/neuronos/neuron-vm-helper"  # scripts/install-helper.sh
UNIT_PREFIX = "neuronos-handoff-"
START_DEADLINE = 120.0  # s for libvirt to start the VM
STOP_TIMEOUT = 120.0  # s for the VM's own shutdown before it is forced off
STOPPED = 5  # VIR_DOMAIN_EVENT_STOPPED


class HandoffError(VMManagerError):
    """A step of the handoff failed (everything before it was given back)."""


def unit_name(vm: str) -> str:
    """``neuronos-handoff-VM.service``: VM names are letters, digits, '.', '_' and '-',
    all allowed in a unit name (systemd.unit(5))."""
    return f"{UNIT_PREFIX}{validate_name(vm, 'NAME')}.service"


class Journal:
    """What the handoff of one VM did and how to give it back: JSON lines, appended and
    fsynced one at a time, readable by the desktop user (the app shows it)."""

    def __init__(self, vm: str, folder: Path | str = JOURNAL_DIR):
        self.folder = Path(folder)
        self.path = self.folder / f"{validate_name(vm, 'NAME')}.journal"
        self.last = self.folder / f"{vm}.last"

    def begin(self, plan: HandoffPlan) -> None:
        self.folder.mkdir(mode=0o755, parents=True, exist_ok=True)
        if self.path.exists():
            raise HandoffError(f"a handoff of {plan.vm} has not given everything back yet"
                               f" ({self.path}): `neuron-vm gpu handoff-end {plan.vm}`")
        self.write(event="begin", vm=plan.vm, gpu=plan.gpu, pid=os.getpid(),
                   steps=[step.what for step in plan.steps])

    def write(self, **entry) -> None:
        entry["time"] = round(time.time(), 3)
        with open(self.path, "a", encoding="utf-8") as file:
            file.write(json.dumps(entry) + "\n")
            file.flush()
            os.fsync(file.fileno())
        os.chmod(self.path, 0o644)

    def entries(self, path: Path | None = None) -> list[dict]:
        try:
            lines = (path or self.path).read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        entries = []
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:  # a line cut short by a crash: the ones before it count
                log.warning("%s: a cut line is ignored: %r", self.path, line[:80])
        return entries

    def pending(self) -> list[dict]:
        """The steps registered and not given back, newest first."""
        ended = {entry["n"] for entry in self.entries()
                 if entry.get("event") in ("undone", "undo-failed")}
        return [entry for entry in reversed(self.entries())
                if entry.get("event") == "will" and entry["n"] not in ended]

    def close(self) -> None:
        self.write(event="end")
        os.replace(self.path, self.last)


class Hands:
    """What the handoff does to this computer, as root: sysfs writes under ``root``,
    ``systemctl``, ``modprobe`` and libvirt (``connection``, a ``LibvirtConnection``)."""

    def __init__(self, connection, root: Path | str = "/", stop_timeout: float = STOP_TIMEOUT,
                 start_deadline: float = START_DEADLINE):
        self.connection = connection
        self.root = Path(root)
        self.stop_timeout = stop_timeout
        self.start_deadline = start_deadline
        self.ending = threading.Event()  # set by SIGTERM: give everything back now
        self.wake = threading.Event()  # a STOPPED event or SIGTERM: look again
        path = "/usr/sbin:/usr/bin:/sbin:/bin"
        self.systemctl = shutil.which("systemctl", path=path) or "systemctl"
        self.modprobe = shutil.which("modprobe", path=path) or "modprobe"

    def do(self, action) -> None:
        operation, *args = action
        getattr(self, "_" + operation.replace("-", "_"))(*args)

    def _command(self, *argv: str) -> None:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        if done.returncode:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise HandoffError(f"`{' '.join(argv)}` failed: {said[-1] if said else done.returncode}")

    def _unit_stop(self, unit: str) -> None:
        self._command(self.systemctl, "stop", unit)

    def _unit_start(self, unit: str) -> None:
        self._command(self.systemctl, "start", unit)

    def _modprobe_r(self, *modules: str) -> None:
        self._command(self.modprobe, "-r", *modules)

    def _modprobe(self, *modules: str) -> None:
        self._command(self.modprobe, "-a", *modules)

    def _write(self, path: str, value: str) -> None:
        try:
            with open(self.root / path.lstrip("/"), "w") as file:
                file.write(value)
        except OSError as error:
            raise HandoffError(f"`echo {value} > {path}` failed: {error.strerror}") from None

    def _console_bind(self, path: str) -> None:
        """fbcon back on its virtual consoles. When the card's framebuffer went away with
        fbcon unbound, the kernel unregistered fbcon's console driver (its vtconN is gone);
        the card's driver registers a framebuffer again when it has the card back, and
        fbcon takes the consoles over by itself: then nothing is left to bind."""
        if not (self.root / path.lstrip("/")).parent.exists():
            log.info("%s is gone: fbcon comes back with the GPU's driver", path)
            return
        self._write(path, "1")

    def _bind(self, path: str, device: str) -> None:
        """A firmware framebuffer back on its driver, unless it has one already (a second
        bind is refused with EBUSY) or is gone: vfio-pci removes the firmware framebuffer
        of a VGA card it takes (``aperture_remove_conflicting_pci_devices``, Linux 6.0+);
        then the GPU's own driver brings the console back once it has the card again."""
        folder = self.root / "sys/bus/platform/devices" / device
        if not folder.exists():
            log.info("%s is gone (vfio-pci removed it when it took the card): the GPU's own"
                     " driver shows the console again", device)
            return
        if (folder / "driver").exists():
            return
        self._write(path, device)

    def _libvirt(self, what: str, call):
        try:
            return self.connection.execute(call)
        except VMManagerError as error:
            raise HandoffError(f"{what}: {error}") from None

    def _detach(self, address: str) -> None:
        from ..passthrough.gpu_attach import detach

        self._node_device(detach, address)

    def _reattach(self, address: str) -> None:
        from ..passthrough.gpu_attach import reattach

        self._node_device(reattach, address)

    def _node_device(self, operation, address: str) -> None:
        """gpu_attach's detach or reattach (libvirt's node-device API, vfio)."""
        try:
            operation(self.connection, address)
        except VMManagerError as error:
            raise HandoffError(str(error)) from None

    def _start(self, vm: str) -> None:
        from .vm_lifecycle import HUNG, within

        started = within(self.start_deadline, lambda: self._libvirt(
            f"starting {vm}", lambda conn: self.connection.lookup(conn, vm).create()))
        if started is HUNG:
            raise HandoffError(f"{vm} did not start within {self.start_deadline:.0f} s")

    def _active(self, vm: str) -> bool:
        return bool(self._libvirt(f"reading {vm}'s state",
                                  lambda conn: self.connection.lookup(conn, vm).isActive()))

    def wait_stopped(self, vm: str) -> bool:
        """Until ``vm`` stops (a STOPPED event: True) or the handoff is ended (SIGTERM:
        False)."""
        def on_event(event) -> None:
            if getattr(event, "name", None) == vm and getattr(event, "event", None) == STOPPED:
                self.wake.set()

        token = self.connection.subscribe(on_event)
        try:
            while self._active(vm):
                if self.ending.is_set():
                    return False
                # an event (or SIGTERM) ends the wait; the state is read again at least
                # every 30 s, in case libvirtd restarted and an event was lost
                self.wake.wait(30.0)
                self.wake.clear()
            return True
        finally:
            self.connection.unsubscribe(token)

    def _stop(self, vm: str) -> None:
        """The VM's own shutdown, forced off after ``stop_timeout`` (the lifecycle
        manager's stop: a QEMU that no longer answers does not hold it)."""
        from .vm_lifecycle import ShutdownMethod, VMLifecycleManager

        if not self._active(vm):
            return
        manager = VMLifecycleManager(self.connection)
        try:
            result = manager.stop(vm, ShutdownMethod.GRACEFUL, timeout=self.stop_timeout)
        except VMManagerError as error:
            raise HandoffError(f"stopping {vm}: {error}") from None
        finally:
            manager.close()
        if result.forced:
            log.warning("%s did not shut down in %.0f s: forced off", vm, self.stop_timeout)

def run(plan: HandoffPlan, hands: Hands, journal: Journal,
        fail_after: int | None = None, kill_after: int | None = None) -> list[str]:
    """Hand the GPU over as ``plan`` says, wait for the VM to stop, give everything back.
    Returns what could not be given back (each with its command); raises ``HandoffError``
    when a step failed (after giving back the ones before it)."""
    journal.begin(plan)
    failure: BaseException | None = None
    try:
        for number, step in enumerate(plan.steps, 1):
            if hands.ending.is_set():
                raise HandoffError("the handoff was ended before the VM started")
            journal.write(event="will", n=number, what=step.what, undo=list(step.reverse),
                          command=step.undo)
            log.info("step %d: %s", number, step.what)
            hands.do(step.action)
            journal.write(event="done", n=number)
            if fail_after == number:  # fault injection for the tests (handoff-run only)
                raise HandoffError(f"a fault injected after step {number}")
            if kill_after == number:  # the process dies here: only the journal is left
                os.kill(os.getpid(), signal.SIGKILL)
        log.info("%s runs with the GPU; waiting for it to stop", plan.vm)
        hands.wait_stopped(plan.vm)
        journal.write(event="stopped" if not hands.ending.is_set() else "ended")
    except BaseException as error:  # noqa: BLE001 - everything is given back, then raised
        failure = error
        journal.write(event="failed", error=str(error) or type(error).__name__)
        log.error("the handoff of %s failed: %s; giving everything back", plan.vm, error)
    left = restore(hands, journal)
    if failure is not None:
        if isinstance(failure, HandoffError):
            raise failure
        raise HandoffError(f"the handoff of {plan.vm} failed: {failure}") from failure
    return left


def restore(hands: Hands, journal: Journal) -> list[str]:
    """Undo what ``journal`` holds and has not undone, newest first; returns what could not
    be given back, each with the command that would."""
    left = []
    for entry in journal.pending():
        try:
            hands.do(entry["undo"])
            journal.write(event="undone", n=entry["n"])
            log.info("given back: %s", entry["what"])
        except Exception as error:  # noqa: BLE001 - every other step is still given back
            journal.write(event="undo-failed", n=entry["n"], error=str(error),
                          command=entry["command"])
            left.append(f"{entry['what']}: {error}; as root: {entry['command']}")
            log.error("could not give back %s: %s; as root: %s", entry["what"], error,
                      entry["command"])
    if journal.path.exists():
        journal.close()
    return left


def on_termination(hands: Hands) -> None:
    """SIGTERM (``systemctl stop``), SIGHUP and SIGINT end the handoff: the VM is shut down
    and everything given back before the process exits."""
    def handler(signum, _frame) -> None:
        log.warning("%s: ending the handoff", signal.Signals(signum).name)
        hands.ending.set()
        hands.wake.set()

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, handler)


def systemd_run_argv(vm: str, options: dict[str, str], helper: str = HELPER) -> list[str]:
    """The ``systemd-run`` command line of VM's handoff unit: its stop path
    (``ExecStopPost=``) gives back whatever the main process left, however it ended.
    ``options``: ``uri``, ``gpu``, ``fail-after``, ``kill-after`` (``serve``'s)."""
    extra = [f"--{key}={options[key]}" for key in ("uri", "stop-timeout") if key in options]
    run_args = ["handoff-run", vm, *extra] + [
        f"--{key}={value}" for key, value in options.items()
        if key in ("gpu", "fail-after", "kill-after")]
    restore_args = " ".join([helper, "handoff-restore", vm, *extra])
    return ["systemd-run", f"--unit={unit_name(vm)}", "--service-type=exec", "--collect",
            f"--description=NeuronOS: {vm} has this computer's GPU",
            f"--property=TimeoutStopSec={int(STOP_TIMEOUT + 60)}",
            f"--property=ExecStopPost={restore_args}", "--", helper, *run_args]


def plan_for_domain(vm: str, connection, root: Path | str = "/",
                    gpu: str | None = None) -> HandoffPlan:
    """VM's handoff, from its definition (root reads no user's settings): the card of its
    PCI hostdev that is a display controller (or ``gpu``, for a VM that cannot name one:
    the LXC domain of the real-kernel test), every function of that slot."""
    from ..base.domain_xml import read_domain
    from ..base.values import PCIAddress
    from ..passthrough.display_host import read_display_host
    from ..passthrough.pci import read_pci
    from .handoff_plan import plan_handoff

    xml = connection.execute(lambda conn: connection.lookup(conn, vm).XMLDesc(0))
    pci = read_pci(root)
    given = [PCIAddress.parse(hostdev.address) for hostdev in read_domain(xml).pci_hostdevs]
    given = [PCIAddress.parse(gpu)] if gpu else given
    gpus = [a for a in given if a in pci.devices and pci.devices[a].is_gpu]
    if not gpus:
        raise HandoffError(f"{vm} has no GPU of this computer to hand over")
    functions = [pci.devices[a] for a in pci.slot_functions(gpus[0]) if a in pci.devices]
    functions.sort(key=lambda device: device.address != gpus[0])  # the GPU first
    return plan_handoff(vm, functions, read_display_host(root))


def serve(operation: str, vm: str, options: list[str]) -> list[str]:
    """The root helper's handoff operations (``neuron-vm-helper OPERATION VM``):

    - ``handoff``: start the unit (through pkexec for a desktop user); returns at once;
    - ``handoff-run`` (the unit's main process) and ``handoff-restore`` (its stop path);
    - ``handoff-end``: stop the unit: the VM is shut down and everything given back.
    Options: ``--uri=URI`` (another libvirt daemon), ``--gpu=ADDRESS`` (the card, for a VM
    whose definition cannot name it), ``--stop-timeout=S`` (how long the VM's own shutdown
    may take when the handoff ends it), ``--fail-after=N`` and ``--kill-after=N`` (fault
    injection for the tests: a failure, or SIGKILL of the process, after step N)."""
    from ..base.connection import LibvirtConnection

    named = dict(option.lstrip("-").split("=", 1) for option in options if "=" in option)
    unknown = set(named) - {"uri", "gpu", "stop-timeout", "fail-after", "kill-after"}
    if unknown or len(named) != len(options):
        raise HandoffError(f"unknown options: {' '.join(options)} (allowed: --uri=URI,"
                           " --gpu=ADDRESS, --stop-timeout=S, --fail-after=N,"
                           " --kill-after=N)")
    for number in ("fail-after", "kill-after", "stop-timeout"):
        if not named.get(number, "0").isdigit():
            raise HandoffError(f"--{number}={named[number]}: a whole number is allowed")
    unit = unit_name(vm)
    if operation == "handoff-end":
        systemctl = shutil.which("systemctl", path="/usr/bin:/bin") or "systemctl"
        running = subprocess.run([systemctl, "is-active", unit], capture_output=True,
                                 text=True).stdout.strip() in ("active", "activating",
                                                               "deactivating")
        if not running and not Journal(vm).path.exists():
            return [f"no handoff of {vm} runs ({unit} is not active)"]
        stopped = subprocess.run([systemctl, "stop", unit], capture_output=True, text=True)
        if stopped.returncode:
            raise HandoffError(f"`systemctl stop {unit}` failed: {stopped.stderr.strip()}")
        return [f"the handoff of {vm} ended; " + _outcome(vm)]
    # opened on first use: a restore with libvirtd down still gives back what needs no
    # libvirt (the display manager, consoles, framebuffer, modules)
    connection = LibvirtConnection(named.get("uri"), auto_reconnect=True)
    try:
        return _serve(operation, vm, named, connection)
    finally:
        connection.close()


def _serve(operation: str, vm: str, named: dict[str, str], connection) -> list[str]:
    unit = unit_name(vm)
    hands = Hands(connection, stop_timeout=float(named.get("stop-timeout", STOP_TIMEOUT)))
    journal = Journal(vm)
    if operation == "handoff-restore":
        return restore(hands, journal) or ["nothing was left to give back"]
    plan = plan_for_domain(vm, connection, gpu=named.get("gpu"))
    if not plan.needed:
        raise HandoffError(f"{vm}'s GPU {plan.gpu} is not the one showing this desktop:"
                           f" start it as usual (`neuron-vm start {vm}`)")
    if operation == "handoff":
        argv = systemd_run_argv(vm, named)
        argv[0] = shutil.which("systemd-run", path="/usr/bin:/bin") or argv[0]
        done = subprocess.run(argv, capture_output=True, text=True)
        if done.returncode:
            raise HandoffError(f"systemd-run failed: {done.stderr.strip()}")
        return [f"the handoff of {vm} runs as {unit}: the screen goes black and shows"
                f" {vm}; the desktop comes back when {vm} shuts down (or as root, from"
                f" another computer: systemctl stop {unit})"]
    fail_after, kill_after = named.get("fail-after"), named.get("kill-after")
    on_termination(hands)
    left = run(plan, hands, journal, int(fail_after) if fail_after else None,
               int(kill_after) if kill_after else None)
    return left or ["everything was given back"]


def _outcome(vm: str, folder: Path | str = JOURNAL_DIR) -> str:
    """What the last handoff of ``vm`` gave back, from its journal."""
    journal = Journal(vm, folder)
    entries = journal.entries(journal.last if not journal.path.exists() else None)
    failed = [entry for entry in entries if entry.get("event") == "undo-failed"]
    if journal.path.exists():
        return f"it is still giving back ({journal.path})"
    if failed:
        return "not given back: " + "; ".join(f"{e['command']} ({e['error']})" for e in failed)
    return "everything was given back"
