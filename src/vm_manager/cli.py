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

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def connection(self) -> LibvirtConnection:
        if self._connection is None:
            from .core.connection import get_connection

            self._connection = get_connection(getattr(self.args, "connect", None))
        return self._connection

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


# --- parser --------------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[_Context], int]] = {"list": cmd_list, "info": cmd_info}


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
    return parser


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
