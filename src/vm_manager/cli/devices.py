"""``gpu list|plan|handoff-plan|handoff-end|prepare|unprepare|detach|reattach``, ``usb list|attach|detach`` and
``tune`` (where a VM's vCPUs run)."""

from __future__ import annotations

from .output import EXIT_FAILED, EXIT_OK, CommandContext, Spinner


def register(commands, common, subcommand) -> None:
    gpu = commands.add_parser(
        "gpu", parents=[common], help="GPUs: list, passthrough plan, boot-time isolation",
        description="Reads sysfs under $NEURONOS_HOST_ROOT (default /); only prepare --apply,"
        " unprepare, detach and reattach change anything.",
    )
    actions = gpu.add_subparsers(dest="gpu_action", metavar="ACTION", required=True)
    listing = subcommand(actions, "list", "every GPU, its functions, IOMMU group and verdict",
                         cmd_gpu_list)
    listing.add_argument("--source", choices=("sysfs", "libvirt"),
                         help="where to read: this machine's /sys, or libvirt's node devices"
                         " (default: sysfs for a local URI, libvirt for a remote one)")
    plan = subcommand(actions, "plan", "what passing this GPU to a VM takes", cmd_gpu_plan)
    plan.add_argument("address", metavar="ADDR")
    plan.add_argument("--allow-boot-gpu", action="store_true",
                      help="single-GPU mode: allow passing the GPU the host boots on")
    handoff = subcommand(actions, "handoff-plan", "single GPU: every step of handing the"
                         " desktop's GPU to a VM, and its undo (changes nothing)",
                         cmd_gpu_handoff_plan)
    handoff.add_argument("name", metavar="NAME")
    ending = subcommand(actions, "handoff-end", "single GPU: end a VM's handoff (it is shut"
                        " down) and get the desktop back; what it gave back", cmd_gpu_handoff_end)
    ending.add_argument("name", metavar="NAME")
    prepare = subcommand(actions, "prepare", "let vfio-pci claim the GPU at boot (shown;"
                         " written with --apply)", cmd_gpu_prepare)
    prepare.add_argument("address", metavar="ADDR")
    prepare.add_argument("--apply", action="store_true", help="really write the files")
    subcommand(actions, "unprepare", "undo prepare: every file back as it was",
               cmd_gpu_unprepare)
    for name, text in (("detach", "hand one function to vfio-pci now (through libvirt)"),
                       ("reattach", "give one function back to its host driver")):
        sub = subcommand(actions, name, text, cmd_gpu_node)
        sub.add_argument("address", metavar="ADDR")

    tune = commands.add_parser(
        "tune", parents=[common], help="where a VM's vCPUs run: the plan and why (--apply"
        " writes it)", description="Plans the VM's CPU topology and, for a GPU VM, which host"
        " cores its vCPUs and QEMU's own threads run on, from this computer's CPUs (sysfs"
        " under $NEURONOS_HOST_ROOT). Nothing changes without --apply; the VM must be"
        " stopped then, and its next start has it.")
    tune.add_argument("name", metavar="NAME")
    tune.add_argument("--apply", action="store_true", help="write the plan into the VM")
    tune.set_defaults(run=cmd_tune)

    usb = commands.add_parser(
        "usb", parents=[common], help="USB devices: list, attach to / detach from a VM",
        description="A running VM gets the device at once and keeps it; a stopped one gets it"
        " in its config. The VM's saved settings follow.",
    )
    actions = usb.add_subparsers(dest="usb_action", metavar="ACTION", required=True)
    subcommand(actions, "list", "the host's USB devices", cmd_usb_list)
    for name, text in (("attach", "give a USB device to a VM"),
                       ("detach", "take a USB device back from a VM")):
        sub = subcommand(actions, name, text, cmd_usb_change)
        sub.add_argument("vm", metavar="NAME")
        sub.add_argument("device", metavar="VID:PID|BUS-PORT")


def cmd_gpu_list(ctx: CommandContext) -> int:
    from ..actions import gpu

    gpus = gpu.list_gpus(ctx.actions, ctx.args.source)
    if ctx.json:
        ctx.print_json([info.to_dict() for info in gpus])
        return EXIT_OK
    if not gpus:
        ctx.print("No GPUs found.")
    for info in gpus:
        verdict = "viable" if info.viable else "NOT viable"
        group = info.device.iommu_group if info.device.iommu_group is not None else "-"
        ctx.print(f"{info.address}  {info.device.name}")
        ctx.print(f"    driver {info.device.driver or '-'}, IOMMU group {group}, functions"
                  f" {', '.join(str(f.address) for f in info.functions)}: {verdict}")
        for blocker in info.blockers:
            ctx.print(f"    blocked by {blocker.address}: {blocker.reason}")
        for warning in info.warnings:
            ctx.print(f"    note: {warning}")
    return EXIT_OK


