"""The Looking Glass client program on this host: where it is, which release it is, and
the command line for one VM (DESIGN.md 4.1: read in the Looking Glass sources at B5-B7 and
checked with a real B7 client).

- The command line uses long ``section:key=value`` forms with explicit values: short
  boolean flags *toggle* (``-s`` turns SPICE off), and ``-g`` is the renderer, not grab.
- The escape key is a name on B6+ and a numeric keycode on B5 (a name silently becomes 0).
- There is no ``--version``: ``--help`` prints ``Looking Glass (<release>)`` behind a log
  prefix. The client refuses root even for ``--help``, so the release is read as the user
  the client will run as.

Supervising the running client is ``core.looking_glass``'s job; this module only finds and
describes it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ..base import guard
from ..base.errors import InvalidConfig, LookingGlassError
from ..passthrough.ivshmem import shm_path, user_credentials

CLIENT_NAME = "looking-glass-client"
USUAL_PATHS = (
    "/usr/bin/looking-glass-client",
    "/usr/local/bin/looking-glass-client",
    "/opt/looking-glass/bin/looking-glass-client",
    "/opt/looking-glass/client/build/looking-glass-client",
)
_VERSION = re.compile(r"Looking Glass \(([^)]+)\)")
# B5 takes numeric keycodes only (linux/input-event-codes.h); B6+ take KEY_* names.
KEYCODES = {"KEY_SCROLLLOCK": 70, "KEY_RIGHTCTRL": 97, "KEY_LEFTCTRL": 29,
            "KEY_RIGHTALT": 100, "KEY_LEFTALT": 56, "KEY_RIGHTSHIFT": 54, "KEY_LEFTSHIFT": 42,
            "KEY_RIGHTMETA": 126, "KEY_LEFTMETA": 125, "KEY_INSERT": 110, "KEY_PAUSE": 119}


@dataclass
class LGClientConfig:
    """How to show one VM. ``spice_port`` None: read from the running domain."""

    vm_name: str
    shm_path: Path | None = None  # default /dev/shm/looking-glass-<vm>
    fullscreen: bool = False
    borderless: bool = False
    no_screensaver: bool = True
    grab_keyboard: bool = True
    escape_key: str = "KEY_SCROLLLOCK"  # the client's own default
    fps_min: int | None = None  # win:fpsMin, a frame-rate MINIMUM (there is no limit option)
    spice: bool = True
    spice_host: str = "127.0.0.1"  # or a unix socket's path, with port 0
    spice_port: int | None = None
    spice_libvirt: int | None = None  # SPICE reached through libvirt: that graphics index
    window_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.shm_path is None:
            self.shm_path = shm_path(self.vm_name)
        self.shm_path = Path(self.shm_path)
        key = self.escape_key.upper()
        if not (key in KEYCODES or re.fullmatch(r"KEY_[A-Z0-9_]+", key) or key.isdigit()):
            raise InvalidConfig("escape_key", f"{self.escape_key!r} is not a key name like"
                                " KEY_RIGHTCTRL")
        self.escape_key = key


# --- finding the client -------------------------------------------------------------------


def find_client(environ: dict | None = None) -> Path | None:
    """``$NEURONOS_LG_CLIENT``, then ``looking-glass-client`` on PATH, then the usual
    install paths."""
    env = os.environ if environ is None else environ
    override = env.get("NEURONOS_LG_CLIENT")
    if override:
        return Path(override) if os.access(override, os.X_OK) else None
    on_path = shutil.which(CLIENT_NAME, path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    for candidate in USUAL_PATHS:
        if os.access(candidate, os.X_OK):
            return Path(candidate)
    return None


def client_release(client: Path, timeout: float = 5.0, user: str | None = None) -> str | None:
    """The release (``B7``, ``B6``, ``B7-188-g...``): the client has no --version; the first
    stderr lines carry ``Looking Glass (<release>)`` behind a log prefix, and ``--help``
    prints them too (then exits 255). It refuses root before printing anything (DESIGN.md
    4.1), so root reads it as ``user``, the user the client will run as; None if unknown."""
    guard.check("looking-glass-client --help")
    try:
        result = subprocess.run([str(client), "--help"], capture_output=True, text=True,
                                timeout=timeout, check=False, **as_user(user))
    except (OSError, subprocess.SubprocessError):
        return None
    match = _VERSION.search(result.stderr + result.stdout)
    return match.group(1) if match else None


def release_number(release: str | None) -> int | None:
    match = re.match(r"B(\d+)", release or "")
    return int(match.group(1)) if match else None


def release_note(host: str | None, client: str | None, unknown_said: bool = False) -> str:
    """What the user must hear about the releases ("" for nothing): the guest's host app
    and the client must be the same release; an unknown client release is said (once)."""
    if client is None:
        return "" if unknown_said else (
            "the client's release could not be read (it tells it only to a non-root user),"
            " so B5 key names are not converted and the host/client release check is skipped")
    if host and release_number(host) != release_number(client):
        return (f"the guest's host application is {host} but the client is {client}: they"
                " must be the same release")
    return ""


def build_argv(client: Path | str, config: LGClientConfig, release: str | None) -> list[str]:
    """The client's command line for that release: long forms, explicit values."""

    def yes(flag: bool) -> str:
        return "yes" if flag else "no"

    number = release_number(release)
    escape = config.escape_key
    if number is not None and number <= 5 and not escape.isdigit():
        if escape not in KEYCODES:
            raise InvalidConfig("escape_key", f"Looking Glass {release} takes numeric keycodes;"
                                f" {escape} has none known here")
        escape = str(KEYCODES[escape])  # B5 turns a name into 0 silently
    argv = [
        str(client),
        f"app:shmFile={config.shm_path}",
        f"win:title=NeuronOS: {config.vm_name}",
        f"win:fullScreen={yes(config.fullscreen)}",
        f"win:borderless={yes(config.borderless)}",
        f"win:noScreensaver={yes(config.no_screensaver)}",
        f"input:grabKeyboard={yes(config.grab_keyboard)}",
        f"input:escapeKey={escape}",
        f"spice:enable={yes(config.spice)}",
    ]
    if config.spice:
        if config.spice_port is None and config.spice_libvirt is None:
            raise LookingGlassError(f"{config.vm_name}: the SPICE port is unknown (is the VM"
                                    " running with SPICE graphics?)")
        argv += [f"spice:host={config.spice_host}", f"spice:port={config.spice_port or 0}"]
    if config.fps_min is not None:
        argv.append(f"win:fpsMin={config.fps_min}")
    if config.window_size is not None:
        argv.append(f"win:size={config.window_size[0]}x{config.window_size[1]}")
    return argv


