"""Dialogs of the desktop app. (The create wizard and the settings dialog come next.)"""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QCheckBox,
    QWidget,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QVBoxLayout,
)


class DeleteDialog(QDialog):
    """Shows the destroyer's plan. Disks are kept unless the box is ticked (it starts
    unticked); disks that must be kept are listed greyed out with the reason."""

    def __init__(self, destroyer, name: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Delete {name}")
        self.destroyer = destroyer
        self.name = name
        self.kept_plan = destroyer.plan(name, delete_disks=False)
        self.full_plan = destroyer.plan(name, delete_disks=True)
        layout = QVBoxLayout(self)
        state = self.kept_plan.state
        text = f"Delete the VM <b>{name}</b>?"
        if state.is_active:
            text += f" It is {state.label}: stop it first."
        layout.addWidget(QLabel(text))
        deletable = [d for d in self.full_plan.disks if d.delete]
        self.disks_box = QCheckBox(
            f"Also delete its disk{'s' if len(deletable) != 1 else ''}, UEFI variables and TPM"
            " state (cannot be undone)")
        self.disks_box.setChecked(False)
        self.disks_box.setEnabled(bool(deletable))
        self.disks_box.toggled.connect(self._refresh)
        layout.addWidget(self.disks_box)
        self.disk_list = QListWidget()
        layout.addWidget(self.disk_list)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        self.ok_button = buttons.button(QDialogButtonBox.Ok)
        self.ok_button.setText("Delete")
        self.ok_button.setEnabled(not state.is_active)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)
        self._refresh()

    @property
    def delete_disks(self) -> bool:
        return self.disks_box.isChecked()

    def _refresh(self) -> None:
        self.disk_list.clear()
        for disk in self.full_plan.disks:
            will_delete = disk.delete and self.delete_disks
            verb = "delete" if will_delete else "keep"
            reason = "" if disk.delete else f" ({disk.reason})"
            item = QListWidgetItem(f"{verb}: {disk.path}{reason}")
            if not disk.delete:  # must be kept: shown greyed, whatever the box says
                item.setFlags(item.flags() & ~Qt.ItemIsEnabled)
                item.setToolTip(disk.reason)
            self.disk_list.addItem(item)


# --- create wizard -----------------------------------------------------------------------------

from PySide6.QtWidgets import (  # noqa: E402
    QComboBox,
    QFormLayout,
    QLineEdit,
    QSpinBox,
    QWizard,
    QWizardPage,
)

TEMPLATES = (("windows11", "Windows 11"), ("windows10", "Windows 10"), ("linux", "Linux"),
             ("macos", "macOS"))
RESOLUTIONS = ("1920x1080", "2560x1440", "3840x2160")


