"""Looking Glass: start the client when the guest's host application is live, keep it alive,
stop it with the VM (DESIGN.md 2, 4.1, 4.2: facts read in the Looking Glass sources at B5-B7
and checked with a real B7 client).

Finding the client and building its command line live in ``display.lg_client``; reading
the guest's LGMP header in ``display.lgmp``. This module supervises:

- The client refuses to run as root; as root, the manager runs it as the desktop user.
- It starts once the guest's host application is live in the shared memory
  (``lgmp.wait_for_host``).
- The client's output goes to a per-VM log file, never to a pipe. Crash, failure or quit
  is judged from what a B7 client does (``lg_client.judge_exit``: exit status, signal, the
  FATAL CRASH and start-up lines, never "[E]" lines as such); a crash or failure is
  restarted with backoff (1, 2, 4, 8 s) and given up after N in a window.
- While it runs, the guest's heartbeat in the header says whether the host app is there:
  "host-stopped" when it stops (the client keeps its window and waits), "running" again when
  it beats.
- A VM without SPICE graphics is shown with ``spice:enable=no``, and the user is told that
  keyboard, mouse and clipboard then do not reach the guest.
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
from dataclasses import replace
from pathlib import Path
from typing import Callable

from .lg_lifecycle import FollowsLifecycle, LGState, LGStateChange, _Client
from ..display.lg_client import (
    LGClientConfig, as_user, build_argv, client_release, default_log_dir, find_client,
    judge_exit, read_log_tail, release_note, user_credentials, user_id, stop_by_pid_file,
)
from ..display.lgmp import Heartbeat, wait_for_host
from ..display.spice_relay import SpiceRelay
from ..base.errors import LookingGlassError, OperationTimedOut, VMManagerError, VMNotFound
from ..base.store import private_folder
from ..base.user_files import open_beneath
from ..base.primitives import Subscribers, validate_name
from ..base.log import get_logger

__all__ = ["LGClientConfig", "LGState", "LGStateChange", "LookingGlassError",
           "LookingGlassManager", "get_looking_glass_manager",
           "stop_by_pid_file"]

log = get_logger(__name__)
WAITING = "waiting for the guest's host application"
NO_SPICE = ("this VM has no SPICE graphics: the window shows the guest, but keyboard, mouse"
            " and clipboard do not reach it (they go through SPICE); add SPICE graphics to"
            " the VM to use them")

class LookingGlassManager(FollowsLifecycle):
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
        self._default_log_dir = log_dir is None
        self.run_as = run_as
        self.backoff = backoff
        self.max_failures = max_failures
        self.failure_window = failure_window
        self.stop_timeout = stop_timeout
        self.host_timeout = host_timeout
        self.settle = settle
        self.heartbeat_interval = 0.25
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
        """The client's log: in the log folder, or (a client run as another user, the folder
        not given) in that user's own ~/.local/state/neuronos/looking-glass, theirs to read."""
        folder = self.log_dir
        user = self._client_user()
        if user is not None and self._default_log_dir:
            home = user_credentials(user).home
            if home and os.path.isdir(home):
                folder = Path(home) / ".local" / "state" / "neuronos" / "looking-glass"
        return folder / f"{validate_name(vm_name)}.log"

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
        config, note = self._with_spice(vm_name, config or LGClientConfig(vm_name))
        build_argv(self.client, config, self.release)  # a bad setting fails here, not later
        with self._lock:
            entry = self._clients.get(vm_name)
            if entry is not None and entry.thread is not None and entry.thread.is_alive():
                return  # already supervised
            entry = _Client(config, note=note)
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
        elif entry.thread is None and entry.state != LGState.STOPPED:  # waited for a resume
            self._set(vm_name, LGState.STOPPED, "stopped")

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
        relay = None
        try:
            if entry.config.spice and entry.config.spice_libvirt is not None:
                relay = self._spice_relay(vm_name, entry.config.spice_libvirt)
                entry.config = replace(entry.config, spice_host=str(relay.path), spice_port=0)
            self._supervise_loop(vm_name, entry)
        except Exception as error:  # never die silently: say why in the state
            log.exception("Looking Glass supervisor for %s failed", vm_name)
            self._set(vm_name, LGState.ERROR, str(error))
        finally:
            if relay is not None:
                relay.close()

    def _spice_relay(self, vm_name: str, index: int) -> SpiceRelay:
        """The client's way to a SPICE server with no address: a socket only the client's
        user reaches, each connection joined by libvirt (``display.spice_relay``)."""
        connection, user = self.connection, self._client_user()
        owner = None
        if user is not None:
            who = user_credentials(user)
            owner = (who.uid, who.gid)
        return SpiceRelay(vm_name, lambda: connection.execute(
            lambda conn: connection.lookup(conn, vm_name).openGraphicsFD(index, 0)), owner)

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
            note = self._release_note(vm_name, entry) + (f"; {entry.note}" if entry.note else "")
            self._set(vm_name, LGState.STARTING, f"starting {self.client.name}{note} (its log:"
                      f" {self.log_path(vm_name)})")
            offset = self._launch(vm_name, entry)
            code = self._watch(vm_name, entry)
            (self.log_dir / f"{vm_name}.pid").unlink(missing_ok=True)  # it is gone
            with self._lock:
                restart_now, entry.restart_now = entry.restart_now, False
            if entry.cancel.is_set():
                break
            if restart_now:
                continue  # fullscreen toggle: not a failure
            config = entry.config
            if self._vm_running(vm_name) is False:  # the VM's state decides, not the log:
                self._set(vm_name, LGState.STOPPED, "the VM stopped; its window closed with"
                          f" it (exit status {code})")  # B7 exits 0 as SPICE goes away
                return
            ended = judge_exit(code, read_log_tail(self.log_path(vm_name), offset),
                               (config.spice_host, config.spice_port) if config.spice else None)
            if not ended.failed:
                self._set(vm_name, LGState.STOPPED, ended.reason)
                return
            now = time.monotonic()
            entry.failures = [t for t in entry.failures if now - t <= self.failure_window]
            entry.failures.append(now)
            if len(entry.failures) >= self.max_failures:
                self._set(vm_name, LGState.ERROR,
                          f"the client failed {len(entry.failures)} times in"
                          f" {self.failure_window:.0f} s; last: {ended.reason}")
                return
            delay = self.backoff[min(len(entry.failures), len(self.backoff)) - 1]
            self._set(vm_name, LGState.RESTARTING,
                      f"exit status {code}; restarting in {delay:g} s ({ended.reason})")
            if entry.cancel.wait(delay):
                break
        self._set(vm_name, LGState.STOPPED, "stopped")

    def _vm_running(self, vm_name: str) -> bool | None:
        """Whether the VM runs now (paused counts), as libvirt says; None when unknown."""
        if self.connection is None:
            return None
        try:
            return bool(self.connection.execute(
                lambda conn: self.connection.lookup(conn, vm_name).isActive()))
        except VMNotFound:  # undefined: it does not run
            return False
        except VMManagerError:  # libvirt unreachable: the log decides
            return None

    def _watch(self, vm_name: str, entry: _Client) -> int:
        """Wait for the client to exit (its exit status); "running" once it survived its
        start (a bad option exits at once). Meanwhile the header's heartbeat, which has no
        change notification, is read every ``heartbeat_interval`` s: the only periodic read
        of a session, and it stops with the client."""
        process = entry.process
        try:
            return process.wait(self.settle)
        except subprocess.TimeoutExpired:
            self._set(vm_name, LGState.RUNNING, f"pid {process.pid}")
        beat = Heartbeat(entry.config.shm_path)
        while True:
            try:
                return process.wait(self.heartbeat_interval)
            except subprocess.TimeoutExpired:
                pass
            alive, state = beat.alive(), self.get_state(vm_name)
            if not alive and state == LGState.RUNNING:
                self._set(vm_name, LGState.HOST_STOPPED,
                          "the guest's host application stopped (Windows shut down or"
                          " restarted, or the host app quit); the window waits for it")
            elif alive and state == LGState.HOST_STOPPED:
                self._set(vm_name, LGState.RUNNING, "the guest's host application is back")

    def _launch(self, vm_name: str, entry: _Client) -> int:
        argv = build_argv(self.client, entry.config, self.release)
        path = self.log_path(vm_name)
        private_folder(self.log_dir)  # its pid file
        user = self._client_user()
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        who = user_credentials(user) if user is not None else None
        if who is not None and path.is_relative_to(who.home) and who.home != "/":
            # the log in the user's own home, which they may fill with symlinks: opened
            # there step by step without following one, and theirs (they read it)
            fd = open_beneath(who.home, path.relative_to(who.home), flags, (who.uid, who.gid))
        else:
            private_folder(path.parent)
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "ab") as handle:  # the child keeps its own copy of the descriptor
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

    def _with_spice(self, vm_name: str, config: LGClientConfig) -> tuple[LGClientConfig, str]:
        """The config with the VM's live SPICE port, or with SPICE off (and what that
        means, for the user) when the VM has no SPICE graphics at all."""
        if not config.spice or config.spice_port is not None or self.connection is None:
            return config, ""
        from ..base.domain_xml import read_domain

        info = read_domain(self.connection.execute(
            lambda conn: self.connection.lookup(conn, vm_name).XMLDesc(0)))
        spice = [graphics for graphics in info.graphics if graphics.type == "spice"]
        if not spice:
            log.warning("%s: %s", vm_name, NO_SPICE)
            return replace(config, spice=False), NO_SPICE
        if spice[0].listen_type == "none":  # no address: libvirt hands out connections
            return replace(config, spice_libvirt=info.graphics.index(spice[0])), ""
        return replace(config, spice_port=info.spice_port), ""


_manager: LookingGlassManager | None = None


def get_looking_glass_manager() -> LookingGlassManager:
    """The process-wide manager (the design notes' entry point)."""
    global _manager
    if _manager is None:
        _manager = LookingGlassManager()
    return _manager
