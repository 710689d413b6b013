"""``create``, ``configure`` and ``delete``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses

from .guest import (follow_setup, product_key_of, read_secrets, setup_options,
                    unattended_from_args)
from .output import (
    EXIT_FAILED,
    EXIT_OK,
    CommandContext,
    Spinner,
    confirm,
    stdin_is_terminal,
)

# CLI flags for the config fields, so an error names what the user typed.
FLAG_FOR_FIELD = {
    "memory_mb": "--memory", "vcpus": "--cpus", "disk_size_gb": "--disk-size",
    "disk_path": "--disk", "disk_device": "--disk-device", "iso_path": "--iso", "virtio_iso_path": "--virtio-iso",
    "gpu.pci_address": "--gpu", "opencore_path": "--opencore", "domain_type": "--domain-type",
    "network": "--network", "vm_type": "--template", "kernel_path": "--kernel",
    "initrd_path": "--initrd", "kernel_cmdline": "--cmdline",
    "serial_log_path": "--serial-log", "looking_glass.enabled": "--looking-glass",
    "looking_glass.width": "--resolution", "looking_glass.height": "--resolution",
    "gpu.rom_file": "--gpu-rom", "unattended": "--unattended", "shares.path": "--share",
    "shares.tag": "--share", "shares": "--share", "shares.readonly": "--read-only-share",
    "unattended.user": "--user",
    "unattended.locale": "--locale", "unattended.keyboard": "--keyboard",
    "unattended.ui_language": "--ui-language", "product_key": "--product-key",
    "unattended.timezone": "--timezone", "unattended.edition": "--edition",
    "unattended.lg_host_installer": "--lg-host-installer",
    "unattended.lg_host_release": "--lg-host-release", "password": "--password-file",
    "unattended.winfsp_installer": "--winfsp-installer",
    "unattended.gpu_driver_installer": "--gpu-driver-installer",
    "unattended.ssh_key_path": "--ssh-key", "cloud_image_path": "--cloud-image",
    "unattended.bypass_hardware_checks": "--bypass-hardware-checks",
    "secure_boot": "--secure-boot", "unattended.stage_timeout_s": "--stage-timeout",
    "usb_devices": "--usb", "usb.vendor_id": "--usb", "usb.product_id": "--usb",
    "tune.pin": "--tune", "tune.hugepages": "--hugepages", "tune.isolate": "--isolate",
}


def register(commands, common, subcommand) -> None:
    create = commands.add_parser(
        "create", parents=[common], help="create a VM from a template",
        description="Create a VM: check, make its disk, render and validate its XML, define"
        " it, save its settings. A failure undoes every step before it.",
    )
    create.add_argument("name", metavar="NAME")
    create.add_argument("--template", required=True, metavar="T",
                        help="windows11, windows10, linux or macos (optionally -basic or"
                        " -passthrough; the GPU option picks passthrough by itself)")
    create.add_argument("--memory", metavar="SIZE", help="e.g. 8G (default per OS)")
    create.add_argument("--cpus", metavar="N", help="vCPUs (default per OS)")
    disk = create.add_mutually_exclusive_group()
    disk.add_argument("--disk-size", metavar="SIZE", help="new disk, e.g. 64G (default per OS)")
    disk.add_argument("--disk", metavar="PATH", help="use this existing disk image instead")
    disk.add_argument("--disk-device", metavar="DEV",
                      help="give the VM this whole block device (never one the host uses)")
    create.add_argument("--iso", metavar="PATH", help="installer ISO")
    create.add_argument("--virtio-iso", metavar="PATH",
                        help="virtio-win drivers ISO (Windows; enables virtio disk and NIC)")
    _gpu_options(create)
    tune = create.add_mutually_exclusive_group()
    tune.add_argument("--tune", dest="pin", action="store_const", const=True,
                      help="pin the vCPUs to whole host cores (a GPU VM gets it unasked;"
                      " `neuron-vm tune NAME` shows the plan and why)")
    tune.add_argument("--no-tune", dest="pin", action="store_const", const=False,
                      help="do not pin a GPU VM's vCPUs")
    create.add_argument("--isolate", action="store_true",
                        help="while it runs, keep the host's own processes off its cores"
                        " (systemd AllowedCPUs; needs pinned vCPUs)")
    create.add_argument("--hugepages", metavar="2M|1G",
                        help="the guest's memory in huge pages of this size (reserved by root:"
                        " the plan says how when the host has too few)")
    create.add_argument("--usb", action="append", metavar="VID:PID", help="pass a USB device")
    create.add_argument("--share", action="append", metavar="HOST_DIR[=TAG]",
                        help="share a host folder over virtiofs (the guest mounts it by TAG,"
                        " default: the folder's name); repeat for more")
    create.add_argument("--read-only-share", action="append", metavar="HOST_DIR[=TAG]",
                        help="the same, read-only in the guest (needs libvirt 11.0+)")
    create.add_argument("--usb-later", action="store_true",
                        help="a --usb device is not plugged in yet (the VM gets it when it is)")
    create.add_argument("--looking-glass", action="store_true",
                        help="show the GPU's screen through Looking Glass")
    create.add_argument("--resolution", metavar="WxH",
                        help="Looking Glass resolution (default 2560x1440)")
    create.add_argument("--opencore", metavar="PATH", help="OpenCore image (macOS, required)")
    create.add_argument("--kernel", metavar="PATH", help="Linux direct kernel boot")
    create.add_argument("--initrd", metavar="PATH")
    create.add_argument("--cmdline", metavar="TEXT")
    create.add_argument("--serial-log", metavar="PATH", help="write the serial console here")
    create.add_argument("--secure-boot", choices=["on", "off"],
                        help="Linux: off for an image that does not boot through shim (e.g."
                        " Arch's); default on")
    create.add_argument("--domain-type", choices=["kvm", "qemu"],
                        help="kvm (default) or qemu (software emulation)")
    create.add_argument("--network", metavar="NAME|none",
                        help="libvirt network (default: default)")
    create.add_argument("--force", action="store_true",
                        help="allow more memory or vCPUs than the host has")
    create.add_argument("--print-xml", action="store_true",
                        help="print the domain XML and change nothing")
    create.add_argument("--start", action="store_true", help="start the VM once created")
    create.add_argument("--display", action="store_true",
                        help="with --start: open its Looking Glass window (after an"
                        " unattended setup: once the host application is live)")
    setup_options(create)
    create.set_defaults(run=cmd_create)

    configure = commands.add_parser(
        "configure", parents=[common],
        help="change a stopped VM's memory, vCPUs, speed, GPU, USB",
        description="Rewrite a stopped VM's definition (same UUID, same disk) with the"
        " settings given; everything not given stays as it is, a kept GPU keeps its ROM and"
        " compatibility options. The desktop app's Settings dialog does the same.",
    )
    configure.add_argument("name", metavar="NAME")
    configure.add_argument("--memory", metavar="SIZE", help="e.g. 6G")
    configure.add_argument("--cpus", metavar="N", help="vCPUs")
    configure.add_argument("--gpu", metavar="PCI_ADDR|none",
                           help="pass this GPU instead (none: no GPU)")
    usb = configure.add_mutually_exclusive_group()
    usb.add_argument("--usb", action="append", metavar="VID:PID",
                     help="the USB devices it gets (repeat; replaces the list)")
    usb.add_argument("--no-usb", action="store_true", help="no USB devices")
    configure.add_argument("--looking-glass", action=argparse.BooleanOptionalAction,
                           default=None, help="show the GPU's screen through Looking Glass")
    configure.add_argument("--network", metavar="NAME|none",
                           help="the libvirt network it is on (none: no network); its NIC"
                           " keeps its MAC")
    configure.add_argument("--domain-type", choices=("kvm", "qemu"),
                           help="kvm, or qemu: software emulation (slow; where KVM cannot"
                           " run VMs)")
    pinning = configure.add_mutually_exclusive_group()
    pinning.add_argument("--tune", dest="pin", action="store_const", const=True,
                         help="pin the vCPUs to whole host cores (`neuron-vm tune` shows where)")
    pinning.add_argument("--no-tune", dest="pin", action="store_const", const=False,
                         help="unpin them (the topology stays)")
    isolate = configure.add_mutually_exclusive_group()
    isolate.add_argument("--isolate", dest="isolate", action="store_const", const=True,
                         help="while it runs, keep the host's own processes off its cores")
    isolate.add_argument("--no-isolate", dest="isolate", action="store_const", const=False,
                         help="let them share its cores again")
    configure.add_argument("--hugepages", metavar="2M|1G|none",
                           help="the guest's memory in huge pages of this size (none: back"
                           " to ordinary pages)")
    configure.add_argument("--force", action="store_true",
                           help="allow more memory or vCPUs than the host has")
    configure.set_defaults(run=cmd_configure)

    delete = commands.add_parser(
        "delete", parents=[common], help="delete a VM (disks kept unless asked)",
        description="Delete a VM. Shows the plan first; disks, UEFI variables and TPM state"
        " are kept unless --delete-disks.",
    )
    delete.add_argument("name", metavar="NAME")
    delete.add_argument("--delete-disks", action="store_true",
                        help="also delete its own disks, UEFI variables and TPM state")
    delete.add_argument("--dry-run", action="store_true", help="show the plan only")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.add_argument("--force", action="store_true",
                        help="stop a running VM first (graceful, then forced)")
    delete.set_defaults(run=cmd_delete)


def _gpu_options(parser) -> None:
    parser.add_argument("--gpu", metavar="PCI_ADDR", help="pass this GPU (all its functions)")
    parser.add_argument("--gpu-rom", metavar="PATH", help="ROM file for the GPU")
    parser.add_argument("--allow-boot-gpu", action="store_true",
                        help="single-GPU mode: allow the GPU the host boots on")
    parser.add_argument("--nvidia-compat", action="store_true",
                        help="hide KVM and set a Hyper-V vendor id (old NVIDIA drivers)")


@contextlib.contextmanager
def flags_in_errors():
    """An ``InvalidConfig`` about a config field names the flag the user typed too."""
    from ..base.errors import InvalidConfig

    try:
        yield
    except InvalidConfig as error:
        flag = FLAG_FOR_FIELD.get(error.field)
        if flag and not error.field.startswith("--"):
            raise InvalidConfig(f"{flag} ({error.field})", error.message) from None
        raise


def _share(item: str, readonly: bool) -> dict:
    """``HOST_DIR[=TAG]`` (a folder name may hold "=": the tag is after the last one)."""
    path, sep, tag = item.rpartition("=")
    return {"path": path, "tag": tag, "readonly": readonly} if sep else \
        {"path": item, "readonly": readonly}


def usb_ids(items) -> list[tuple[str, str]]:
    from ..base.errors import InvalidConfig

    ids = []
    for item in items or ():
        vendor, sep, product = item.partition(":")
        if not sep:
            raise InvalidConfig("--usb", f"{item!r} is not VID:PID (e.g. 046d:c52b)")
        ids.append((vendor, product))
    return ids


PATH_FLAGS = ("disk", "iso", "virtio_iso", "opencore", "kernel", "initrd", "serial_log",
              "cloud_image", "ssh_key", "lg_host_installer", "winfsp_installer",
              "gpu_driver_installer")


def absolute_paths(args: argparse.Namespace, uri: str | None) -> None:
    """Paths typed relative to the current folder, made absolute (libvirt and the settings
    need absolute ones); on another host's connection they stay as typed (refused there)."""
    import os

    from ..base.primitives import is_remote

    if uri and is_remote(uri):
        return
    for name in PATH_FLAGS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value and not value.startswith("/"):
            setattr(args, name, os.path.abspath(os.path.expanduser(value)))
    for name in ("share", "read_only_share"):
        items = getattr(args, name, None) or []
        setattr(args, name, [item if item.startswith("/") else
                             os.path.abspath(os.path.expanduser(item)) for item in items])


