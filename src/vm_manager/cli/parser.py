"""The ``neuron-vm`` command line: global options, and one group of commands per module."""

from __future__ import annotations

import argparse
import os

from .. import __version__
from .output import PROG

EPILOG = "Exit codes: 0 ok, 1 operation failed, 2 invalid input, 3 VM not found."


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter with the width given: without one it imports shutil (and bz2,
    lzma) on every add_argument just to ask the terminal's width (~5 ms of start-up)."""
    try:
        width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
    except (ValueError, OSError):
        width = 80
    return argparse.HelpFormatter(prog, width=max(width - 2, 40))


def global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
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


class _Commands:
    """``add_parser`` with the shared formatter, so every level formats alike."""

    def __init__(self, subparsers):
        self._subparsers = subparsers

    def add_parser(self, name: str, **kwargs) -> argparse.ArgumentParser:
        kwargs.setdefault("formatter_class", _formatter)
        return self._subparsers.add_parser(name, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from . import create, devices, host, power, vms

    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_formatter,
        description="Manage NeuronOS virtual machines (libvirt, GPU passthrough, Looking Glass).",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, suppress=True)
    commands = _Commands(parser.add_subparsers(dest="command", metavar="COMMAND",
                                               required=True))

    def subcommand(actions, name: str, text: str, run) -> argparse.ArgumentParser:
        sub = _Commands(actions).add_parser(name, parents=[common], help=text,
                                            description=text[0].upper() + text[1:] + ".")
        sub.set_defaults(run=run)
        return sub

    vms.register(commands, common)
    power.register(commands, common)
    create.register(commands, common)
    devices.register(commands, common, subcommand)
    host.register(commands, common, subcommand)
    return parser
