"""``neuron-vm``: the command line face of the VM manager.

Start-up stays light: this module imports only the standard library at the top; each
command imports the library parts it needs when it runs (``neuron-vm --help`` never loads
libvirt, Jinja2, lxml or Qt).

Exit codes: 0 ok, 1 operation failed, 2 invalid input or usage, 3 VM not found.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import TYPE_CHECKING, Any, Callable, Sequence

from . import __version__

if TYPE_CHECKING:
    from .core.connection import LibvirtConnection

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3

PROG = "neuron-vm"


class _Context:
    """What every command gets: parsed options, the output streams, a lazy connection."""

    def __init__(self, args: argparse.Namespace, connection: LibvirtConnection | None, out, err):
        self.args = args
        self.out = out
        self.err = err
        self._connection = connection
        self._lifecycle = None

    @property
    def json(self) -> bool:
        return bool(getattr(self.args, "json", False))

    @property
    def connection(self) -> LibvirtConnection:
        if self._connection is None:
            from .core.connection import get_connection

            # one-shot commands need no event loop; the first subscriber turns it on
            self._connection = get_connection(getattr(self.args, "connect", None), events=False)
        return self._connection

    @property
    def lifecycle(self):
        if self._lifecycle is None:
            from .core.vm_lifecycle import VMLifecycleManager

            self._lifecycle = VMLifecycleManager(self.connection)
        return self._lifecycle

    def store(self):
        from .core.store import VMStore

        return VMStore()

    def print(self, text: str = "") -> None:
        print(text, file=self.out)

    def print_json(self, data: Any) -> None:
        import json

        json.dump(data, self.out, indent=2, sort_keys=False)
        self.out.write("\n")

    def warn(self, text: str) -> None:
        print(f"{PROG}: warning: {text}", file=self.err)


# --- commands ------------------------------------------------------------------------------


def _format_memory(memory_mb: int) -> str:
    if memory_mb >= 1024:
        return f"{memory_mb / 1024:.1f} GiB"
    return f"{memory_mb} MiB"


def cmd_list(ctx: _Context) -> int:
    from .core.inventory import list_vms

    inventory = list_vms(ctx.connection, ctx.store())
    for problem in inventory.problems:
        ctx.warn(problem)
    if ctx.json:
        ctx.print_json([vm.to_dict() for vm in inventory.vms])
        return EXIT_OK
    if not inventory.vms:
        ctx.print(f"No VMs on {ctx.connection.uri}.")
        return EXIT_OK
    rows = [("NAME", "STATE", "VCPUS", "MEMORY", "TYPE")]
    for vm in inventory.vms:
        rows.append(
            (vm.name, vm.state.label, str(vm.vcpus), _format_memory(vm.memory_mb), vm.vm_type or "-")
        )
    widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
    for row in rows:
        ctx.print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return EXIT_OK


def cmd_info(ctx: _Context) -> int:
    from .core.inventory import vm_details

    details = vm_details(ctx.connection, ctx.args.name, ctx.store())
    if "settings_problem" in details:
        ctx.warn(details["settings_problem"])
    if ctx.json:
        ctx.print_json(details)
        return EXIT_OK
    from .core.primitives import VMState

    state = VMState(details["state"])
    osinfo = details["os"]
    lines = [
        ("Name", details["name"]),
        ("UUID", details["uuid"]),
        ("State", state.label),
        ("Type", details.get("vm_type") or "unknown (not made by NeuronOS)"),
        ("vCPUs", str(details["vcpus"])),
        ("Memory", _format_memory(details["memory_mb"])),
        ("Persistent", "yes" if details["persistent"] else "no"),
        ("Autostart", "yes" if details["autostart"] else "no"),
        ("Hypervisor", details["domain_type"] or "-"),
        (
            "Machine",
            " ".join(filter(None, [osinfo["arch"], osinfo["machine"], osinfo["firmware"]])) or "-",
        ),
    ]
    for disk in details["disks"]:
        lines.append(
            (f"Disk {disk['target'] or '?'}", f"{disk['source'] or '(empty)'} [{disk['device']}]")
        )
    for iface in details["interfaces"]:
        lines.append(("Network", f"{iface['type']} {iface['source'] or ''} {iface['model'] or ''}"))
    for graphics in details["graphics"]:
        port = graphics["port"] if graphics["port"] not in (None, -1) else "auto"
        lines.append(("Display", f"{graphics['type']} port {port}"))
    for hostdev in details["hostdevs"]:
        where = hostdev.get("address") or f"{hostdev.get('vendor_id')}:{hostdev.get('product_id')}"
        lines.append(("Passthrough", f"{hostdev['type']} {where}"))
    for shmem in details["shmem"]:
        lines.append(("Shared memory", f"{shmem['name']} ({shmem['size']})"))
    width = max(len(key) for key, _ in lines)
    for key, value in lines:
        ctx.print(f"{key + ':':<{width + 1}} {value}".rstrip())
    return EXIT_OK


class _Spinner:
    """``⠋ Stopping win11… 3.2s`` on stderr while a wait lasts longer than a second, only on
    a terminal and never with --json (DESIGN: the library waits on events; this is just the
    face of that wait)."""

    FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

    def __init__(self, ctx: _Context, text: str):
        self.ctx = ctx
        self.text = text
        stream = ctx.err
        self.enabled = not ctx.json and hasattr(stream, "isatty") and stream.isatty()
        self._done = None
        self._thread = None

    def __enter__(self) -> _Spinner:
        if self.enabled:
            import threading
            import time

            self._done = threading.Event()
            started = time.monotonic()

            def spin() -> None:
                if self._done.wait(1.0):
                    return
                frame = 0
                while not self._done.wait(0.1):
                    elapsed = time.monotonic() - started
                    self.ctx.err.write(
                        f"\r{self.FRAMES[frame % len(self.FRAMES)]} {self.text}… {elapsed:.1f}s"
                    )
                    self.ctx.err.flush()
                    frame += 1
                self.ctx.err.write("\r\033[K")
                self.ctx.err.flush()

            self._thread = threading.Thread(target=spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._thread is not None:
            self._done.set()
            self._thread.join()


def _report(ctx: _Context, result, text: str) -> int:
    if ctx.json:
        ctx.print_json(result.to_dict())
    else:
        ctx.print(text)
    return EXIT_OK


def cmd_start(ctx: _Context) -> int:
    args = ctx.args
    if args.display:
        _display_config(ctx, args.name)  # no Looking Glass: say so before booting anything
    with _Spinner(ctx, f"Starting {args.name}"):
        result = ctx.lifecycle.start(
            args.name, paused=args.paused, wait=not args.no_wait, timeout=args.timeout
        )
    how = "requested" if args.no_wait else f"{result.state.label} after {result.elapsed_s:.2f} s"
    code = _report(ctx, result, f"{args.name}: {result.message}, {how}")
    if args.display:
        return _show_display(ctx, args.name, fullscreen=False, user=None)
    return code


def _display_config(ctx: _Context, name: str):
    from .core.errors import InvalidConfig
    from .core.looking_glass import display_config

    config = display_config(name, ctx.store(), ctx.connection)
    if config is None:
        raise InvalidConfig("NAME", f"VM {name!r} has no Looking Glass display (create it with"
                            " --gpu ADDR --looking-glass)")
    return config


def _show_display(ctx: _Context, name: str, fullscreen: bool, user: str | None) -> int:
    """Run the Looking Glass client for ``name`` in the foreground until it closes, the VM
    stops, or Ctrl-C."""
    import os
    from dataclasses import replace

    from .core.errors import LifecycleError
    from .core.looking_glass import LGState, LookingGlassManager
    from .core.primitives import VMState

    config = replace(_display_config(ctx, name), fullscreen=fullscreen)
    if ctx.lifecycle.require(name) != VMState.RUNNING:
        raise LifecycleError(f"{name!r} is not running: start it with `neuron-vm start {name}"
                             " --display`")
    run_as = user or (os.environ.get("SUDO_USER") if os.geteuid() == 0 else None)
    manager = LookingGlassManager(run_as=run_as, connection=ctx.connection)
    manager.subscribe(lambda change: ctx.print(
        f"{change.vm_name}: {change.new.value} ({change.reason})"))
    manager.follow(ctx.lifecycle, lambda vm: config if vm == name else None)
    manager.start(name, config)
    done = {LGState.STOPPED, LGState.ERROR}
    try:
        while manager.wait_for_state(name, done, 0.5) not in done:
            pass
    except KeyboardInterrupt:
        manager.stop(name)
    final = manager.get_state(name)
    return EXIT_FAILED if final == LGState.ERROR else EXIT_OK


def cmd_display(ctx: _Context) -> int:
    args = ctx.args
    if args.stop:
        from .core.looking_glass import stop_by_pid_file

        stopped = stop_by_pid_file(args.name)
        ctx.print(f"{args.name}: Looking Glass {'closed' if stopped else 'was not open'}")
        return EXIT_OK
    return _show_display(ctx, args.name, fullscreen=args.fullscreen, user=args.user)


def cmd_stop(ctx: _Context) -> int:
    from .core.vm_lifecycle import ShutdownMethod

    args = ctx.args
    method = ShutdownMethod.FORCE if args.force else ShutdownMethod.GRACEFUL
    with _Spinner(ctx, f"Stopping {args.name}"):
        result = ctx.lifecycle.stop(args.name, method=method, timeout=args.timeout)
    return _report(ctx, result, f"{args.name}: {result.message} in {result.elapsed_s:.2f} s")


def _simple(operation: str) -> Callable[[_Context], int]:
    def command(ctx: _Context) -> int:
        name = ctx.args.name
        with _Spinner(ctx, f"{operation.capitalize()} {name}"):
            result = getattr(ctx.lifecycle, operation)(name)
        text = f"{name}: {result.message} in {result.elapsed_s:.2f} s"
        if result.state.value not in result.message:
            text += f"; it is {result.state.label}"
        return _report(ctx, result, text)

    command.__name__ = f"cmd_{operation}"
    return command


def _format_change(change) -> str:
    import datetime

    stamp = datetime.datetime.fromtimestamp(change.timestamp).isoformat(" ", "milliseconds")
    return f"{stamp}  {change.name}  {change.old.value} -> {change.new.value}  ({change.reason})"


def cmd_events(ctx: _Context) -> int:
    import queue

    from .core.connection import ConnectionEvent

    name = ctx.args.name
    lifecycle = ctx.lifecycle
    if name:
        lifecycle.require(name)  # a typo is "not found" (exit 3), not an endless silence
    changes: queue.Queue = queue.Queue()
    lifecycle.subscribe(lambda change: changes.put(change) if not name or change.name == name
                        else None)
    ctx.connection.subscribe(
        lambda event: changes.put(event) if isinstance(event, ConnectionEvent) else None
    )
    if not ctx.json:
        target = name or "all VMs"
        ctx.err.write(f"Watching {target} on {ctx.connection.uri}; Ctrl-C to stop.\n")
        ctx.err.flush()
    seen = 0
    try:
        while ctx.args.count is None or seen < ctx.args.count:
            try:
                item = changes.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if isinstance(item, ConnectionEvent):
                if ctx.json:
                    _print_json_line(ctx, {"connection": item.status, "uri": item.uri,
                                           "reason": item.reason, "time": item.timestamp})
                else:
                    ctx.print(f"-- connection {item.status}: {item.reason}")
                    ctx.out.flush()
                continue
            if ctx.json:
                _print_json_line(ctx, {
                    "name": item.name, "old": item.old.value, "new": item.new.value,
                    "reason": item.reason, "time": item.timestamp,
                })
            else:
                ctx.print(_format_change(item))
                ctx.out.flush()
            seen += 1
    except KeyboardInterrupt:
        pass
    return EXIT_OK


# CLI flags for the config fields, so an error names what the user typed.
_FLAG_FOR_FIELD = {
    "memory_mb": "--memory", "vcpus": "--cpus", "disk_size_gb": "--disk-size",
    "disk_path": "--disk", "iso_path": "--iso", "virtio_iso_path": "--virtio-iso",
    "gpu.pci_address": "--gpu", "opencore_path": "--opencore", "domain_type": "--domain-type",
    "network": "--network", "vm_type": "--template", "kernel_path": "--kernel",
    "initrd_path": "--initrd", "kernel_cmdline": "--cmdline",
    "serial_log_path": "--serial-log", "looking_glass.enabled": "--looking-glass",
    "looking_glass.width": "--resolution", "looking_glass.height": "--resolution",
}


def _config_from_args(args: argparse.Namespace):
    from .core.errors import InvalidConfig
    from .core.vm_config import VMConfig

    kind, _, variant = args.template.partition("-")
    usb = []
    for item in args.usb or ():
        vendor, sep, product = item.partition(":")
        if not sep:
            raise InvalidConfig("--usb", f"{item!r} is not VID:PID (e.g. 046d:c52b)")
        usb.append({"vendor_id": vendor, "product_id": product})
    looking_glass = {"enabled": bool(args.looking_glass)}
    if args.resolution:
        width, sep, height = args.resolution.lower().partition("x")
        if not (sep and width.isdigit() and height.isdigit()):
            raise InvalidConfig("--resolution", f"{args.resolution!r} is not WxH (e.g. 2560x1440)")
        looking_glass.update(width=int(width), height=int(height))
    data = {
        "name": args.name, "vm_type": kind, "memory_mb": args.memory, "vcpus": args.cpus,
        "disk_size_gb": args.disk_size, "disk_path": args.disk, "iso_path": args.iso,
        "virtio_iso_path": args.virtio_iso, "opencore_path": args.opencore,
        "domain_type": args.domain_type, "network": args.network, "usb_devices": usb,
        "looking_glass": looking_glass, "kernel_path": args.kernel,
        "initrd_path": args.initrd, "kernel_cmdline": args.cmdline,
        "serial_log_path": args.serial_log,
    }
    if args.looking_glass:
        data["display_mode"] = "looking-glass"
    if args.gpu:
        data["gpu_passthrough"] = {"pci_address": args.gpu, "rom_file": args.gpu_rom,
                                   "nvidia_compat": args.nvidia_compat,
                                   "allow_boot_gpu": args.allow_boot_gpu}
    data = {key: value for key, value in data.items() if value is not None}
    config = VMConfig.from_dict(data)
    template = None
    if variant:
        from .templates.names import template_name

        if variant not in ("basic", "passthrough"):
            raise InvalidConfig("--template", f"{args.template!r}: the variant is basic or"
                                " passthrough (e.g. windows11-passthrough)")
        template = template_name(kind, variant == "passthrough")
    return config, template


def cmd_create(ctx: _Context) -> int:
    from .core.errors import InvalidConfig
    from .core.vm_creator import VMCreator

    args = ctx.args
    try:
        config, template = _config_from_args(args)
        creator = VMCreator(ctx.connection, store=ctx.store())
        if args.print_xml:
            ctx.out.write(creator.print_xml(config, force=args.force, template=template))
            return EXIT_OK
        plan = creator.plan(config, force=args.force, template=template)
    except InvalidConfig as error:
        flag = _FLAG_FOR_FIELD.get(error.field)
        if flag and not error.field.startswith("--"):
            raise InvalidConfig(f"{flag} ({error.field})", error.message) from None
        raise
    if not ctx.json:
        for line in plan.describe():
            ctx.print(line)
    steps = [] if ctx.json else None

    def progress(step: str) -> None:
        if steps is None:
            ctx.print(f"  ... {step}")

    result = creator.create(config, force=args.force, template=template, progress=progress,
                            plan=plan)
    started = None
    if args.start:
        with _Spinner(ctx, f"Starting {config.name}"):
            started = ctx.lifecycle.start(config.name)
    if ctx.json:
        data = result.to_dict()
        data["started"] = started.to_dict() if started else None
        ctx.print_json(data)
    else:
        ctx.print(f"created {result.name} from {result.template}"
                  f"{'; started' if started else ''}")
    return EXIT_OK


def cmd_delete(ctx: _Context) -> int:
    from .core.errors import InvalidConfig
    from .core.vm_destroyer import VMDestroyer

    args = ctx.args
    destroyer = VMDestroyer(ctx.connection, store=ctx.store(), lifecycle=ctx.lifecycle)
    plan = destroyer.plan(args.name, delete_disks=args.delete_disks)
    if ctx.json and args.dry_run:
        ctx.print_json(plan.to_dict())
        return EXIT_OK
    if not ctx.json:
        for line in plan.describe():
            ctx.print(line)
    if args.dry_run:
        return EXIT_OK
    if plan.state.is_active and not args.force:
        from .core.errors import LifecycleError

        raise LifecycleError(f"cannot delete {plan.blocked_reason}")
    if not args.yes:
        stdin = sys.stdin
        if not (hasattr(stdin, "isatty") and stdin.isatty()):
            raise InvalidConfig("--yes", "not on a terminal: add --yes to confirm the deletion")
        answer = input(f"Delete VM {args.name!r} as shown? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            ctx.print("nothing deleted")
            return EXIT_FAILED
    result = destroyer.destroy(args.name, delete_disks=args.delete_disks, force=args.force)
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


def cmd_templates(ctx: _Context) -> int:
    from .templates.loader import TemplateLoader

    loader = TemplateLoader()
    action = ctx.args.action
    if action == "list":
        infos = loader.list_templates()
        if ctx.json:
            ctx.print_json([{"name": i.name, "origin": i.origin, "path": str(i.path)}
                            for i in infos])
        else:
            for info in infos:
                ctx.print(f"{info.name:24s} {info.origin:8s} {info.path}")
        return EXIT_OK
    if action == "show":
        if not ctx.args.target:
            from .core.errors import InvalidConfig

            raise InvalidConfig("TEMPLATE", "name the template to show")
        ctx.out.write(loader.source(ctx.args.target))
        return EXIT_OK
    from .core.errors import InvalidConfig
    from .templates.validator import validate_xml

    if not ctx.args.target:
        raise InvalidConfig("FILE", "name the XML file to validate")
    try:
        with open(ctx.args.target, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as error:
        raise InvalidConfig("FILE", f"cannot read {ctx.args.target}: {error.strerror}") from None
    report = validate_xml(text)
    checked = "schema and NeuronOS rules" if report.schema_checked else (
        f"NeuronOS rules only ({report.schema_skipped_reason})")
    ctx.print(f"{ctx.args.target}: valid ({checked})")
    return EXIT_OK


def cmd_gpu(ctx: _Context) -> int:
    from .passthrough import gpu_attach

    action = ctx.args.action
    if action == "list":
        gpus = gpu_attach.list_gpus()
        if ctx.json:
            ctx.print_json([gpu.to_dict() for gpu in gpus])
            return EXIT_OK
        if not gpus:
            ctx.print("No GPUs found.")
        for gpu in gpus:
            verdict = "viable" if gpu.viable else "NOT viable"
            ctx.print(f"{gpu.address}  {gpu.device.name}")
            ctx.print(f"    driver {gpu.device.driver or '-'}, IOMMU group"
                      f" {gpu.device.iommu_group if gpu.device.iommu_group is not None else '-'}"
                      f", functions {', '.join(str(f.address) for f in gpu.functions)}: {verdict}")
            for blocker in gpu.blockers:
                ctx.print(f"    blocked by {blocker.address}: {blocker.reason}")
            for warning in gpu.warnings:
                ctx.print(f"    note: {warning}")
        return EXIT_OK
    if action in ("plan", "prepare", "unprepare", "detach", "reattach") and not ctx.args.address \
            and action != "unprepare":
        from .core.errors import InvalidConfig

        raise InvalidConfig("ADDR", f"gpu {action} needs the GPU's PCI address")
    if action == "plan":
        plan = gpu_attach.plan_passthrough(ctx.args.address,
                                           allow_boot_gpu=ctx.args.allow_boot_gpu)
        if ctx.json:
            ctx.print_json(plan.to_dict())
        else:
            ctx.print(f"{plan.gpu.address}  {plan.gpu.device.name}")
            ctx.print(f"  hostdevs (managed='yes'): {', '.join(plan.hostdevs)}")
            for note in plan.notes:
                ctx.print(f"  note: {note}")
            for warning in plan.gpu.warnings:
                ctx.print(f"  warning: {warning}")
            ctx.print("  ready to pass through" if plan.ready else
                      f"  refused: {plan.refused_reason}")
        return EXIT_OK if plan.ready else EXIT_FAILED
    if action in ("detach", "reattach"):
        call = gpu_attach.detach if action == "detach" else gpu_attach.reattach
        call(ctx.connection, ctx.args.address)
        ctx.print(f"{ctx.args.address}: {'on vfio-pci' if action == 'detach' else 'back on its host driver'}")
        return EXIT_OK
    from .passthrough import isolation

    if action == "unprepare":
        done = isolation.unprepare()
        for line in done:
            ctx.print(line)
        return EXIT_OK
    plan = isolation.plan_isolation(ctx.args.address)
    for line in plan.describe():
        ctx.print(line)
    if not ctx.args.apply:
        ctx.print("(nothing written: add --apply to do it)")
        return EXIT_OK
    for line in isolation.apply(plan):
        ctx.print(line)
    return EXIT_OK


def cmd_usb(ctx: _Context) -> int:
    from .core.errors import InvalidConfig
    from .passthrough import usb_attach

    action = ctx.args.action
    if action == "list":
        devices = usb_attach.list_usb()
        if ctx.json:
            ctx.print_json([device.to_dict() for device in devices])
        elif not devices:
            ctx.print("No USB devices found.")
        for device in devices if not ctx.json else ():
            hub = "  (hub)" if device.is_hub else ""
            ctx.print(f"{device.sysfs_name:10s} {device.vendor_id}:{device.product_id}"
                      f"  {device.name}{hub}")
        return EXIT_OK
    if not ctx.args.vm or not ctx.args.device:
        raise InvalidConfig("NAME", f"usb {action} needs a VM name and VID:PID or BUS-PORT")
    device = usb_attach.find_usb(ctx.args.device)
    exact = "-" in ctx.args.device  # named by port: exactly that one
    xml = usb_attach.device_xml_for(device, exact)
    if action == "attach":
        live = usb_attach.attach_device(ctx.connection, ctx.args.vm, xml)
    else:
        live = usb_attach.detach_device(ctx.connection, ctx.args.vm, xml)
    _remember_usb(ctx, ctx.args.vm, device, exact, add=action == "attach")
    where = "live and in its config" if live else "in its config (it is not running)"
    ctx.print(f"{device.name} ({device.sysfs_name}) {action}ed: {where}")
    return EXIT_OK


def _remember_usb(ctx: _Context, vm: str, device, exact: bool, add: bool) -> None:
    """Keep the VM's saved settings in step with its devices (when NeuronOS made it)."""
    from .core.errors import StoreError
    from .core.vm_config import USBDeviceConfig

    store = ctx.store()
    try:
        config = store.load(vm)
    except StoreError as error:
        ctx.warn(str(error))
        return
    if config is None:
        return
    entry = USBDeviceConfig(device.vendor_id, device.product_id,
                            bus=device.bus if exact else None,
                            port=device.port if exact else None, name=device.name)
    kept = [u for u in config.usb_devices
            if (u.vendor_id, u.product_id, u.bus, u.port) !=
            (entry.vendor_id, entry.product_id, entry.bus, entry.port)]
    config.usb_devices = kept + ([entry] if add else [])
    store.save(config)


