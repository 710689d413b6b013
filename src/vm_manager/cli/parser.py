"""The ``neuron-vm`` command line: global options, and one group of commands per module."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

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


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (what is wrong, and where the help is)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


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


GLOBAL_WITH_VALUE = ("-c", "--connect")


def requested_command(argv: Sequence[str] | None) -> str | None:
    """The command word of ``argv`` (the first word that is not a global option), or None."""
    words = list(sys.argv[1:] if argv is None else argv)
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word in GLOBAL_WITH_VALUE:
            skip = True
        elif not word.startswith("-"):
            return word
    return None


class _Skipped:
    """Stands in for the parser of a command that was not asked for: it takes every call
    and builds nothing."""

    def __getattr__(self, _name: str):
        return lambda *args, **kwargs: self


class _Commands:
    """``add_parser`` with the shared formatter, so every level formats alike. With ``only``
    set, the other commands' parsers are not built: argparse spends ~0.3 ms per parser and
    ~15 ms on all of them, and a one-shot `neuron-vm list` needs just its own
    (bench/list_latency.py). ``--help`` and an unknown command build them all."""

    def __init__(self, subparsers, only: str | None = None):
        self._subparsers = subparsers
        self._only = only

    def add_parser(self, name: str, **kwargs):
        if self._only is not None and name != self._only:
            return _Skipped()
        kwargs.setdefault("formatter_class", _formatter)
        return self._subparsers.add_parser(name, **kwargs)


# module of this package -> the commands it registers, in the order --help lists them
GROUPS = {
    "vms": ("list", "info", "events"),
    "power": ("start", "stop", "pause", "resume", "reboot", "reset", "display"),
    "create": ("create", "configure", "delete"),
    "guest": ("setup-status", "setup-restart", "console"),
    "snapshot": ("snapshot",),
    "shares": ("share",),
    "devices": ("gpu", "usb", "tune"),
    "host": ("doctor", "shm-permissions", "templates"),
}
COMMANDS = tuple(command for commands in GROUPS.values() for command in commands)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line, or (given the ``argv`` to parse) only the part it uses."""
    import importlib

    wanted = requested_command(argv)
    only = wanted if wanted in COMMANDS else None
    parser = Parser(
        prog=PROG, formatter_class=_formatter,
        description="Manage NeuronOS virtual machines (libvirt, GPU passthrough, Looking Glass).",
        epilog=EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    global_options(parser, suppress=False)
    common = Parser(add_help=False, formatter_class=_formatter)
    global_options(common, suppress=True)
    commands = _Commands(parser.add_subparsers(dest="command", metavar="COMMAND",
                                               required=True), only)

    def subcommand(actions, name: str, text: str, run) -> argparse.ArgumentParser:
        sub = _Commands(actions).add_parser(name, parents=[common], help=text,
                                            description=text[0].upper() + text[1:] + ".")
        sub.set_defaults(run=run)
        return sub

    for group, names in GROUPS.items():
        if only is None or only in names:
            importlib.import_module(f"{__package__}.{group}").register(commands, common,
                                                                      subcommand)
    return parser