# --- the client's exit -----------------------------------------------------------------------
# What a B7 client does when it ends (DESIGN.md 4.1, and B7's client/src/main.c): the user
# closing the window, or SIGTERM/SIGINT, exits 0 in a session and 255 while it waits for
# the host; a crash logs "==== FATAL CRASH (B7) ====" and aborts (-6); a start-up failure
# logs one of the lines below and exits 255. Other "[E]" lines (PulseAudio unreachable, X11
# BadAtom) come with healthy sessions too and decide nothing.

FATAL_CRASH = "==== FATAL CRASH"
SPICE_FAILED = "Failed to connect to spice server"
SPICE_LOST = "failed to process spice messages"  # then B7 shuts down, exit 0
STARTUP_FAILURES = (  # logged right before lg_run() returns -1
    "Do not run looking glass as root", "Do not run looking glass as setuid",
    "No display servers available", "Subsystem early init failed", "Failed to open:",
    "Failed to stat:", "Failed to get the device size", "Failed to map",
    "Invalid path to the ivshmem file", SPICE_FAILED, "spice create thread failed",
    "Forced renderer failed", "Unable to find a suitable renderer",
    "Failed to initialize the displayserver backend", "render create thread failed",
    "lgmpClientInit Failed", "lgmpClientSessionInit Failed", "failed to create the",
)
SESSION_STARTED = "Starting session"
SESSION_LOST = "Waiting for the host to restart..."
_LINE = re.compile(r"^\S+ \[(?P<level>[IWETF!])\] .*? \| .*? \| (?P<message>.*)$")


@dataclass(frozen=True)
class ClientExit:
    """How one run of the client ended: ``failed`` (restart it) or a normal quit."""

    failed: bool
    reason: str


