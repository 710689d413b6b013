"""Creating a VM, and changing a stopped VM's settings.

Both faces build a ``VMConfig`` (validated at the edge), ask ``preview`` for the plan to
show, then ``create`` it. ``reconfigure`` takes a ``SettingsChange`` — only what the user
changed — and merges it into the saved settings, so options the face does not show (a GPU's
ROM file, the NVIDIA compatibility flags, the single-GPU opt-in, a USB device's port) are
kept, whichever face made the change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from .context import Context

if TYPE_CHECKING:
    from ..core.planning import CreationPlan
    from ..base.vm_config import VMConfig
    from ..core.vm_creator import CreationResult
    from ..core.vm_lifecycle import OperationResult

KEEP = "keep"  # SettingsChange.gpu: leave the GPU as it is


@dataclass(frozen=True)
class SetupSecrets:
    """An unattended setup's password (and product key): given to one creation, written
    onto its setup medium only, never saved, logged or shown."""

    password: str = field(repr=False)
    product_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CreateRequest:
    config: VMConfig
    template: str | None = None  # e.g. "windows11-passthrough"; default from the config
    force: bool = False  # allow more memory or vCPUs than the host has
    start: bool = False
    usb_later: bool = False  # its USB devices may be plugged in later
    secrets: SetupSecrets | None = field(default=None, repr=False)  # unattended setup
    product_key: str | None = field(default=None, repr=False)  # Windows: planned with it

    @property
    def key(self) -> str | None:
        return self.product_key or (self.secrets.product_key if self.secrets else None)


@dataclass
class CreateOutcome:
    result: CreationResult
    started: OperationResult | None = None

    def to_dict(self) -> dict[str, Any]:
        data = self.result.to_dict()
        data["started"] = self.started.to_dict() if self.started else None
        return data


def check_password(password: str, again: str | None = None, field: str = "password") -> str:
    """The rules both faces apply to an unattended setup's password."""
    from ..base.errors import InvalidConfig

    if again is not None and again != password:
        raise InvalidConfig(field, "the two passwords differ")
    if not password:
        raise InvalidConfig(field, "the password is empty; setup needs one")
    if len(password) > 127 or any(ord(ch) < 32 for ch in password):
        raise InvalidConfig(field, "one line of at most 127 characters, please")
    return password


MAX_PASSWORD_FILE = 4096


def read_password_file(path: str, field: str = "password_file") -> tuple[str, str | None]:
    """The password in ``path`` (one line) and a warning when every user may read it:
    a regular file of at most 4 KiB the desktop user can read, never a FIFO, a device or a
    file of /proc (``base.user_files``)."""
    password, warning = read_secret_file(path, field)
    check_password(password, field=field)
    return password, warning


def read_secret_file(path: str, field: str) -> tuple[str, str | None]:
    """One line of secret text in ``path`` (a password, a product key: kept out of the
    process list, issue 28) and a warning when other users may read the file."""
    import os
    import stat

    from ..base.errors import InvalidConfig
    from ..base.user_files import read_user_file

    data = read_user_file(path, field, MAX_PASSWORD_FILE)
    try:
        text = data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise InvalidConfig(field, f"{path} is not UTF-8 text") from None
    mode = os.stat(path).st_mode
    loose = mode & (stat.S_IRGRP | stat.S_IROTH)  # a group's members are other users too
    return text, (f"{path} can be read by other users (mode {stat.S_IMODE(mode):04o}):"
                  " chmod 600 it" if loose else None)


def check_product_key(key: str | None, field: str = "product_key") -> str | None:
    """A Windows product key's form, the rule both faces apply before asking anything else
    (whether it fits the edition is checked at creation, against the image)."""
    from ..guest.windows_answers import check_product_key as check

    return check(key, None, field)


def host_locale(environ: dict | None = None) -> str:
    """The desktop's language as Windows names it (``LANG=de_DE.UTF-8`` -> ``de-DE``);
    en-US when it names none."""
    import os
    import re

    import locale

    env = os.environ if environ is None else environ
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        match = re.match(r"([a-z]{2,3})_([A-Z]{2})", env.get(name) or "")
        if match and f"{match.group(1)}_{match.group(2)}".lower() in locale.locale_alias:
            return f"{match.group(1)}-{match.group(2)}"
    return "en-US"