def cmd_doctor(ctx: _Context) -> int:
    from .passthrough.host_check import FAIL, run_checks

    checks = run_checks(uri=getattr(ctx.args, "connect", None))
    if ctx.json:
        ctx.print_json([check.to_dict() for check in checks])
    else:
        for check in checks:
            ctx.print(f"[{check.status:^4s}] {check.name}: {check.detail}")
            if check.fix and check.status != "ok":
                ctx.print(f"       fix: {check.fix}")
        failed = sum(check.status == FAIL for check in checks)
        warned = sum(check.status == "warn" for check in checks)
        ctx.print(f"{len(checks)} checks: {failed} failed, {warned} warnings")
    return EXIT_FAILED if any(check.status == FAIL for check in checks) else EXIT_OK


def cmd_shm_permissions(ctx: _Context) -> int:
    from .passthrough.host_check import desktop_user
    from .passthrough.ivshmem import write_tmpfiles_rule
    from .passthrough.pci import host_root

    user = ctx.args.user or desktop_user()
    path, text = write_tmpfiles_rule(ctx.args.name, user, host_root(), apply=ctx.args.apply)
    ctx.print(f"{'wrote' if ctx.args.apply else 'would write'} {path}:")
    ctx.out.write(text)
    if ctx.args.apply:
        import shutil
        import subprocess

        if shutil.which("systemd-tmpfiles") and str(host_root()) == "/":
            subprocess.run(["systemd-tmpfiles", "--create", str(path)], check=False)
        ctx.print("restart the VM so its shared memory is made with these rights")
    else:
        ctx.print("(nothing written: add --apply)")
    return EXIT_OK