def request_from_args(args: argparse.Namespace, uri: str | None = None):
    from ..actions.create import CreateRequest, parse_template
    from ..base.errors import InvalidConfig
    from ..base.vm_config import VMConfig

    absolute_paths(args, uri)
    kind, template = parse_template(args.template)
    looking_glass = {"enabled": bool(args.looking_glass)}
    if args.resolution:
        width, sep, height = args.resolution.lower().partition("x")
        if not (sep and width.isdigit() and height.isdigit()):
            raise InvalidConfig("--resolution", f"{args.resolution!r} is not WxH (e.g. 2560x1440)")
        looking_glass.update(width=int(width), height=int(height))
    data = {
        "name": args.name, "vm_type": kind, "memory_mb": args.memory, "vcpus": args.cpus,
        "disk_size_gb": args.disk_size, "disk_path": args.disk or args.disk_device,
        "disk_device": bool(args.disk_device), "iso_path": args.iso,
        "virtio_iso_path": args.virtio_iso, "opencore_path": args.opencore,
        "domain_type": args.domain_type, "network": args.network,
        "usb_devices": [{"vendor_id": v, "product_id": p} for v, p in usb_ids(args.usb)],
        "looking_glass": looking_glass, "kernel_path": args.kernel,
        "initrd_path": args.initrd, "kernel_cmdline": args.cmdline,
        "serial_log_path": args.serial_log, "unattended": unattended_from_args(args),
        "cloud_image_path": args.cloud_image,
        "secure_boot": None if args.secure_boot is None else args.secure_boot == "on",
        "tune": {"pin": args.pin, "hugepages": args.hugepages, "isolate": args.isolate},
        "shares": [_share(item, False) for item in args.share or ()]
        + [_share(item, True) for item in args.read_only_share or ()],
    }
    if args.gpu is not None:  # '' is not "no GPU": it is a bad address
        data["gpu_passthrough"] = {"pci_address": args.gpu, "rom_file": args.gpu_rom,
                                   "nvidia_compat": args.nvidia_compat,
                                   "allow_boot_gpu": args.allow_boot_gpu}
    else:
        for flag, given in (("--gpu-rom", args.gpu_rom), ("--nvidia-compat", args.nvidia_compat),
                            ("--allow-boot-gpu", args.allow_boot_gpu)):
            if given:
                raise InvalidConfig(flag, "goes with --gpu PCI_ADDR (there is no GPU to"
                                    " apply it to)")
    config = VMConfig.from_dict({key: value for key, value in data.items() if value is not None})
    key, _ = product_key_of(args)  # warned of with the other secrets
    return CreateRequest(config, template=template, force=args.force, start=args.start,
                         usb_later=args.usb_later, product_key=key)


