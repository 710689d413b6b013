"""Looking Glass: start the client when the guest's host application is live, keep it alive,
stop it with the VM (DESIGN.md 2, 4.1, 4.2: facts read in the Looking Glass sources at B5-B7
and checked with a real B7 client).

Finding the client and building its command line live in ``passthrough.lg_client``; reading
the guest's LGMP header in ``passthrough.lgmp``. This module supervises:

- The client refuses to run as root; as root, the manager runs it as the desktop user.
- It starts once the guest's host application is live in the shared memory
  (``lgmp.wait_for_host``).
- The client's output goes to a per-VM log file, never to a pipe. A client that exits with
  an error is restarted with backoff (1, 2, 4, 8 s) and given up after N failures in a
  window. Exit 0 (the user closed it) is not restarted; neither is exit 255 with no error in
  its log (a user closing the window before the host connected exits 255 too).
- Stopping is SIGTERM, then SIGKILL after a timeout (a client stuck on a silent SPICE port
  ignores SIGTERM). SIGUSR1 kills the client, so nothing here sends it; fullscreen at runtime
  is the escape key + F inside the client, or a restart with the other ``win:fullScreen``.
"""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Callable

from ..passthrough.lg_client import (
    LGClientConfig, as_user, build_argv, client_release, default_log_dir, find_client,
    is_failure, release_note, user_id, stop_by_pid_file,
)
from ..passthrough.lgmp import HostHeader, wait_for_host
from .errors import LookingGlassError, OperationTimedOut, VMManagerError
from .store import private_folder
from .primitives import Subscribers, VMState, validate_name
from .log import get_logger

__all__ = ["LGClientConfig", "LGState", "LGStateChange", "LookingGlassError",
           "LookingGlassManager", "display_config", "get_looking_glass_manager",
           "stop_by_pid_file"]

log = get_logger(__name__)
WAITING = "waiting for the guest's host application"

class LGState(str, Enum):
    STOPPED = "stopped"
    WAITING = "waiting-for-host"
    STARTING = "starting"
    RUNNING = "running"
    RESTARTING = "restarting"
    ERROR = "error"


# --- supervision ----------------------------------------------------------------------------


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


