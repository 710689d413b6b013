"""``neuron-vm``: the command line face of the VM manager.

Start-up stays light: this module imports only the standard library at the top; each
command imports the library parts it needs when it runs (``neuron-vm --help`` never loads
libvirt, Jinja2, lxml or Qt).

Exit codes: 0 ok, 1 operation failed, 2 invalid input or usage, 3 VM not found.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import __version__

if TYPE_CHECKING:
    from .core.connection import LibvirtConnection

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

PROG = "neuron-vm"


class _Context:
    """What every command gets: parsed options, the output streams, a lazy connection."""

    def __init__(self, args: argparse.Namespace, connection: LibvirtConnection | None, out, err):
        self.args = args
        self.out = out
        self.err = err
        self._connection = connection
        self._lifecycle = None

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def connection(self) -> LibvirtConnection:
        if self._connection is None:
            from .core.connection import get_connection

            self._connection = get_connection(getattr(self.args, "connect", None))
        return self._connection

    @property
    def lifecycle(self):
        if self._lifecycle is None:
            from .core.vm_lifecycle import VMLifecycleManager

            self._lifecycle = VMLifecycleManager(self.connection)
        return self._lifecycle

    def store(self):
        from .core.store import VMStore

        return VMStore()

    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def print_json(self, data: Any) -> None:
        import json

        json.dump(data, self.out, indent=2, sort_keys=False)
        self.out.write("\n")

    def warn(self, text: str) -> None:
        print(f"{PROG}: warning: {text}", file=self.err)


# --- commands ------------------------------------------------------------------------------


def _format_memory(memory_mb: int) -> str:
    if memory_mb >= 1024:
        return f"{memory_mb / 1024:.1f} GiB"
    return f"{memory_mb} MiB"


def cmd_list(ctx: _Context) -> int:
    from .core.inventory import list_vms

    inventory = list_vms(ctx.connection, ctx.store())
    for problem in inventory.problems:
        ctx.warn(problem)
    if ctx.json:
        ctx.print_json([vm.to_dict() for vm in inventory.vms])
        return EXIT_OK
    if not inventory.vms:
        ctx.print(f"No VMs on {ctx.connection.uri}.")
        return EXIT_OK
    rows = [("NAME", "STATE", "VCPUS", "MEMORY", "TYPE")]
    for vm in inventory.vms:
        rows.append(
            (vm.name, vm.state.label, str(vm.vcpus), _format_memory(vm.memory_mb), vm.vm_type or "-")
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    for row in rows:
        ctx.print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return EXIT_OK


def cmd_info(ctx: _Context) -> int:
    from .core.inventory import vm_details

    details = vm_details(ctx.connection, ctx.args.name, ctx.store())
    if "settings_problem" in details:
        ctx.warn(details["settings_problem"])
    if ctx.json:
        ctx.print_json(details)
        return EXIT_OK
    from .core.primitives import VMState

    state = VMState(details["state"])
    osinfo = details["os"]
    lines = [
        ("Name", details["name"]),
        ("UUID", details["uuid"]),
        ("State", state.label),
        ("Type", details.get("vm_type") or "unknown (not made by NeuronOS)"),
        ("vCPUs", str(details["vcpus"])),
        ("Memory", _format_memory(details["memory_mb"])),
        ("Persistent", "yes" if details["persistent"] else "no"),
        ("Autostart", "yes" if details["autostart"] else "no"),
        ("Hypervisor", details["domain_type"] or "-"),
        (
            "Machine",
            " ".join(filter(None, [osinfo["arch"], osinfo["machine"], osinfo["firmware"]])) or "-",
        ),
    ]
    for disk in details["disks"]:
        lines.append(
            (f"Disk {disk['target'] or '?'}", f"{disk['source'] or '(empty)'} [{disk['device']}]")
        )
    for iface in details["interfaces"]:
        lines.append(("Network", f"{iface['type']} {iface['source'] or ''} {iface['model'] or ''}"))
    for graphics in details["graphics"]:
        port = graphics["port"] if graphics["port"] not in (None, -1) else "auto"
        lines.append(("Display", f"{graphics['type']} port {port}"))
    for hostdev in details["hostdevs"]:
        where = hostdev.get("address") or f"{hostdev.get('vendor_id')}:{hostdev.get('product_id')}"
        lines.append(("Passthrough", f"{hostdev['type']} {where}"))
    for shmem in details["shmem"]:
        lines.append(("Shared memory", f"{shmem['name']} ({shmem['size']})"))
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        ctx.print(f"{key + ':':<{width + 1}} {value}".rstrip())
    return EXIT_OK


class _Spinner:
    """``⠋ Stopping win11… 3.2s`` on stderr while a wait lasts longer than a second, only on
    a terminal and never with --json (DESIGN: the library waits on events; this is just the
    face of that wait)."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, ctx: _Context, text: str):
        self.ctx = ctx
        self.text = text
        stream = ctx.err
        self.enabled = not ctx.json and hasattr(stream, "isatty") and stream.isatty()
        self._done = None
        self._thread = None

    def __enter__(self) -> _Spinner:
        if self.enabled:
            import threading
            import time

            self._done = threading.Event()
            started = time.monotonic()

            def spin() -> None:
                if self._done.wait(1.0):
                    return
                frame = 0
                while not self._done.wait(0.1):
                    elapsed = time.monotonic() - started
                    self.ctx.err.write(
                        f"\r{self.FRAMES[frame % len(self.FRAMES)]} {self.text}… {elapsed:.1f}s"
                    )
                    self.ctx.err.flush()
                    frame += 1
                self.ctx.err.write("\r\033[K")
                self.ctx.err.flush()

            self._thread = threading.Thread(target=spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()


def _report(ctx: _Context, result, text: str) -> int:
    if ctx.json:
        ctx.print_json(result.to_dict())
    else:
        ctx.print(text)
    return EXIT_OK


def cmd_start(ctx: _Context) -> int:
    args = ctx.args
    with _Spinner(ctx, f"Starting {args.name}"):
        result = ctx.lifecycle.start(
            args.name, paused=args.paused, wait=not args.no_wait, timeout=args.timeout
        )
    how = "requested" if args.no_wait else f"{result.state.label} after {result.elapsed_s:.2f} s"
    return _report(ctx, result, f"{args.name}: {result.message}, {how}")


def cmd_stop(ctx: _Context) -> int:
    from .core.vm_lifecycle import ShutdownMethod

    args = ctx.args
    method = ShutdownMethod.FORCE if args.force else ShutdownMethod.GRACEFUL
    with _Spinner(ctx, f"Stopping {args.name}"):
        result = ctx.lifecycle.stop(args.name, method=method, timeout=args.timeout)
    return _report(ctx, result, f"{args.name}: {result.message} in {result.elapsed_s:.2f} s")


def _simple(operation: str) -> Callable[[_Context], int]:
    def command(ctx: _Context) -> int:
        name = ctx.args.name
        with _Spinner(ctx, f"{operation.capitalize()} {name}"):
            result = getattr(ctx.lifecycle, operation)(name)
        text = f"{name}: {result.message} in {result.elapsed_s:.2f} s"
        if result.state.value not in result.message:
            text += f"; it is {result.state.label}"
        return _report(ctx, result, text)

    command.__name__ = f"cmd_{operation}"
    return command


def _format_change(change) -> str:
    import datetime

    stamp = datetime.datetime.fromtimestamp(change.timestamp).isoformat(" ", "milliseconds")
    return f"{stamp}  {change.name}  {change.old.value} -> {change.new.value}  ({change.reason})"


def cmd_events(ctx: _Context) -> int:
    import queue

    from .core.connection import ConnectionEvent

    name = ctx.args.name
    lifecycle = ctx.lifecycle
    if name:
        lifecycle.get_state(name)  # a typo is "not found" (exit 3), not an endless silence
    changes: queue.Queue = queue.Queue()
    lifecycle.subscribe(lambda change: changes.put(change) if not name or change.name == name
                        else None)
    ctx.connection.subscribe(
        lambda event: changes.put(event) if isinstance(event, ConnectionEvent) else None
    )
    if not ctx.json:
        target = name or "all VMs"
        ctx.err.write(f"Watching {target} on {ctx.connection.uri}; Ctrl-C to stop.\n")
        ctx.err.flush()
    seen = 0
    try:
        while ctx.args.count is None or seen < ctx.args.count:
            try:
                item = changes.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if isinstance(item, ConnectionEvent):
                if ctx.json:
                    _print_json_line(ctx, {"connection": item.status, "uri": item.uri,
                                           "reason": item.reason, "time": item.timestamp})
                else:
                    ctx.print(f"-- connection {item.status}: {item.reason}")
                    ctx.out.flush()
                continue
            if ctx.json:
                _print_json_line(ctx, {
                    "name": item.name, "old": item.old.value, "new": item.new.value,
                    "reason": item.reason, "time": item.timestamp,
                })
            else:
                ctx.print(_format_change(item))
                ctx.out.flush()
            seen += 1
    except KeyboardInterrupt:
        pass
    return EXIT_OK


def _print_json_line(ctx: _Context, data: dict) -> None:
    import json

    ctx.out.write(json.dumps(data) + "\n")
    ctx.out.flush()


# --- parser --------------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[_Context], int]] = {
    "list": cmd_list,
    "info": cmd_info,
    "start": cmd_start,
    "stop": cmd_stop,
    "pause": _simple("pause"),
    "resume": _simple("resume"),
    "reboot": _simple("reboot"),
    "reset": _simple("reset"),
    "events": cmd_events,
}


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # The same options work before and after the command (`--json list` and `list --json`);
    # the sub-command copy uses SUPPRESS so it does not overwrite a value given earlier.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "-c", "--connect", metavar="URI", default=default,
        help="libvirt URI (default: $NEURONOS_LIBVIRT_URI, $LIBVIRT_DEFAULT_URI, qemu:///system)",
    )
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
        help="print machine-readable JSON only",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="log details and show tracebacks",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Manage NeuronOS virtual machines (libvirt, GPU passthrough, Looking Glass).",
        epilog="Exit codes: 0 ok, 1 operation failed, 2 invalid input, 3 VM not found.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    commands.add_parser(
        "list", parents=[common], help="list all VMs (defined and running)",
        description="List all defined and running VMs with state, vCPUs, memory and type.",
    )
    info = commands.add_parser(
        "info", parents=[common], help="show everything known about one VM",
        description="Show one VM: live domain facts plus its saved NeuronOS settings.",
    )
    info.add_argument("name", metavar="NAME")

    start = commands.add_parser(
        "start", parents=[common], help="boot a VM and wait until it runs",
        description="Boot a VM. Waits (on libvirt events) until it runs, unless --no-wait.",
    )
    start.add_argument("name", metavar="NAME")
    start.add_argument("--paused", action="store_true", help="start with the CPUs paused")
    start.add_argument("--no-wait", action="store_true", help="return once libvirt accepted")
    start.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                       help="give up waiting after S seconds (default 60)")
    stop = commands.add_parser(
        "stop", parents=[common], help="shut a VM down (ACPI, forced after the timeout)",
        description="Press the VM's ACPI power button and wait; if the guest has not powered"
        " off after --timeout seconds, power it off by force. Says which happened.",
    )
    stop.add_argument("name", metavar="NAME")
    stop.add_argument("--force", action="store_true", help="power off at once (may lose data)")
    stop.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                      help="seconds to wait for a graceful shutdown (default 60)")
    for name, text in (
        ("pause", "freeze a running VM's CPUs"),
        ("resume", "let a paused VM continue"),
        ("reboot", "ask the guest to restart (ACPI)"),
        ("reset", "press the reset button (no shutdown)"),
    ):
        sub = commands.add_parser(name, parents=[common], help=text, description=text + ".")
        sub.add_argument("name", metavar="NAME")
    events = commands.add_parser(
        "events", parents=[common], help="print VM state changes as they happen",
        description="Print every state change (one line each, or JSON lines with --json)"
        " until Ctrl-C.",
    )
    events.add_argument("name", metavar="NAME", nargs="?", help="only this VM")
    events.add_argument("--count", type=int, default=None, metavar="N",
                        help="stop after N state changes")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is outside 0-86400 seconds")
    return value


def _setup_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
    root = logging.getLogger("vm_manager")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.ERROR)
    root.propagate = False


def main(
    argv: Sequence[str] | None = None,
    connection: LibvirtConnection | None = None,
    out=None,
    err=None,
) -> int:
    """Run one command. Tests pass ``connection`` (a test-driver connection) and streams."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser()
    try:
        # argparse writes help, version and usage errors to sys.stdout/sys.stderr itself
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help/--version exit 0, bad usage exits 2
        return int(exit_.code or 0)
    _setup_logging(args.verbose)
    ctx = _Context(args, connection, out, err)
    from .core.errors import VMManagerError

    try:
        return COMMANDS[args.command](ctx)
    except VMManagerError as error:
        if args.verbose:
            logging.getLogger("vm_manager").exception("command failed")
        print(f"{PROG}: {error}", file=err)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130
    except BrokenPipeError:  # `neuron-vm list | head`
        return EXIT_OK
    except Exception as error:  # a bug: still one line, the traceback with -v
        if args.verbose:
            logging.getLogger("vm_manager").exception("internal error")
        print(f"{PROG}: internal error: {error!r} (run with -v for details)", file=err)
        return EXIT_FAILED


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
