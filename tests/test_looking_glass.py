"""Looking Glass supervision with a fake client that behaves like a real B7 build."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from vm_manager.cli import main
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.errors import OperationTimedOut
from vm_manager.core.looking_glass import (
    LGClientConfig,
    LGState,
    LookingGlassError,
    LookingGlassManager,
)
from vm_manager.display.lg_client import build_argv, client_release
from vm_manager.display.lgmp import read_header, wait_for_host
from support.fakes import FakeDomain, FakeLGHost, FakeSpiceServer
from vm_manager.base.primitives import VMState

FAKE = Path(__file__).parent / "bin" / "looking-glass-client"
AS_ROOT = os.geteuid() == 0
RUN_AS = "nobody" if AS_ROOT else None  # the real client refuses root; so does the fake


@pytest.fixture
def shared():
    """A folder the client's user can reach (pytest's tmp folders, and maybe the checkout,
    are root-only), holding a copy of the fake client."""
    folder = Path(tempfile.mkdtemp(prefix="neuronos-lg-"))
    os.chmod(folder, 0o777)
    shutil.copy(FAKE, folder / "looking-glass-client")
    os.chmod(folder / "looking-glass-client", 0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def lg(shared, tmp_path, monkeypatch):
    """(manager factory, shm path, record file, script file)."""
    shm = shared / "looking-glass-vm1"
    shm.write_bytes(b"\0" * 65536)
    os.chmod(shm, 0o666)
    record, script = shared / "argv.jsonl", shared / "script"
    for path in (record, script):
        path.write_text("")
        os.chmod(path, 0o666)
    monkeypatch.setenv("FAKE_LG_RECORD", str(record))
    monkeypatch.setenv("FAKE_LG_SCRIPT", str(script))
    managers = []

    def make(**kwargs) -> LookingGlassManager:
        options = dict(client=shared / "looking-glass-client", log_dir=tmp_path / "logs",
                       run_as=RUN_AS,
                       backoff=(0.05, 0.1, 0.2), stop_timeout=2.0, host_timeout=10.0)
        options.update(kwargs)
        manager = LookingGlassManager(**options)
        managers.append(manager)
        return manager

    yield make, shm, record, script
    for manager in managers:
        manager.stop_all()


def config(shm: Path, **kwargs) -> LGClientConfig:
    return LGClientConfig("vm1", shm_path=shm, spice=False, **kwargs)


def recorded(record: Path) -> list[list[str]]:
    return [json.loads(line) for line in record.read_text().splitlines() if line]


def changes_of(manager):
    seen = []
    manager.subscribe(seen.append)
    return seen


# --- the command line -----------------------------------------------------------------------

def test_release_from_help(shared):
    """The real client refuses root even for --help, with no version line (DESIGN.md 4.1):
    root reads the release as the user the client will run as."""
    import subprocess

    fake = shared / "looking-glass-client"
    if AS_ROOT:
        refused = subprocess.run([str(fake), "--help"], capture_output=True, text=True)
        assert "Do not run looking glass as root!" in refused.stderr
        assert "Looking Glass (" not in refused.stderr  # like the real one: no version line
        assert client_release(fake) is None
    assert client_release(fake, user=RUN_AS) == "B7"


def test_doctor_reads_the_release_as_the_desktop_user(shared):
    from vm_manager.doctor.host_check import OK, WARN, check_looking_glass_client

    fake = str(shared / "looking-glass-client")
    if not AS_ROOT:
        check = check_looking_glass_client({"NEURONOS_LG_CLIENT": fake, "USER": "me"})
        assert check.status == OK and "release B7" in check.detail
        return
    check = check_looking_glass_client({"NEURONOS_LG_CLIENT": fake, "SUDO_USER": RUN_AS})
    assert check.status == OK and "release B7" in check.detail, check
    check = check_looking_glass_client({"NEURONOS_LG_CLIENT": fake, "USER": "root"})
    assert check.status == WARN and "cannot be read as root" in check.detail, check
    assert "as your desktop user" in check.fix


def test_an_unknown_or_mismatched_release_is_said_once():
    from vm_manager.display.lg_client import release_note

    note = release_note("B7", None)
    assert "release could not be read" in note and "non-root" in note
    assert release_note("B7", None, unknown_said=True) == ""  # once, not on every restart
    assert "B6 but the client is B7" in release_note("B6", "B7")
    assert release_note("B7", "B7-rc1") == "" and release_note(None, "B7") == ""


def test_argv_per_release():
    cfg = LGClientConfig("win11", spice_port=5901, escape_key="KEY_RIGHTCTRL", fps_min=60,
                         window_size=(1920, 1080))
    argv = build_argv("/usr/bin/looking-glass-client", cfg, "B7")
    assert "app:shmFile=/dev/shm/looking-glass-win11" in argv
    assert "input:escapeKey=KEY_RIGHTCTRL" in argv
    assert ["spice:enable=yes", "spice:host=127.0.0.1", "spice:port=5901"] == argv[8:11]
    assert "win:fpsMin=60" in argv and "win:size=1920x1080" in argv
    assert not any(arg in ("-g", "-s", "-F", "-G") for arg in argv)  # no toggles, no renderer
    assert "input:escapeKey=97" in build_argv("lg", cfg, "B5")  # B5: numeric keycodes only
    assert "input:escapeKey=KEY_RIGHTCTRL" in build_argv("lg", cfg, "B6")
    assert "input:escapeKey=70" in build_argv("lg", LGClientConfig("x", spice=False), "B5")
    with pytest.raises(LookingGlassError, match="SPICE port"):
        build_argv("lg", LGClientConfig("x"), "B7")


def test_the_fake_accepts_our_argv_and_rejects_a_wrong_flag(shared):
    import subprocess

    env = dict(os.environ)
    missing = shared / "nothing-here"
    fake = shared / "looking-glass-client"
    ours = build_argv(fake, config(missing, fullscreen=True, fps_min=30), "B7")
    kwargs = {"user": RUN_AS} if AS_ROOT else {}
    result = subprocess.run(ours, capture_output=True, text=True, env=env, **kwargs)
    assert result.returncode == 255, result.stderr  # parsed fine, then: no shm file
    assert "Invalid path to the ivshmem file specified" in result.stderr
    wrong = subprocess.run([str(fake), "-g", "app:shmFile=x"], capture_output=True, text=True,
                           **kwargs)
    assert wrong.returncode != 3  # -g takes a value: it eats the next argument
    wrong = subprocess.run([str(fake), "win:bogus=1"], capture_output=True, text=True, **kwargs)
    assert wrong.returncode == 3 and "unknown option" in wrong.stderr


# --- readiness -------------------------------------------------------------------------------

def test_live_header_is_accepted_and_stale_is_not(shared):
    shm = shared / "looking-glass-h"
    shm.write_bytes(b"\0" * 65536)
    with pytest.raises(OperationTimedOut, match="no LGMP header"):
        wait_for_host(shm, timeout=0.3)
    host = FakeLGHost(shm, release="B7")  # header written, heartbeat not running: stale
    with pytest.raises(OperationTimedOut, match="stale header"):
        wait_for_host(shm, timeout=0.5)
    host.start()
    header = wait_for_host(shm, timeout=5)
    assert header.magic_ok and header.version == 6 and header.host_release == "B7"
    assert header.kvmfr_version == 20
    host.stop()
    assert read_header(shm).timestamp > 1


def test_permission_problem_names_file_owner_mode_and_fix(shared):
    shm = shared / "looking-glass-vm9"
    FakeLGHost(shm)
    os.chmod(shm, 0o644)
    user = RUN_AS or "root"
    if user == "root":
        pytest.skip("needs root to judge another user's rights")
    with pytest.raises(LookingGlassError) as caught:
        wait_for_host(shm, timeout=1, user=user)
    message = str(caught.value)
    assert str(shm) in message and "-rw-r--r--" in message
    assert "neuron-vm shm-permissions vm9 --apply" in message


@pytest.fixture
def group_member():
    """(user, group): a user made for the test who reaches a file only through a
    supplementary group (its primary group is its own); both removed afterwards."""
    import subprocess
    import uuid

    if not AS_ROOT:
        pytest.skip("making a user and a group needs root")
    user = f"nlg{uuid.uuid4().hex[:6]}"
    group = f"{user}-shm"
    subprocess.run(["groupadd", group], check=True)
    try:
        subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell",
                        "/usr/sbin/nologin", "--groups", group, user], check=True)
        try:
            yield user, group
        finally:
            subprocess.run(["userdel", user], check=True)
    finally:
        subprocess.run(["groupdel", group], check=True)


def test_the_client_carries_the_users_supplementary_groups(lg, group_member):
    """A shm file open to the user only through a supplementary group (``root:G 0660``):
    the check says usable, and the client really opens it (DESIGN.md 4.1: started without
    its groups, it fails 'Failed to open' and is restarted until it gives up)."""
    import grp

    from vm_manager.passthrough.ivshmem import access_problem, user_credentials

    make, shm, _, _ = lg
    user, group = group_member
    gid = grp.getgrnam(group).gr_gid
    assert gid in user_credentials(user).groups and user_credentials(user).gid != gid
    host = FakeLGHost(shm)
    os.chown(shm, 0, gid)
    os.chmod(shm, 0o660)
    assert access_problem(shm, user) is None
    manager = make(run_as=user, max_failures=2)
    host.start()
    try:
        manager.start("vm1", config(shm))
        state = manager.wait_for_state("vm1", {LGState.RUNNING, LGState.RESTARTING,
                                               LGState.ERROR}, 10)
        assert state == LGState.RUNNING, manager.reason("vm1")
        manager.stop("vm1")
    finally:
        host.stop()
    assert "Failed to open" not in manager.log_path("vm1").read_text()


# --- supervision -----------------------------------------------------------------------------

def test_starts_when_the_host_is_live_and_stops_cleanly(lg):
    make, shm, record, _ = lg
    manager = make()
    seen = changes_of(manager)
    manager.start("vm1", config(shm))
    assert manager.wait_for_state("vm1", {LGState.WAITING}, 5) == LGState.WAITING
    host = FakeLGHost(shm).start()
    try:
        assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
        argv = recorded(record)[-1]
        assert f"app:shmFile={shm}" in argv and "spice:enable=no" in argv
        manager.stop("vm1")
    finally:
        host.stop()
    assert manager.get_state("vm1") == LGState.STOPPED
    assert not (manager.log_dir / "vm1.pid").exists()  # a stopped client leaves no pid file
    states = [c.new for c in seen]
    assert LGState.RESTARTING not in states and LGState.ERROR not in states  # our stop
    assert "Looking Glass (B7)" in manager.log_path("vm1").read_text()
    assert manager.release == "B7"  # read as the client's user, also when we are root
    starting = [c.reason for c in seen if c.new == LGState.STARTING]
    assert starting and "could not be read" not in starting[0], starting


def test_crash_restarts_with_backoff_then_gives_up(lg):
    make, shm, _, script = lg
    script.write_text("crash\n" * 10)
    manager = make(max_failures=3)
    seen = changes_of(manager)
    host = FakeLGHost(shm).start()
    try:
        manager.start("vm1", config(shm))
        assert manager.wait_for_state("vm1", {LGState.ERROR}, 20) == LGState.ERROR
    finally:
        host.stop()
    restarts = [c for c in seen if c.new == LGState.RESTARTING]
    assert len(restarts) == 2
    assert "restarting in 0.05 s" in restarts[0].reason
    assert "restarting in 0.1 s" in restarts[1].reason
    assert "exit status -6" in restarts[0].reason  # B7's crash handler aborts: SIGABRT
    reason = manager.reason("vm1")
    assert "failed 3 times" in reason and "==== FATAL CRASH (B7) ====" in reason
    assert "signal 11 (Segmentation fault)" in reason and "[trace]" not in reason
    assert not (manager.log_dir / "vm1.pid").exists()  # the client is gone: so is its pid file


def test_crash_then_recovery(lg):
    make, shm, record, script = lg
    script.write_text("crash\nrun\n")
    manager = make()
    host = FakeLGHost(shm).start()
    try:
        manager.start("vm1", config(shm))
        deadline = time.monotonic() + 10
        while len(recorded(record)) < 2 and time.monotonic() < deadline:
            manager.wait_for_state("vm1", {LGState.ERROR}, 0.1)
        assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
        assert len(recorded(record)) == 2
    finally:
        host.stop()


@pytest.mark.parametrize("behaviour", ["quit", "quit-early"])
def test_user_close_is_not_restarted(lg, behaviour):
    """Closed in a session (exit 0) or before the host connected (exit 255): the user's
    quit, though a healthy B7 start logs [E] lines (PulseAudio, BadAtom) (was: restarted)."""
    make, shm, record, script = lg
    script.write_text(behaviour + "\n")
    manager = make()
    seen = changes_of(manager)
    host = FakeLGHost(shm).start()
    try:
        manager.start("vm1", config(shm))
        assert manager.wait_for_state("vm1", {LGState.STOPPED}, 10) == LGState.STOPPED
        time.sleep(0.3)  # a wrongly scheduled restart (backoff 0.05 s) would show by now
    finally:
        host.stop()
    assert manager.reason("vm1") == "closed by the user"
    assert "[E]" in manager.log_path("vm1").read_text()  # the noise was there
    assert LGState.RESTARTING not in [c.new for c in seen]
    assert len(recorded(record)) == 1


def test_sigterm_ignored_means_sigkill_after_the_timeout(lg):
    make, shm, _, script = lg
    script.write_text("ignore-term\n")
    manager = make(stop_timeout=0.5)
    host = FakeLGHost(shm).start()
    try:
        manager.start("vm1", config(shm))
        assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
        process = manager._clients["vm1"].process
        started = time.monotonic()
        manager.stop("vm1")
        assert time.monotonic() - started >= 0.5
        assert process.returncode == -signal.SIGKILL
    finally:
        host.stop()
    assert manager.get_state("vm1") == LGState.STOPPED


def test_fullscreen_toggle_restarts_the_client_only(lg):
    make, shm, record, _ = lg
    manager = make()
    seen = changes_of(manager)
    host = FakeLGHost(shm).start()
    try:
        manager.start("vm1", config(shm))
        assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
        assert manager.toggle_fullscreen("vm1") is True
        deadline = time.monotonic() + 10
        while len(recorded(record)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
    finally:
        host.stop()
    first, second = recorded(record)[:2]
    assert "win:fullScreen=no" in first and "win:fullScreen=yes" in second
    assert LGState.RESTARTING not in [c.new for c in seen]


@pytest.mark.skipif(not AS_ROOT, reason="the refusal is about running as root")
def test_root_without_a_desktop_user_is_refused(lg):
    make, shm, _, _ = lg
    with pytest.raises(LookingGlassError, match="refuses to run as root"):
        make(run_as=None).start("vm1", config(shm))


def test_stops_when_the_vm_stops(lg, make_host):
    from conftest import lifecycle_on

    make, shm, _, _ = lg
    uri = make_host([FakeDomain("vm1")])
    manager = make()
    host = FakeLGHost(shm).start()
    try:
        with lifecycle_on(uri) as lifecycle:
            manager.follow(lifecycle, lambda name: config(shm) if name == "vm1" else None)
            lifecycle.start("vm1")
            assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
            lifecycle.stop("vm1")
            assert manager.wait_for_state("vm1", {LGState.STOPPED}, 10) == LGState.STOPPED
    finally:
        host.stop()


def test_no_sigusr1_and_no_unread_pipes_anywhere():
    source = Path(__file__).resolve().parents[1] / "src" / "vm_manager"
    for path in source.rglob("*.py"):
        code = "\n".join(line.split("#")[0] for line in path.read_text().splitlines())
        assert "SIGUSR1)" not in code and "signal.SIGUSR1" not in code, path
        if path.name == "looking_glass.py":
            assert "PIPE" not in re.sub(r'"""[\s\S]*?"""', "", code), path


def test_cli_display_without_looking_glass_exits_2(three_vm_uri):
    with LibvirtConnection(three_vm_uri) as conn:
        out, err = io.StringIO(), io.StringIO()
        assert main(["display", "alpha"], connection=conn, out=out, err=err) == 2
        assert "has no Looking Glass" in err.getvalue()
        assert main(["start", "beta", "--display"], connection=conn, out=out, err=err) == 2
        assert conn.execute(lambda c: c.lookupByName("beta").isActive()) == 0  # not booted


def test_spice_port_is_read_from_the_live_domain(make_host, tmp_path):
    uri = make_host()
    xml = ("<domain type='test'><name>sp</name><memory unit='MiB'>512</memory><vcpu>1</vcpu>"
           "<os><type>hvm</type></os><devices><graphics type='spice' port='5930'"
           " autoport='no' listen='127.0.0.1'/></devices></domain>")
    with LibvirtConnection(uri) as conn:
        conn.execute(lambda c: c.defineXML(xml))
        manager = LookingGlassManager(client=FAKE, log_dir=tmp_path, connection=conn)
        config, note = manager._with_spice("sp", LGClientConfig("sp"))
        assert config.spice and config.spice_port == 5930 and note == ""


def test_every_state_is_told_in_order_before_it_can_be_seen(lg, shared):
    """`display` returns on a state it sees: each subscriber must have heard that state
    first, and the state right after ``start`` is already the first one told (issue 13:
    the last line was lost; a display could see the initial "stopped" and quit)."""
    make, _, _, _ = lg
    manager = make(host_timeout=0.3)
    heard = []

    def slow(change):
        time.sleep(0.2)  # a terminal that takes its time
        heard.append(change.new)

    manager.subscribe(slow)
    manager.start("vm1", config(shared / "no-such-shm"))
    assert manager.get_state("vm1") == LGState.WAITING and heard == [LGState.WAITING]
    assert manager.wait_for_state("vm1", {LGState.ERROR}, 10) == LGState.ERROR
    assert heard == [LGState.WAITING, LGState.ERROR]  # told before wait_for_state saw it
    assert "not running in the guest" in manager.reason("vm1")



# --- what a B7 client does when it ends, starts without SPICE, or loses its host (issue 13) --

def b7(*lines: str) -> list[str]:
    """Log lines in B7's format (common/src/debug.c)."""
    out = []
    for n, line in enumerate(lines):
        level, _, text = line.partition(" ")
        out.append(f"00:00:0{n}.123 [{level}]            main.c:1858 | lg_run"
                   f"                         | {text}")
    return out


