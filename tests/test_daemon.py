"""Against a real libvirtd on qemu:///system (CI starts it; elsewhere these skip)."""

from __future__ import annotations

import io
import json
import uuid

import pytest

from daemon import kill_libvirtd, need_restartable_daemon, start_libvirtd
from vm_manager.cli import main
from vm_manager.base.connection import ConnectionEvent, DomainEvent, LibvirtConnection
from vm_manager.base.errors import ConnectionFailed

pytestmark = pytest.mark.daemon


def tiny_domain_xml(name: str) -> str:
    # Defined, never started: enough to see DEFINED/UNDEFINED events, no NIC, no disk.
    return (
        f"<domain type='qemu'><name>{name}</name><memory unit='MiB'>64</memory>"
        "<os><type arch='x86_64' machine='q35'>hvm</type></os></domain>"
    )


@pytest.fixture
def restartable(system_daemon):
    need_restartable_daemon()
    yield system_daemon
    from daemon import libvirtd_pid

    if libvirtd_pid() is None:  # leave the daemon running for the tests after us
        start_libvirtd(system_daemon)


def test_cli_lists_system_domains(system_daemon):
    name = f"neuron-test-{uuid.uuid4().hex[:8]}"
    with LibvirtConnection(system_daemon) as conn:
        conn.execute(lambda c: c.defineXML(tiny_domain_xml(name)))
        try:
            out, err = io.StringIO(), io.StringIO()
            assert main(["--connect", system_daemon, "list", "--json"], out=out, err=err) == 0
            listed = {vm["name"]: vm for vm in json.loads(out.getvalue())}
            assert listed[name]["state"] == "shutoff"
            assert listed[name]["memory_mb"] == 64
        finally:
            conn.execute(lambda c: conn.lookup(c, name).undefine())


def test_same_connection_survives_10_daemon_restarts(restartable, recorder):
    uri = restartable
    conn = LibvirtConnection(uri).open()
    conn.subscribe(recorder)
    try:
        for round_ in range(10):
            kill_libvirtd()
            recorder.wait_for(
                lambda e: isinstance(e, ConnectionEvent) and e.status == "disconnected"
            )
            # While the daemon is down, a call fails with our error naming the URI.
            with pytest.raises(ConnectionFailed) as caught:
                conn.execute(lambda c: c.listAllDomains())
            assert uri in str(caught.value)

            start_libvirtd(uri)
            # The same object serves the next call, without being reopened by hand.
            assert isinstance(conn.execute(lambda c: c.listAllDomains(), idempotent=True), list)
            recorder.wait_for(
                lambda e: isinstance(e, ConnectionEvent) and e.status == "reconnected"
            )
            # ... and delivers events again.
            name = f"neuron-reconnect-{round_}-{uuid.uuid4().hex[:6]}"
            conn.execute(lambda c: c.defineXML(tiny_domain_xml(name)))
            defined = recorder.wait_for(lambda e: isinstance(e, DomainEvent) and e.name == name)
            assert defined.event_name == "defined"
            conn.execute(lambda c: conn.lookup(c, name).undefine())
            gone = recorder.wait_for(lambda e: isinstance(e, DomainEvent) and e.name == name)
            assert gone.event_name == "undefined"
        assert conn.reconnect_count == 10
    finally:
        conn.close()
