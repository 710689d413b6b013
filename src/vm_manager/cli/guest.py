"""``setup-status`` and ``console`` (a guest being set up, and its own screen), and the
unattended options of ``create``: their parsing, the secrets, and following the setup."""

from __future__ import annotations

import argparse

from .output import (
    EXIT_FAILED,
    EXIT_OK,
    CommandContext,
    follow_display,
    print_display,
    stdin_is_terminal,
)

SETUP_FLAGS = ("user", "password_file", "locale", "ui_language", "keyboard", "timezone",
               "edition", "product_key", "product_key_file", "lg_host_installer",
               "lg_host_release", "bypass_hardware_checks", "ssh_key", "winfsp_installer",
               "gpu_driver_installer", "stage_timeout")
WINDOWS_ONLY = ("locale", "ui_language", "keyboard", "timezone", "product_key",
                "product_key_file")


def register(commands, common, subcommand) -> None:
    status = commands.add_parser(
        "setup-status", parents=[common], help="where a VM's unattended setup stands",
        description="The stage of an unattended setup (created, installing, first-logon,"
        " looking-glass, ready), each step with its time, and what happens next. The stages"
        " come from libvirt's events and are kept in the VM's metadata.",
    )
    status.add_argument("name", metavar="NAME")
    status.set_defaults(run=cmd_setup_status)
    restart = commands.add_parser(
        "setup-restart", parents=[common], help="restart an unattended setup that stopped",
        description="Put an unattended setup that failed or was interrupted back at its"
        " start: the VM and its disk stay (Windows Setup resumes from a half-done disk where"
        " it can), a setup medium that is gone is made again (the password is asked), and"
        " --wipe-disk makes the VM's own disk empty so the installer starts afresh.",
    )
    restart.add_argument("name", metavar="NAME")
    restart.add_argument("--wipe-disk", action="store_true",
                         help="make the VM's own disk (made by NeuronOS) empty again")
    restart.add_argument("--force", action="store_true", help="power a running VM off first")
    restart.add_argument("--start", action="store_true", help="start it again afterwards")
    restart.add_argument("--stage-timeout", metavar="TIME",
                         help="a new deadline for every setup stage, e.g. 2h (30 s to 7 days)")
    restart.add_argument("--password-file", metavar="F",
                         help="the account's password, if the medium must be made again")
    restart.set_defaults(run=cmd_setup_restart)
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


def cmd_setup_restart(ctx: CommandContext) -> int:
    from ..actions import setup
    from ..base.errors import InvalidConfig

    args = ctx.args
    options = dict(wipe_disk=args.wipe_disk, force=args.force, start=args.start)
    if args.stage_timeout:
        options["stage_timeout_s"] = _stage_timeout(args.stage_timeout)
    secrets = read_secrets(ctx) if args.password_file else None
    try:
        result = setup.restart(ctx.actions, args.name, secrets=secrets, **options)
    except InvalidConfig as error:
        if error.field != "password" or secrets is not None or not stdin_is_terminal():
            raise
        result = setup.restart(ctx.actions, args.name, secrets=read_secrets(ctx), **options)
    if ctx.json:
        ctx.print_json(result.to_dict())
        return EXIT_OK
    restarted = next(step for step in reversed(result.steps) if step["stage"] == "created")
    ctx.print(f"{result.name}: {restarted['note']}")
    if args.start:
        ctx.print(f"{result.name}: started; setup {result.stage}")
    ctx.print(f"next: {result.next}")
    return EXIT_OK


def cmd_console(ctx: CommandContext) -> int:
    from ..actions import console

    session = console.open_console(ctx.actions, ctx.args.name, wait=ctx.args.wait)
    ctx.print(f"{ctx.args.name}: {session.message}")
    return EXIT_OK if session.code in (0, None) else 1


# --- create --unattended: its options, its secrets, following it -------------------------

