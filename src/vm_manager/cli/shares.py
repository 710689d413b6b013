"""``share list|add|remove``: host folders a VM mounts over virtiofs."""

from __future__ import annotations

import contextlib

from .output import EXIT_OK, CommandContext

FLAGS = {"shares.path": "HOST_DIR", "shares.tag": "--tag", "shares.readonly": "--read-only"}


def register(commands, common, subcommand) -> None:
    share = commands.add_parser(
        "share", parents=[common], help="host folders a VM mounts (virtiofs)",
        description="Share host folders with a VM over virtiofs. A Linux guest mounts one by"
        " its tag (mount -t virtiofs TAG /mnt/TAG); Windows shows it as a drive once WinFsp"
        " and the VirtIO-FS service run. A running VM sees a change after it is shut down"
        " and started again.",
    )
    actions = share.add_subparsers(dest="share_action", metavar="ACTION", required=True)
    listing = subcommand(actions, "list", "the folders a VM shares", cmd_list)
    listing.add_argument("name", metavar="NAME")
    add = subcommand(actions, "add", "share a host folder with a VM", cmd_add)
    add.add_argument("name", metavar="NAME")
    add.add_argument("path", metavar="HOST_DIR")
    add.add_argument("--tag", help="what the guest mounts (default: the folder's name)")
    add.add_argument("--read-only", action="store_true",
                     help="the guest cannot change it (needs libvirt 11.0+)")
    gone = subcommand(actions, "remove", "stop sharing a folder", cmd_remove)
    gone.add_argument("name", metavar="NAME")
    gone.add_argument("which", metavar="TAG|HOST_DIR")


@contextlib.contextmanager
def _flags():
    from ..base.errors import InvalidConfig

    try:
        yield
    except InvalidConfig as error:
        if error.field in FLAGS:
            raise InvalidConfig(f"{FLAGS[error.field]} ({error.field})", error.message) \
                from None
        raise


def cmd_list(ctx: CommandContext) -> int:
    from ..actions import shares

    items = shares.list_shares(ctx.actions, ctx.args.name)
    if ctx.json:
        ctx.print_json([item.to_dict() for item in items])
        return EXIT_OK
    if not items:
        ctx.print(f"{ctx.args.name} shares no folders")
    for item in items:
        mode = "read-only" if item.readonly else "read-write"
        ctx.print(f"{item.tag:<20} {item.source}  ({item.driver}, {mode})")
    return EXIT_OK


def cmd_add(ctx: CommandContext) -> int:
    from ..actions import shares

    args = ctx.args
    with _flags():
        outcome = shares.add(ctx.actions, args.name, args.path, args.tag, args.read_only)
    return _report(ctx, outcome)


def cmd_remove(ctx: CommandContext) -> int:
    from ..actions import shares

    return _report(ctx, shares.remove(ctx.actions, ctx.args.name, ctx.args.which))


def _report(ctx: CommandContext, outcome) -> int:
    for warning in outcome.warnings:
        ctx.warn(warning)
    if ctx.json:
        ctx.print_json(outcome.to_dict())
    else:
        ctx.print(outcome.describe())
    return EXIT_OK