def host_timezone() -> str:
    """The desktop's time zone as Windows names it (``Europe/Berlin`` -> ``W. Europe
    Standard Time``); UTC when it has none."""
    from ..guest.windows_answers import host_zone, windows_zone

    return windows_zone(host_zone()) or "UTC"


def windows_zones() -> list[tuple[str, str]]:
    """Every Windows time zone ID with a city in it (CLDR's windowsZones, as tzlocal ships
    it), sorted by ID: the wizard's time zone list."""
    from tzlocal.windows_tz import win_tz

    return sorted((zone, iana.rsplit("/", 1)[-1].replace("_", " "))
                  for zone, iana in win_tz.items())


def parse_template(text: str) -> tuple[str, str | None]:
    """``windows11`` -> (windows11, None: chosen from the config); ``windows11-passthrough``
    -> (windows11, that template). Raises ``InvalidConfig`` for an unknown variant."""
    from ..base.errors import InvalidConfig
    from ..templates.names import VARIANTS, template_name

    kind, _, variant = text.partition("-")
    if not variant:
        return kind, None
    if variant not in VARIANTS:
        raise InvalidConfig("--template", f"{text!r}: the variant is basic or passthrough"
                            " (e.g. windows11-passthrough)")
    return kind, template_name(kind, variant == "passthrough")


def within_host(ctx: Context, request: CreateRequest, memory: bool,
                vcpus: bool) -> CreateRequest:
    """``request`` with the system's default memory and/or vCPUs (those not given) fitted to
    this host, as the wizard fills them in (``VMConfig.defaults_within``)."""
    import dataclasses

    from ..base.vm_config import HostResources, VMConfig

    config = request.config
    fitted = VMConfig.defaults_within(config.vm_type, HostResources(
        *ctx.connection.host_info()))
    changes = {**({"memory_mb": fitted[0]} if memory else {}),
               **({"vcpus": fitted[1]} if vcpus else {})}
    return dataclasses.replace(request, config=dataclasses.replace(config, **changes))


def preview(ctx: Context, request: CreateRequest) -> CreationPlan:
    """Everything ``create`` would do (host facts read once, a pure plan); changes nothing.
    Raises ``InvalidConfig`` naming the field for anything the host cannot do."""
    return ctx.creator().plan(request.config, force=request.force, template=request.template,
                              usb_later=request.usb_later, product_key=request.key)


def print_xml(ctx: Context, request: CreateRequest) -> str:
    """The domain XML ``create`` would define, validated; changes nothing."""
    return ctx.creator().print_xml(request.config, force=request.force,
                                   template=request.template, usb_later=request.usb_later,
                                   product_key=request.key)


def create(ctx: Context, request: CreateRequest, plan: CreationPlan | None = None,
           progress: Callable[[str], None] | None = None) -> CreateOutcome:
    """Create the VM (a transaction: a failure leaves nothing behind), then start it if
    asked. ``plan``: the preview just shown, so the checks do not run twice."""
    creator = ctx.creator()
    plan = plan or creator.plan(request.config, force=request.force, template=request.template,
                                usb_later=request.usb_later, product_key=request.key)
    result = creator.create(request.config, force=request.force, template=request.template,
                            progress=progress, plan=plan, secrets=request.secrets)
    started = None
    if request.start:
        from .boot import prepare, start
        from .tune import isolate_started

        prepare(ctx, result.name)
        started = start(ctx, result.name)
        note = isolate_started(ctx, result.name)
        if note:
            from ..base.log import get_logger

            get_logger(__name__).warning("%s", note)
    if started is not None:
        from . import setup

        setup.after_start(ctx, result.name)  # its setup follows the start
    return CreateOutcome(result, started)


# --- changing a stopped VM ----------------------------------------------------------------

