"""What every command gets (parsed options, the streams, the actions context) and the ways
it prints: lines, JSON, tables, a spinner while a wait lasts."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..actions import Context
    from ..base.connection import LibvirtConnection

PROG = "neuron-vm"
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3


class CommandContext:
    """Options, output streams and the actions ``Context`` (made on first use). With
    ``--json`` stdout is one JSON document whatever the command prints: lines a command
    prints as text are kept and end as ``{"message": ...}`` (or go to stderr when it wrote
    JSON), and an error is ``{"error": ..., "field": ..., "exit": N}``."""

    def __init__(self, args: argparse.Namespace, connection: LibvirtConnection | None, out,
                 err):
        self.args = args
        self.out = out
        self.err = err
        self._connection = connection
        self._actions: Context | None = None
        self._json_written = False
        self._text: list[str] = []  # lines printed as text under --json

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def actions(self) -> Context:
        if self._actions is None:
            from ..actions import Context

            # One-shot commands need no event loop: the first subscriber turns it on.
            self._actions = Context(getattr(self.args, "connect", None),
                                    connection=self._connection, events=False)
        return self._actions

    def close(self) -> None:
        if self._actions is not None:
            self._actions.close()

    def print(self, text: str = "") -> None:
        if self.json:
            self._text.append(text)
        else:
            print(text, file=self.out)

    def write(self, text: str) -> None:
        """Text as it is (an XML document, a template): under --json, one JSON string."""
        if self.json:
            self._text.append(text.rstrip("\n"))
        else:
            self.out.write(text)

    def finish_json(self, error=None, code: int | None = None) -> None:
        """End a --json command's stdout as one JSON document (see the class)."""
        import json

        if not self.json:
            return
        if error is not None and not self._json_written:
            self.out.write(json.dumps({"error": str(error), "field": getattr(error, "field",
                                                                              None),
                                       "exit": code}) + "\n")
            self._json_written = True
        if self._text and not self._json_written:
            self.out.write(json.dumps({"message": "\n".join(self._text)}, indent=2) + "\n")
        elif self._text:
            self.err.write("\n".join(self._text) + "\n")
        self._text = []

    def print_json(self, data: Any) -> None:
        """Objects indented; a list one item per line (json's C encoder only works without
        indent: 200 VMs indented take ~10 ms of `neuron-vm list --json`)."""
        import json

        if isinstance(data, list):
            text = "[\n" + ",\n".join(f"  {json.dumps(item)}" for item in data) + "\n]" \
                if data else "[]"
        else:
            text = json.dumps(data, indent=2)
        self._json_written = True
        self.out.write(text + "\n")

    def print_json_line(self, data: dict) -> None:
        import json

        self._json_written = True
        self.out.write(json.dumps(data) + "\n")
        self.out.flush()

    def print_table(self, rows: list[tuple[str, ...]]) -> None:
        widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
        for row in rows:
            self.print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())

    def print_fields(self, lines: list[tuple[str, str]]) -> None:
        width = max(len(key) for key, _ in lines)
        for key, value in lines:
            self.print(f"{key + ':':<{width + 1}} {value}".rstrip())

    def warn(self, text: str) -> None:
        print(f"{PROG}: warning: {text}", file=self.err)

    def report(self, result, text: str) -> int:
        """A result as JSON (``--json``) or as one line."""
        if self.json:
            self.print_json(result.to_dict())
        else:
            self.print(text)
        return EXIT_OK


def format_memory(memory_mb: int | float) -> str:
    if memory_mb >= 1024:
        return f"{memory_mb / 1024:.1f} GiB"
    return f"{memory_mb:g} MiB"


class Spinner:
    """``⠋ Stopping win11… 3.2s`` on stderr while a wait lasts longer than a second, only on
    a terminal and never with --json (the library waits on events; this is just the face of
    that wait)."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, ctx: CommandContext, text: str):
        self.ctx = ctx
        self.text = text
        stream = ctx.err
        self.enabled = not ctx.json and hasattr(stream, "isatty") and stream.isatty()
        self._done: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Spinner:
        if self.enabled:
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


def confirm(question: str) -> bool:
    """Ask on the terminal; False when the answer is not yes."""
    return input(question).strip().lower() in ("y", "yes")


def stdin_is_terminal() -> bool:
    return hasattr(sys.stdin, "isatty") and sys.stdin.isatty()


def print_display(ctx: CommandContext):
    """A Looking Glass display's states as lines (``display``, ``start --display``)."""
    return lambda change: ctx.print(f"{change.vm_name}: {change.new.value} ({change.reason})")


def follow_display(session) -> int:
    """Stay until the window closes, the VM stops (it closes then), or Ctrl-C."""
    try:
        while not session.closed:
            session.wait(0.5)  # a timeout keeps Ctrl-C responsive
    except KeyboardInterrupt:
        session.close()  # the client it started stops with it (Ctrl-C, SIGTERM, SIGHUP)
    return EXIT_FAILED if session.failed else EXIT_OK
