#!/usr/bin/env python3
"""How fast state changes reach the manager, on a real libvirtd + QEMU (TCG).

1. 100 pause/resume cycles of a running tiny guest: for each change, the time from issuing
   the libvirt call to the manager's state-change callback (an upper bound: the state
   changes somewhere inside the call), the callback's time relative to the call's return
   (negative: the event arrived before the call returned), and the part spent inside the
   manager (libvirt's event callback to ours). Target: p99 under 5 ms.
2. A few graceful stops: how long after the guest reached "shut off" (libvirt's STOPPED
   event) `stop()` returns. Target: under 50 ms (the design notes polled every 0.5-1 s).

Needs libvirtd on qemu:///system (see `make setup`). Defines and removes its own VM.

    .venv/bin/python bench/event_latency.py [--cycles 100] [--stops 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support/: test helpers

from vm_manager.base.connection import LibvirtConnection
from vm_manager.base.primitives import VMState
from vm_manager.core.vm_lifecycle import ShutdownMethod, VMLifecycleManager
from support.domains import domain_xml
from support.tiny_guest import READY_MARKER, build, wait_for_console


def pct(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def summary(label: str, seconds: list[float]) -> str:
    ms = [value * 1000 for value in seconds]
    return (f"  {label:44s} median {statistics.median(ms):7.3f} ms   p99 {pct(ms, 0.99):7.3f} ms"
            f"   max {max(ms):7.3f} ms   (n={len(ms)})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default="qemu:///system")
    parser.add_argument("--cycles", type=int, default=100)
    parser.add_argument("--stops", type=int, default=5)
    args = parser.parse_args()

    guest = build()
    name = f"neuron-bench-{uuid.uuid4().hex[:6]}"
    with tempfile.TemporaryDirectory() as tmp, LibvirtConnection(args.connect) as conn:
        serial = Path(tmp) / "serial.log"
        conn.execute(lambda c: c.defineXML(domain_xml(name, guest, serial)))
        manager = VMLifecycleManager(conn)
        arrived: dict[VMState, list] = {}
        lock = threading.Condition()

        def on_change(change) -> None:
            now = time.monotonic()
            if change.name == name and change.new in (VMState.PAUSED, VMState.RUNNING,
                                                      VMState.SHUTOFF):
                with lock:
                    arrived.setdefault(change.new, []).append((now, change.monotonic))
                    lock.notify_all()

        manager.subscribe(on_change)
        try:
            manager.start(name, timeout=120)
            wait_for_console(serial, READY_MARKER, timeout=180)

            from_issue, from_return, inside = [], [], []
            for _ in range(args.cycles):
                for call, target in (("suspend", VMState.PAUSED), ("resume", VMState.RUNNING)):
                    with lock:
                        before = len(arrived.get(target, []))
                    issued = time.monotonic()
                    conn.execute(lambda c, call=call: getattr(c.lookupByName(name), call)())
                    returned = time.monotonic()
                    with lock:
                        lock.wait_for(lambda: len(arrived.get(target, [])) > before, 10)
                        ours, libvirt_cb = arrived[target][-1]
                    from_issue.append(ours - issued)
                    from_return.append(ours - returned)
                    inside.append(ours - libvirt_cb)

            stop_gaps, stop_totals = [], []
            for index in range(args.stops):
                if index:
                    manager.start(name, timeout=120)
                    wait_for_console(serial, READY_MARKER, count=index + 1, timeout=180)
                with lock:
                    before = len(arrived.get(VMState.SHUTOFF, []))
                result = manager.stop(name, timeout=60)
                returned = time.monotonic()
                with lock:
                    _, shut_off_at = arrived[VMState.SHUTOFF][before]
                if result.forced:
                    sys.exit("the guest did not shut down gracefully; the figure would be wrong")
                stop_gaps.append(returned - shut_off_at)
                stop_totals.append(result.elapsed_s)
        finally:
            if manager.get_state(name).is_active:
                manager.stop(name, method=ShutdownMethod.FORCE)
            manager.close()
            conn.execute(lambda c: c.lookupByName(name).undefine())

    print(f"event latency on {args.connect}, tiny guest under TCG")
    print(summary("call issued -> manager callback", from_issue))
    print(summary("call returned -> manager callback (signed)", from_return))
    print(summary("libvirt event callback -> manager callback", inside))
    print(summary("guest shut off -> graceful stop() returned", stop_gaps))
    print(summary("graceful stop() total (ACPI -> shut off)", stop_totals))
    return 0


if __name__ == "__main__":
    sys.exit(main())
