"""State machine and VMLifecycleManager on libvirt's test driver."""

from __future__ import annotations

import io
import random
import threading
import time

import pytest

from conftest import lifecycle_on
from vm_manager.cli import main
from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.errors import (
    ConnectionFailed,
    LifecycleError,
    OperationTimedOut,
    VMNotFound,
)
from vm_manager.base.primitives import VMState
from vm_manager.core.state_machine import ALLOWED, VMStateMachine, allowed_operations
from vm_manager.core.vm_lifecycle import ShutdownMethod, VMLifecycleManager
from support.fakes import FakeDomain

S = VMState
LIBVIRT_STATES = list(VMState)[:8]


@pytest.fixture
def every_state_uri(make_host):
    """One domain per libvirt state, named after it (d-running, d-paused, ...)."""
    return make_host([FakeDomain(f"d-{state.value}", state) for state in LIBVIRT_STATES])


@pytest.fixture
def manager(three_vm_uri):
    with lifecycle_on(three_vm_uri) as lifecycle:
        yield lifecycle


def libvirt_state(manager: VMLifecycleManager, name: str) -> VMState:
    conn = manager.connection
    return VMState.from_libvirt(conn.execute(lambda c: conn.lookup(c, name).state()[0]))


# --- the table -------------------------------------------------------------------------------

@pytest.mark.parametrize("operation", sorted(ALLOWED))
@pytest.mark.parametrize("state", LIBVIRT_STATES, ids=lambda s: s.value)
def test_every_request_in_every_state(every_state_uri, operation, state):
    """begin() accepts exactly the table's pairs; a refusal changes nothing in libvirt."""
    with LibvirtConnection(every_state_uri) as conn:
        machine = VMStateMachine(conn)
        name = f"d-{state.value}"
        transitional, sources = ALLOWED[operation]
        if state in sources:
            ticket = machine.begin(name, operation, timeout=30)
            assert machine.state(name) == transitional
            machine.end(ticket)
            assert machine.state(name) == state  # nothing was done to libvirt here
        else:
            with pytest.raises(LifecycleError) as caught:
                machine.begin(name, operation, timeout=30)
            message = str(caught.value)
            assert operation in message and state.label in message
            assert "allowed now" in message
            assert machine.state(name) == state
        assert VMState.from_libvirt(
            conn.execute(lambda c: conn.lookup(c, name).state()[0])
        ) == state


def test_allowed_operations_lists():
    assert allowed_operations(S.SHUTOFF) == ["start", "delete"]
    assert "resume" in allowed_operations(S.PAUSED) and "pause" not in allowed_operations(S.PAUSED)
    assert allowed_operations(S.DELETING) == []


# --- requests on the test driver ---------------------------------------------------------------

def test_full_cycle_results(manager):
    result = manager.pause("alpha")
    assert (result.operation, result.state) == ("pause", S.PAUSED)
    assert manager.resume("alpha").state == S.RUNNING
    stopped = manager.stop("alpha")
    assert stopped.state == S.SHUTOFF and stopped.forced is False and stopped.method == "graceful"
    assert stopped.elapsed_s >= 0
    started = manager.start("alpha")
    assert started.state == S.RUNNING and started.message == "started"
    forced = manager.stop("alpha", method=ShutdownMethod.FORCE)
    assert forced.forced is True and forced.state == S.SHUTOFF
    assert libvirt_state(manager, "alpha") == S.SHUTOFF
    assert manager.start("beta", wait=False).operation == "start"
    assert manager.states.wait_for("beta", lambda s: s == S.RUNNING, 5) == S.RUNNING
    assert manager.reboot("beta").state == S.RUNNING
    assert manager.reset("beta").state == S.RUNNING


def test_start_on_paused_is_a_lifecycle_error_naming_the_state(manager):
    with pytest.raises(LifecycleError, match="paused.*use resume"):
        manager.start("gamma")
    assert libvirt_state(manager, "gamma") == S.PAUSED