NOISE = ("E context error: Connection refused", "E X11 Error: BadAtom (invalid Atom parameter)")


def test_judge_exit_reads_what_a_b7_client_does():
    from vm_manager.display.lg_client import judge_exit

    waiting = b7("I Looking Glass (B7)", *NOISE, "I The host application seems to not be running",
                 "I Waiting for the host application to start...")
    session = waiting + b7("I Guest Information:", "I Version  : B7", "I Starting session")
    # a healthy start's [E] lines decide nothing: closed while waiting, or in a session
    assert not judge_exit(255, waiting).failed
    assert not judge_exit(0, session).failed
    assert not judge_exit(255, session + b7("I Waiting for the host to restart...")).failed
    assert judge_exit(255, session).failed  # a session ends with 0
    crash = judge_exit(-6, session + b7("E ==== FATAL CRASH (B7) ====",
                                        "E signal 11 (Segmentation fault), address is 0x10",
                                        "E [trace]: (0) /usr/bin/looking-glass-client(+0x1)"))
    assert crash.failed and "==== FATAL CRASH (B7) ==== signal 11" in crash.reason
    assert "[trace]" not in crash.reason
    assert judge_exit(-9, session).failed and "SIGKILL" in judge_exit(-9, session).reason
    assert not judge_exit(-15, session).failed
    spice = judge_exit(255, b7("I Looking Glass (B7)", "E Failed to connect to spice server"),
                       ("127.0.0.1", 5931))
    assert spice.failed and "SPICE server at 127.0.0.1:5931" in spice.reason
    shm = judge_exit(255, b7("E Failed to open: /dev/shm/looking-glass-w", "E Permission denied"))
    assert shm.failed and "Failed to open: /dev/shm/looking-glass-w" in shm.reason
    lost = judge_exit(0, session + b7("E failed to process spice messages"), ("127.0.0.1", 5))
    assert lost.failed and "SPICE" in lost.reason