def setup_options(parser) -> None:
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
    setup.add_argument("--locale", metavar="xx-YY", help="formats and keyboard (default: the"
                       " desktop's, e.g. de-DE); Windows' language is the disc's")
    setup.add_argument("--ui-language", metavar="xx-YY",
                       help="Windows' language, one the disc holds (default: the disc's)")
    setup.add_argument("--keyboard", metavar="LAYOUT", help="e.g. de-DE (default: the locale's)")
    setup.add_argument("--timezone", metavar="TZ",
                       help="a Windows time zone ID, e.g. 'W. Europe Standard Time' (default:"
                       " the desktop's zone)")
    setup.add_argument("--edition", metavar="NAME", help='e.g. "Windows 11 Pro" (default)')
    keys = setup.add_mutually_exclusive_group()
    keys.add_argument("--product-key-file", metavar="F", help="the Windows product key"
                      " (XXXXX-XXXXX-XXXXX-XXXXX-XXXXX), in a file only you can read")
    keys.add_argument("--product-key", metavar="KEY", help="the key itself: every user on"
                      " this computer sees it in the process list; prefer --product-key-file")
    setup.add_argument("--lg-host-installer", metavar="PATH",
                       help="the Looking Glass host installer (.exe or its .zip), the"
                       " release of your client")
    setup.add_argument("--lg-host-release", metavar="B7",
                       help="its release, when its file name does not say")
    setup.add_argument("--bypass-hardware-checks", action="store_true",
                       help="skip Windows 11's TPM/Secure Boot/RAM checks (hosts without"
                       " swtpm only)")
    setup.add_argument("--winfsp-installer", metavar="MSI",
                       help="WinFsp's installer (winfsp-*.msi from https://winfsp.dev/rel/):"
                       " Windows shows shared folders through it")
    setup.add_argument("--gpu-driver-installer", metavar="EXE",
                       help="the NVIDIA or AMD Windows driver package for the GPU: installed"
                       " silently at first logon (default: Windows Update brings it)")
    setup.add_argument("--cloud-image", metavar="IMG",
                       help="Linux: a cloud image (qcow2/raw) the disk is an overlay on;"
                       " cloud-init sets it up")
    setup.add_argument("--ssh-key", metavar="FILE",
                       help="Linux: the public key(s) the account logs in with")
    setup.add_argument("--stage-timeout", metavar="TIME",
                       help="how long any setup stage may take before setup is called failed,"
                       " e.g. 90m or 2h (default: per OS and domain type, see the README)")


def unattended_from_args(args: argparse.Namespace) -> dict | None:
    """The unattended settings the flags give (None without --unattended)."""
    from ..actions.create import host_locale
    from ..base.errors import InvalidConfig

    given = [name for name in SETUP_FLAGS if getattr(args, name, None)]
    if not args.unattended:
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise InvalidConfig(flag, "goes with --unattended")
        return None
    if args.template.startswith("linux"):
        for name in WINDOWS_ONLY:
            if getattr(args, name, None):
                raise InvalidConfig("--" + name.replace("_", "-"), "goes with a Windows"
                                    " template (a cloud image keeps its own)")
    data = {"user": args.user, "ssh_key_path": args.ssh_key,
            "locale": args.locale or host_locale(), "ui_language": args.ui_language,
            "keyboard": args.keyboard, "timezone": args.timezone, "edition": args.edition,
            "lg_host_installer": args.lg_host_installer,
            "lg_host_release": args.lg_host_release,
            "winfsp_installer": args.winfsp_installer,
            "gpu_driver_installer": args.gpu_driver_installer,
            "bypass_hardware_checks": args.bypass_hardware_checks,
            "stage_timeout_s": duration_s(args.stage_timeout, "--stage-timeout")
            if args.stage_timeout else None}
    return {key: value for key, value in data.items() if value is not None}


def _stage_timeout(text: str) -> int:
    from ..base.errors import InvalidConfig

    seconds = duration_s(text, "--stage-timeout")
    if not 30 <= seconds <= 7 * 86400:
        raise InvalidConfig("--stage-timeout", "expected 30 s to 7 days")
    return seconds


