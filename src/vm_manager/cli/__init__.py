"""``neuron-vm``: the command line face of the VM manager.

It parses, calls one action (``vm_manager.actions``) and prints the result; it never
orchestrates library calls itself, so it does exactly what the desktop app does. Start-up
stays light: each command imports the library parts it needs when it runs (``neuron-vm
--help`` never loads libvirt, Jinja2, lxml or Qt; ``list`` starts no event loop).

Modules: ``parser`` (the options), ``output`` (printing, the spinner), and one module per
group of commands: ``vms`` (list, info, events), ``power`` (start ... reset, display),
``create`` (create, configure, delete), ``devices`` (gpu, usb), ``host`` (doctor,
shm-permissions, templates).

Exit codes: 0 ok, 1 operation failed, 2 invalid input or usage, 3 VM not found.
"""

from __future__ import annotations

import contextlib
import io
import sys
from typing import TYPE_CHECKING, Sequence

from .output import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CommandContext,
    Spinner,
)
from .parser import build_parser

if TYPE_CHECKING:
    from ..base.connection import LibvirtConnection

__all__ = ["EXIT_FAILED", "EXIT_NOT_FOUND", "EXIT_OK", "EXIT_USAGE", "build_parser", "main",
           "run"]

# The names the tests of the earlier single-module CLI use.
_Context = CommandContext
_Spinner = Spinner


def _setup_logging(verbose: bool) -> None:
    from ..base import log

    level = log.DEBUG if verbose else log.ERROR
    log.set_threshold(level)  # below it, nothing imports `logging` (start-up cost)

    def configure(logging) -> None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
        root = logging.getLogger("vm_manager")
        root.handlers[:] = [handler]
        root.setLevel(level)
        root.propagate = False

    log.configure(configure)


def _one_line(text: str, limit: int = 1000) -> str:
    """An error is one line, and never a wall of text."""
    text = " ".join(text.split("\n"))
    return text if len(text) <= limit else text[:limit] + f"… ({len(text)} characters)"


def _library_log():
    from ..base.log import get_logger

    return get_logger("vm_manager")


def main(
    argv: Sequence[str] | None = None,
    connection: LibvirtConnection | None = None,
    out=None,
    err=None,
) -> int:
    """Run one command. Tests pass ``connection`` (a test-driver connection) and streams."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser(argv)
    usage = io.StringIO()
    try:
        # argparse writes help, version and usage errors to sys.stdout/sys.stderr itself
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(usage):
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help/--version exit 0, bad usage exits 2
        err.write(usage.getvalue())
        code = int(exit_.code or 0)
        if code and "--json" in (sys.argv[1:] if argv is None else argv):
            import json  # --json: stdout is one JSON document, errors too

            lines = usage.getvalue().strip().splitlines()
            out.write(json.dumps({"error": lines[-1] if lines else "invalid usage",
                                  "field": None, "exit": code}) + "\n")
        return code
    err.write(usage.getvalue())
    _setup_logging(args.verbose)
    ctx = CommandContext(args, connection, out, err)
    from ..base.errors import VMManagerError

    try:
        code = args.run(ctx)
        if TERMINATED:  # the command ended what it started, as for Ctrl-C
            signum = TERMINATED[0]
            print(f"{PROG}: stopped by {_signal_name(signum)}", file=err)
            ctx.finish_json(RuntimeError(f"stopped by {_signal_name(signum)}"), 128 + signum)
            return 128 + signum
        ctx.finish_json()
        return code
    except VMManagerError as error:
        if args.verbose:
            _library_log().exception("command failed")
        print(_one_line(f"{PROG}: {error}"), file=err)
        ctx.finish_json(error, error.exit_code)
        return error.exit_code
    except KeyboardInterrupt:
        signum = TERMINATED[0] if TERMINATED else 2  # SIGINT: 130, SIGTERM: 143, SIGHUP: 129
        print(f"{PROG}: {'interrupted' if signum == 2 else 'stopped by ' + _signal_name(signum)}",
              file=err)
        ctx.finish_json(RuntimeError("interrupted"), 128 + signum)
        return 128 + signum
    except BrokenPipeError:  # `neuron-vm list | head`
        return EXIT_OK
    except Exception as error:  # a bug: still one line, the traceback with -v
        if args.verbose:
            _library_log().exception("internal error")
        print(_one_line(f"{PROG}: internal error: {error!r} (run with -v for details)"),
              file=err)
        ctx.finish_json(RuntimeError(f"internal error: {error!r}"), EXIT_FAILED)
        return EXIT_FAILED
    finally:
        ctx.close()


TERMINATED: list[int] = []  # the SIGTERM or SIGHUP that stopped this run


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled like Ctrl-C: the command ends what it started (the Looking
    Glass client, the viewer, following a setup), says its last state, exits 128+n."""


def _terminate(signum, _frame) -> None:
    if not TERMINATED:
        TERMINATED.append(signum)
        raise Terminated(signum)


def _signal_name(signum: int) -> str:
    import signal

    return signal.Signals(signum).name


def run() -> None:
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR2, all_threads=True)  # kill -USR2: every thread's stack
    # Ctrl-C stops a command even when it was started with SIGINT ignored (Python then sets
    # no KeyboardInterrupt handler: a background job of a shell script, `cmd &`)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    sys.exit(main())