def cmd_gpu_plan(ctx: CommandContext) -> int:
    from ..actions import gpu

    plan = gpu.plan(ctx.actions, ctx.args.address, allow_boot_gpu=ctx.args.allow_boot_gpu)
    if ctx.json:
        ctx.print_json(plan.to_dict())
    else:
        ctx.print(f"{plan.gpu.address}  {plan.gpu.device.name}")
        ctx.print(f"  hostdevs (managed='yes'): {', '.join(plan.hostdevs)}")
        for note in plan.notes:
            ctx.print(f"  note: {note}")
        for warning in plan.gpu.warnings:
            ctx.print(f"  warning: {warning}")
        ctx.print("  ready to pass through" if plan.ready else f"  refused: {plan.refused_reason}")
    return EXIT_OK if plan.ready else EXIT_FAILED


def cmd_gpu_handoff_plan(ctx: CommandContext) -> int:
    from ..actions import gpu

    plan = gpu.handoff_plan(ctx.actions, ctx.args.name)
    if ctx.json:
        ctx.print_json(plan.to_dict())
        return EXIT_OK
    for line in plan.describe():
        ctx.print(line)
    if plan.needed:
        ctx.print(f"(nothing was done: `neuron-vm start {ctx.args.name}` carries it out)")
    return EXIT_OK


def cmd_gpu_handoff_end(ctx: CommandContext) -> int:
    from ..actions import handoff

    said = handoff.end(ctx.actions, ctx.args.name)
    if ctx.json:
        ctx.print_json({"name": ctx.args.name, "said": said,
                        "journal": handoff.journal(ctx.args.name)})
        return EXIT_OK
    ctx.print(said)
    for line in handoff.journal(ctx.args.name):
        ctx.print(f"  {line}")
    return EXIT_OK


def cmd_gpu_prepare(ctx: CommandContext) -> int:
    from ..actions import gpu

    outcome = gpu.prepare(ctx.actions, ctx.args.address, apply=ctx.args.apply)
    for line in outcome.plan.describe():
        ctx.print(line)
    if not outcome.applied:
        ctx.print("(nothing written: add --apply to do it)")
    for line in outcome.done:
        ctx.print(line)
    return EXIT_OK


def cmd_gpu_unprepare(ctx: CommandContext) -> int:
    from ..actions import gpu

    for line in gpu.unprepare(ctx.actions):
        ctx.print(line)
    return EXIT_OK


def cmd_gpu_node(ctx: CommandContext) -> int:
    from ..actions import gpu

    detach = ctx.args.gpu_action == "detach"
    (gpu.detach if detach else gpu.reattach)(ctx.actions, ctx.args.address)
    ctx.print(f"{ctx.args.address}: {'on vfio-pci' if detach else 'back on its host driver'}")
    return EXIT_OK


def cmd_usb_list(ctx: CommandContext) -> int:
    from ..actions import usb

    devices = usb.list_usb(ctx.actions)
    if ctx.json:
        ctx.print_json([device.to_dict() for device in devices])
        return EXIT_OK
    if not devices:
        ctx.print("No USB devices found.")
    for device in devices:
        hub = "  (hub)" if device.is_hub else ""
        ctx.print(f"{device.sysfs_name:10s} {device.vendor_id}:{device.product_id}"
                  f"  {device.name}{hub}")
    return EXIT_OK


def cmd_usb_change(ctx: CommandContext) -> int:
    from ..actions import usb

    device, exact = usb.find(ctx.actions, ctx.args.device)
    change = usb.attach if ctx.args.usb_action == "attach" else usb.detach
    with Spinner(ctx, f"{ctx.args.usb_action.capitalize()}ing {device.name}"):
        outcome = change(ctx.actions, ctx.args.vm, device, exact)
    if outcome.warning:
        ctx.warn(outcome.warning)
    ctx.print(outcome.describe())
    return EXIT_OK


def cmd_tune(ctx: CommandContext) -> int:
    from ..actions import tune

    report = tune.report(ctx.actions, ctx.args.name)
    if ctx.args.apply and not (report.current and report.applies):
        outcome = tune.apply(ctx.actions, ctx.args.name)
        report = tune.report(ctx.actions, ctx.args.name)
        if not ctx.json:
            for change in outcome.changes:
                ctx.print(f"changed: {change}")
    if ctx.json:
        ctx.print_json(report.to_dict())
        return EXIT_OK
    ctx.print(f"{report.name} on this host: {report.host}")
    for line in report.plan.describe():
        ctx.print(f"  {line}")
    if not report.applies and report.plan.pinned:
        why = "you turned the pinning off" if report.turned_off else "only GPU VMs are unasked"
        ctx.print(f"  (not pinned now: {why}; it has the topology alone)")
    if report.current and (report.applies or not report.plan.pinned):
        ctx.print(f"{report.name}: its definition holds this plan")
    elif report.current:
        ctx.print(f"{report.name}: its definition holds the topology; `neuron-vm tune"
                  f" {report.name} --apply` pins it as above")
    elif not ctx.args.apply:
        ctx.print(f"{report.name}: its definition differs; `neuron-vm tune {report.name}"
                  " --apply` writes the plan (the VM stopped)")
    return EXIT_OK