def duration_s(text: str, flag: str) -> int:
    """``90s``, ``45m``, ``2h`` or a number of minutes, in seconds."""
    import re

    from ..base.errors import InvalidConfig

    match = re.fullmatch(r"\s*(\d{1,6})\s*([smhd]?)\s*", text.lower())
    if not match:
        raise InvalidConfig(flag, f"{text!r} is not a time like 90s, 45m, 2h or 1d")
    return int(match.group(1)) * {"s": 1, "m": 60, "": 60, "h": 3600,
                                  "d": 86400}[match.group(2)]


def read_secrets(ctx: CommandContext):
    """The password from --password-file, or asked twice on the terminal; the product key
    (``create``'s options; ``setup-restart`` has only --password-file)."""
    import getpass

    from ..actions.create import SetupSecrets, check_password, read_password_file
    from ..base.errors import InvalidConfig

    args = ctx.args
    key, _ = product_key_of(args)  # warned of by create once its plan stands
    user = getattr(args, "user", None) or "user"
    if not args.password_file and getattr(args, "ssh_key", None):
        return None  # a Linux account that logs in with its key only
    if args.password_file:
        password, warning = read_password_file(args.password_file, "--password-file")
        if warning:
            ctx.warn(warning)
    elif stdin_is_terminal():
        password = getpass.getpass(f"Password for the account {user}: ")
        check_password(password, getpass.getpass("The same again: "))
    else:
        raise InvalidConfig("--password-file", "not on a terminal: give the account's"
                            " password in a file only you can read")
    return SetupSecrets(password, key)


def product_key_of(args) -> tuple[str | None, list[str]]:
    """The product key of --product-key-file (kept out of the process list, issue 28) or
    --product-key, its form checked, and what to warn of."""
    from ..actions.create import check_product_key, read_secret_file

    key, warnings = getattr(args, "product_key", None), []
    if key:
        warnings.append("--product-key is seen by every user on this computer while this"
                        " runs (the process list): give it with --product-key-file next time")
    if getattr(args, "product_key_file", None):
        key, warning = read_secret_file(args.product_key_file, "--product-key-file")
        warnings += [warning] if warning else []
        return check_product_key(key, "--product-key-file"), warnings
    return check_product_key(key, "--product-key"), warnings


def follow_setup(ctx: CommandContext, name: str, display: bool):
    """The setup journey (``actions.setup.SetupJourney``) of a VM about to start, printed:
    made before the VM starts, so no stage is missed; ``run`` follows it once it runs."""
    from ..actions import setup

    journey = setup.SetupJourney(
        ctx.actions, name, display=display, on_display=print_display(ctx),
        on_stage=lambda change: ctx.print(f"{name}: setup {change.new} ({change.note})"))

    def run() -> int:
        ctx.print(f"following the setup of {name} (Ctrl-C stops following; setup goes"
                  f" on; `neuron-vm setup-status {name}` tells where it is)")
        try:
            end = None
            while end is None:
                end = journey.wait(0.5)  # a timeout keeps Ctrl-C responsive
        except KeyboardInterrupt:
            from ..actions.setup import status

            try:
                stage = status(ctx.actions, name).stage
            except Exception:  # noqa: BLE001 - the daemon may be going away too
                stage = "unknown"
            ctx.print(f"{name}: stopped following at stage {stage}; the VM runs on and its"
                      f" setup goes on (`neuron-vm setup-status {name}`)")
            return EXIT_OK
        finally:
            journey.close()
        if end == "vm-stopped":
            ctx.print(f"{name}: the VM stopped during setup; start it again to go on")
            return EXIT_FAILED
        if end == "failed":
            ctx.print(f"{name}: setup failed (`neuron-vm setup-status {name}` shows every"
                      " step)")
            return EXIT_FAILED
        return follow_display(journey.session) if journey.session is not None else EXIT_OK

    return run
