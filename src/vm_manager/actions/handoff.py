"""The single-GPU handoff for both faces (issue 32): whether starting a VM needs it, the
user's consent the first time, starting and ending it through the root helper (polkit asks
for the password), and what its journal says.

The handoff itself runs as root in ``neuronos-handoff-VM.service`` (``core.handoff``): the
app and the CLI die with the display manager, the unit does not. Starting it returns at once;
the screen goes black soon after.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..base.errors import InvalidConfig, OperationFailed
from .context import Context

if TYPE_CHECKING:
    from ..core.handoff_plan import HandoffPlan

CONSENT_FILE = "handoff-consent"  # in the settings folder: the VMs the user said yes for
JOURNAL_DIR = Path("/run/neuronos/handoff")  # core.handoff.JOURNAL_DIR (root's, readable)


class ConsentNeeded(InvalidConfig):
    """Starting this VM takes the desktop away: the user has to say yes once."""

    def __init__(self, plan: HandoffPlan):
        self.plan = plan
        super().__init__("--hand-over-gpu", f"{plan.vm}'s GPU {plan.gpu} shows this desktop:"
                         f" starting {plan.vm} stops the desktop (the screen goes black, then"
                         f" shows {plan.vm}) until {plan.vm} shuts down. Read what happens:"
                         f" `neuron-vm gpu handoff-plan {plan.vm}`; start it with"
                         " --hand-over-gpu (asked only the first time)")


@dataclass(frozen=True)
class HandoffStarted:
    vm: str
    unit: str
    output: str  # what the helper said
    way_back: tuple[str, ...]  # how the user gets the desktop back, in words


_SHUT_DOWN = {"windows11": "Start > Power > Shut down", "windows10": "Start > Power > Shut down",
              "macos": "Apple menu > Shut Down"}


def way_back(vm: str, vm_type: str | None = None) -> tuple[str, ...]:
    """How to get the desktop back, for the faces to say before the screen goes black, in
    the words of the VM's system (``VMConfig.vm_type``)."""
    from ..core.handoff import unit_name

    where = _SHUT_DOWN.get(str(getattr(vm_type, "value", vm_type)),
                           "its own Shut down or Power off, or `sudo poweroff`")
    return (f"shut {vm} down from inside it ({where}): the desktop comes back by itself",
            f"or, from another computer: ssh in and run `sudo systemctl stop {unit_name(vm)}`"
            f" (or `neuron-vm gpu handoff-end {vm}`): {vm} is shut down (forced off after"
            " 2 minutes) and the desktop comes back",
            f"if {vm} hangs or the screen stays black, restart the computer (hold the power"
            " button): everything comes back")


def way_back_of(ctx: Context, name: str) -> tuple[str, ...]:
    """``way_back`` for the VM ``name``, in its own system's words."""
    config = ctx.settings(name)
    return way_back(name, config.vm_type if config else None)


def needed(ctx: Context, name: str) -> HandoffPlan | None:
    """The handoff plan when starting ``name`` needs one (its GPU shows this desktop);
    None for every other VM, a remote host's included."""
    from ..base.primitives import is_remote
    from . import gpu

    if is_remote(ctx.uri):
        return None
    config = ctx.settings(name)
    if config is None or config.gpu_passthrough is None:
        return None
    try:
        plan = gpu.handoff_plan(ctx, name)
    except InvalidConfig:  # the GPU is not on this computer: the start says so itself
        return None
    return plan if plan.needed else None


def cannot_run(plan: HandoffPlan) -> str | None:
    """Why the handoff cannot run on this computer at all (no systemd), or None."""
    from ..core.handoff_plan import NO_SYSTEMD

    return NO_SYSTEMD if NO_SYSTEMD in plan.warnings else None


def consented(ctx: Context, name: str) -> bool:
    return name in _consents(ctx)


def _consents(ctx: Context) -> list[str]:
    path = ctx.store.config_dir / CONSENT_FILE
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def _record_consent(ctx: Context, name: str) -> None:
    from ..base.store import private_folder

    folder = ctx.store.config_dir
    private_folder(folder)
    path = folder / CONSENT_FILE
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(sorted({*_consents(ctx), name})))
    partial.replace(path)


