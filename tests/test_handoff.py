"""The single-GPU handoff's journal and giving back, on this machine (issue 32): what is
written before each step, what a restore undoes (newest first, a failed undo written down
with its command and the others still done), on a sysfs tree shaped like the kernel's; and
the root helper's refusals. The handoff itself runs on a real kernel with real systemd and
libvirt in tests/test_handoff_real_kernel.py."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from vm_manager.core.handoff import Hands, HandoffError, Journal, restore, systemd_run_argv
from vm_manager.core.handoff_plan import HandoffPlan, HandoffStep


def _plan(vm="win11") -> HandoffPlan:
    return HandoffPlan(vm, "0000:01:00.0", True, (
        HandoffStep("stop the display manager gdm3.service", "systemctl stop gdm3.service",
                    "systemctl start gdm3.service", "", ("unit-stop", "gdm3.service"),
                    ("unit-start", "gdm3.service")),
        HandoffStep("unbind the text console", "echo 0 > /sys/class/vtconsole/vtcon1/bind",
                    "echo 1 > /sys/class/vtconsole/vtcon1/bind", "",
                    ("write", "/sys/class/vtconsole/vtcon1/bind", "0"),
                    ("console-bind", "/sys/class/vtconsole/vtcon1/bind")),
        HandoffStep("unbind efi-framebuffer.0", "echo efi-framebuffer.0 > .../unbind",
                    "echo efi-framebuffer.0 > .../bind", "",
                    ("write", "/sys/bus/platform/drivers/efi-framebuffer/unbind",
                     "efi-framebuffer.0"),
                    ("bind", "/sys/bus/platform/drivers/efi-framebuffer/bind",
                     "efi-framebuffer.0"))))


def _registered(tmp_path, done: int) -> tuple[Journal, HandoffPlan]:
    """A journal with every step of the plan registered, the first ``done`` done."""
    journal = Journal("win11", tmp_path / "run")
    plan = _plan()
    journal.begin(plan)
    for number, step in enumerate(plan.steps, 1):
        journal.write(event="will", n=number, what=step.what, undo=list(step.reverse),
                      command=step.undo)
        if number <= done:
            journal.write(event="done", n=number)
    return journal, plan


def _tree(tmp_path, framebuffer: str):
    """As the kernel shows them after the steps ran: vtcon1 (fbcon) unbound, and
    efi-framebuffer.0 unbound, already bound again, or both gone (vfio-pci removed the
    firmware framebuffer of the VGA card it took, and with the last framebuffer gone fbcon
    unregistered its console: seen on the real kernel of test_handoff_real_kernel)."""
    root = tmp_path / "host"
    driver = root / "sys/bus/platform/drivers/efi-framebuffer"
    driver.mkdir(parents=True)
    (driver / "bind").write_text("")
    if framebuffer == "gone":
        (root / "sys/class/vtconsole").mkdir(parents=True)
        return root
    console = root / "sys/class/vtconsole/vtcon1"
    console.mkdir(parents=True)
    (console / "bind").write_text("0\n")
    device = root / "sys/bus/platform/devices/efi-framebuffer.0"
    device.mkdir(parents=True)
    if framebuffer == "bound":
        os.symlink(driver, device / "driver")
    return root


def test_the_journal_holds_each_undo_before_its_step_and_gives_back_newest_first(tmp_path):
    journal, plan = _registered(tmp_path, done=2)  # the third under way when it died
    with open(journal.path, "a") as file:
        file.write('{"event": "undone", "n"')  # a line cut short by the crash
    assert [entry["n"] for entry in journal.pending()] == [3, 2, 1]
    assert oct(journal.path.stat().st_mode & 0o777) == "0o644"  # the app reads it
    with pytest.raises(HandoffError, match="has not given everything back yet"):
        journal.begin(plan)  # a second handoff never starts over an unfinished one


@pytest.mark.parametrize("framebuffer", ["unbound", "bound", "gone"])
def test_a_restore_undoes_what_it_can_and_writes_down_what_it_could_not(
        tmp_path, framebuffer):
    """The display manager cannot be started again (systemctl fails: here /bin/false);
    the console and framebuffer are still given back, the failure stays in the journal
    with the command that would give it back. A framebuffer already on its driver is not
    bound twice (the kernel would refuse with EBUSY); a framebuffer and console that are
    gone come back with the card's driver: nothing to write, no failure."""
    root = _tree(tmp_path, framebuffer)
    journal, _ = _registered(tmp_path, done=0)
    hands = Hands(connection=None, root=root)
    hands.systemctl = "/bin/false"
    left = restore(hands, journal)
    console = root / "sys/class/vtconsole/vtcon1/bind"
    assert console.read_text() == "1" if framebuffer != "gone" else not console.exists()
    written = (root / "sys/bus/platform/drivers/efi-framebuffer/bind").read_text()
    assert written == ("efi-framebuffer.0" if framebuffer == "unbound" else "")
    assert left == ["stop the display manager gdm3.service: `/bin/false start gdm3.service`"
                    " failed: 1; as root: systemctl start gdm3.service"]
    assert not journal.path.exists()
    entries = [json.loads(line) for line in journal.last.read_text().splitlines()]
    assert [(e["event"], e.get("n")) for e in entries[4:]] == [
        ("undone", 3), ("undone", 2), ("undo-failed", 1), ("end", None)]
    assert restore(hands, journal) == []  # the unit's stop path finds nothing left


def test_the_units_stop_path_is_the_restore():
    argv = systemd_run_argv("win11", {"stop-timeout": "30", "fail-after": "2"})
    assert argv[:4] == ["systemd-run", "--unit=neuronos-handoff-win11.service",
                        "--service-type=exec", "--collect"]
    assert ("--property=ExecStopPost=/usr/libexec/neuronos/neuron-vm-helper handoff-restore"
            " win11 --stop-timeout=30") in argv
    assert argv[argv.index("--") + 1:] == ["/usr/libexec/neuronos/neuron-vm-helper",
                                           "handoff-run", "win11", "--stop-timeout=30",
                                           "--fail-after=2"]


@pytest.mark.parametrize("args, code, said", [
    (["handoff", "win11", "--bogus=1"], 1, "unknown options: --bogus=1 (allowed: --uri=URI,"),
    (["handoff", "win11", "--fail-after=x"], 1, "--fail-after=x: a whole number is allowed"),
    (["handoff", "a b"], 2, "NAME: 'a b' is not a valid name"),
    (["handoff"], 2, "usage: neuron-vm-helper"),
    (["handoff-end", "win11"], 0, "no handoff of win11 runs (neuronos-handoff-win11.service"
                                  " is not active)"),
])
def test_the_root_helper_checks_every_argument_of_the_handoff(root_helper, args, code, said):
    done = subprocess.run([str(root_helper), *args], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PKEXEC_UID": str(os.getuid())})
    assert done.returncode == code, done.stderr
    assert said in done.stdout + done.stderr