class LookingGlassManager:
    """One supervised client per VM. Thread-safe."""

    def __init__(
        self,
        *,
        client: Path | str | None = None,
        log_dir: Path | str | None = None,
        run_as: str | None = None,
        backoff: tuple[float, ...] = (1, 2, 4, 8),
        max_failures: int = 4,
        failure_window: float = 120.0,
        stop_timeout: float = 5.0,
        host_timeout: float = 300.0,
        settle: float = 0.5,
        connection=None,
    ):
        self._client_path = Path(client) if client else None
        self._release_unknown_said = False
        self.log_dir = Path(log_dir) if log_dir else default_log_dir()
        self.run_as = run_as
        self.backoff = backoff
        self.max_failures = max_failures
        self.failure_window = failure_window
        self.stop_timeout = stop_timeout
        self.host_timeout = host_timeout
        self.settle = settle
        self.connection = connection
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._telling = threading.RLock()  # one change at a time, told before it is seen
        self._clients: dict[str, _Client] = {}
        self._subscribers = Subscribers(log)
        self._pause_timers: dict[str, threading.Timer] = {}

    # --- the client binary ------------------------------------------------------------------

    @property
    def client(self) -> Path:
        if self._client_path is None:
            found = find_client()
            if found is None:
                raise LookingGlassError(
                    "looking-glass-client not found: install it (Arch: AUR looking-glass) or"
                    " set NEURONOS_LG_CLIENT to its path")
            self._client_path = found
        return self._client_path

    @functools.cached_property
    def release(self) -> str | None:  # read as the client's user: it tells root nothing
        return client_release(self.client, user=self._client_user())

    # --- state ------------------------------------------------------------------------------

    def _find_lg_executable(self) -> Path | None:
        """The client's path, or None when it is not installed (the design notes' name)."""
        return self._client_path or find_client()

    def get_state(self, vm_name: str) -> LGState:
        with self._lock:
            entry = self._clients.get(vm_name)
            return entry.state if entry else LGState.STOPPED

    def reason(self, vm_name: str) -> str:
        with self._lock:
            entry = self._clients.get(vm_name)
            return entry.reason if entry else ""

    def is_running(self, vm_name: str) -> bool:
        return self.get_state(vm_name) == LGState.RUNNING

    def log_path(self, vm_name: str) -> Path:
        return self.log_dir / f"{validate_name(vm_name)}.log"

    def subscribe(self, callback: Callable[[LGStateChange], None]) -> int:
        return self._subscribers.add(callback)

    def unsubscribe(self, token: int) -> None:
        self._subscribers.remove(token)

    def wait_for_state(self, vm_name: str, states: set[LGState], timeout: float) -> LGState:
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                state = self.get_state(vm_name)
                left = deadline - time.monotonic()
                if state in states or left <= 0:
                    return state
                self._changed.wait(left)

    def _set(self, vm_name: str, state: LGState, reason: str) -> None:
        with self._telling:  # heard by every subscriber, in order, before it is seen
            old = self.get_state(vm_name)
            log.info("Looking Glass %s: %s -> %s (%s)", vm_name, old.value, state.value, reason)
            if old != state:
                self._subscribers.notify(LGStateChange(vm_name, old, state, reason, time.time()))
            with self._lock:
                entry = self._clients[vm_name]
                entry.state, entry.reason = state, reason
                self._changed.notify_all()

    # --- start / stop -----------------------------------------------------------------------

    def start(self, vm_name: str, config: LGClientConfig | None = None) -> None:
        """Supervise a client for ``vm_name``: wait for the guest's host app, then run and
        keep running the client. Returns at once; watch the state or ``wait_for_state``."""
        if (os.geteuid() == 0 and self.run_as is None) or (
                self.run_as is not None and user_id(self.run_as) == 0):
            raise LookingGlassError(
                "the Looking Glass client refuses to run as root: run `neuron-vm display"
                f" {vm_name}` as your desktop user, or give that user (--user NAME, not root)")
        config = config or LGClientConfig(vm_name)
        if config.spice and config.spice_port is None:
            config = replace(config, spice_port=self._spice_port(vm_name))
        build_argv(self.client, config, self.release)  # a bad setting fails here, not later
        with self._lock:
            entry = self._clients.get(vm_name)
            if entry is not None and entry.thread is not None and entry.thread.is_alive():
                return  # already supervised
            entry = _Client(config)
            self._clients[vm_name] = entry
            entry.thread = threading.Thread(target=self._supervise, args=(vm_name, entry),
                                            name=f"looking-glass {vm_name}", daemon=True)
        self._set(vm_name, LGState.WAITING, WAITING)  # seen (and told) before start returns
        entry.thread.start()

    def stop(self, vm_name: str, timeout: float | None = None) -> None:
        """SIGTERM the client, SIGKILL it after ``timeout`` (default ``stop_timeout``)."""
        with self._lock:
            entry = self._clients.get(vm_name)
            timer = self._pause_timers.pop(vm_name, None)
        if timer is not None:
            timer.cancel()
        if entry is None:
            return
        entry.cancel.set()
        self._terminate(entry, self.stop_timeout if timeout is None else timeout)
        if entry.thread is not None and entry.thread is not threading.current_thread():
            entry.thread.join(timeout=30)

    def stop_all(self) -> None:
        with self._lock:
            names = list(self._clients)
        for name in names:
            self.stop(name)

    def toggle_fullscreen(self, vm_name: str) -> bool:
        """Restart the client with the other ``win:fullScreen`` value (there is no signal
        for it: SIGUSR1 would kill it). The VM is untouched. Returns the new value."""
        with self._lock:
            entry = self._clients.get(vm_name)
            if entry is None or entry.state in (LGState.STOPPED, LGState.ERROR):
                raise LookingGlassError(f"no Looking Glass window is open for {vm_name!r}")
            entry.config = replace(entry.config, fullscreen=not entry.config.fullscreen)
            entry.restart_now = True
            value = entry.config.fullscreen
        self._terminate(entry, self.stop_timeout)
        return value

    # --- the supervisor thread --------------------------------------------------------------

    def _supervise(self, vm_name: str, entry: _Client) -> None:
        try:
            self._supervise_loop(vm_name, entry)
        except Exception as error:  # never die silently: say why in the state
            log.exception("Looking Glass supervisor for %s failed", vm_name)
            self._set(vm_name, LGState.ERROR, str(error))

    def _supervise_loop(self, vm_name: str, entry: _Client) -> None:
        while not entry.cancel.is_set():
            self._set(vm_name, LGState.WAITING, WAITING)
            try:
                entry.host = wait_for_host(entry.config.shm_path, self.host_timeout,
                                           entry.cancel, user=self._client_user())
            except (LookingGlassError, OperationTimedOut) as error:
                if entry.cancel.is_set():
                    break
                self._set(vm_name, LGState.ERROR, str(error))
                return
            note = self._release_note(vm_name, entry)
            self._set(vm_name, LGState.STARTING, f"starting {self.client.name}{note}")
            offset = self._launch(vm_name, entry)
            try:  # "running" once it survived its start (a bad option exits at once)
                code = entry.process.wait(self.settle)
            except subprocess.TimeoutExpired:
                self._set(vm_name, LGState.RUNNING, f"pid {entry.process.pid}")
                code = entry.process.wait()
            with self._lock:
                restart_now, entry.restart_now = entry.restart_now, False
            if entry.cancel.is_set():
                break
            if restart_now:
                continue  # fullscreen toggle: not a failure
            tail = self._log_tail(vm_name, offset)
            if not is_failure(code, tail):
                self._set(vm_name, LGState.STOPPED, "closed by the user")
                return
            now = time.monotonic()
            entry.failures = [t for t in entry.failures if now - t <= self.failure_window]
            entry.failures.append(now)
            last_lines = " | ".join(tail[-3:]) or f"exit status {code}"
            if len(entry.failures) >= self.max_failures:
                self._set(vm_name, LGState.ERROR,
                          f"the client failed {len(entry.failures)} times in"
                          f" {self.failure_window:.0f} s; last lines: {last_lines}")
                return
            delay = self.backoff[min(len(entry.failures), len(self.backoff)) - 1]
            self._set(vm_name, LGState.RESTARTING,
                      f"exit status {code}; restarting in {delay:g} s ({last_lines})")
            if entry.cancel.wait(delay):
                break
        self._set(vm_name, LGState.STOPPED, "stopped")

    def _launch(self, vm_name: str, entry: _Client) -> int:
        argv = build_argv(self.client, entry.config, self.release)
        path = self.log_path(vm_name)
        private_folder(path.parent)
        with open(path, "ab") as handle:  # the child keeps its own copy of the descriptor
            offset = handle.tell()
            handle.write(f"--- {time.strftime('%F %T')} {' '.join(argv)}\n".encode())
            handle.flush()
            entry.process = subprocess.Popen(  # as a login would: every group it is in
                argv, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                start_new_session=True, **as_user(self._client_user()))
        (self.log_dir / f"{vm_name}.pid").write_text(f"{entry.process.pid}\n")
        return offset

    def _terminate(self, entry: _Client, timeout: float) -> None:
        process = entry.process
        if process is None or process.poll() is not None:
            return
        try:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("Looking Glass client %s ignored SIGTERM; killing it", process.pid)
            process.kill()
            process.wait()
        except ProcessLookupError:
            pass

    def _log_tail(self, vm_name: str, offset: int, lines: int = 20) -> list[str]:
        try:
            with open(self.log_path(vm_name), "rb") as handle:
                handle.seek(offset)
                text = handle.read().decode(errors="replace")
        except OSError:
            return []
        return [line for line in text.splitlines() if line and not line.startswith("---")][-lines:]

    def _release_note(self, vm_name: str, entry: _Client) -> str:
        """For the "starting" line: a release mismatch, or (once) an unknown release."""
        note = release_note(entry.host.host_release if entry.host else None, self.release,
                            unknown_said=self._release_unknown_said)
        self._release_unknown_said = self._release_unknown_said or self.release is None
        if note:
            log.warning("%s: %s", vm_name, note)
        return f"; {note}" if note else ""

    def _client_user(self) -> str | None:
        """Whose rights the client runs with (None: this process's)."""
        return self.run_as if (self.run_as is not None and os.geteuid() == 0) else None

    def _spice_port(self, vm_name: str) -> int | None:
        if self.connection is None:
            return None
        from .domain_xml import read_domain

        xml = self.connection.execute(
            lambda conn: self.connection.lookup(conn, vm_name).XMLDesc(0))
        return read_domain(xml).spice_port

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
                if self.get_state(name) in (LGState.STOPPED, LGState.ERROR):
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