def cmd_create(ctx: CommandContext) -> int:
    from ..actions import create
    from ..base.errors import InvalidConfig

    args = ctx.args
    with flags_in_errors():
        request = request_from_args(args, ctx.actions.uri)
        if args.memory is None or args.cpus is None:  # the system's defaults, within the host
            request = create.within_host(ctx.actions, request, args.memory is None,
                                         args.cpus is None)
        if args.print_xml:
            ctx.write(create.print_xml(ctx.actions, request))
            return EXIT_OK
        if request.config.unattended is not None and args.password_file:
            request = dataclasses.replace(request, secrets=read_secrets(ctx))  # fails early
        plan = create.preview(ctx.actions, request)
        for warning in product_key_of(args)[1]:
            ctx.warn(warning)
    if not ctx.json:
        for line in plan.describe():
            ctx.print(line)
    if request.config.unattended is not None and request.secrets is None:
        with flags_in_errors():
            request = dataclasses.replace(request, secrets=read_secrets(ctx))

    def progress(step: str) -> None:
        if not ctx.json:
            ctx.print(f"  ... {step}")

    if args.display and not args.start:
        raise InvalidConfig("--display", "goes with --start")
    following = None
    if request.start and request.config.unattended is not None:
        following = follow_setup(ctx, args.name, args.display)  # before the VM starts
    with Spinner(ctx, f"Creating {args.name}"), flags_in_errors():
        outcome = create.create(ctx.actions, request, plan=plan, progress=progress)
    if ctx.json:
        ctx.print_json(outcome.to_dict())
    else:
        ctx.print(f"created {outcome.result.name} from {outcome.result.template}"
                  f"{'; started' if outcome.started else ''}")
    if following is not None:
        return following()
    if args.display:
        from ..actions import display
        from .output import follow_display, print_display

        return follow_display(display.open_display(
            ctx.actions, display.DisplayRequest(args.name), on_change=print_display(ctx)))
    return EXIT_OK