class CreateWizard(QWizard):
    """System and resources -> GPU, USB and Looking Glass -> summary and create. Every field
    is checked as you type by building the same ``VMConfig`` the CLI builds, so the message
    is the CLI's ``InvalidConfig`` text."""

    def __init__(self, creator, host_root=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle("New virtual machine")
        self.creator = creator
        self.host_root = host_root
        self.error_text = ""
        self.result = None
        self.system_page = _SystemPage(self)
        self.devices_page = _DevicesPage(self)
        self.summary_page = _SummaryPage(self)
        for page in (self.system_page, self.devices_page, self.summary_page):
            self.addPage(page)

    def config_data(self) -> dict:
        s, d = self.system_page, self.devices_page
        data = {
            "name": s.name.text().strip(), "vm_type": s.template.currentData(),
            "memory_mb": s.memory.text().strip() or None, "vcpus": s.vcpus.value(),
            "disk_size_gb": s.disk_size.text().strip() or None,
            "disk_path": s.disk_path.text().strip() or None,
            "iso_path": s.iso.text().strip() or None,
            "virtio_iso_path": s.virtio_iso.text().strip() or None,
            "opencore_path": s.opencore.text().strip() or None,
            "network": s.network.text().strip() or "default",
        }
        gpu = d.gpu.currentData() if d.gpu.count() else None
        if gpu:
            data["gpu_passthrough"] = {"pci_address": gpu}
        usb = [d.usb.item(i).data(Qt.UserRole) for i in range(d.usb.count())
               if d.usb.item(i).checkState() == Qt.Checked]
        data["usb_devices"] = [{"vendor_id": v, "product_id": p} for v, p in usb]
        if gpu and d.looking_glass.isChecked():
            width, height = d.resolution.currentText().split("x")
            data["looking_glass"] = {"enabled": True, "width": int(width), "height": int(height)}
        if data["disk_path"]:
            data.pop("disk_size_gb")
        return {key: value for key, value in data.items() if value is not None}

    def build_config(self):
        """The VMConfig, or None with ``error_text`` set to the InvalidConfig message."""
        from ..core.errors import InvalidConfig
        from ..core.vm_config import VMConfig

        try:
            config = VMConfig.from_dict(self.config_data())
        except InvalidConfig as error:
            self.error_text = str(error)
            return None
        self.error_text = ""
        return config


def _check_item(text: str, data, checked: bool) -> QListWidgetItem:
    """A list row with a tick box, carrying ``data``."""
    item = QListWidgetItem(text)
    item.setData(Qt.UserRole, data)
    item.setFlags(item.flags() | Qt.ItemIsUserCheckable)
    item.setCheckState(Qt.Checked if checked else Qt.Unchecked)
    return item


def _with_browse(field: QLineEdit, filter_text: str) -> QWidget:
    """A path field with a Browse… button (a file picker)."""
    from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QToolButton

    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    button = QToolButton()
    button.setText("Browse…")

    def pick() -> None:
        path, _ = QFileDialog.getOpenFileName(box, "Choose a file", field.text(), filter_text)
        if path:
            field.setText(path)

    button.clicked.connect(pick)
    row.addWidget(field, 1)
    row.addWidget(button)
    return box


class _SystemPage(QWizardPage):
    def __init__(self, wizard: CreateWizard):
        super().__init__()
        self.setTitle("System and resources")
        self.wizard_ = wizard
        form = QFormLayout(self)
        self.template = QComboBox()
        for value, label in TEMPLATES:
            self.template.addItem(label, value)
        self.name = QLineEdit()
        self.memory = QLineEdit("8G")
        self.vcpus = QSpinBox()
        self.vcpus.setRange(1, 512)
        self.vcpus.setValue(4)
        self.disk_size = QLineEdit("128G")
        self.disk_path = QLineEdit()
        self.disk_path.setPlaceholderText("or an existing disk image (path)")
        self.iso = QLineEdit()
        self.virtio_iso = QLineEdit()
        self.opencore = QLineEdit()
        self.network = QLineEdit("default")
        self.error = QLabel()
        self.error.setStyleSheet("color: #b71c1c")
        self.error.setWordWrap(True)
        for label, widget in (("System", self.template), ("Name", self.name),
                              ("Memory", self.memory), ("vCPUs", self.vcpus),
                              ("New disk size", self.disk_size),
                              ("Existing disk", _with_browse(self.disk_path, "Disk images (*)")),
                              ("Installer ISO", _with_browse(self.iso, "ISO images (*.iso)")),
                              ("virtio drivers ISO",
                               _with_browse(self.virtio_iso, "ISO images (*.iso)")),
                              ("OpenCore image (macOS)", _with_browse(self.opencore, "Images (*)")),
                              ("Network", self.network)):
            form.addRow(label, widget)
        form.addRow(self.error)
        for widget in (self.name, self.memory, self.disk_size, self.disk_path, self.iso,
                       self.virtio_iso, self.opencore, self.network):
            widget.textChanged.connect(self._changed)
        self.vcpus.valueChanged.connect(self._changed)
        self.template.currentIndexChanged.connect(self._changed)

    def _changed(self, *_args) -> None:
        self.wizard_.build_config()
        self.error.setText(self.wizard_.error_text)
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802 - Qt name
        return self.wizard_.build_config() is not None


class _DevicesPage(QWizardPage):
    def __init__(self, wizard: CreateWizard):
        super().__init__()
        self.setTitle("GPU, USB devices and Looking Glass")
        self.wizard_ = wizard
        form = QFormLayout(self)
        self.gpu = QComboBox()
        self.gpu_reason = QLabel()
        self.gpu_reason.setWordWrap(True)
        self.usb = QListWidget()
        self.looking_glass = QCheckBox("Show the VM through Looking Glass")
        self.resolution = QComboBox()
        self.resolution.addItems(RESOLUTIONS)
        self.resolution.setCurrentText("2560x1440")
        self.shm_label = QLabel()
        form.addRow("GPU", self.gpu)
        form.addRow(self.gpu_reason)
        form.addRow("USB devices", self.usb)
        form.addRow(self.looking_glass)
        form.addRow("Resolution", self.resolution)
        form.addRow("Shared memory", self.shm_label)
        self.gpu.currentIndexChanged.connect(self._update)
        self.looking_glass.toggled.connect(self._update)
        self.resolution.currentTextChanged.connect(self._update)

    def initializePage(self) -> None:  # noqa: N802 - Qt name
        from ..passthrough.gpu_attach import list_gpus
        from ..passthrough.usb_attach import list_usb

        self.gpu.clear()
        self.gpu.addItem("No GPU (a SPICE window)", None)
        reasons = []
        for gpu in list_gpus(self.wizard_.host_root):
            label = f"{gpu.address} {gpu.device.name}"
            self.gpu.addItem(label, gpu.address)
            item = self.gpu.model().item(self.gpu.count() - 1)
            blocked = not gpu.viable or gpu.device.boot_vga
            if blocked:  # cannot be picked; the reason is shown
                item.setEnabled(False)
                why = "; ".join(f"blocked by {b.address}: {b.reason}" for b in gpu.blockers) \
                    or "the boot GPU (the host's display)"
                reasons.append(f"{gpu.address}: {why}")
        self.gpu_reason.setText("\n".join(reasons))
        self.usb.clear()
        for device in list_usb(self.wizard_.host_root):
            if device.is_hub:
                continue
            self.usb.addItem(_check_item(f"{device.sysfs_name}  {device.name}",
                                         (device.vendor_id, device.product_id), False))
        self._update()

    def _update(self, *_args) -> None:
        from ..passthrough.ivshmem import shm_size_mb

        has_gpu = self.gpu.currentData() is not None
        self.looking_glass.setEnabled(has_gpu)
        enabled = has_gpu and self.looking_glass.isChecked()
        self.resolution.setEnabled(enabled)
        width, height = (int(v) for v in self.resolution.currentText().split("x"))
        self.shm_label.setText(f"{shm_size_mb(width, height)} MiB" if enabled else "-")
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802 - Qt name
        return self.wizard_.build_config() is not None


from PySide6.QtCore import QObject, Signal  # noqa: E402


class _Progress(QObject):
    step = Signal(str)
    finished = Signal()


class _SummaryPage(QWizardPage):
    def __init__(self, wizard: CreateWizard):
        super().__init__()
        self.setTitle("Summary")
        self.wizard_ = wizard
        layout = QVBoxLayout(self)
        self.plan_text = QLabel()
        self.plan_text.setWordWrap(True)
        self.steps = QListWidget()
        layout.addWidget(self.plan_text)
        layout.addWidget(self.steps)
        self.plan = None
        self.config = None

    def initializePage(self) -> None:  # noqa: N802 - Qt name
        from ..core.errors import VMManagerError

        self.steps.clear()
        self.config = self.wizard_.build_config()
        try:
            self.plan = self.wizard_.creator.plan(self.config)
            self.plan_text.setText("\n".join(self.plan.describe()))
        except VMManagerError as error:
            self.plan = None
            self.plan_text.setText(f"Cannot create: {error}")
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802 - Qt name
        return self.plan is not None

    def validatePage(self) -> bool:  # noqa: N802 - Qt name
        """Create now, on a worker thread, while this page lists each step as it starts
        (a local event loop keeps the window alive meanwhile). False keeps the wizard open."""
        import threading

        from PySide6.QtCore import QEventLoop

        from ..core.errors import VMManagerError

        signals = _Progress()
        signals.step.connect(lambda step: self.steps.addItem(f"… {step}"))
        loop = QEventLoop()
        signals.finished.connect(loop.quit)
        outcome: dict = {}

        def work() -> None:
            try:
                outcome["result"] = self.wizard_.creator.create(
                    self.config, plan=self.plan, progress=signals.step.emit)
            except VMManagerError as error:
                outcome["error"] = error
            except Exception as error:  # noqa: BLE001 - shown on the page, never lost
                outcome["error"] = error
            finally:
                signals.finished.emit()

        thread = threading.Thread(target=work, name="create-vm", daemon=True)
        self.setEnabled(False)
        thread.start()
        if thread.is_alive() or not outcome:
            loop.exec()
        thread.join()
        self.setEnabled(True)
        if "error" in outcome:
            self.steps.addItem(f"failed: {outcome['error']}")
            return False
        self.wizard_.result = outcome["result"]
        self.steps.addItem("created")
        return True


# --- host readiness ---------------------------------------------------------------------------

from PySide6.QtWidgets import QTreeWidget, QTreeWidgetItem  # noqa: E402


class ReadinessDialog(QDialog):
    """``neuron-vm doctor`` as a page: each check with its status and its one-line fix."""

    COLORS = {"ok": "#2e7d32", "warn": "#f9a825", "fail": "#c62828"}

    def __init__(self, checks, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Is this computer ready?")
        layout = QVBoxLayout(self)
        failed = sum(check.status == "fail" for check in checks)
        layout.addWidget(QLabel("Everything needed is in place." if not failed else
                                f"{failed} thing(s) need fixing before VMs can use a GPU."))
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Status", "Check", "Result", "How to fix"])
        for check in checks:
            item = QTreeWidgetItem([check.status, check.name, check.detail,
                                    check.fix if check.status != "ok" and check.fix else ""])
            from PySide6.QtGui import QColor

            item.setForeground(0, QColor(self.COLORS.get(check.status, "#000000")))
            self.tree.addTopLevelItem(item)
        for column in range(4):
            self.tree.resizeColumnToContents(column)
        layout.addWidget(self.tree)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)


# --- settings of a stopped VM, USB hot-plug of a running one -----------------------------------


class SettingsDialog(QDialog):
    """Memory, vCPUs, GPU, USB and Looking Glass of a stopped VM; OK rewrites its domain
    through ``VMCreator.reconfigure`` (same UUID, same disk)."""

    def __init__(self, creator, config, host_root=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"Settings of {config.name}")
        self.creator = creator
        self.base = config
        self.host_root = host_root
        self.result = None
        form = QFormLayout(self)
        self.memory = QLineEdit(f"{config.memory_mb}M")
        self.vcpus = QSpinBox()
        self.vcpus.setRange(1, 512)
        self.vcpus.setValue(config.vcpus)
        self.gpu = QComboBox()
        self.gpu.addItem("No GPU", None)
        from ..passthrough.gpu_attach import list_gpus

        current = config.gpu_passthrough.pci_address if config.gpu_passthrough else None
        for gpu in list_gpus(host_root):
            self.gpu.addItem(f"{gpu.address} {gpu.device.name}", gpu.address)
            usable = gpu.viable and (not gpu.device.boot_vga or gpu.address == current)
            self.gpu.model().item(self.gpu.count() - 1).setEnabled(usable)
        if current:
            index = self.gpu.findData(current)
            self.gpu.setCurrentIndex(index if index >= 0 else 0)
        self.looking_glass = QCheckBox("Looking Glass")
        self.looking_glass.setChecked(config.looking_glass.enabled)
        self.usb = QListWidget()
        from ..passthrough.usb_attach import list_usb

        chosen = {(u.vendor_id, u.product_id) for u in config.usb_devices}
        listed = set()
        for device in list_usb(host_root):
            key = (device.vendor_id, device.product_id)
            if device.is_hub or key in listed:
                continue
            listed.add(key)
            self.usb.addItem(_check_item(f"{key[0]}:{key[1]}  {device.name}", key,
                                         key in chosen))
        for key in sorted(chosen - listed):  # configured but not plugged in now: keep them
            self.usb.addItem(_check_item(f"{key[0]}:{key[1]}  (not plugged in)", key, True))
        self.error = QLabel()
        self.error.setStyleSheet("color: #b71c1c")
        self.error.setWordWrap(True)
        form.addRow("Memory", self.memory)
        form.addRow("vCPUs", self.vcpus)
        form.addRow("GPU", self.gpu)
        form.addRow(self.looking_glass)
        form.addRow("USB devices", self.usb)
        form.addRow(self.error)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.apply)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def new_config(self):
        from ..core.vm_config import VMConfig

        data = self.base.to_dict()
        gpu = self.gpu.currentData()
        usb = [self.usb.item(i).data(Qt.UserRole) for i in range(self.usb.count())
               if self.usb.item(i).checkState() == Qt.Checked]
        data.update(memory_mb=self.memory.text().strip(), vcpus=self.vcpus.value(),
                    gpu_passthrough={"pci_address": gpu} if gpu else None,
                    usb_devices=[{"vendor_id": v, "product_id": p} for v, p in usb])
        lg = dict(data["looking_glass"], enabled=bool(gpu) and self.looking_glass.isChecked())
        data["looking_glass"] = lg
        if not lg["enabled"] and data.get("display_mode") == "looking-glass":
            data["display_mode"] = "spice"
        return VMConfig.from_dict(data)

    def apply(self) -> None:
        from ..core.errors import VMManagerError

        try:
            self.result = self.creator.reconfigure(self.new_config())
        except VMManagerError as error:
            self.error.setText(str(error))
            return
        self.accept()


