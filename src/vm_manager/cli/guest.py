"""``setup-status`` and ``console``: a guest being set up, and its own screen."""

from __future__ import annotations

from .output import EXIT_OK, CommandContext


def register(commands, common, subcommand) -> None:
    status = commands.add_parser(
        "setup-status", parents=[common], help="where a VM's unattended setup stands",
        description="The stage of an unattended setup (created, installing, first-logon,"
        " looking-glass, ready), each step with its time, and what happens next. The stages"
        " come from libvirt's events and are kept in the VM's metadata.",
    )
    status.add_argument("name", metavar="NAME")
    status.set_defaults(run=cmd_setup_status)
    console = commands.add_parser(
        "console", parents=[common], help="open a VM's own screen (SPICE) in virt-viewer",
        description="Open the VM's own display in virt-viewer, for any VM: also while Windows"
        " installs and before Looking Glass works. It waits for the VM to start and follows"
        " its reboots.",
    )
    console.add_argument("name", metavar="NAME")
    console.add_argument("--wait", action="store_true",
                         help="stay until the viewer window closes (default: open it and return)")
    console.set_defaults(run=cmd_console)


def cmd_setup_status(ctx: CommandContext) -> int:
    from ..actions import setup

    result = setup.status(ctx.actions, ctx.args.name)
    if ctx.json:
        ctx.print_json(result.to_dict())
        return EXIT_OK
    ctx.print(f"{result.name}: {result.stage} ({result.kind} setup)")
    for step in result.steps:
        ctx.print(f"  {step['at']}  {step['stage']:<13} {step['note']}")
    if result.next:
        ctx.print(f"next: {result.next}")
    return EXIT_OK


def cmd_console(ctx: CommandContext) -> int:
    from ..actions import console

    session = console.open_console(ctx.actions, ctx.args.name, wait=ctx.args.wait)
    ctx.print(f"{ctx.args.name}: {session.message}")
    return EXIT_OK if session.code in (0, None) else 1