def read_log_tail(path: Path, offset: int, lines: int = 40) -> list[str]:
    """The last ``lines`` lines the client wrote to its log since ``offset`` (our own
    ``---`` launch lines left out)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            text = handle.read().decode(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line and not line.startswith("---")][-lines:]


def log_messages(lines: list[str]) -> list[tuple[str, str]]:
    """(level, message) of each line in the client's log format (``00:00:01.234 [E]
    file.c:12 | function | message``); other lines are ("", line)."""
    out = []
    for line in lines:
        match = _LINE.match(line.strip())
        out.append((match["level"], match["message"].strip()) if match else ("", line.strip()))
    return out


def judge_exit(code: int, tail: list[str], spice: tuple[str, int] | None = None) -> ClientExit:
    """Crash, failure or quit, from the exit status, the signal and the lines a B7 client
    writes for each (never from "[E]" lines as such). ``spice``: where it was told to
    connect, for the reason when it could not."""
    messages = [message for _, message in log_messages(tail)]

    def first(*needles: str) -> str | None:
        return next((m for m in messages if any(n in m for n in needles)), None)

    where = "" if not spice else f" at {spice[0]}" + (f":{spice[1]}" if spice[1] else "")
    crash = first(FATAL_CRASH)
    if crash is not None:
        after = messages[messages.index(crash) + 1:]
        detail = after[0] if after and after[0].startswith("signal ") else ""
        return ClientExit(True, f"the client crashed: {crash}" + (f" {detail}" if detail else ""))
    if code < 0:
        name = signal.Signals(-code).name if -code in signal.valid_signals() else str(-code)
        if -code in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            return ClientExit(False, f"closed by {name}")
        return ClientExit(True, f"the client was killed by {name}")
    if first(SPICE_FAILED):
        return ClientExit(True, f"the client could not connect to the VM's SPICE server{where}"
                                " (it needs SPICE before it shows anything; is the VM running"
                                " with SPICE graphics?)")
    if code == 0:
        if first(SPICE_LOST):
            return ClientExit(True, f"the client lost the VM's SPICE server{where}")
        return ClientExit(False, "closed by the user")
    failure = first(*STARTUP_FAILURES)
    if failure is not None:
        return ClientExit(True, f"the client could not start: {failure}")
    markers = [m for m in messages if m in (SESSION_STARTED, SESSION_LOST)]
    if markers and markers[-1] == SESSION_STARTED:  # a session ends with 0, not this
        errors = [message for level, message in log_messages(tail) if level == "E"]
        return ClientExit(True, f"the client exited with status {code} during a session"
                                + (f" (last error: {errors[-1]})" if errors else ""))
    return ClientExit(False, "closed by the user")  # 255 while waiting: the window closed


# --- the client as a process of the desktop user ------------------------------------------------

def user_id(user: str) -> int:
    """The uid of ``user`` (a name, or a number); refuses a user that does not exist."""
    return user_credentials(user).uid


def as_user(run_as: str | None) -> dict:
    """``subprocess`` arguments that start the client as ``run_as`` the way a login would
    (its uid, primary group and every group it is in, its HOME/USER/LOGNAME) when this
    process is root; none otherwise (it runs as this user)."""
    if run_as is None or os.geteuid() != 0:
        return {}
    who = user_credentials(run_as)
    env = dict(os.environ, HOME=who.home, USER=who.name, LOGNAME=who.name)
    return dict(user=who.uid, group=who.gid, extra_groups=list(who.groups), env=env)


def default_log_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "neuronos" / "looking-glass"


def stop_by_pid_file(vm_name: str, log_dir: Path | str | None = None,
                     timeout: float = 5.0) -> bool:
    """Stop a client another process started (its pid file in the log folder): SIGTERM,
    then SIGKILL. Returns False when there was none."""
    folder = Path(log_dir) if log_dir else default_log_dir()
    pid_file = folder / f"{vm_name}.pid"
    try:
        pid = int(pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        pid_file.unlink(missing_ok=True)
        return False
    if CLIENT_NAME.encode() not in cmdline and b"NeuronOS" not in cmdline:
        pid_file.unlink(missing_ok=True)
        return False  # the pid was reused by something else: leave it alone
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # not our child: no wait() to block on
    if Path(f"/proc/{pid}").exists():
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True