def cmd_configure(ctx: CommandContext) -> int:
    from ..actions import create

    args = ctx.args
    gpu = create.KEEP if args.gpu is None else (None if args.gpu == "none" else args.gpu)
    with flags_in_errors():
        usb = () if args.no_usb else (tuple(usb_ids(args.usb)) if args.usb else None)
        change = create.SettingsChange(memory=args.memory, vcpus=args.cpus, gpu=gpu, usb=usb,
                                       looking_glass=args.looking_glass,
                                       domain_type=args.domain_type,
                                       network=args.network, hugepages=args.hugepages,
                                       pin=args.pin, isolate=args.isolate, force=args.force)
        outcome = create.reconfigure(ctx.actions, args.name, change)
    from ..base.primitives import plural

    config = outcome.config
    gpu = config.gpu_passthrough.pci_address if config.gpu_passthrough else "none"
    summary = (f"{config.memory_mb} MiB, {plural(config.vcpus, 'vCPU')}, GPU {gpu},"
               f" {config.domain_type.value},"
               f" {plural(len(config.usb_devices), 'USB device')}")
    changes = outcome.result.changes
    for warning in outcome.result.warnings:
        ctx.warn(warning)
    if not changes and outcome.result.saved:  # e.g. pinning asked where it cannot be now
        return ctx.report(outcome.result, f"{args.name}: {summary}; saved (its definition"
                          " stays as it is: see the warning)" if outcome.result.warnings else
                          f"{args.name}: {summary}; saved (its definition stays as it is)")
    if not changes:
        return ctx.report(outcome.result, f"{args.name}: nothing to change ({summary})")
    lines = [f"{args.name}: {summary}; saved"] + [f"  changed: {item}" for item in changes]
    return ctx.report(outcome.result, "\n".join(lines))


