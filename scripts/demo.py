#!/usr/bin/env python3
"""The main job, end to end on this machine's libvirtd: a real VM through the library.

Builds (or reuses) the tiny guest, defines the VM ``neuron-demo`` (replacing an earlier
one cleanly), starts it, waits for its console's ready marker, prints ``neuron-vm list``,
stops it gracefully (ACPI) and prints how long each step took. Safe to run again.

    .venv/bin/python scripts/demo.py [--connect qemu:///system] [--domain-type qemu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # support/: test helpers

from vm_manager import cli
from vm_manager.actions import Context, create, delete, power
from vm_manager.base.errors import VMManagerError, VMNotFound
from vm_manager.base.vm_config import VMConfig
from support.tiny_guest import READY_MARKER, build, wait_for_console

NAME = "neuron-demo"


def step(timings: list, label: str, started: float) -> None:
    elapsed = time.monotonic() - started
    timings.append((label, elapsed))
    print(f"==> {label}: {elapsed:.2f} s", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connect", default="qemu:///system")
    parser.add_argument(
        "--domain-type", default="qemu", choices=["qemu", "kvm"],
        help="qemu (software emulation) works everywhere; kvm needs a usable /dev/kvm",
    )
    args = parser.parse_args()
    timings: list[tuple[str, float]] = []

    started = time.monotonic()
    guest = build()
    step(timings, f"tiny guest ready (kernel {guest.kernel_version})", started)
    serial = guest.kernel.parent / f"serial-{NAME}.log"

    ctx = Context(args.connect)  # the actions both faces use
    try:
        started = time.monotonic()
        try:
            delete.delete(ctx, delete.DeleteRequest(NAME, force=True, stop_timeout=10))
            print(f"==> removed the earlier {NAME}")
        except VMNotFound:
            pass
        serial.unlink(missing_ok=True)
        config = VMConfig(
            name=NAME, vm_type="linux", memory_mb=512, vcpus=1, disk_size_gb=0,
            kernel_path=str(guest.kernel), initrd_path=str(guest.initrd),
            kernel_cmdline="console=ttyS0 quiet panic=-1", serial_log_path=str(serial),
            network="none", domain_type=args.domain_type,
        )
        result = create.create(ctx, create.CreateRequest(config, force=True)).result
        step(timings, f"created {NAME} from the {result.template} template (direct kernel"
             f" boot, {args.domain_type}, no disk, no network)", started)

        started = time.monotonic()
        outcome = power.start(ctx, power.StartRequest(NAME, timeout=120))
        step(timings, f"started ({outcome.result.state.label})", started)

        started = time.monotonic()
        wait_for_console(serial, READY_MARKER, timeout=180)
        step(timings, f"guest ready ({READY_MARKER} on its serial console)", started)

        print(f"==> neuron-vm --connect {args.connect} list", flush=True)
        cli.main(["--connect", args.connect, "list"], connection=ctx.connection)

        started = time.monotonic()
        stopped = power.stop(ctx, NAME, timeout=60)
        step(timings, f"stopped: {stopped.message}", started)
    finally:
        ctx.close()

    total = sum(seconds for _, seconds in timings)
    print(f"==> demo finished in {total:.2f} s; {NAME} stays defined (shut off)")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except VMManagerError as error:
        print(f"demo: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
