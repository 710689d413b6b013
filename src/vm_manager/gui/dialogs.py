"""Dialogs of the desktop app: delete, settings of a stopped VM, USB of a running one. (The
create wizard, ``wizard.CreateWizard``, and the Host check, ``readiness.ReadinessDialog``,
are importable from here too.)

Each dialog is given what it shows, read on a worker before it opens; what it changes goes
through an action on a worker too (``Tasks``), so the window never waits on libvirt, sysfs
or a program.
"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
)

from ..base.primitives import plural
from ..base.vm_config import MINIMUMS
from .texts import (NO_USB, empty_row, for_people, gpu_label, plan_words, said, speed_box,
                    usb_label)
from .widgets import Tasks, check_item, error_label, fit_list
from ..actions import tune
from .networks import NetworkPicker
from .readiness import ReadinessDialog
from .wizard import CreateWizard

__all__ = ["CreateWizard", "DeleteDialog", "ReadinessDialog", "SettingsDialog", "USBPanel"]


class DeleteDialog(QDialog):
    """Shows the destroyer's plan (both ways, read once). Disks are kept unless the box is
    ticked (it starts unticked); disks that must be kept are listed greyed out with the
    reason."""

    def __init__(self, preview, name: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Delete {name}")
        self.name = name
        self.kept_plan = preview.keep_disks
        self.full_plan = preview.delete_disks
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel(f"Delete the VM <b>{name}</b>?"))
        deletable = [d for d in self.full_plan.disks if d.delete]
        firmware = ", UEFI variables and TPM state" if self.full_plan.has_firmware_state else ""
        self.disks_box = QCheckBox(f"Also delete its disk{'s' if len(deletable) != 1 else ''}"
                                   f"{firmware} (cannot be undone)")
        self.disks_box.setChecked(False)
        self.disks_box.setEnabled(bool(deletable))
        self.disks_box.toggled.connect(self._refresh)
        layout.addWidget(self.disks_box)
        self.disk_list = QListWidget()
        layout.addWidget(self.disk_list)
        self.blocker = error_label()  # what stops the deletion as ticked, and the way out
        layout.addWidget(self.blocker)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.ok_button = buttons.button(QDialogButtonBox.Ok)
        self.ok_button.setText("Delete")
        self.ok_button.setAutoDefault(False)  # Enter never deletes: Cancel is the default
        buttons.button(QDialogButtonBox.Cancel).setDefault(True)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self._refresh()
        fit_list(self.disk_list)
        self.adjustSize()

    @property
    def delete_disks(self) -> bool:
        return self.disks_box.isChecked()

    def _refresh(self) -> None:
        """Every file of the VM with what happens to it as the box is ticked: its disks, its
        UEFI variables and TPM state, its snapshots; and what blocks the deletion."""
        self.disk_list.clear()
        ticked = self.delete_disks
        plan = self.full_plan if ticked else self.kept_plan
        for disk in self.full_plan.disks:
            will_delete = disk.delete and ticked
            verb = "delete" if will_delete else "keep"
            reason = "" if disk.delete else f" ({for_people(disk.reason)})"
            item = QListWidgetItem(f"{verb}: {disk.path}{reason}")
            if not disk.delete:  # must be kept: shown greyed, whatever the box says
                item.setFlags(item.flags() & ~Qt.ItemIsEnabled)
                item.setToolTip(for_people(disk.reason))
            self.disk_list.addItem(item)
        for path in plan.firmware_files:
            what = "TPM state" if "swtpm" in path else "UEFI variables"
            self.disk_list.addItem(f"{'delete' if ticked else 'keep'}: {path} ({what})")
        if plan.snapshots:
            names = ", ".join(plan.snapshots)
            self.disk_list.addItem(f"delete: snapshots {names}" if ticked else
                                   f"blocks the deletion: snapshots {names}")
        blocked = []
        if plan.state.is_active:
            blocked.append(f"It is {plan.state.label}: stop it first.")
        if plan.snapshots_block:
            blocked.append(f"It has snapshots ({', '.join(plan.snapshots)}): tick the box"
                           " above to delete them with it, or delete them first (Snapshots…).")
        self.blocker.setText(" ".join(blocked))
        self.blocker.setVisible(bool(blocked))
        self.ok_button.setEnabled(not blocked)


class SettingsDialog(QDialog):
    """Memory, vCPUs, GPU, USB, Looking Glass and shared folders of a stopped VM. OK checks
    the change at
    once (the CLI's messages), then rewrites the domain with the ``reconfigure`` action on a
    worker: what the dialog does not show (a GPU's ROM and options) is kept."""

    def __init__(self, ctx, config, devices, tasks: Tasks | None = None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Settings of {config.name}")
        self.ctx = ctx
        self.tasks = tasks or Tasks(parent=self)
        self.base = config
        self.result = None
        form = QFormLayout(self)
        self.memory = QLineEdit(f"{config.memory_mb}M")
        self.vcpus = QSpinBox()
        self.vcpus.setRange(1, 512)
        self.vcpus.setValue(config.vcpus)
        self.vcpus.setMinimum(MINIMUMS[config.vm_type].vcpus)  # the system's own minimum
        self.vcpus.valueChanged.connect(lambda _: self._show_plan())
        self.gpu = QComboBox()
        self.gpu.addItem("No GPU", None)
        current = config.gpu_passthrough.pci_address if config.gpu_passthrough else None
        for gpu in devices.gpus:
            self.gpu.addItem(gpu_label(gpu), gpu.address)
            usable = gpu.viable and (not gpu.device.boot_vga or gpu.address == current)
            self.gpu.model().item(self.gpu.count() - 1).setEnabled(usable)
        if current:
            index = self.gpu.findData(current)
            self.gpu.setCurrentIndex(index if index >= 0 else 0)
        self.network = NetworkPicker(ctx, devices.networks, self.tasks,
                                     current=config.network or "none")
        self.speed = speed_box(devices, config.domain_type.value)
        self.looking_glass = QCheckBox("Looking Glass")
        self.looking_glass.setChecked(config.looking_glass.enabled)
        self.looking_glass.setToolTip("Shows the passed-through GPU's screen in a window")
        self.gpu.currentIndexChanged.connect(self._gpu_chosen)
        self._gpu_chosen()
        self.usb = QListWidget()
        chosen = {(u.vendor_id, u.product_id) for u in config.usb_devices}
        listed = set()
        for device in devices.usb:
            key = (device.vendor_id, device.product_id)
            if device.is_hub or key in listed:
                continue
            listed.add(key)
            self.usb.addItem(check_item(usb_label(device), key,
                                        key in chosen))
        for key in sorted(chosen - listed):  # configured but not plugged in now: keep them
            self.usb.addItem(check_item(f"{key[0]}:{key[1]}  (not plugged in)", key, True))
        if not self.usb.count():
            self.usb.addItem(empty_row(NO_USB))
        self.pin = QCheckBox("Pin its vCPUs to whole cores of this computer")
        self.pin.setChecked(config.tune.pins(config.gpu_passthrough is not None))
        self.where = QLabel("Reading this computer's CPUs…")
        self.where.setWordWrap(True)
        self.hugepages = QComboBox()
        for label, value in (("Ordinary pages", "none"), ("2 MiB huge pages", "2M"),
                             ("1 GiB huge pages", "1G")):
            self.hugepages.addItem(label, value)
        self.hugepages.setCurrentIndex(self.hugepages.findData(config.tune.hugepages or "none"))
        self.tasks.run(lambda: tune.report(ctx, config.name), self._show_plan,
                       lambda error: self.where.setText(said(error)))
        self.error = error_label()
        self.shares = QListWidget()
        self.shares.setAccessibleName("Shared folders")
        for share in config.shares:
            self.add_share(share.path, share.tag, share.readonly)
        add, remove = QPushButton("Add folder…"), QPushButton("Remove")
        add.clicked.connect(self._pick_folder)
        remove.clicked.connect(lambda: [self.shares.takeItem(self.shares.row(item))
                                        for item in self.shares.selectedItems()])
        buttons = QHBoxLayout()
        buttons.addWidget(add)
        buttons.addWidget(remove)
        buttons.addStretch()
        shares = QVBoxLayout()
        shares.addWidget(self.shares)
        shares.addLayout(buttons)
        hint = QLabel("The guest mounts each folder by its tag (Linux: mount -t virtiofs TAG"
                      " /mnt/TAG; Windows: a drive, with WinFsp and the VirtIO-FS service).")
        hint.setWordWrap(True)
        form.addRow("Memory", self.memory)
        form.addRow("vCPUs", self.vcpus)
        form.addRow("CPU pinning", self.pin)
        form.addRow("", self.where)
        form.addRow("Memory pages", self.hugepages)
        form.addRow("Speed", self.speed)
        form.addRow("Network", self.network)
        form.addRow("GPU", self.gpu)
        form.addRow(self.looking_glass)
        form.addRow("USB devices", self.usb)
        form.addRow("Shared folders", shares)
        form.addRow(hint)
        form.addRow(self.error)
        self.buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.buttons.accepted.connect(self.apply)
        self.buttons.rejected.connect(self.reject)
        form.addRow(self.buttons)
        fit_list(self.usb, rows=4)
        fit_list(self.shares, rows=3)
        self.adjustSize()

    def add_share(self, path: str, tag: str | None = None, readonly: bool = False) -> None:
        """A row for ``path``; its tag is the folder's name, made unique in the list. The
        folder itself is checked when OK is pressed (on the worker, by the action)."""
        from ..base.errors import InvalidConfig
        from ..base.guest_config import ShareConfig

        try:
            share = ShareConfig(path, tag, readonly)
        except InvalidConfig as error:
            self.error.setText(str(error))
            return
        taken = {self.shares.item(i).data(Qt.UserRole)["tag"]
                 for i in range(self.shares.count())}
        tag, number = share.tag, 1
        while tag in taken:
            number += 1
            tag = f"{share.tag[:32]}-{number}"
        item = QListWidgetItem(f"{tag}  {share.path}{'  (read-only)' if readonly else ''}")
        item.setData(Qt.UserRole, {"path": share.path, "tag": tag, "readonly": readonly})
        self.shares.addItem(item)

    def _gpu_chosen(self) -> None:
        """Looking Glass shows a passed-through GPU's screen: offered only with a GPU."""
        has_gpu = self.gpu.currentData() is not None
        self.looking_glass.setEnabled(has_gpu)
        if not has_gpu:
            self.looking_glass.setChecked(False)

    def _pick_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Share a folder with the VM")
        if folder:
            self.add_share(folder)

    def change(self):
        from ..actions.create import SettingsChange

        usb = tuple(self.usb.item(i).data(Qt.UserRole) for i in range(self.usb.count())
                    if self.usb.item(i).checkState() == Qt.Checked)
        shares = tuple(self.shares.item(i).data(Qt.UserRole)
                       for i in range(self.shares.count()))
        tune = self.base.tune
        pin = self.pin.isChecked()
        pages = self.hugepages.currentData()
        return SettingsChange(memory=self.memory.text().strip(), vcpus=self.vcpus.value(),
                              gpu=self.gpu.currentData(), usb=usb,
                              looking_glass=self.looking_glass.isChecked(), shares=shares,
                              domain_type=self.speed.currentData(),
                              network=self.network.value(),
                              pin=None if pin == tune.pins(self.base.gpu_passthrough is not None)
                              else pin,
                              hugepages=None if pages == (tune.hugepages or "none") else pages)

    def _show_plan(self, report=None) -> None:
        """Where the vCPUs in the field would run (the reasons as tip), from the report."""
        self._report = report = report or getattr(self, "_report", None)
        if report is not None:
            plan = report.plan_for(self.vcpus.value())
            self.where.setText(plan_words(plan))
            self.where.setToolTip("\n".join([report.host, *plan.describe()]))

    def apply(self) -> None:
        from ..actions import create
        from ..base.errors import VMManagerError

        change = self.change()
        if self.network.problem() and change.network != self.base.network:
            self.error.setText(f"Network: {self.network.problem()}")
            return
        try:
            create.apply_change(self.base, change)  # pure: a bad value is told at once
        except VMManagerError as error:
            self.error.setText(said(error))
            return
        self.error.setText("Saving…")
        self.buttons.setEnabled(False)
        self.tasks.run(lambda: create.reconfigure(self.ctx, self.base.name, change),
                       self._saved, self._failed)

    def _saved(self, outcome) -> None:
        self.result = outcome.result
        self.accept()

    def _failed(self, error: BaseException) -> None:
        self.buttons.setEnabled(True)
        self.error.setText(said(error))


class USBPanel(QDialog):
    """The host's USB devices; tick to give one to the running VM, untick to take it back
    (the ``usb`` attach/detach actions, on a worker: hot-plug, kept in the VM's config and
    its saved settings)."""

    def __init__(self, ctx, vm_name: str, devices, attached: set, tasks: Tasks | None = None,
                 parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"USB devices of {vm_name}")
        self.ctx = ctx
        self.tasks = tasks or Tasks(parent=self)
        self.vm_name = vm_name
        self.errors: list[str] = []
        # the outcomes, for the status line and tests (not `done`: QDialog.done closes it)
        self.outcomes: list = []
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Ticked devices belong to the VM while it runs."))
        self.list = QListWidget()
        layout.addWidget(self.list)
        for device in devices:
            if device.is_hub:
                continue
            key = (device.vendor_id, device.product_id)
            self.list.addItem(check_item(usb_label(device, port=True), device,
                                         key in attached))
        if not self.list.count():
            self.list.addItem(empty_row(NO_USB))
        self.list.itemChanged.connect(self._toggled)
        fit_list(self.list, rows=4)
        self.status = QLabel()
        layout.addWidget(self.status)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _toggled(self, item: QListWidgetItem) -> None:
        from ..actions import usb

        device = item.data(Qt.UserRole)
        change = usb.attach if item.checkState() == Qt.Checked else usb.detach
        self._quietly(item, enabled=False)  # busy until the action answers
        self.status.setText(f"{device.name}…")

        def finished(outcome) -> None:
            self._quietly(item, enabled=True)
            self.outcomes.append(outcome)
            self.status.setText(outcome.describe())

        def failed(error: BaseException) -> None:
            self.errors.append(str(error))
            self.status.setText(str(error))
            back = Qt.Unchecked if item.checkState() == Qt.Checked else Qt.Checked
            self._quietly(item, enabled=True, state=back)  # put the box back as it was

        self.tasks.run(lambda: change(self.ctx, self.vm_name, device), finished, failed)

    def _quietly(self, item: QListWidgetItem, enabled: bool, state=None) -> None:
        """Change a row without it counting as the user's tick (itemChanged)."""
        self.list.blockSignals(True)
        flags = item.flags()
        item.setFlags(flags | Qt.ItemIsEnabled if enabled else flags & ~Qt.ItemIsEnabled)
        if state is not None:
            item.setCheckState(state)
        self.list.blockSignals(False)


def handoff_question(parent, plan, way_back: tuple[str, ...]) -> bool:
    """Before a VM takes this desktop's GPU: what the user is about to see (a black screen,
    then the VM), how to get the desktop back, what the card's resets allow; Cancel is the
    default (Enter and Escape never hand the desktop over)."""
    box = handoff_box(parent, plan, way_back)
    box.exec()
    return box.clickedButton() is box.go


def handoff_box(parent, plan, way_back: tuple[str, ...]):
    """The question of ``handoff_question``, not yet shown."""
    import html
    import re

    from PySide6.QtGui import QFontDatabase
    from PySide6.QtWidgets import QMessageBox, QTextEdit

    def rich(text: str) -> str:  # `commands` as code, everything else as text
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))

    box = QMessageBox(QMessageBox.Warning, f"Start {plan.vm} on this screen",
                      f"{plan.vm} gets this computer's only GPU ({plan.gpu}). The desktop"
                      " stops while it runs: the screen goes black for a few seconds, then"
                      f" shows {plan.vm}. Save your work in other programs first.",
                      QMessageBox.NoButton, parent)
    back = "".join(f"<li>{rich(line)}</li>" for line in way_back)
    warnings = "".join(f"<p><b>Before the first run:</b> {rich(w)}</p>" for w in plan.warnings)
    box.setInformativeText(f"<p>To get the desktop back:</p><ul>{back}</ul>{warnings}")
    box.setDetailedText("\n".join(plan.describe()))
    details = box.findChild(QTextEdit)  # Qt's is a few words wide and 100 px high (fixed)
    if details is not None:  # the plan's do/undo commands line up in a fixed-width font
        details.setFont(QFontDatabase.systemFont(QFontDatabase.FixedFont))
        metrics = details.fontMetrics()
        details.setMinimumWidth(metrics.horizontalAdvance("x" * 90))
        details.setFixedHeight(metrics.lineSpacing() * 16)
    box.go = box.addButton("Hand the GPU over and start", QMessageBox.AcceptRole)
    cancel = box.addButton(QMessageBox.Cancel)
    box.setDefaultButton(cancel)
    box.setEscapeButton(cancel)
    box.setObjectName("handoff_question")
    return box