def _print_json_line(ctx: _Context, data: dict) -> None:
    import json

    ctx.out.write(json.dumps(data) + "\n")
    ctx.out.flush()


# --- parser --------------------------------------------------------------------------------

COMMANDS: dict[str, Callable[[_Context], int]] = {
    "list": cmd_list,
    "info": cmd_info,
    "start": cmd_start,
    "stop": cmd_stop,
    "pause": _simple("pause"),
    "resume": _simple("resume"),
    "reboot": _simple("reboot"),
    "reset": _simple("reset"),
    "events": cmd_events,
    "create": cmd_create,
    "delete": cmd_delete,
    "templates": cmd_templates,
    "gpu": cmd_gpu,
    "usb": cmd_usb,
    "doctor": cmd_doctor,
    "shm-permissions": cmd_shm_permissions,
    "display": cmd_display,
}


def _global_options(parser: argparse.ArgumentParser, suppress: bool) -> None:
    # The same options work before and after the command (`--json list` and `list --json`);
    # the sub-command copy uses SUPPRESS so it does not overwrite a value given earlier.
    default = argparse.SUPPRESS if suppress else None
    parser.add_argument(
        "-c", "--connect", metavar="URI", default=default,
        help="libvirt URI (default: $NEURONOS_LIBVIRT_URI, $LIBVIRT_DEFAULT_URI, qemu:///system)",
    )
    parser.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
        help="print machine-readable JSON only",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="log details and show tracebacks",
    )