def test_sigterm_from_outside_during_a_session_is_a_quit(lg):
    make, shm, record, _ = lg
    manager = make()
    host = FakeLGHost(shm).start()
    try:
        manager.start("vm1", config(shm))
        assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
        deadline = time.monotonic() + 10
        while "Starting session" not in manager.log_path("vm1").read_text():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        process = manager._clients["vm1"].process
        process.send_signal(signal.SIGTERM)  # e.g. the desktop's session ending
        assert manager.wait_for_state("vm1", {LGState.STOPPED}, 10) == LGState.STOPPED
    finally:
        host.stop()
    assert process.returncode == 0 and len(recorded(record)) == 1


def test_the_host_app_stopping_is_told_from_the_heartbeat_and_the_window_stays(lg):
    """B7 keeps its window when the guest's host app goes (`Waiting for the host to
    restart...`) and starts a session again when it returns: the manager says host-stopped
    (from the header, not the log), then running, and never restarts the client."""
    make, shm, record, _ = lg
    manager = make()
    seen = changes_of(manager)
    host = FakeLGHost(shm).start()
    try:
        manager.start("vm1", config(shm))
        assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
        pid = manager._clients["vm1"].process.pid
        host.stop()  # Windows shut down inside, or the host app quit
        assert manager.wait_for_state("vm1", {LGState.HOST_STOPPED}, 10) == \
            LGState.HOST_STOPPED, manager.reason("vm1")
        assert "host application stopped" in manager.reason("vm1")
        host.start(new_session=True)  # it is back, with a new session id
        assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
        assert manager._clients["vm1"].process.pid == pid  # the same window
        deadline = time.monotonic() + 10
        while manager.log_path("vm1").read_text().count("Starting session") < 2:
            assert time.monotonic() < deadline, manager.log_path("vm1").read_text()
            time.sleep(0.05)
        assert "Waiting for the host to restart..." in manager.log_path("vm1").read_text()
        manager.stop("vm1")
    finally:
        host.stop()
    states = [c.new for c in seen]
    assert states.count(LGState.STARTING) == 1 and LGState.RESTARTING not in states
    assert states.index(LGState.HOST_STOPPED) < len(states) - 1
    assert not (manager.log_dir / "vm1.pid").exists()