def test_pause_stopped_vm_refused_before_libvirt(manager):
    with pytest.raises(LifecycleError, match="cannot pause 'beta': it is shut off"):
        manager.pause("beta")


def test_missing_vm_is_not_found_for_every_request(manager):
    for call in (manager.start, manager.stop, manager.pause, manager.resume, manager.reboot,
                 manager.reset, manager.require):
        with pytest.raises(VMNotFound):
            call("nope")
    # asking for the state is not an operation: the design notes expect a state (issue 10)
    assert manager.get_state("nope") == S.UNDEFINED


def test_dead_connection_is_connection_failed_not_not_found(three_vm_uri):
    conn = LibvirtConnection(three_vm_uri).open()
    manager = VMLifecycleManager(conn)
    conn.close()
    with pytest.raises(ConnectionFailed):
        manager.start("nope")


def test_subscribers_see_every_change_with_reason_and_time(manager):
    changes = []
    manager.subscribe(changes.append)
    before = time.time()
    manager.pause("alpha")
    pairs = [(c.name, c.old, c.new) for c in changes]
    assert ("alpha", S.RUNNING, S.PAUSING) in pairs
    assert ("alpha", S.PAUSING, S.PAUSED) in pairs or ("alpha", S.RUNNING, S.PAUSED) in pairs
    assert all(c.timestamp >= before and c.reason for c in changes)
    assert manager.get_state("alpha") == S.PAUSED


def test_change_made_elsewhere_is_seen_through_events(manager):
    manager.get_state("alpha")  # tracked from now on
    seen = threading.Event()
    manager.subscribe(lambda c: seen.set() if c.new == S.PAUSED else None)
    conn = manager.connection
    conn.execute(lambda c: conn.lookup(c, "alpha").suspend())  # not through the manager
    assert seen.wait(5)
    assert manager.get_state("alpha") == S.PAUSED


def test_second_request_on_a_busy_vm_is_refused_but_force_stop_may_interrupt(manager):
    machine = manager.states
    ticket = machine.begin("alpha", "stop", timeout=30)  # a graceful stop in flight
    with pytest.raises(LifecycleError, match="stop is in progress"):
        manager.pause("alpha")
    result = manager.stop("alpha", method=ShutdownMethod.FORCE)
    assert result.state == S.SHUTOFF
    machine.end(ticket)  # the interrupted request ends late: ignored
    assert manager.get_state("alpha") == S.SHUTOFF


def test_force_stop_that_a_start_overtakes_powers_off_all_the_same(manager):
    # Seen in CI: a force-stop cuts a start short; its destroy comes first ("domain is not
    # running"), the start lands before the fresh read, and the force-stop raised libvirt's
    # refusal. It is asked again instead, so the VM ends off, as the user asked.
    machine = manager.states
    start = machine.begin("beta", "start", timeout=30)  # a start in flight on a shut-off VM
    real_read = machine.read_libvirt
    landed = []

    def the_start_lands_first(name):
        machine.read_libvirt = real_read
        manager.connection.execute(lambda c: manager.connection.lookup(c, name).create())
        landed.append(name)
        return real_read(name)

    machine.read_libvirt = the_start_lands_first
    result = manager.stop("beta", method=ShutdownMethod.FORCE)
    assert landed == ["beta"]  # the race happened
    assert result.state == S.SHUTOFF and result.forced
    assert libvirt_state(manager, "beta") == S.SHUTOFF
    assert machine.superseded(start)
    machine.end(start)  # the cut-short start ends late: ignored
    assert manager.get_state("beta") == S.SHUTOFF