def _formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter with the width given: without one it imports shutil (and bz2,
    lzma) on every add_argument just to ask the terminal's width (~5 ms of start-up)."""
    try:
        width = int(os.environ.get("COLUMNS", "")) or os.get_terminal_size().columns
    except (ValueError, OSError):
        width = 80
    return argparse.HelpFormatter(prog, width=max(width - 2, 40))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, formatter_class=_formatter,
        description="Manage NeuronOS virtual machines (libvirt, GPU passthrough, Looking Glass).",
        epilog="Exit codes: 0 ok, 1 operation failed, 2 invalid input, 3 VM not found.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    _global_options(parser, suppress=False)
    common = argparse.ArgumentParser(add_help=False)
    _global_options(common, suppress=True)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    commands.add_parser(
        "list", parents=[common], help="list all VMs (defined and running)",
        description="List all defined and running VMs with state, vCPUs, memory and type.",
    )
    info = commands.add_parser(
        "info", parents=[common], help="show everything known about one VM",
        description="Show one VM: live domain facts plus its saved NeuronOS settings.",
    )
    info.add_argument("name", metavar="NAME")

    start = commands.add_parser(
        "start", parents=[common], help="boot a VM and wait until it runs",
        description="Boot a VM. Waits (on libvirt events) until it runs, unless --no-wait.",
    )
    start.add_argument("name", metavar="NAME")
    start.add_argument("--paused", action="store_true", help="start with the CPUs paused")
    start.add_argument("--no-wait", action="store_true", help="return once libvirt accepted")
    start.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                       help="give up waiting after S seconds (default 60)")
    start.add_argument("--display", action="store_true",
                       help="then show it through Looking Glass (stays until the window closes)")
    stop = commands.add_parser(
        "stop", parents=[common], help="shut a VM down (ACPI, forced after the timeout)",
        description="Press the VM's ACPI power button and wait; if the guest has not powered"
        " off after --timeout seconds, power it off by force. Says which happened.",
    )
    stop.add_argument("name", metavar="NAME")
    stop.add_argument("--force", action="store_true", help="power off at once (may lose data)")
    stop.add_argument("--timeout", type=_seconds, default=60.0, metavar="S",
                      help="seconds to wait for a graceful shutdown (default 60)")
    for name, text in (
        ("pause", "freeze a running VM's CPUs"),
        ("resume", "let a paused VM continue"),
        ("reboot", "ask the guest to restart (ACPI)"),
        ("reset", "press the reset button (no shutdown)"),
    ):
        sub = commands.add_parser(name, parents=[common], help=text, description=text + ".")
        sub.add_argument("name", metavar="NAME")
    events = commands.add_parser(
        "events", parents=[common], help="print VM state changes as they happen",
        description="Print every state change (one line each, or JSON lines with --json)"
        " until Ctrl-C.",
    )
    events.add_argument("name", metavar="NAME", nargs="?", help="only this VM")
    events.add_argument("--count", type=int, default=None, metavar="N",
                        help="stop after N state changes")

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
    create.add_argument("--iso", metavar="PATH", help="installer ISO")
    create.add_argument("--virtio-iso", metavar="PATH",
                        help="virtio-win drivers ISO (Windows; enables virtio disk and NIC)")
    create.add_argument("--gpu", metavar="PCI_ADDR", help="pass this GPU (all its functions)")
    create.add_argument("--gpu-rom", metavar="PATH", help="ROM file for the GPU")
    create.add_argument("--allow-boot-gpu", action="store_true",
                        help="single-GPU mode: allow the GPU the host boots on")
    create.add_argument("--nvidia-compat", action="store_true",
                        help="hide KVM and set a Hyper-V vendor id (old NVIDIA drivers)")
    create.add_argument("--usb", action="append", metavar="VID:PID", help="pass a USB device")
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

    templates = commands.add_parser(
        "templates", parents=[common], help="list, show or validate domain templates",
        description="templates list | templates show T | templates validate FILE",
    )
    templates.add_argument("action", choices=["list", "show", "validate"])
    templates.add_argument("target", nargs="?", metavar="T|FILE")

    gpu = commands.add_parser(
        "gpu", parents=[common], help="GPUs: list, passthrough plan, boot-time isolation",
        description="gpu list | gpu plan ADDR | gpu prepare ADDR [--apply] | gpu unprepare |"
        " gpu detach ADDR | gpu reattach ADDR. Reads sysfs under $NEURONOS_HOST_ROOT (default"
        " /); only prepare --apply, unprepare, detach and reattach change anything.",
    )
    gpu.add_argument("action", choices=["list", "plan", "prepare", "unprepare", "detach",
                                        "reattach"])
    gpu.add_argument("address", nargs="?", metavar="ADDR")
    gpu.add_argument("--allow-boot-gpu", action="store_true",
                     help="single-GPU mode: allow passing the GPU the host boots on")
    gpu.add_argument("--apply", action="store_true", help="gpu prepare: really write the files")

    usb = commands.add_parser(
        "usb", parents=[common], help="USB devices: list, attach to / detach from a VM",
        description="usb list | usb attach NAME VID:PID|BUS-PORT | usb detach NAME"
        " VID:PID|BUS-PORT. A running VM gets the device at once and keeps it; a stopped one"
        " gets it in its config.",
    )
    usb.add_argument("action", choices=["list", "attach", "detach"])
    usb.add_argument("vm", nargs="?", metavar="NAME")
    usb.add_argument("device", nargs="?", metavar="VID:PID|BUS-PORT")

    commands.add_parser(
        "doctor", parents=[common], help="check that this host is ready (KVM, IOMMU, ...)",
        description="Check CPU virtualization, /dev/kvm, IOMMU, vfio-pci, UEFI firmware,"
        " swtpm, libvirtd, the default network, your groups, the Looking Glass client and"
        " shared-memory rights. Each result has a one-line fix. Exit 1 if any check fails.",
    )
    shm = commands.add_parser(
        "shm-permissions", parents=[common],
        help="let the desktop user open a VM's Looking Glass shared memory",
        description="Write the systemd-tmpfiles rule the Looking Glass docs give"
        " (f /dev/shm/looking-glass-<vm> 0660 <user> kvm -). Shows it unless --apply.",
    )
    shm.add_argument("name", metavar="NAME")
    shm.add_argument("--user", help="the desktop user (default: $SUDO_USER or you)")
    shm.add_argument("--apply", action="store_true", help="really write the rule")

    display = commands.add_parser(
        "display", parents=[common], help="show a running VM through Looking Glass",
        description="Start the Looking Glass client once the guest's host application is"
        " live, restart it if it crashes, and close it when the VM stops. Runs until the"
        " window closes or Ctrl-C. Fullscreen at any time: the escape key (Scroll Lock) + F"
        " inside the window.",
    )
    display.add_argument("name", metavar="NAME")
    display.add_argument("--fullscreen", action="store_true", help="open fullscreen")
    display.add_argument("--stop", action="store_true",
                         help="close the window another neuron-vm opened")
    display.add_argument("--user", help="as root: the desktop user to run the client as"
                         " (default $SUDO_USER)")
    return parser


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86400:
        raise argparse.ArgumentTypeError(f"{text} is outside 0-86400 seconds")
    return value


