"""``create``, ``configure`` and ``delete``."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses

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
    "gpu.rom_file": "--gpu-rom", "unattended": "--unattended", "unattended.user": "--user",
    "unattended.locale": "--locale", "unattended.keyboard": "--keyboard",
    "unattended.timezone": "--timezone", "unattended.edition": "--edition",
    "unattended.lg_host_installer": "--lg-host-installer",
    "unattended.lg_host_release": "--lg-host-release", "password": "--password-file",
}
SETUP_FLAGS = ("user", "password_file", "locale", "keyboard", "timezone", "edition",
               "product_key", "lg_host_installer", "lg_host_release", "bypass_hardware_checks")


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
    create.add_argument("--usb", action="append", metavar="VID:PID", help="pass a USB device")
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
    _setup_options(create)
    create.set_defaults(run=cmd_create)

    configure = commands.add_parser(
        "configure", parents=[common], help="change a stopped VM's memory, vCPUs, GPU, USB",
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


def _setup_options(parser) -> None:
    setup = parser.add_argument_group(
        "unattended setup", "Install Windows without questions: an answer file, the virtio"
        " drivers and the first-logon steps (guest tools, the Looking Glass host) on a setup"
        " medium next to the disk; TPM and Secure Boot stay on.")
    setup.add_argument("--unattended", action="store_true",
                       help="set the guest up without questions (needs --iso, --virtio-iso)")
    setup.add_argument("--user", metavar="NAME", help="the Windows account (default: user)")
    setup.add_argument("--password-file", metavar="F",
                       help="the account's password, in a file only you can read (default:"
                       " asked on the terminal)")
    setup.add_argument("--locale", metavar="xx-YY", help="language and formats (default: the"
                       " desktop's, e.g. en-US)")
    setup.add_argument("--keyboard", metavar="LAYOUT", help="e.g. de-DE (default: the locale's)")
    setup.add_argument("--timezone", metavar="TZ",
                       help="a Windows time zone name (default: UTC)")
    setup.add_argument("--edition", metavar="NAME", help='e.g. "Windows 11 Pro" (default)')
    setup.add_argument("--product-key", metavar="KEY", help="XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")
    setup.add_argument("--lg-host-installer", metavar="PATH",
                       help="the Looking Glass host installer (.exe or its .zip), the"
                       " release of your client")
    setup.add_argument("--lg-host-release", metavar="B7",
                       help="its release, when its file name does not say")
    setup.add_argument("--bypass-hardware-checks", action="store_true",
                       help="skip Windows 11's TPM/Secure Boot/RAM checks (hosts without"
                       " swtpm only)")


def unattended_from_args(args: argparse.Namespace) -> dict | None:
    """The unattended settings the flags give (None without --unattended)."""
    from ..actions.create import host_locale
    from ..core.errors import InvalidConfig

    given = [name for name in SETUP_FLAGS if getattr(args, name, None)]
    if not args.unattended:
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise InvalidConfig(flag, "goes with --unattended")
        return None
    data = {"user": args.user, "locale": args.locale or host_locale(),
            "keyboard": args.keyboard, "timezone": args.timezone, "edition": args.edition,
            "lg_host_installer": args.lg_host_installer,
            "lg_host_release": args.lg_host_release,
            "bypass_hardware_checks": args.bypass_hardware_checks}
    return {key: value for key, value in data.items() if value is not None}


def read_secrets(ctx: CommandContext):
    """The password from --password-file, or asked twice on the terminal; the product key."""
    import getpass
    import os
    import re
    import stat

    from ..actions.create import SetupSecrets
    from ..core.errors import InvalidConfig

    args = ctx.args
    key = args.product_key
    if key is not None and not re.fullmatch(r"[A-Z0-9]{5}(-[A-Z0-9]{5}){4}", key.upper()):
        raise InvalidConfig("--product-key", "expected XXXXX-XXXXX-XXXXX-XXXXX-XXXXX")
    if args.password_file:
        try:
            info = os.stat(args.password_file)
            with open(args.password_file, encoding="utf-8") as handle:
                password = handle.read(4096).rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidConfig("--password-file", f"cannot read {args.password_file}:"
                                f" {getattr(error, 'strerror', None) or error}") from None
        if info.st_mode & stat.S_IROTH:
            ctx.warn(f"{args.password_file} can be read by every user: chmod 600 it")
    elif stdin_is_terminal():
        password = getpass.getpass(f"Password for the Windows account {args.user or 'user'}: ")
        if getpass.getpass("The same again: ") != password:
            raise InvalidConfig("password", "the two passwords differ; nothing was made")
    else:
        raise InvalidConfig("--password-file", "not on a terminal: give the account's"
                            " password in a file only you can read")
    if not password:
        raise InvalidConfig("--password-file", "the password is empty; Windows setup needs one")
    if len(password) > 127 or any(ord(ch) < 32 for ch in password):
        raise InvalidConfig("--password-file", "one line of at most 127 characters, please")
    return SetupSecrets(password, key.upper() if key else None)


@contextlib.contextmanager
def flags_in_errors():
    """An ``InvalidConfig`` about a config field names the flag the user typed too."""
    from ..core.errors import InvalidConfig

    try:
        yield
    except InvalidConfig as error:
        flag = FLAG_FOR_FIELD.get(error.field)
        if flag and not error.field.startswith("--"):
            raise InvalidConfig(f"{flag} ({error.field})", error.message) from None
        raise


def usb_ids(items) -> list[tuple[str, str]]:
    from ..core.errors import InvalidConfig

    ids = []
    for item in items or ():
        vendor, sep, product = item.partition(":")
        if not sep:
            raise InvalidConfig("--usb", f"{item!r} is not VID:PID (e.g. 046d:c52b)")
        ids.append((vendor, product))
    return ids


def request_from_args(args: argparse.Namespace):
    from ..actions.create import CreateRequest, parse_template
    from ..core.errors import InvalidConfig
    from ..core.vm_config import VMConfig

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
    }
    if args.looking_glass:
        data["display_mode"] = "looking-glass"
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
    return CreateRequest(config, template=template, force=args.force, start=args.start,
                         usb_later=args.usb_later)


def cmd_create(ctx: CommandContext) -> int:
    from ..actions import create
    from ..core.errors import InvalidConfig

    args = ctx.args
    with flags_in_errors():
        request = request_from_args(args)
        if args.print_xml:
            ctx.out.write(create.print_xml(ctx.actions, request))
            return EXIT_OK
        if request.config.unattended is not None and args.password_file:
            request = dataclasses.replace(request, secrets=read_secrets(ctx))  # fails early
        plan = create.preview(ctx.actions, request)
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
        following = SetupFollower(ctx, args.name, args.display)  # before the VM starts
    with Spinner(ctx, f"Creating {args.name}"):
        outcome = create.create(ctx.actions, request, plan=plan, progress=progress)
    if ctx.json:
        ctx.print_json(outcome.to_dict())
    else:
        ctx.print(f"created {outcome.result.name} from {outcome.result.template}"
                  f"{'; started' if outcome.started else ''}")
    if following is not None:
        return following.run()
    if args.display:
        from .power import _follow, _print_display
        from ..actions import display

        return _follow(display.open_display(ctx.actions, display.DisplayRequest(args.name),
                                            on_change=_print_display(ctx)))
    return EXIT_OK


class SetupFollower:
    """Print each stage of a fresh unattended setup until "ready" (or the VM stops, or
    Ctrl-C: setup goes on without us); with ``display``, open the Looking Glass window once
    the host application is expected."""

    def __init__(self, ctx: CommandContext, name: str, display: bool):
        import queue

        from ..actions import setup, vms

        self.ctx, self.name, self.display = ctx, name, display
        self.items: queue.Queue = queue.Queue()
        self._stops = [setup.follow(ctx.actions, name, self.items.put)]
        self._vms = vms

    def run(self) -> int:
        import queue

        from ..actions import display
        from .power import _follow, _print_display

        ctx = self.ctx
        self._stops.append(self._vms.watch(ctx.actions, self.name, self.items.put,
                                           lambda event: None))
        ctx.print(f"following the setup of {self.name} (Ctrl-C stops following; setup goes"
                  f" on; `neuron-vm setup-status {self.name}` tells where it is)")
        session = None
        try:
            while True:
                try:
                    item = self.items.get(timeout=0.5)
                except queue.Empty:
                    continue
                if hasattr(item, "note"):
                    ctx.print(f"{self.name}: setup {item.new} ({item.note})")
                    if self.display and session is None and item.new in ("looking-glass",
                                                                         "ready"):
                        session = display.open_display(
                            ctx.actions, display.DisplayRequest(self.name),
                            on_change=_print_display(ctx))
                    if item.new == "ready":
                        break
                elif getattr(item.new, "value", "") in ("shutoff", "crashed"):
                    ctx.print(f"{self.name}: the VM stopped during setup; start it again to"
                              " go on")
                    return EXIT_FAILED
        except KeyboardInterrupt:
            return EXIT_OK
        finally:
            for stop in self._stops:
                stop()
        return _follow(session) if session is not None else EXIT_OK


def cmd_configure(ctx: CommandContext) -> int:
    from ..actions import create

    args = ctx.args
    gpu = create.KEEP if args.gpu is None else (None if args.gpu == "none" else args.gpu)
    with flags_in_errors():
        usb = () if args.no_usb else (tuple(usb_ids(args.usb)) if args.usb else None)
        change = create.SettingsChange(memory=args.memory, vcpus=args.cpus, gpu=gpu, usb=usb,
                                       looking_glass=args.looking_glass, force=args.force)
        outcome = create.reconfigure(ctx.actions, args.name, change)
    from ..core.primitives import plural

    config = outcome.config
    gpu = config.gpu_passthrough.pci_address if config.gpu_passthrough else "none"
    return ctx.report(outcome.result, f"{args.name}: {config.memory_mb} MiB,"
                      f" {plural(config.vcpus, 'vCPU')}, GPU {gpu},"
                      f" {plural(len(config.usb_devices), 'USB device')}; saved")


def cmd_delete(ctx: CommandContext) -> int:
    from ..actions import delete
    from ..core.errors import InvalidConfig, LifecycleError

    args = ctx.args
    plan = delete.preview(ctx.actions, args.name).plan(args.delete_disks)
    if ctx.json and args.dry_run:
        ctx.print_json(plan.to_dict())
        return EXIT_OK
    if not ctx.json:
        for line in plan.describe():
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