class USBPanel(QDialog):
    """The host's USB devices; tick to give one to the running VM, untick to take it back
    (hot-plug, kept in the VM's config)."""

    def __init__(self, connection, vm_name: str, host_root=None, parent=None):
        super().__init__(parent)
        self.setWindowTitle(f"USB devices of {vm_name}")
        self.connection = connection
        self.vm_name = vm_name
        self.errors: list[str] = []
        layout = QVBoxLayout(self)
        layout.addWidget(QLabel("Ticked devices belong to the VM while it runs."))
        self.list = QListWidget()
        layout.addWidget(self.list)
        from ..passthrough.usb_attach import list_usb

        attached = self._attached()
        for device in list_usb(host_root):
            if device.is_hub:
                continue
            key = (device.vendor_id, device.product_id)
            self.list.addItem(_check_item(f"{device.sysfs_name}  {device.name}", device,
                                          key in attached))
        self.list.itemChanged.connect(self._toggled)
        buttons = QDialogButtonBox(QDialogButtonBox.Close)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def _attached(self) -> set[tuple[str, str]]:
        from ..core.domain_xml import read_domain

        xml = self.connection.execute(
            lambda conn: self.connection.lookup(conn, self.vm_name).XMLDesc(0))
        return {(h.vendor_id, h.product_id) for h in read_domain(xml).usb_hostdevs}

    def _toggled(self, item: QListWidgetItem) -> None:
        from ..core.errors import VMManagerError
        from ..passthrough.usb_attach import attach_device, detach_device, device_xml_for

        device = item.data(Qt.UserRole)
        xml = device_xml_for(device, exact=False)
        try:
            if item.checkState() == Qt.Checked:
                attach_device(self.connection, self.vm_name, xml)
            else:
                detach_device(self.connection, self.vm_name, xml)
        except VMManagerError as error:
            self.errors.append(str(error))
            self.list.blockSignals(True)  # put the box back as it was
            item.setCheckState(Qt.Unchecked if item.checkState() == Qt.Checked else Qt.Checked)
            self.list.blockSignals(False)