def test_stuck_transition_resolves_at_its_deadline(manager):
    changes = []
    manager.subscribe(changes.append)
    machine = manager.states
    machine.begin("alpha", "pause", timeout=0.2)  # never ended, as if its thread hung
    assert machine.state("alpha") == S.PAUSING
    resolved = threading.Event()
    manager.subscribe(lambda c: resolved.set() if c.old == S.PAUSING else None)
    assert resolved.wait(5)
    assert machine.state("alpha") == S.ERROR
    assert "did not finish" in machine.error_reason("alpha")
    assert any(c.old == S.PAUSING and "libvirt says running" in c.reason for c in changes)
    # the VM is usable again: the error clears with the next request
    assert manager.pause("alpha").state == S.PAUSED
    assert machine.state("alpha") == S.PAUSED


def test_wait_timeout_raises_instead_of_reporting_success(manager):
    # reset emits no event on the test driver, so waiting for "paused" after it must time out
    ticket = manager.states.begin("alpha", "reset", timeout=5)
    manager.states.end(ticket)
    assert manager.states.wait_for("alpha", lambda s: s == S.PAUSED, 0.1) is None
    with pytest.raises(OperationTimedOut):
        manager._request(
            "alpha", "reset", 0.1, lambda dom: dom.reset(0), lambda s: s == S.PAUSED, done="x"
        )
    assert manager.get_state("alpha") == S.ERROR  # the failure shows until the next change


# --- concurrency ----------------------------------------------------------------------------------

def test_eight_threads_hundred_random_requests(make_host):
    names = [f"vm{i}" for i in range(4)]
    uri = make_host([FakeDomain(name, S.RUNNING if i % 2 else S.SHUTOFF)
                     for i, name in enumerate(names)])
    operations = ["start", "stop", "force-stop", "pause", "resume", "reboot", "reset", "state"]
    unexpected: list[BaseException] = []
    done_counts = {"ok": 0, "refused": 0}
    count_lock = threading.Lock()
    with LibvirtConnection(uri) as conn:
        manager = VMLifecycleManager(conn)

        def worker(seed: int) -> None:
            rng = random.Random(seed)
            for _ in range(100):
                name, operation = rng.choice(names), rng.choice(operations)
                try:
                    if operation == "state":
                        manager.get_state(name)
                    elif operation == "force-stop":
                        manager.stop(name, method=ShutdownMethod.FORCE)
                    elif operation == "stop":
                        manager.stop(name, timeout=10)
                    else:
                        getattr(manager, operation)(name)
                    outcome = "ok"
                except LifecycleError:
                    outcome = "refused"
                except BaseException as error:  # noqa: BLE001 - any other type is a failure
                    unexpected.append((operation, name, error))
                    return
                with count_lock:
                    done_counts[outcome] += 1

        threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads), "deadlock"
        assert not unexpected, unexpected
        assert done_counts["ok"] + done_counts["refused"] == 800
        assert done_counts["ok"] > 100
        for name in names:
            real = VMState.from_libvirt(conn.execute(lambda c: conn.lookup(c, name).state()[0]))
            assert manager.get_state(name) == real, name
        manager.close()


# --- CLI --------------------------------------------------------------------------------------

def cli(argv, conn):
    out, err = io.StringIO(), io.StringIO()
    return main(argv, connection=conn, out=out, err=err), out.getvalue(), err.getvalue()


def test_cli_lifecycle_and_exit_codes(three_vm_uri):
    with LibvirtConnection(three_vm_uri) as conn:
        code, out, _ = cli(["pause", "alpha"], conn)
        assert code == 0 and "alpha: paused" in out
        code, out, err = cli(["start", "alpha"], conn)
        assert code == 1 and out == ""
        assert err.count("\n") == 1 and "it is paused" in err
        code, out, _ = cli(["resume", "alpha", "--json"], conn)
        assert code == 0 and '"state": "running"' in out
        code, out, _ = cli(["stop", "alpha"], conn)
        assert code == 0 and "shut down gracefully" in out
        code, out, _ = cli(["--json", "stop", "beta"], conn)
        assert code == 1
        code, out, _ = cli(["stop", "nope"], conn)
        assert code == 3
        code, out, _ = cli(["start", "alpha", "--json"], conn)
        import json

        data = json.loads(out)
        assert data["state"] == "running" and data["operation"] == "start"
        code, out, _ = cli(["stop", "alpha", "--force", "--json"], conn)
        data = json.loads(out)
        assert data["forced"] is True and data["method"] == "force"


