"""LibvirtConnection against libvirt's test driver (no daemon needed)."""

from __future__ import annotations

import threading

import libvirt
import pytest

from vm_manager.base.connection import (
    ConnectionEvent,
    DomainEvent,
    LibvirtConnection,
    get_connection,
    resolve_uri,
)
from vm_manager.base.errors import ConnectionFailed, OperationFailed, VMNotFound
from vm_manager.base.vm_config import VMState
from support.fakes import FakeDomain


def names(conn: LibvirtConnection) -> list[str]:
    return sorted(conn.execute(lambda c: [d.name() for d in c.listAllDomains()]))


# --- URI precedence ------------------------------------------------------------------------

def test_uri_precedence():
    env = {"NEURONOS_LIBVIRT_URI": "test:///neuron", "LIBVIRT_DEFAULT_URI": "test:///libvirt"}
    assert resolve_uri("test:///arg", env) == "test:///arg"
    assert resolve_uri(None, env) == "test:///neuron"
    assert resolve_uri("", env) == "test:///neuron"
    assert resolve_uri(None, {"LIBVIRT_DEFAULT_URI": "test:///libvirt"}) == "test:///libvirt"
    assert resolve_uri(None, {"NEURONOS_LIBVIRT_URI": "  "}) == "qemu:///system"
    assert resolve_uri(None, {}) == "qemu:///system"


def test_uri_from_environment_is_used(monkeypatch, three_vm_uri):
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", "bogus:///nowhere")
    monkeypatch.setenv("NEURONOS_LIBVIRT_URI", three_vm_uri)
    with LibvirtConnection() as conn:
        assert conn.uri == three_vm_uri
        assert names(conn) == ["alpha", "beta", "gamma"]


# --- opening -------------------------------------------------------------------------------

def test_default_test_driver_lists_test_domain():
    with LibvirtConnection("test:///default") as conn:
        assert "test" in names(conn)
        assert conn.is_connected
    assert not conn.is_connected


def test_bad_uri_names_the_uri():
    with pytest.raises(ConnectionFailed) as caught:
        LibvirtConnection("bogus:///nowhere").open()
    assert "bogus:///nowhere" in str(caught.value)
    assert "check the URI" in str(caught.value)
    assert caught.value.exit_code == 1


def test_missing_daemon_socket_says_what_to_check(tmp_path):
    uri = f"qemu:///system?socket={tmp_path}/no-such.sock"
    with pytest.raises(ConnectionFailed) as caught:
        LibvirtConnection(uri).open()
    message = str(caught.value)
    assert uri in message and "libvirtd running" in message


def test_closed_connection_refuses_calls(three_vm_uri):
    conn = LibvirtConnection(three_vm_uri).open()
    conn.close()
    with pytest.raises(ConnectionFailed, match="closed"):
        names(conn)


def test_get_connection_is_shared_per_uri(three_vm_uri, make_host):
    first = get_connection(three_vm_uri)
    assert get_connection(three_vm_uri) is first
    other = get_connection(make_host([FakeDomain("solo")]))
    assert other is not first
    assert names(other) == ["solo"]
    first.close()
    assert get_connection(three_vm_uri) is not first  # a closed one is replaced
    get_connection(three_vm_uri).close()
    other.close()


def test_host_info(make_host):
    with LibvirtConnection(make_host(cpus=6, memory_mb=12288)) as conn:
        assert conn.host_info() == (12288, 6)


# --- errors --------------------------------------------------------------------------------

def test_lookup_missing_is_vm_not_found(three_vm_uri):
    with LibvirtConnection(three_vm_uri) as conn:
        with pytest.raises(VMNotFound) as caught:
            conn.execute(lambda c: conn.lookup(c, "nope"))
        assert caught.value.exit_code == 3 and "nope" in str(caught.value)
        assert conn.execute(lambda c: conn.lookup(c, "alpha").name()) == "alpha"


def test_other_libvirt_errors_become_operation_failed(three_vm_uri):
    with LibvirtConnection(three_vm_uri) as conn:
        with pytest.raises(OperationFailed) as caught:
            # resuming a shut-off domain is refused by libvirt itself
            conn.execute(lambda c: conn.lookup(c, "beta").resume())
        # the test driver reports it as an internal error "domain 'beta' not paused"
        assert caught.value.code == libvirt.VIR_ERR_INTERNAL_ERROR
        assert "not paused" in str(caught.value)
        assert conn.is_connected  # not mistaken for a lost connection


