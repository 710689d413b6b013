"""The main window's commands: each toolbar action runs the same action as the CLI, on a
worker (``MainWindow._run`` / ``_prepare``), and dialogs get their data before they open.
Each takes the current host's context (the selected VM's) when it is pressed, so a worker
never acts on a host selected after the press. A part of ``MainWindow`` (it holds the
window); it keeps no state of its own.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Callable

from PySide6.QtWidgets import QMessageBox

from ..base.primitives import host_name


class Commands:
    def __init__(self, window):
        self.window = window  # the MainWindow this part belongs to

    def confirm(self, title: str, text: str) -> bool:
        from .widgets import ask

        return ask(self.window, title, text)

    def _power(self, label: str, operation: str, **options) -> None:
        from ..actions import power

        name, ctx = self.window.selected_name(), self.window.ctx
        if name:
            self.window._run(name, label, lambda: getattr(power, operation)(ctx, name, **options))

    def on_start(self) -> None:
        """Start; a VM whose GPU shows this desktop first says what the user will see and
        how to get back (the single-GPU handoff), and starts only on their yes."""
        from ..actions import handoff, power

        name, ctx = self.window.selected_name(), self.window.ctx
        if not name:
            return

        def start(hand_over: bool = False) -> None:
            self.window._run(name, "Starting", lambda: power.start(
                ctx, power.StartRequest(name, hand_over=hand_over)))

        def then(found) -> None:
            from .dialogs import handoff_question

            plan, way_back = found
            self.window.statusBar().clearMessage()
            if plan is None or handoff.cannot_run(plan):  # the start says why not
                start()
            elif handoff_question(self.window, plan, way_back):
                start(hand_over=True)

        def read() -> tuple:
            plan = handoff.needed(ctx, name)
            return plan, handoff.way_back_of(ctx, name) if plan is not None else ()

        self._prepare(f"Reading what starting {name} needs", read, then)

    def on_stop(self) -> None:
        self._power("Stopping", "stop")

    def on_force_stop(self) -> None:
        name = self.window.selected_name()
        if name and self.confirm("Force stop", f"Power {name} off now? Unsaved work in the"
                                 " VM is lost."):
            self._power("Powering off", "stop", force=True)

    def on_pause(self) -> None:
        self._power("Pausing", "pause")

    def on_resume(self) -> None:
        self._power("Resuming", "resume")

    def on_reboot(self) -> None:
        self._power("Rebooting", "reboot")

    def on_refresh(self) -> None:
        self.window.load()

    def _prepare(self, label: str, work: Callable[[], object],
                 then: Callable[[object], None]) -> None:
        """Read what a dialog needs on a worker (busy in the status bar), then open it."""
        self.window.statusBar().showMessage(f"{label}…")

        def failed(error: BaseException) -> None:
            from .texts import said

            self.window.last_error = said(error)
            self.window.statusBar().showMessage(self.window.last_error)

        self.window.tasks.run(work, then, failed)

    def on_create(self) -> None:
        from ..actions import host
        from .wizard import CreateWizard

        ctx = self.window.ctx

        def show(devices) -> None:
            self.window.statusBar().clearMessage()
            wizard = CreateWizard(ctx, devices, tasks=self.window.tasks, parent=self.window)
            made = wizard.result if wizard.exec() else None
            start = wizard.start_after
            wizard.deleteLater()  # Qt deletes a finished dialog, not Python's collector
            if made is not None:
                self._select_when_listed(ctx, made.name, f"{made.name} is made", start)
                self.window.load()

        self._prepare(f"Looking at the GPUs and USB devices of {host_name(ctx.uri)}",
                      lambda: host.devices(ctx), show)

    def _select_when_listed(self, ctx, name: str, said: str, start: bool) -> None:
        """Select ``name`` and say ``said`` once the next listing of ``ctx``'s host has it
        (after the window has shown that listing); with ``start``, then start it."""
        bridge = self.window.bridge

        def listed(listing) -> None:
            host, rows = listing
            if host is ctx and any(row.name == name for row in rows):
                bridge.inventory_ready.disconnect(listed)
                self.window.select(name, ctx.uri)
                self.window.statusBar().showMessage(said)
                if start and self.window.selected_name() == name:
                    self.on_start()

        bridge.inventory_ready.connect(listed)

    def on_settings(self) -> None:
        from ..actions import host
        from .dialogs import SettingsDialog
        from .texts import for_people

        name, ctx = self.window.selected_name(), self.window.ctx
        if not name:
            return

        def show(found) -> None:
            config, devices = found
            self.window.statusBar().clearMessage()
            if config is None:
                QMessageBox.information(self.window, "Settings", f"{name} was not made by NeuronOS;"
                                        " change it with virt-manager or `virsh edit`.")
                return
            dialog = SettingsDialog(ctx, config, devices, tasks=self.window.tasks,
                                    parent=self.window)
            changed = dialog.exec()
            dialog.deleteLater()
            if changed:
                self.window.load()
                warnings = getattr(dialog.result, "warnings", ())
                if warnings:  # what the change brings (the CLI prints them as warnings)
                    QMessageBox.warning(self.window, f"Settings of {name}",
                                        "\n\n".join(for_people(w) for w in warnings))

        self._prepare(f"Reading the settings of {name}",
                      lambda: (ctx.settings(name), host.devices(ctx)), show)

    def on_usb(self) -> None:
        from ..actions import usb
        from .dialogs import USBPanel

        name, ctx = self.window.selected_name(), self.window.ctx
        if not name:
            return

        def show(found) -> None:
            devices, attached = found
            self.window.statusBar().clearMessage()
            self.window.usb_panel = USBPanel(ctx, name, devices, attached, tasks=self.window.tasks,
                                      parent=self.window)
            self.window.usb_panel.show()

        self._prepare("Looking at the USB devices",
                      lambda: (usb.list_usb(ctx), usb.attached(ctx, name)), show)

    def on_snapshots(self) -> None:
        from ..actions import snapshots
        from .snapshots import SnapshotsPanel

        name, ctx = self.window.selected_name(), self.window.ctx
        if not name:
            return

        def show(listing) -> None:
            self.window.statusBar().clearMessage()
            window = self.window
            window.snapshots_panel = SnapshotsPanel(ctx, name, listing, tasks=window.tasks,
                                                  parent=self.window)
            window.snapshots_panel.changed.connect(window._details_timer.start)  # read anew
            self.window.snapshots_panel.show()

        self._prepare(f"Reading the snapshots of {name}",
                      lambda: snapshots.list_snapshots(ctx, name), show)

    def on_readiness(self) -> None:
        from ..actions import host

        ctx = self.window.ctx
        lg_vms = tuple(row.name for row in self.window.model.rows if row.looking_glass
                       and row.host == ctx.uri)

        def read():
            from ..actions import guide

            checks = host.doctor(ctx)
            return checks, guide.fixes(ctx, checks, lg_vms)

        self._prepare(f"Checking {host_name(ctx.uri)}", read, self._show_readiness)

    def _show_readiness(self, found) -> None:
        from .dialogs import ReadinessDialog

        checks, fixes = found
        self.window.statusBar().showMessage("Host check done")
        window = self.window
        if getattr(window, "readiness", None) is not None:
            window.readiness.close()  # "Check again": the new answer takes its place
        window.readiness = ReadinessDialog(checks, window, fixes=fixes, tasks=window.tasks,
                                           recheck=self.on_readiness)
        window.readiness.show()

    def on_display(self) -> None:
        """The same action as ``neuron-vm display``: the window then follows the VM (it
        closes when the VM stops and opens again when it runs)."""
        from ..actions import display

        name, ctx = self.window.selected_name(), self.window.ctx
        if name:
            def show() -> SimpleNamespace:
                display.open_display(ctx, display.DisplayRequest(name),  # the details follow
                                     on_change=lambda _: self.window.bridge.display_changed.emit(
                                         ctx.uri, name))
                return SimpleNamespace(message="waiting for the guest's Looking Glass host")

            self.window._run(name, "Opening the display of", show)

    def on_delete(self) -> None:
        from ..actions import delete
        from .dialogs import DeleteDialog

        name, ctx = self.window.selected_name(), self.window.ctx
        if not name:
            return

        def show(preview) -> None:
            self.window.statusBar().clearMessage()
            dialog = DeleteDialog(preview, name, self.window)
            chosen = dialog.exec()
            delete_disks = dialog.delete_disks
            dialog.deleteLater()
            if chosen:
                request = delete.DeleteRequest(name, delete_disks=delete_disks)
                self.window._run(name, "Deleting", lambda: delete.delete(ctx, request))

        self._prepare(f"Planning the deletion of {name}", lambda: delete.preview(ctx, name),
                      show)

    def on_console(self) -> None:
        """The VM's own screen in virt-viewer (``neuron-vm console``): for any VM, also
        while Windows installs and before Looking Glass works."""
        from ..actions import console

        name, ctx = self.window.selected_name(), self.window.ctx
        if name:
            self.window._run(name, "Opening the console of",
                      lambda: console.open_console(ctx, name))