def start(ctx: Context, name: str, consent: bool = False) -> HandoffStarted:
    """Start ``name`` through the handoff. Raises ``ConsentNeeded`` the first time without
    ``consent``, ``OperationFailed`` when the helper could not start it."""
    from ..core.handoff import unit_name

    plan = needed(ctx, name)
    if plan is None:
        raise InvalidConfig("NAME", f"{name} does not need the single-GPU handoff: start it"
                            " as usual")
    if cannot_run(plan):
        raise OperationFailed(f"{name} cannot be given this desktop's GPU here: "
                              + cannot_run(plan))
    if not consent and not consented(ctx, name):
        raise ConsentNeeded(plan)
    output = _helper(ctx, "handoff", name)
    _record_consent(ctx, name)  # only once it ran: a refused password asks again
    return HandoffStarted(name, unit_name(name), output, way_back_of(ctx, name))


def end(ctx: Context, name: str) -> str:
    """End ``name``'s handoff: the VM is shut down and the desktop given back. Raises
    ``VMNotFound`` for a name libvirt does not know."""
    ctx.connection.execute(lambda conn: ctx.connection.lookup(conn, name))
    return _helper(ctx, "handoff-end", name)


def _helper(ctx: Context, operation: str, name: str) -> str:
    from ..base.primitives import validate_name
    from . import guide

    ctx.require_local(f"the single-GPU handoff ({operation})", "it hands over this"
                      " computer's own GPU")
    pkexec, helper = guide.elevation()
    installed = Path(helper)  # install-helper.sh: ROOT/usr/libexec/neuronos/, its package
    copy = installed.parent.parent.parent / "lib/neuronos/vm_manager/core/handoff.py"
    if installed.parent.name == "neuronos" and installed.parent.parent.name == "libexec" \
            and installed.exists() and not copy.exists():  # installed by an older NeuronOS
        raise OperationFailed(f"NeuronOS's root helper ({helper}) is older than this NeuronOS"
                              " and cannot hand a GPU over: install it again with"
                              " `sudo bash scripts/install-helper.sh /` (or run"
                              " scripts/setup-host.sh)")
    argv = (*((pkexec,) if pkexec else ()), helper, operation, validate_name(name, "NAME"))
    result = guide.run_fix(guide.Fix("GPU handoff", operation, operation, argv))
    if not result.ok:
        raise OperationFailed(_plainly(result.output, operation))
    return result.output


def _plainly(output: str, operation: str = "handoff") -> str:
    """The helper's refusal without its exit status and name, in words."""
    import re

    status = re.match(r"^failed \((\d+)\): ", output)
    text = output[status.end():] if status else output
    text = text.replace("neuron-vm-helper: ", "").strip()
    if "has not been booted with systemd" in text:
        return NO_SYSTEMD_WORDS
    if not text:
        text = (f"the root helper stopped (exit status {status.group(1)}) without saying why"
                if status else "the root helper did not run")
    if operation == "handoff-end":
        return f"the handoff could not be ended: {text}"
    return f"the single-GPU handoff could not start: {text}; nothing was handed over"


NO_SYSTEMD_WORDS = ("the single-GPU handoff needs systemd (it runs as a systemd unit that"
                    " outlives the desktop), and this computer does not run it")


def journal(name: str, folder: Path | str = JOURNAL_DIR) -> list[str]:
    """What ``name``'s handoff did (the running one, else the last), in words."""
    folder = Path(folder)
    for path in (folder / f"{name}.journal", folder / f"{name}.last"):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        said = []
        for line in lines:
            try:
                said.append(_words(json.loads(line)))
            except (ValueError, KeyError, TypeError):
                continue
        return [line for line in said if line]
    return []


def _words(entry: dict) -> str:
    event = entry.get("event")
    return {"begin": f"handing {entry.get('gpu')} over",
            "will": f"{entry.get('n')}. {entry.get('what')}",
            "undone": f"{entry.get('n')}. given back",
            "undo-failed": f"{entry.get('n')}. NOT given back ({entry.get('error')}): as root,"
                           f" {entry.get('command')}",
            "failed": f"failed: {entry.get('error')}",
            "stopped": "the VM stopped", "ended": "the handoff was ended",
            "end": "done"}.get(event, "")