_manager: LookingGlassManager | None = None


def get_looking_glass_manager() -> LookingGlassManager:
    """The process-wide manager (the design notes' entry point)."""
    global _manager
    if _manager is None:
        _manager = LookingGlassManager()
    return _manager


def display_config(vm_name: str, store=None, connection=None,
                   root: Path | str | None = None,
                   shm_dir: Path | str | None = None) -> LGClientConfig | None:
    """The client config for a VM that has Looking Glass (from its saved settings, or its
    domain's ``looking-glass-<vm>`` shmem device); None when it has none."""
    from ..passthrough.ivshmem import SHM_DIR, kvmfr_device, shm_name, shm_path
    from .errors import StoreError

    shared = shm_path(vm_name, Path(shm_dir) if shm_dir else SHM_DIR)
    settings = None
    if store is not None:
        try:
            settings = store.load(vm_name)
        except StoreError as error:
            log.warning("%s", error)
    if settings is not None and settings.looking_glass.enabled:
        if settings.looking_glass.use_kvmfr:
            device = kvmfr_device(root or "/")
            if device is None:
                raise LookingGlassError(f"{vm_name} uses KVMFR but /dev/kvmfr0 is missing: load"
                                        " the module (modprobe kvmfr static_size_mb=N)")
            return LGClientConfig(vm_name, shm_path=device)
        return LGClientConfig(vm_name, shm_path=shared)
    if connection is not None:
        from .domain_xml import read_domain

        xml = connection.execute(lambda conn: connection.lookup(conn, vm_name).XMLDesc(0))
        if read_domain(xml).shmem(shm_name(vm_name)) is not None:
            return LGClientConfig(vm_name, shm_path=shared)
    return None
