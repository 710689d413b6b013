"""``snapshot create|list|revert|delete``: a VM's whole state (disks, NVRAM, TPM)."""

from __future__ import annotations

from .output import EXIT_OK, CommandContext, Spinner


def register(commands, common, subcommand) -> None:
    snapshot = commands.add_parser(
        "snapshot", parents=[common], help="snapshots of a VM's disks, UEFI variables and TPM",
        description="A snapshot is taken of a shut-off VM and holds its qcow2 disks, its UEFI"
        " variables (NVRAM) and its TPM state together; revert restores all three, or"
        " nothing.",
    )
    actions = snapshot.add_subparsers(dest="snapshot_action", metavar="ACTION", required=True)
    make = subcommand(actions, "create", "take a snapshot of a shut-off VM", cmd_create)
    make.add_argument("name", metavar="NAME")
    make.add_argument("snap", metavar="SNAP", nargs="?",
                      help="its name (default: the time, e.g. 20261201-213000)")
    make.add_argument("--description", default="", metavar="TEXT")
    listing = subcommand(actions, "list", "a VM's snapshots", cmd_list)
    listing.add_argument("name", metavar="NAME")
    back = subcommand(actions, "revert", "restore a snapshot (the VM shut off)", cmd_revert)
    back.add_argument("name", metavar="NAME")
    back.add_argument("snap", metavar="SNAP")
    back.add_argument("--force", action="store_true", help="power a running VM off first")
    gone = subcommand(actions, "delete", "delete one snapshot (never another)", cmd_delete)
    gone.add_argument("name", metavar="NAME")
    gone.add_argument("snap", metavar="SNAP")


def cmd_create(ctx: CommandContext) -> int:
    from ..actions import snapshots

    args = ctx.args
    with Spinner(ctx, f"Taking a snapshot of {args.name}"):
        snap = snapshots.create(ctx.actions, args.name, args.snap, args.description)
    if ctx.json:
        ctx.print_json(snap.to_dict())
    else:
        held = ", ".join(["disks", *snap.files])
        ctx.print(f"{args.name}: snapshot {snap.name} taken ({held})")
    return EXIT_OK


def cmd_list(ctx: CommandContext) -> int:
    from ..actions import snapshots

    items = snapshots.list_snapshots(ctx.actions, ctx.args.name)
    if ctx.json:
        ctx.print_json([snap.to_dict() for snap in items])
        return EXIT_OK
    if not items:
        ctx.print(f"{ctx.args.name} has no snapshots")
    for snap in items:
        what = ", ".join(["disks", *snap.files]) if snap.complete else snap.method
        ctx.print(f"{snap.name:<24} {snap.created}  {what}  {snap.description}".rstrip())
    return EXIT_OK


def cmd_revert(ctx: CommandContext) -> int:
    from ..actions import snapshots

    args = ctx.args
    with Spinner(ctx, f"Reverting {args.name} to {args.snap}"):
        snap = snapshots.revert(ctx.actions, args.name, args.snap, force=args.force)
    ctx.print(f"{args.name}: back at {snap.name} ({', '.join(['disks', *snap.files])})")
    return EXIT_OK


def cmd_delete(ctx: CommandContext) -> int:
    from ..actions import snapshots

    snapshots.delete(ctx.actions, ctx.args.name, ctx.args.snap)
    ctx.print(f"{ctx.args.name}: snapshot {ctx.args.snap} deleted")
    return EXIT_OK
