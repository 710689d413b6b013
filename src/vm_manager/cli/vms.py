"""``list``, ``info`` and ``events``."""

from __future__ import annotations

from .output import EXIT_OK, CommandContext, format_memory


def positive_count(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: give 1 or more state changes to wait for")
    return value


def register(commands, common, subcommand) -> None:
    commands.add_parser(
        "list", parents=[common], help="list all VMs (defined and running)",
        description="List all defined and running VMs with state, vCPUs, memory and type.",
    ).set_defaults(run=cmd_list)
    info = commands.add_parser(
        "info", parents=[common], help="show everything known about one VM",
        description="Show one VM: live domain facts plus its saved NeuronOS settings.",
    )
    info.add_argument("name", metavar="NAME")
    info.set_defaults(run=cmd_info)
    events = commands.add_parser(
        "events", parents=[common], help="print VM state changes as they happen",
        description="Print every state change (one line each, or JSON lines with --json)"
        " until Ctrl-C.",
    )
    events.add_argument("name", metavar="NAME", nargs="?", help="only this VM")
    events.add_argument("--count", type=positive_count, default=None, metavar="N",
                        help="stop after N state changes")
    events.set_defaults(run=cmd_events)


def cmd_list(ctx: CommandContext) -> int:
    from ..actions import vms

    inventory = vms.list_vms(ctx.actions)
    for problem in inventory.problems:
        ctx.warn(problem)
    if ctx.json:
        ctx.print_json([vm.to_dict() for vm in inventory.vms])
        return EXIT_OK
    if not inventory.vms:
        ctx.print(f"No VMs on {ctx.actions.uri}.")
        return EXIT_OK
    rows = [("NAME", "STATE", "VCPUS", "MEMORY", "TYPE")]
    rows += [(vm.name, vm.state.label, str(vm.vcpus), format_memory(vm.memory_mb),
              vm.vm_type or "-") for vm in inventory.vms]
    ctx.print_table(rows)
    return EXIT_OK


def cmd_info(ctx: CommandContext) -> int:
    """The desktop app's details pane as text (the same typed sections); ``--json``: every
    fact read from the domain and the saved settings."""
    from ..actions import details

    shown = details.details(ctx.actions, ctx.args.name)
    facts = shown.facts
    if "settings_problem" in facts:
        ctx.warn(facts["settings_problem"])
    for problem in facts.get("disk_problems") or []:
        ctx.warn(f"{problem['problem']}; fix: {problem['fix']}")
    if ctx.json:
        ctx.print_json(facts)
        return EXIT_OK
    for number, section in enumerate(shown.sections):
        if number:
            ctx.print("")
        ctx.print(section.title)
        ctx.print_fields([(f"  {label}", value) for label, value in section.rows])
    return EXIT_OK


def _format_change(change) -> str:
    import datetime

    stamp = datetime.datetime.fromtimestamp(change.timestamp).isoformat(" ", "milliseconds")
    return f"{stamp}  {change.name}  {change.old.value} -> {change.new.value}  ({change.reason})"


def _format_setup(change) -> str:
    import datetime

    stamp = datetime.datetime.fromtimestamp(change.timestamp).isoformat(" ", "milliseconds")
    return f"{stamp}  {change.name}  setup {change.old} -> {change.new}  ({change.note})"


def cmd_events(ctx: CommandContext) -> int:
    import queue

    from ..actions import vms

    from ..actions import setup

    name = ctx.args.name
    items = queue.Queue()
    stop = vms.watch(ctx.actions, name, items.put, items.put)
    stop_setup = setup.follow(ctx.actions, name, items.put) if name else \
        setup.follow_all(ctx.actions, items.put)
    if not ctx.json:
        ctx.err.write(f"Watching {name or 'all VMs'} on {ctx.actions.uri}; Ctrl-C to stop.\n")
        ctx.err.flush()
    seen = 0
    try:
        while ctx.args.count is None or seen < ctx.args.count:
            try:
                item = items.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if hasattr(item, "note"):  # an unattended setup reached a stage
                if ctx.json:
                    ctx.print_json_line({"name": item.name, "setup": item.new, "old": item.old,
                                         "note": item.note, "time": item.timestamp})
                else:
                    ctx.print(_format_setup(item))
                    ctx.out.flush()
                seen += 1
                continue
            if not hasattr(item, "old"):  # the connection went away or came back
                if ctx.json:
                    ctx.print_json_line({"connection": item.status, "uri": item.uri,
                                         "reason": item.reason, "time": item.timestamp})
                else:
                    ctx.print(f"-- connection {item.status}: {item.reason}")
                    ctx.out.flush()
                continue
            if ctx.json:
                ctx.print_json_line({"name": item.name, "old": item.old.value,
                                     "new": item.new.value, "reason": item.reason,
                                     "time": item.timestamp})
            else:
                ctx.print(_format_change(item))
                ctx.out.flush()
            seen += 1
    except KeyboardInterrupt:
        pass
    finally:
        stop()
        stop_setup()
    return EXIT_OK
