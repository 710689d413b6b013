"""The stages of an unattended setup: how long each may take, what a late one means, and
how cloud-init says it finished (pure: no libvirt, no clock).

A running VM that stays in a stage past its deadline has failed setup: the deadline is
counted from the stage's last step (a start of the VM records one), per setup kind, stage
and domain type (TCG emulation is 5-20 times slower than KVM). ``created`` (the VM is not
started yet), ``ready`` and ``failed`` have none. A VM's own ``stage_timeout_s`` (``create
--stage-timeout``) replaces every figure.
"""

from __future__ import annotations

import calendar
import json
import time

from ..base.domain_xml import SetupInfo

STAGES = ("created", "installing", "first-logon", "looking-glass", "ready", "failed")
RUNNING = ("installing", "first-logon", "looking-glass")
MINUTE, HOUR = 60, 3600
LATE = "for longer than its deadline"  # in a failed step's note: a later success still counts
# (kind, stage) -> {domain type: seconds}; sized from what was seen: a Debian cloud image
# under TCG here finishes cloud-init in 60-90 s, Windows 11 installs in 20-40 min with KVM
DEADLINES: dict[tuple[str, str], dict[str, int]] = {
    ("cloud-init", "installing"): {"kvm": 15 * MINUTE, "qemu": 60 * MINUTE},
    ("windows", "installing"): {"kvm": 3 * HOUR, "qemu": 24 * HOUR},
    ("windows", "first-logon"): {"kvm": 1 * HOUR, "qemu": 8 * HOUR},
    ("windows", "looking-glass"): {"kvm": 15 * MINUTE, "qemu": 15 * MINUTE},
}
# cloud-init writes this when its last stage ends (its docs, "Boot stages"; checked on
# Debian 12's 22.4): {"v1": {"datasource": "...", "errors": [...]}}
CLOUD_INIT_RESULT = "/run/cloud-init/result.json"


def deadline(kind: str | None, stage: str | None, domain_type: str | None,
             override: int | None = None) -> int | None:
    """Seconds a running VM may stay in ``stage`` (None: no deadline)."""
    table = DEADLINES.get((kind or "", stage or ""))
    if table is None:
        return None
    return override or table.get(domain_type or "kvm", table["kvm"])


def time_left(setup: SetupInfo, domain_type: str | None, now: float) -> float | None:
    """Seconds a running VM's stage has left at ``now`` (None: no deadline); counted from
    the stage's last step."""
    if setup.stage not in RUNNING or not setup.steps:
        return None
    limit = deadline(setup.kind, setup.stage, domain_type, setup.timeout_s)
    since = step_time(setup.steps[-1][1])
    return None if limit is None or since is None else since + limit - now


def still_open(setup: SetupInfo) -> bool:
    """Whether the setup can still move: not over, or failed only at a deadline (a guest
    that finishes late is still ready)."""
    return setup.stage not in ("ready", "failed") or (
        setup.stage == "failed" and bool(setup.steps) and LATE in setup.steps[-1][2])


def seen_run(setup: SetupInfo, run: str | None) -> bool:
    """Whether a step records this run of the VM (each start gets a new libvirt id)."""
    return run is None or any(note.endswith(run) for _, _, note in setup.steps)


def duration(seconds: float) -> str:
    if seconds >= HOUR and seconds % HOUR == 0:
        return f"{int(seconds // HOUR)} h"
    if seconds >= MINUTE:
        return f"{round(seconds / MINUTE)} min"
    return f"{int(seconds)} s"


def step_time(at: str) -> float | None:
    """A step's ISO time (UTC, as the tracker writes it) as seconds since the epoch."""
    try:
        return float(calendar.timegm(time.strptime(at, "%Y-%m-%dT%H:%M:%SZ")))
    except (TypeError, ValueError):
        return None


def late_note(kind: str | None, stage: str, seconds: float, name: str,
              serial_log: str | None = None) -> str:
    """What a stage that ran past its deadline means, and where to look."""
    look = f"look at `neuron-vm console {name}`" + (
        f" or the serial log {serial_log}" if serial_log else "")
    waited = duration(seconds)
    if kind == "cloud-init":
        return (f"cloud-init did not report finishing within {waited}: the guest may not"
                " boot (an image without shim fails under Secure Boot: create the VM with"
                " --secure-boot off), may lack cloud-init or the QEMU guest agent (its"
                " install needs the network), or cloud-init may be stuck; " + look)
    if stage == "installing":
        return (f"Windows Setup did not reach the desktop within {waited}: a Setup page may"
                " wait for an answer, or the installer's 'press any key' prompt was missed"
                f" (`neuron-vm setup-restart {name} --force --start` presses it); " + look)
    if stage == "first-logon":
        return (f"the first-logon steps (guest tools, drivers, the Looking Glass host) did"
                f" not finish within {waited}; " + look + r" (their log:"
                r" C:\ProgramData\NeuronOS\setup.log)")
    return (f"the Looking Glass host application did not start within {waited}: it needs a"
            " display on the passed-through GPU (a monitor or a dummy plug) and its IVSHMEM"
            " driver; " + look)


def cloud_init_result(text: str | None) -> list[str] | None:
    """cloud-init's errors from its ``result.json`` ([] when it finished cleanly; None
    while there is no readable result: it has not finished)."""
    if not text:
        return None
    try:
        result = json.loads(text)["v1"]
        errors = result.get("errors") or []
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return [str(error) for error in errors]