def _setup_logging(verbose: bool) -> None:
    from .core import log

    level = log.DEBUG if verbose else log.ERROR
    log.set_threshold(level)  # below it, nothing imports `logging` (start-up cost)

    def configure(logging) -> None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: %(levelname)s: %(name)s: %(message)s"))
        root = logging.getLogger("vm_manager")
        root.handlers[:] = [handler]
        root.setLevel(level)
        root.propagate = False

    log.configure(configure)


def _library_log():
    from .core.log import get_logger

    return get_logger("vm_manager")


def main(
    argv: Sequence[str] | None = None,
    connection: LibvirtConnection | None = None,
    out=None,
    err=None,
) -> int:
    """Run one command. Tests pass ``connection`` (a test-driver connection) and streams."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    parser = build_parser()
    try:
        # argparse writes help, version and usage errors to sys.stdout/sys.stderr itself
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exit_:  # argparse: --help/--version exit 0, bad usage exits 2
        return int(exit_.code or 0)
    _setup_logging(args.verbose)
    ctx = _Context(args, connection, out, err)
    from .core.errors import VMManagerError

    try:
        return COMMANDS[args.command](ctx)
    except VMManagerError as error:
        if args.verbose:
            _library_log().exception("command failed")
        print(f"{PROG}: {error}", file=err)
        return error.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=err)
        return 130
    except BrokenPipeError:  # `neuron-vm list | head`
        return EXIT_OK
    except Exception as error:  # a bug: still one line, the traceback with -v
        if args.verbose:
            _library_log().exception("internal error")
        print(f"{PROG}: internal error: {error!r} (run with -v for details)", file=err)
        return EXIT_FAILED


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
