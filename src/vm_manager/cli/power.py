"""``start``, ``stop``, ``pause``, ``resume``, ``reboot``, ``reset`` and ``display``."""

from __future__ import annotations

import argparse

from .output import EXIT_OK, CommandContext, Spinner, follow_display, print_display


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} seconds: give more than 0 and at most 86400"
                                         " (a day)")
    return value


SIMPLE = (
    ("pause", "freeze a running VM's CPUs"),
    ("resume", "let a paused VM continue"),
    ("reboot", "ask the guest to restart (ACPI)"),
    ("reset", "press the reset button (no shutdown)"),
)


def register(commands, common, subcommand) -> None:
    start = commands.add_parser(
        "start", parents=[common], help="boot a VM and wait until it runs",
        description="Boot a VM. Waits (on libvirt events) until it runs, unless --no-wait.",
    )
    start.add_argument("name", metavar="NAME")
    start.add_argument("--paused", action="store_true", help="start with the CPUs paused")
    start.add_argument("--no-wait", action="store_true", help="return once libvirt accepted")
    start.add_argument("--timeout", type=seconds, default=60.0, metavar="S",
                       help="give up waiting after S seconds (default 60)")
    start.add_argument("--hand-over-gpu", action="store_true",
                       help="a VM whose GPU shows this desktop: yes, stop the desktop while it"
                       " runs (asked only the first time; see `gpu handoff-plan NAME`)")
    start.add_argument("--display", action="store_true",
                       help="then show it through Looking Glass (stays until the window closes)")
    start.set_defaults(run=cmd_start)
    stop = commands.add_parser(
        "stop", parents=[common], help="shut a VM down (ACPI, forced after the timeout)",
        description="Press the VM's ACPI power button and wait; if the guest has not powered"
        " off after --timeout seconds, power it off by force. Says which happened.",
    )
    stop.add_argument("name", metavar="NAME")
    stop.add_argument("--force", action="store_true", help="power off at once (may lose data)")
    stop.add_argument("--timeout", type=seconds, default=60.0, metavar="S",
                      help="seconds to wait for a graceful shutdown (default 60)")
    stop.set_defaults(run=cmd_stop)
    for name, text in SIMPLE:
        sub = commands.add_parser(name, parents=[common], help=text, description=text + ".")
        sub.add_argument("name", metavar="NAME")
        sub.set_defaults(run=cmd_simple, operation=name)
    display = commands.add_parser(
        "display", parents=[common], help="show a running VM through Looking Glass",
        description="Start the Looking Glass client once the guest's host application is"
        " live, restart it if it crashes, and close it when the VM stops. Runs until the"
        " window closes or Ctrl-C. Fullscreen at any time: the escape key (Scroll Lock) + F"
        " inside the window.",
    )
    display.add_argument("name", metavar="NAME")
    display.add_argument("--fullscreen", action="store_true", help="open fullscreen")
    display.add_argument("--stop", action="store_true",
                         help="close the window another neuron-vm opened")
    display.add_argument("--user", help="as root: the desktop user to run the client as"
                         " (default $SUDO_USER)")
    display.set_defaults(run=cmd_display)


def cmd_start(ctx: CommandContext) -> int:
    from ..actions import power
    from ..actions.display import DisplayRequest

    args = ctx.args
    request = power.StartRequest(args.name, paused=args.paused, wait=not args.no_wait,
                                 timeout=args.timeout,
                                 display=DisplayRequest(args.name) if args.display else None,
                                 hand_over=args.hand_over_gpu)
    _before_handoff(ctx)
    with Spinner(ctx, f"Starting {args.name}"):
        outcome = power.start(ctx.actions, request, on_display_change=print_display(ctx))
    for note in outcome.prepared:
        ctx.warn(note)
    if outcome.handoff is not None:
        return _handed_over(ctx, outcome)
    result = outcome.result
    how = "requested" if args.no_wait else f"{result.state.label} after {result.elapsed_s:.2f} s"
    code = ctx.report(result, f"{args.name}: {result.message}, {how}")
    if outcome.setup is not None and not ctx.json:
        ctx.print(f"{args.name}: setup {outcome.setup.stage}; next: {outcome.setup.next}")
    if outcome.display is not None:
        return follow_display(outcome.display)
    return code


def _before_handoff(ctx: CommandContext) -> None:
    """Say how to get the desktop back before the screen goes black (this terminal ends
    with the desktop)."""
    from ..actions import handoff

    name = ctx.args.name
    if ctx.json or ctx.args.paused or ctx.args.display:
        return
    plan = handoff.needed(ctx.actions, name)
    if plan is None or handoff.cannot_run(plan):
        return
    if ctx.args.hand_over_gpu or handoff.consented(ctx.actions, name):
        ctx.print(f"{name}: this desktop stops while {name} runs; to get it back:")
        for line in handoff.way_back_of(ctx.actions, name):
            ctx.print(f"  - {line}")


def _handed_over(ctx: CommandContext, outcome) -> int:
    started = outcome.handoff
    if ctx.json:
        ctx.print_json({**outcome.result.to_dict(), "unit": started.unit,
                        "way_back": list(started.way_back)})
        return EXIT_OK
    ctx.print(f"{started.vm}: {outcome.result.message} (as {started.unit})")
    return EXIT_OK


def cmd_display(ctx: CommandContext) -> int:
    from ..actions import display

    args = ctx.args
    if args.stop:
        stopped = display.close_display(ctx.actions, args.name)
        ctx.print(f"{args.name}: Looking Glass {'closed' if stopped else 'was not open'}")
        return EXIT_OK
    request = display.DisplayRequest(args.name, fullscreen=args.fullscreen, user=args.user)
    return follow_display(display.open_display(ctx.actions, request, on_change=print_display(ctx)))


def cmd_stop(ctx: CommandContext) -> int:
    from ..actions import power

    args = ctx.args
    with Spinner(ctx, f"Stopping {args.name}"):
        result = power.stop(ctx.actions, args.name, force=args.force, timeout=args.timeout)
    return ctx.report(result, f"{args.name}: {result.message} in {result.elapsed_s:.2f} s")


def cmd_simple(ctx: CommandContext) -> int:
    from ..actions import power

    name, operation = ctx.args.name, ctx.args.operation
    with Spinner(ctx, f"{operation.capitalize()} {name}"):
        result = getattr(power, operation)(ctx.actions, name)
    text = f"{name}: {result.message} in {result.elapsed_s:.2f} s"
    if result.state.value not in result.message:
        text += f"; it is {result.state.label}"
    return ctx.report(result, text)