def test_libvirt_default_error_printing_is_silenced(capfd, three_vm_uri):
    with LibvirtConnection(three_vm_uri) as conn:
        with pytest.raises(VMNotFound):
            conn.execute(lambda c: conn.lookup(c, "nope"))
    assert "libvirt:" not in capfd.readouterr().err


# --- events --------------------------------------------------------------------------------

def test_lifecycle_events_reach_subscribers(three_vm_uri, recorder):
    with LibvirtConnection(three_vm_uri) as conn:
        conn.subscribe(recorder)
        conn.execute(lambda c: conn.lookup(c, "alpha").suspend())
        event = recorder.wait_for(lambda e: isinstance(e, DomainEvent))
        assert (event.name, event.event_name) == ("alpha", "suspended")
        conn.execute(lambda c: conn.lookup(c, "beta").create())
        event = recorder.wait_for(lambda e: isinstance(e, DomainEvent) and e.name == "beta")
        assert event.event == libvirt.VIR_DOMAIN_EVENT_STARTED
        assert event.uuid == conn.execute(lambda c: conn.lookup(c, "beta").UUIDString())


def test_every_subscriber_gets_events_and_a_failing_one_does_not_block(three_vm_uri, recorder):
    from conftest import EventRecorder

    second = EventRecorder()

    def broken(event):
        raise RuntimeError("subscriber bug")

    with LibvirtConnection(three_vm_uri) as conn:
        conn.subscribe(broken)
        conn.subscribe(recorder)
        conn.subscribe(second)
        conn.execute(lambda c: conn.lookup(c, "gamma").resume())
        for rec in (recorder, second):
            event = rec.wait_for(lambda e: isinstance(e, DomainEvent))
            assert (event.name, event.event_name) == ("gamma", "resumed")


def test_unsubscribe_stops_delivery(three_vm_uri, recorder):
    from conftest import EventRecorder

    control = EventRecorder()
    with LibvirtConnection(three_vm_uri) as conn:
        token = conn.subscribe(recorder)
        conn.subscribe(control)
        conn.unsubscribe(token)
        conn.execute(lambda c: conn.lookup(c, "alpha").suspend())
        control.wait_for(lambda e: isinstance(e, DomainEvent) and e.event_name == "suspended")
        assert recorder.events.empty()


def test_define_and_undefine_events(make_host, recorder):
    xml = "<domain type='test'><name>fresh</name><memory>65536</memory>" \
          "<os><type>hvm</type></os></domain>"
    with LibvirtConnection(make_host()) as conn:
        conn.subscribe(recorder)
        conn.execute(lambda c: c.defineXML(xml))
        assert recorder.wait_for(lambda e: isinstance(e, DomainEvent)).event_name == "defined"
        conn.execute(lambda c: conn.lookup(c, "fresh").undefine())
        assert recorder.wait_for(lambda e: isinstance(e, DomainEvent)).event_name == "undefined"


def test_parallel_calls_from_many_threads(make_host):
    domains = [FakeDomain(f"vm{i:02d}", VMState.RUNNING) for i in range(20)]
    errors: list[BaseException] = []
    with LibvirtConnection(make_host(domains)) as conn:
        def worker(index: int) -> None:
            try:
                for _ in range(20):
                    name = f"vm{index:02d}"
                    conn.execute(lambda c: conn.lookup(c, name).suspend())
                    conn.execute(lambda c: conn.lookup(c, name).resume())
                    assert len(names(conn)) == 20
            except BaseException as error:  # noqa: BLE001 - collected and re-raised
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert not errors, errors


def test_connection_events_are_dataclasses():
    event = ConnectionEvent("reconnected", "test:///default", "back", 0.0)
    assert event.status == "reconnected"


def test_a_connection_opened_without_events_turns_them_on_for_a_subscriber(three_vm_uri,
                                                                          recorder):
    conn = LibvirtConnection(three_vm_uri, events=False).open()
    try:
        assert conn.events is False and conn.execute(lambda c: c.lookupByName("beta").name())
        conn.subscribe(recorder)  # reopens with the event loop registered first
        assert conn.events is True
        conn.execute(lambda c: c.lookupByName("beta").create())
        event = recorder.wait_for(lambda e: isinstance(e, DomainEvent) and e.name == "beta")
        assert event.event_name == "started"
    finally:
        conn.close()
