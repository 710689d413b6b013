"""``doctor``, ``shm-permissions`` and ``templates list|show|validate``."""

from __future__ import annotations

from .output import EXIT_FAILED, EXIT_OK, CommandContext


def register(commands, common, subcommand) -> None:
    commands.add_parser(
        "doctor", parents=[common], help="check that this host is ready (KVM, IOMMU, ...)",
        description="Check CPU virtualization, /dev/kvm, IOMMU, vfio-pci, UEFI firmware,"
        " swtpm, libvirtd, the default network, your groups, the Looking Glass client and"
        " shared-memory rights. Each result has a one-line fix. Exit 1 if any check fails.",
    ).set_defaults(run=cmd_doctor)
    shm = commands.add_parser(
        "shm-permissions", parents=[common],
        help="let the desktop user open a VM's Looking Glass shared memory",
        description="Write the systemd-tmpfiles rule that makes /dev/shm/looking-glass-<vm>"
        " at boot for the desktop user alone (0600) and QEMU's user (an ACL entry); neuron-vm"
        " makes the file anew itself at every start. Shows the rule unless --apply.",
    )
    shm.add_argument("name", metavar="NAME")
    shm.add_argument("--user", help="the desktop user (default: $SUDO_USER or you)")
    shm.add_argument("--apply", action="store_true", help="really write the rule")
    shm.set_defaults(run=cmd_shm_permissions)

    templates = commands.add_parser(
        "templates", parents=[common], help="list, show or validate domain templates",
        description="Templates are found in ~/.config/neuronos/templates,"
        " /usr/share/neuron-os/templates and the package, name by name (a user file overrides"
        " that one template only).",
    )
    actions = templates.add_subparsers(dest="templates_action", metavar="ACTION",
                                       required=True)
    subcommand(actions, "list", "every template and where it comes from", cmd_templates_list)
    show = subcommand(actions, "show", "print a template's source", cmd_templates_show)
    show.add_argument("target", metavar="T")
    validate = subcommand(actions, "validate", "check a domain XML file (libvirt's schema and"
                          " NeuronOS's rules)", cmd_templates_validate)
    validate.add_argument("target", metavar="FILE")


def cmd_doctor(ctx: CommandContext) -> int:
    from ..actions import host

    checks = host.doctor(ctx.actions)
    failed = sum(check.status == "fail" for check in checks)
    if ctx.json:
        ctx.print_json([check.to_dict() for check in checks])
    else:
        for check in checks:
            ctx.print(f"[{check.status:^4s}] {check.name}: {check.detail}")
            if check.fix and check.status != "ok":
                ctx.print(f"       fix: {check.fix}")
        from ..base.primitives import plural

        warned = sum(check.status == "warn" for check in checks)
        ctx.print(f"{plural(len(checks), 'check')}: {failed} failed, {plural(warned, 'warning')}")
        ctx.print(host.verdict(checks))
    return EXIT_FAILED if failed else EXIT_OK


def cmd_shm_permissions(ctx: CommandContext) -> int:
    from ..actions import host

    args = ctx.args
    result = host.shm_permissions(ctx.actions, args.name, args.user, apply=args.apply)
    ctx.print(f"{'wrote' if result.applied else 'would write'} {result.path}:")
    ctx.write(result.text)
    if result.applied:
        if result.ran:
            ctx.print(f"ran {result.ran}")
        ctx.print("restart the VM so its shared memory is made with these rights")
    else:
        ctx.print("(nothing written: add --apply)")
    return EXIT_OK


def cmd_templates_list(ctx: CommandContext) -> int:
    from ..actions import templates

    infos = templates.list_templates(ctx.actions)
    if ctx.json:
        ctx.print_json([{"name": i.name, "origin": i.origin, "path": str(i.path)} for i in infos])
    else:
        for info in infos:
            ctx.print(f"{info.name:24s} {info.origin:8s} {info.path}")
    return EXIT_OK


def cmd_templates_show(ctx: CommandContext) -> int:
    from ..actions import templates

    ctx.write(templates.show(ctx.actions, ctx.args.target))
    return EXIT_OK


def cmd_templates_validate(ctx: CommandContext) -> int:
    from ..actions import templates

    report = templates.validate_file(ctx.actions, ctx.args.target)
    checked = "schema and NeuronOS rules" if report.schema_checked else (
        f"NeuronOS rules only ({report.schema_skipped_reason})")
    ctx.print(f"{ctx.args.target}: valid ({checked})")
    return EXIT_OK
