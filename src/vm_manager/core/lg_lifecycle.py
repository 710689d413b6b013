"""The Looking Glass window tied to its VM's lifecycle (a part of ``LookingGlassManager``):
the client starts when the VM runs, stops when it stops, is deleted or stays paused, and a
window asked for while the VM is paused waits for it to run again."""

from __future__ import annotations

import subprocess
import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Callable

from ..base.errors import VMManagerError
from ..base.log import get_logger
from ..base.primitives import VMState
from ..display.lg_client import LGClientConfig

if TYPE_CHECKING:
    from ..display.lgmp import HostHeader

log = get_logger(__name__)


class LGState(str, Enum):
    STOPPED = "stopped"
    WAITING = "waiting-for-host"
    STARTING = "starting"
    RUNNING = "running"
    HOST_STOPPED = "host-stopped"  # the window is open, the guest's host app is gone
    RESTARTING = "restarting"
    ERROR = "error"


@dataclass(frozen=True)
class LGStateChange:
    vm_name: str
    old: LGState
    new: LGState
    reason: str
    timestamp: float


@dataclass
class _Client:
    config: LGClientConfig
    state: LGState = LGState.STOPPED
    reason: str = ""
    process: subprocess.Popen | None = None
    thread: threading.Thread | None = None
    cancel: threading.Event = field(default_factory=threading.Event)
    restart_now: bool = False
    failures: list[float] = field(default_factory=list)
    host: HostHeader | None = None
    note: str = ""  # said with every start (a VM without SPICE)


class FollowsLifecycle:
    """Mixed into ``LookingGlassManager`` (its lock, clients, states, start and stop)."""

    def await_resume(self, vm_name: str, config: LGClientConfig) -> None:
        """A paused VM's window: waiting (said so) until the VM runs again, when ``follow``
        starts the client; ``stop`` gives up waiting."""
        with self._lock:
            entry = self._clients.get(vm_name)
            if entry is not None and entry.thread is not None and entry.thread.is_alive():
                return  # a client is supervised already
            self._clients[vm_name] = _Client(config)
        self._set(vm_name, LGState.WAITING, f"{vm_name} is paused: the window opens when it"
                  f" runs again (`neuron-vm resume {vm_name}`)")

    def _awaiting(self, vm_name: str) -> bool:
        with self._lock:
            entry = self._clients.get(vm_name)
            return entry is not None and entry.thread is None and not entry.cancel.is_set()

    # --- tie to the VM lifecycle ------------------------------------------------------------

    def follow(self, lifecycle, config_for: Callable[[str], LGClientConfig | None],
               pause_grace: float = 30.0) -> int:
        """Start the client when a VM for which ``config_for`` gives a config reaches
        running; stop it when the VM stops, is deleted, or stays paused longer than
        ``pause_grace`` seconds. Returns the lifecycle subscription token."""
        def on_change(change) -> None:
            name = change.name
            if change.new == VMState.RUNNING:
                self._cancel_pause_timer(name)
                if self.get_state(name) in (LGState.STOPPED, LGState.ERROR) or \
                        self._awaiting(name):
                    threading.Thread(target=self._start_quietly, args=(name, config_for),
                                     daemon=True).start()
            elif change.new in (VMState.SHUTOFF, VMState.CRASHED, VMState.NOSTATE,
                                VMState.UNDEFINED):
                threading.Thread(target=self.stop, args=(name,), daemon=True).start()
            elif change.new == VMState.PAUSED and name in self._clients:
                timer = threading.Timer(pause_grace, self.stop, args=(name,))
                timer.daemon = True
                with self._lock:
                    self._pause_timers[name] = timer
                timer.start()

        return lifecycle.subscribe(on_change)

    def _start_quietly(self, name: str, config_for) -> None:
        try:
            config = config_for(name)
            if config is not None:
                self.start(name, config)
        except VMManagerError as error:
            log.warning("cannot show %s through Looking Glass: %s", name, error)

    def _cancel_pause_timer(self, name: str) -> None:
        with self._lock:
            timer = self._pause_timers.pop(name, None)
        if timer is not None:
            timer.cancel()