def cmd_delete(ctx: CommandContext) -> int:
    from ..actions import delete
    from ..base.errors import InvalidConfig, LifecycleError

    args = ctx.args
    plan = delete.preview(ctx.actions, args.name).plan(args.delete_disks)
    if ctx.json and args.dry_run:
        ctx.print_json(plan.to_dict())
        return EXIT_OK
    if not ctx.json:
        for line in plan.describe(force=args.force):
            ctx.print(line)
    if args.dry_run:
        return EXIT_OK
    if plan.state.is_active and not args.force:
        raise LifecycleError(f"cannot delete {plan.blocked_reason}")
    if not args.yes:
        if not stdin_is_terminal():
            raise InvalidConfig("--yes", "not on a terminal: add --yes to confirm the deletion")
        if not confirm(f"Delete VM {args.name!r} as shown? [y/N] "):
            ctx.print("nothing deleted")
            return EXIT_FAILED
    request = delete.DeleteRequest(args.name, delete_disks=args.delete_disks, force=args.force)
    with Spinner(ctx, f"Deleting {args.name}"):
        result = delete.delete(ctx.actions, request)
    if ctx.json:
        ctx.print_json(result.to_dict())
    else:
        for path in result.removed:
            ctx.print(f"removed {path}")
        for path, reason in result.kept:
            ctx.print(f"kept    {path} ({reason})")
        for path, error in result.failed:
            ctx.print(f"FAILED  {path}: {error}")
    return EXIT_FAILED if result.failed else EXIT_OK
