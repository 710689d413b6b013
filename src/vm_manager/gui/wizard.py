"""The create wizard: system and resources -> GPU, USB and Looking Glass -> unattended setup
-> summary and create, all through the ``create`` action (the CLI's ``neuron-vm create``)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QSpinBox,
    QVBoxLayout,
    QWidget,
    QWizard,
    QWizardPage,
)

from .texts import NO_USB, empty_row, gpu_label, no_gpu_reason, usb_label
from .widgets import Tasks, check_item, error_label, fit_to_screen

TEMPLATES = (("windows11", "Windows 11"), ("windows10", "Windows 10"), ("linux", "Linux"),
             ("macos", "macOS"))
RESOLUTIONS = ("1920x1080", "2560x1440", "3840x2160")


class CreateWizard(QWizard):
    """System and resources -> GPU, USB and Looking Glass -> summary and create. Every field
    is checked as you type by building the same ``VMConfig`` the CLI builds, so the message
    is the CLI's ``InvalidConfig`` text."""

    def __init__(self, ctx, devices, tasks: Tasks | None = None, parent=None):
        """``devices``: the host's GPUs and USB devices (``actions.host.devices``), read
        on a worker before the wizard opens."""
        super().__init__(parent)
        self.setWindowTitle("New virtual machine")
        self.ctx = ctx
        self.devices = devices
        self.tasks = tasks or Tasks(parent=self)
        self.error_text = ""
        self.result = None
        self.system_page = _SystemPage(self)
        self.devices_page = _DevicesPage(self)
        self.setup_page = _SetupPage(self)
        self.summary_page = _SummaryPage(self)
        for page in (self.system_page, self.devices_page, self.setup_page, self.summary_page):
            self.addPage(page)
        # room for a one-line message under the fields and for the plan's lines
        hint = self.sizeHint()
        fit_to_screen(self, max(hint.width(), 720), max(hint.height(), 540))

    def config_data(self) -> dict:
        s, d = self.system_page, self.devices_page
        data = {
            "name": s.name.text().strip(), "vm_type": s.template.currentData(),
            "memory_mb": s.memory.text().strip() or None, "vcpus": s.vcpus.value() or None,
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
        if d.share.text().strip():
            data["shares"] = [{"path": d.share.text().strip()}]
        if gpu and d.looking_glass.isChecked():
            width, height = d.resolution.currentText().split("x")
            data["looking_glass"] = {"enabled": True, "width": int(width), "height": int(height)}
        if data["disk_path"]:
            data.pop("disk_size_gb")
        data.update(self.setup_page.config_data(data["vm_type"]))
        return {key: value for key, value in data.items() if value is not None}

    def secrets(self):
        """The unattended setup's password (never saved), or None."""
        from ..actions.create import SetupSecrets

        page = self.setup_page
        password = page.password.text()
        return SetupSecrets(password) if page.unattended.isChecked() and password else None

    def build_config(self):
        """The VMConfig, or None with ``error_text`` set to the InvalidConfig message."""
        from ..base.errors import InvalidConfig
        from ..base.vm_config import VMConfig

        try:
            config = VMConfig.from_dict(self.config_data())
            self.setup_page.check_password(config)
        except InvalidConfig as error:
            self.error_text = str(error)
            return None
        self.error_text = ""
        return config


class _CheckedPage(QWizardPage):
    """A page whose fields are checked as they change by building the config."""

    wizard_: CreateWizard
    error: QLabel

    def _changed(self, *_args) -> None:
        self.wizard_.build_config()
        self.error.setText(self.wizard_.error_text)
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802 - Qt name
        return self.wizard_.build_config() is not None


class _SystemPage(_CheckedPage):
    def __init__(self, wizard: CreateWizard):
        super().__init__()
        self.setTitle("System and resources")
        self.wizard_ = wizard
        form = QFormLayout(self)
        self.template = QComboBox()
        for value, label in TEMPLATES:
            self.template.addItem(label, value)
        self.name = QLineEdit()
        # empty: the system's own defaults (VMConfig's table, as the CLI), shown as hints
        self.memory = QLineEdit()
        self.vcpus = QSpinBox()
        self.vcpus.setRange(0, 512)  # 0: the default, shown by name
        self.disk_size = QLineEdit()
        self.disk_path = QLineEdit()
        self.disk_path.setPlaceholderText("or an existing disk image (path)")
        self.iso = QLineEdit()
        self.virtio_iso = QLineEdit()
        self.opencore = QLineEdit()
        self.network = QLineEdit("default")
        self.error = error_label()
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
        self.template.currentIndexChanged.connect(self._show_defaults)
        self._show_defaults()

    def _show_defaults(self, *_args) -> None:
        """The chosen system's defaults as hints: what an empty field gives."""
        from ..base.vm_config import DEFAULTS, VMType

        default = DEFAULTS[VMType(self.template.currentData())]
        self.memory.setPlaceholderText(f"default {_gib(default.memory_mb)}")
        self.vcpus.setSpecialValueText(f"default ({default.vcpus})")
        self.disk_size.setPlaceholderText(f"default {default.disk_gb}G")

class _DevicesPage(_CheckedPage):
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
        self.share = QLineEdit()
        self.share.setPlaceholderText("a host folder the VM mounts (virtiofs; more in Settings)")
        form.addRow("GPU", self.gpu)
        form.addRow(self.gpu_reason)
        form.addRow("USB devices", self.usb)
        form.addRow(self.looking_glass)
        form.addRow("Resolution", self.resolution)
        form.addRow("Shared memory", self.shm_label)
        form.addRow("Shared folder", _with_browse(self.share, None))
        self.gpu.currentIndexChanged.connect(self._update)
        self.looking_glass.toggled.connect(self._update)
        self.resolution.currentTextChanged.connect(self._update)

    def initializePage(self) -> None:  # noqa: N802 - Qt name
        self.gpu.clear()
        self.gpu.addItem("No GPU (a SPICE window)", None)
        reasons = []
        for gpu in self.wizard_.devices.gpus:
            label = gpu_label(gpu)
            self.gpu.addItem(label, gpu.address)
            item = self.gpu.model().item(self.gpu.count() - 1)
            blocked = not gpu.viable or gpu.device.boot_vga
            if blocked:  # cannot be picked; the reason is shown
                item.setEnabled(False)
                why = "; ".join(f"blocked by {b.address}: {b.reason}" for b in gpu.blockers) \
                    or "the boot GPU (the host's display)"
                reasons.append(f"{gpu.address}: {why}")
        why_none = no_gpu_reason(self.wizard_.devices.gpus)
        self.gpu_reason.setText("\n".join(filter(None, [why_none, *reasons])))
        self.usb.clear()
        for device in self.wizard_.devices.usb:
            if device.is_hub:
                continue
            self.usb.addItem(check_item(usb_label(device, port=True),
                                         (device.vendor_id, device.product_id), False))
        if not self.usb.count():
            self.usb.addItem(empty_row(NO_USB))
        self._update()

    def _update(self, *_args) -> None:
        from ..actions.host import looking_glass_size_mb

        has_gpu = self.gpu.currentData() is not None
        self.looking_glass.setEnabled(has_gpu)
        enabled = has_gpu and self.looking_glass.isChecked()
        self.resolution.setEnabled(enabled)
        width, height = (int(v) for v in self.resolution.currentText().split("x"))
        self.shm_label.setText(f"{looking_glass_size_mb(width, height)} MiB" if enabled
                               else "-")
        self.completeChanged.emit()


class _SetupPage(_CheckedPage):
    """Unattended setup: on by default for Windows when an installer ISO is given; the
    account, its password (never saved), the language and time zone, the edition, the
    Looking Glass host installer; for Linux, the cloud image and SSH key."""

    def __init__(self, wizard: CreateWizard):
        from ..actions.create import host_locale, host_timezone

        super().__init__()
        self.setTitle("Set the guest up without questions")
        self.wizard_ = wizard
        form = QFormLayout(self)
        self.unattended = QCheckBox("Install and set it up by itself")
        self.user = QLineEdit("user")
        self.password = QLineEdit()
        self.password.setEchoMode(QLineEdit.Password)
        self.again = QLineEdit()
        self.again.setEchoMode(QLineEdit.Password)
        self.locale = QLineEdit(host_locale())
        self.timezone = QLineEdit(host_timezone())
        self.edition = QLineEdit()
        self.lg_installer = QLineEdit()
        self.winfsp = QLineEdit()
        self.cloud_image = QLineEdit()
        self.ssh_key = QLineEdit()
        self.secure_boot = QCheckBox("Secure Boot (the image must boot through shim; Arch's"
                                     " does not)")
        self.secure_boot.setChecked(True)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.error = error_label()
        self.rows = {"windows": (self.locale, self.timezone, self.edition, self.lg_installer,
                                 self.winfsp),
                     "linux": (self.cloud_image, self.ssh_key, self.secure_boot)}
        form.addRow(self.unattended)
        for label, widget in (
                ("Account", self.user), ("Password", self.password), ("Again", self.again),
                ("Formats (locale)", self.locale), ("Time zone (Windows ID)", self.timezone),
                ("Edition", self.edition),
                ("Looking Glass host installer", _with_browse(self.lg_installer, "(*.exe *.zip)")),
                ("WinFsp installer (shared folders)", _with_browse(self.winfsp, "(*.msi)")),
                ("Cloud image (Linux)", _with_browse(self.cloud_image, "Images (*)")),
                ("SSH public key (Linux)", _with_browse(self.ssh_key, "Keys (*.pub)")),
                ("Firmware (Linux)", self.secure_boot)):
            form.addRow(label, widget)
        form.addRow(self.note)
        form.addRow(self.error)
        for widget in (self.user, self.password, self.again, self.locale, self.timezone,
                       self.edition, self.lg_installer, self.winfsp, self.cloud_image,
                       self.ssh_key):
            widget.textChanged.connect(self._changed)
        self.unattended.toggled.connect(self._changed)
        self.secure_boot.toggled.connect(self._changed)

    def initializePage(self) -> None:  # noqa: N802 - Qt name
        kind = self.wizard_.system_page.template.currentData()
        windows = kind in ("windows11", "windows10")
        self.unattended.setEnabled(kind != "macos")
        self.unattended.setChecked(windows and bool(self.wizard_.system_page.iso.text()))
        if windows and not self.edition.text():
            self.edition.setText(f"Windows {kind[-2:]} Pro")
        for group, widgets in self.rows.items():
            for widget in widgets:
                widget.setEnabled(group == ("windows" if windows else "linux"))
        self.note.setText({
            "macos": "macOS cannot be set up unattended (yet).",
            "linux": "Linux is set up from a cloud image by cloud-init; give an SSH key, a"
                     " password, or both."}.get(kind, "Windows installs by itself from the"
                                                  " installer and the virtio-win ISO; then the"
                                                  " guest tools and the Looking Glass host."))
        self._changed()

    def config_data(self, vm_type: str) -> dict:
        windows = vm_type in ("windows11", "windows10")
        firmware = {} if vm_type != "linux" or self.secure_boot.isChecked() else \
            {"secure_boot": False}
        if not self.unattended.isChecked():
            return firmware
        setup = {"user": self.user.text().strip() or None}
        if windows:
            setup.update(locale=self.locale.text().strip() or None,
                         timezone=self.timezone.text().strip() or None,
                         edition=self.edition.text().strip() or None,
                         lg_host_installer=self.lg_installer.text().strip() or None,
                         winfsp_installer=self.winfsp.text().strip() or None)
        else:
            setup["ssh_key_path"] = self.ssh_key.text().strip() or None
        data = {"unattended": {k: v for k, v in setup.items() if v is not None}, **firmware}
        if not windows:
            data["cloud_image_path"] = self.cloud_image.text().strip() or None
        return data

    def check_password(self, config) -> None:
        """The password rules the CLI applies (a Linux account with a key needs none)."""
        from ..actions.create import check_password

        setup = config.unattended
        if setup is None or (setup.ssh_key_path and not self.password.text()):
            return
        check_password(self.password.text(), self.again.text())


class _Progress(QObject):
    step = Signal(str)


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
        self.creating = False  # Create was pressed; the worker has not answered yet

    def initializePage(self) -> None:  # noqa: N802 - Qt name
        """The plan (the ``create`` action's preview), made on a worker; Create is enabled
        once it is there."""
        from ..actions import create

        self.steps.clear()
        self.config = self.wizard_.build_config()
        self.plan = None
        self.plan_text.setText("Checking…")
        self.completeChanged.emit()
        request = create.CreateRequest(self.config, secrets=self.wizard_.secrets())
        self.wizard_.tasks.run(lambda: (request, create.preview(self.wizard_.ctx, request)),
                               self._planned, self._refused)

    def _planned(self, planned) -> None:
        request, plan = planned
        if request.config is not self.config:
            return  # the user went back and changed something meanwhile
        self.plan = plan
        self.plan_text.setText("\n".join(plan.describe()))
        self.completeChanged.emit()

    def _refused(self, error: BaseException) -> None:
        self.plan = None
        self.plan_text.setText(f"Cannot create: {error}")
        self.completeChanged.emit()

    def isComplete(self) -> bool:  # noqa: N802 - Qt name
        return self.plan is not None

    def validatePage(self) -> bool:  # noqa: N802 - Qt name
        """Create pressed: the VM is made on the wizard's task runner while this page lists
        each step as it starts, and the wizard finishes by itself when it is made (the
        window never waits; a failure is listed and the page stays). True once made."""
        from ..actions import create

        if self.wizard_.result is not None:
            return True
        if self.creating:
            return False
        self.creating = True
        self.setEnabled(False)
        progress = _Progress(self)  # steps cross from the worker by a queued signal
        progress.step.connect(lambda step: self.steps.addItem(f"… {step}"))
        request = create.CreateRequest(self.config, secrets=self.wizard_.secrets())
        plan, ctx = self.plan, self.wizard_.ctx
        self.wizard_.tasks.run(
            lambda: create.create(ctx, request, plan=plan, progress=progress.step.emit).result,
            self._created, self._failed)
        return False

    def _created(self, result) -> None:
        self.creating = False
        self.setEnabled(True)
        self.wizard_.result = result
        self.steps.addItem("created")
        self.wizard_.accept()

    def _failed(self, error: BaseException) -> None:
        self.creating = False
        self.setEnabled(True)
        self.steps.addItem(f"failed: {error}")


def _with_browse(field: QLineEdit, filter_text: str | None) -> QWidget:
    """A path field with a Browse… button (a file picker; a folder picker without a
    filter)."""
    from PySide6.QtWidgets import QFileDialog, QHBoxLayout, QToolButton

    box = QWidget()
    row = QHBoxLayout(box)
    row.setContentsMargins(0, 0, 0, 0)
    button = QToolButton()
    button.setText("Browse…")

    def pick() -> None:
        if filter_text is None:
            path = QFileDialog.getExistingDirectory(box, "Choose a folder", field.text())
        else:
            path, _ = QFileDialog.getOpenFileName(box, "Choose a file", field.text(),
                                                  filter_text)
        if path:
            field.setText(path)

    button.clicked.connect(pick)
    row.addWidget(field, 1)
    row.addWidget(button)
    return box


def _gib(memory_mb: int) -> str:
    return f"{memory_mb // 1024}G" if memory_mb % 1024 == 0 else f"{memory_mb}M"