def test_cli_separate_processes_pause_then_start(tmp_path):
    """`neuron-vm -c test:///default pause test` then `start test`: each process gets a fresh
    test driver, where `test` is running, so start is refused with the current state."""
    import subprocess
    import sys

    def run(*argv):
        return subprocess.run([sys.executable, "-m", "vm_manager", *argv],
                              capture_output=True, text=True, timeout=60)

    assert run("-c", "test:///default", "pause", "test").returncode == 0
    started = run("-c", "test:///default", "start", "test")
    assert started.returncode == 1 and "cannot start 'test': it is running" in started.stderr
    assert run("-c", "test:///default", "stop", "nope").returncode == 3


def test_cli_events_stream(three_vm_uri):
    class Ready(io.StringIO):
        def __init__(self):
            super().__init__()
            self.ready = threading.Event()

        def write(self, text):
            if "Watching" in text:
                self.ready.set()
            return super().write(text)

    with LibvirtConnection(three_vm_uri) as conn:
        out, err = io.StringIO(), Ready()
        result = {}
        thread = threading.Thread(
            target=lambda: result.setdefault(
                "code", main(["events", "alpha", "--count", "2"], connection=conn, out=out,
                             err=err)
            )
        )
        thread.start()
        assert err.ready.wait(10)
        conn.execute(lambda c: conn.lookup(c, "beta").create())  # filtered out: not alpha
        conn.execute(lambda c: conn.lookup(c, "alpha").suspend())
        conn.execute(lambda c: conn.lookup(c, "alpha").resume())
        thread.join(10)
        assert result.get("code") == 0
        lines = out.getvalue().splitlines()
        assert len(lines) == 2
        assert "alpha  running -> paused  (suspended: paused)" in lines[0]
        assert "alpha  paused -> running  (resumed: unpaused)" in lines[1]


def test_cli_events_unknown_vm_exits_3(three_vm_uri):
    with LibvirtConnection(three_vm_uri) as conn:
        code, _, err = cli(["events", "nope"], conn)
        assert code == 3 and "nope" in err


def test_a_refusal_is_judged_on_a_fresh_read(three_vm_uri):
    """The recorded state may lag libvirt while events are on their way (seen as a rare
    "cannot stop: it is shut off" right after a start); begin() re-reads before refusing."""
    conn = LibvirtConnection(three_vm_uri).open()
    states = VMStateMachine(conn)
    try:
        assert states.state("beta") == S.SHUTOFF
        states.close()  # it hears no more events: its record of beta goes stale
        conn.execute(lambda c: c.lookupByName("beta").create())
        ticket = states.begin("beta", "stop", timeout=5)  # libvirt says running: accepted
        states.end(ticket)
        with pytest.raises(LifecycleError, match="it is running"):
            states.begin("beta", "start", timeout=5)  # refused, on the fresh state
    finally:
        conn.close()


def test_a_reread_after_reconnect_tells_only_real_differences(three_vm_uri):
    """`events` for all VMs learned each one first; a re-read that finds nothing changed
    says nothing (it used to print undefined -> running for every VM)."""
    conn = LibvirtConnection(three_vm_uri).open()
    states = VMStateMachine(conn)
    try:
        states.refresh_all(announce=False)
        heard = []
        states.subscribe(heard.append)
        states.refresh_all()  # what a reconnect does
        assert heard == []
        states.close()  # deaf from now on, like a connection that is down
        conn.execute(lambda c: c.lookupByName("beta").create())
        states.refresh_all()
        assert [(c.name, c.old, c.new, c.reason) for c in heard] == [
            ("beta", S.SHUTOFF, S.RUNNING, "re-read after reconnect")]
    finally:
        conn.close()