def test_an_unreachable_spice_port_is_named_in_the_error(lg):
    """B7 connects to SPICE before anything else and exits 255 at once without it."""
    make, shm, _, _ = lg
    with FakeSpiceServer() as spice:
        port = spice.port  # closed below: nothing listens there any more
    manager = make(max_failures=2)
    host = FakeLGHost(shm).start()
    try:
        manager.start("vm1", LGClientConfig("vm1", shm_path=shm, spice_port=port))
        assert manager.wait_for_state("vm1", {LGState.ERROR}, 20) == LGState.ERROR
    finally:
        host.stop()
    reason = manager.reason("vm1")
    assert f"SPICE server at 127.0.0.1:{port}" in reason, reason
    assert "Failed to connect to spice server" in manager.log_path("vm1").read_text()


def test_a_session_with_spice(lg):
    make, shm, record, _ = lg
    manager = make()
    host = FakeLGHost(shm).start()
    try:
        with FakeSpiceServer() as spice:
            manager.start("vm1", LGClientConfig("vm1", shm_path=shm, spice_port=spice.port))
            assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
            assert len(spice.connections) == 1
            manager.stop("vm1")
    finally:
        host.stop()
    assert f"spice:port={spice.port}" in recorded(record)[-1]


def test_a_vm_without_spice_graphics_is_shown_without_spice(lg, make_host):
    """Allowed with spice:enable=no, and the user is told what that leaves out (was: an
    error, 'the SPICE port is unknown'). A VM with SPICE keeps it."""
    make, shm, record, _ = lg
    uri = make_host()
    plain = ("<domain type='test'><name>vm1</name><memory unit='MiB'>512</memory><vcpu>1"
             "</vcpu><os><type>hvm</type></os><devices/></domain>")
    with LibvirtConnection(uri) as conn:
        conn.execute(lambda c: c.defineXML(plain))
        manager = make(connection=conn)
        seen = changes_of(manager)
        host = FakeLGHost(shm).start()
        try:
            manager.start("vm1", LGClientConfig("vm1", shm_path=shm))
            assert manager.wait_for_state("vm1", {LGState.RUNNING, LGState.ERROR}, 10) == \
                LGState.RUNNING, manager.reason("vm1")
            manager.stop("vm1")
        finally:
            host.stop()
    assert "spice:enable=no" in recorded(record)[-1]
    starting = next(c.reason for c in seen if c.new == LGState.STARTING)
    assert "no SPICE graphics" in starting and "keyboard, mouse and clipboard" in starting