@dataclass(frozen=True)
class SettingsChange:
    """What to change; None (and ``gpu=KEEP``) leaves a setting as it is."""

    memory: str | int | None = None  # "6G", 6144 (MiB)
    vcpus: int | str | None = None
    gpu: str | None = KEEP  # a PCI address, None to remove the GPU, or KEEP
    usb: tuple[tuple[str, str], ...] | None = None  # (vendor, product) ids: the whole list
    looking_glass: bool | None = None
    shares: tuple[dict, ...] | None = None  # {"path", "tag", "readonly"}: the whole list
    domain_type: str | None = None  # "kvm", or "qemu" (software emulation)
    network: str | None = None  # a libvirt network's name, or "none"
    hugepages: str | None = None  # "2M", "1G", or "none" (back to ordinary pages)
    pin: bool | None = None  # vCPUs pinned to host cores (``neuron-vm tune``)
    isolate: bool | None = None  # the host's processes kept off its cores while it runs
    force: bool = False

    @property
    def only_shares(self) -> bool:
        """Nothing but the shared folders changes: a running VM may take it for its next
        start (its definition changes; what runs now cannot)."""
        return (self.shares is not None and self.memory is None and self.vcpus is None
                and self.gpu == KEEP and self.usb is None and self.looking_glass is None
                and self.domain_type is None and self.network is None
                and self.hugepages is None and self.pin is None and self.isolate is None)


@dataclass
class ReconfigureOutcome:
    result: CreationResult
    config: VMConfig = field(repr=False)
    restart_needed: bool = False  # the VM runs: the change shows after it is shut down


def apply_change(config: VMConfig, change: SettingsChange) -> VMConfig:
    """The saved settings with ``change`` merged in (pure; raises ``InvalidConfig``)."""
    from ..base.errors import InvalidConfig
    from ..base.vm_config import PCIAddress, VMConfig

    data = config.to_dict()
    if change.memory is not None:
        data["memory_mb"] = change.memory
    if change.vcpus is not None:
        data["vcpus"] = change.vcpus
    if change.domain_type is not None:
        data["domain_type"] = change.domain_type
    if change.network is not None:
        data["network"] = change.network
    if change.hugepages is not None:
        data["tune"] = {**data["tune"], "hugepages": None if change.hugepages == "none" else
                        change.hugepages}
    for key in ("pin", "isolate"):
        if getattr(change, key) is not None:
            data["tune"] = {**data["tune"], key: getattr(change, key)}
    if change.gpu != KEEP:
        current = config.gpu_passthrough
        if change.gpu is None:
            data["gpu_passthrough"] = None
        elif current is not None and PCIAddress.parse(change.gpu, "gpu.pci_address") == \
                current.address:
            pass  # the same card: its ROM, compatibility flags and opt-in stay
        else:
            data["gpu_passthrough"] = {"pci_address": change.gpu}
    if change.shares is not None:
        data["shares"] = [dict(share) for share in change.shares]
    if change.usb is not None:
        kept = {(u.vendor_id, u.product_id): u.__dict__ for u in config.usb_devices}
        data["usb_devices"] = [dict(kept.get((v, p), {"vendor_id": v, "product_id": p}))
                               for v, p in change.usb]
    lg = dict(data["looking_glass"])
    if change.looking_glass is not None:
        lg["enabled"] = change.looking_glass
    removes_gpu = config.gpu_passthrough is not None and change.gpu is None  # LG goes too
    if change.looking_glass and not data["gpu_passthrough"] and not removes_gpu:
        raise InvalidConfig("looking_glass.enabled", "Looking Glass shows a passed-through GPU's"
                            " screen: give the VM a GPU too (--gpu ADDR)")
    lg["enabled"] = bool(lg["enabled"] and data["gpu_passthrough"])
    data["looking_glass"] = lg
    return VMConfig.from_dict(data)


def reconfigure(ctx: Context, name: str, change: SettingsChange) -> ReconfigureOutcome:
    """Change a stopped VM's definition by ``change`` and nothing else (same UUID; its disks,
    their formats, CD-ROMs, NICs and anything added by hand stay: ``VMCreator.reconfigure``)
    and save its settings; if saving fails the old definition is put back. Raises ``VMNotFound``,
    ``InvalidConfig`` (a bad value, or a VM NeuronOS did not make), ``LifecycleError``
    (running; except for a change of shared folders only, which a running VM takes at its
    next start: ``restart_needed``)."""
    from ..base.errors import InvalidConfig

    config = ctx.settings(name)
    if config is None:
        raise InvalidConfig("NAME", f"{name} was not made by NeuronOS; change it with"
                            " virt-manager or `virsh edit`")
    new = apply_change(config, change)
    result = ctx.creator().reconfigure(new, force=change.force, running=change.only_shares,
                                       previous=config)
    return ReconfigureOutcome(result, new, restart_needed=result.running)