def test_a_client_that_ends_as_its_vm_goes_says_the_vm_stopped(lg, make_host):
    """Issue 27, item 5: B7 exits 0 by itself when the VM goes (its SPICE server with it),
    before NeuronOS stops it; the outcome is decided from the VM's state at that moment,
    not from log lines: "the VM stopped", never "closed by the user" nor a restart. The
    same drop while the VM runs is a failure, and the client is started again."""
    make, shm, _, _ = lg
    uri = make_host([FakeDomain("vm1", VMState.RUNNING)])
    with LibvirtConnection(uri) as conn:
        manager = make(connection=conn)
        host = FakeLGHost(shm).start()
        try:
            spice = FakeSpiceServer()
            manager.start("vm1", LGClientConfig("vm1", shm_path=shm, spice_port=spice.port))
            assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
            spice.close()  # a drop while the VM runs: a failure, restarted
            assert manager.wait_for_state("vm1", {LGState.RESTARTING, LGState.ERROR}, 10) \
                == LGState.RESTARTING, manager.reason("vm1")
            manager.stop("vm1")
            spice = FakeSpiceServer()
            manager.start("vm1", LGClientConfig("vm1", shm_path=shm, spice_port=spice.port))
            assert manager.wait_for_state("vm1", {LGState.RUNNING}, 10) == LGState.RUNNING
            conn.execute(lambda c: c.lookupByName("vm1").destroy())  # the VM goes...
            spice.close()  # ...and its SPICE server with it: the client exits by itself
            assert manager.wait_for_state("vm1", {LGState.STOPPED, LGState.RESTARTING,
                                                  LGState.ERROR}, 10) == LGState.STOPPED
            assert manager.reason("vm1").startswith("the VM stopped; its window closed"), \
                manager.reason("vm1")
        finally:
            host.stop()
