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
    QWizard,
    QWizardPage,
)

from .networks import NetworkPicker
from .texts import NO_USB, empty_row, gpu_label, no_gpu_reason, speed_box, usb_label
from .widgets import CheckedPage, Tasks, check_item, error_label, fit_to_screen, with_browse
from .wizard_setup import SetupPage

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
        self.error_field: str | None = None  # the field error_text is about
        self.result = None
        self.start_after = False  # the window starts the new VM once it is listed
        self.system_page = _SystemPage(self)
        self.devices_page = _DevicesPage(self)
        self.setup_page = SetupPage(self)
        self.summary_page = _SummaryPage(self)
        self.checked = [self.system_page, self.devices_page, self.setup_page]  # in order
        for page in (*self.checked, self.summary_page):
            self.addPage(page)
        # room for a one-line message under the fields and for the plan's lines
        hint = self.sizeHint()
        fit_to_screen(self, max(hint.width(), 720), max(hint.height(), 540))

    def config_data(self) -> dict:
        s, d = self.system_page, self.devices_page
        data = {
            "name": s.name.text().strip(), "vm_type": s.template.currentData(),
            "memory_mb": s.memory.text().strip() or None, "vcpus": s.vcpus.value(),
            "domain_type": s.speed.currentData(),
            "disk_size_gb": s.disk_size.text().strip() or None,
            "disk_path": s.disk_path.text().strip() or None,
            "iso_path": s.iso.text().strip() or None,
            "virtio_iso_path": s.virtio_iso.text().strip() or None,
            "opencore_path": s.opencore.text().strip() or None,
            "network": s.networks.value(),
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
        if not (page.unattended.isChecked() and password):
            return None
        return SetupSecrets(password, page.key())

    def build_config(self):
        """The VMConfig, or None with ``error_text`` set to the InvalidConfig message."""
        from ..base.errors import InvalidConfig
        from ..base.vm_config import VMConfig

        try:
            config = VMConfig.from_dict(self.config_data())
            self.system_page.check(config)
            self.setup_page.check_password(config)
            self.setup_page.key()  # its form, as you type
        except InvalidConfig as error:
            from .texts import said

            self.error_field = error.field
            self.error_text = said(error)
            return None
        self.error_text, self.error_field = "", None
        return config


class _SystemPage(CheckedPage):
    """The system, its name, speed and size, its installer and network. Memory, vCPUs and
    disk start at the system's defaults within what this computer has (changed with the
    system until you type your own); more than the computer has needs the Allow box."""

    fields = ("name", "vm_type", "memory_mb", "vcpus", "disk_size_gb", "disk_path",
              "iso_path", "virtio_iso_path", "opencore_path", "network", "domain_type")

    def __init__(self, wizard: CreateWizard):
        super().__init__()
        self.setTitle("System and resources")
        self.wizard_ = wizard
        devices = wizard.devices
        self.form = form = QFormLayout(self)
        self.template = QComboBox()
        for value, label in TEMPLATES:
            self.template.addItem(label, value)
        self.name = QLineEdit()
        self.speed = speed_box(devices)
        self.memory = QLineEdit()
        self.vcpus = QSpinBox()
        self.vcpus.setRange(1, 512)
        self.disk_size = QLineEdit()
        self.disk_path = QLineEdit()
        self.disk_path.setPlaceholderText("or an existing disk image (path)")
        self.force = QCheckBox("Allow more memory or vCPUs than this computer has")
        self.iso = QLineEdit()
        self.virtio_iso = QLineEdit()
        self.opencore = QLineEdit()
        self.networks = NetworkPicker(wizard.ctx, devices.networks, wizard.tasks)
        self.network, self.start_network = self.networks.combo, self.networks.start
        self.error = error_label()
        self.edited: set[str] = set()  # typed by the user: a change of system keeps them
        self._applying = False
        self.bad = {"name": self.name, "memory_mb": self.memory, "vcpus": self.vcpus,
                    "disk_size_gb": self.disk_size, "disk_path": self.disk_path,
                    "iso_path": self.iso, "virtio_iso_path": self.virtio_iso,
                    "opencore_path": self.opencore, "network": self.network}
        for label, widget in (("System", self.template), ("Name", self.name),
                              ("Speed", self.speed),
                              ("Memory", self.memory), ("vCPUs", self.vcpus),
                              ("New disk size", self.disk_size),
                              ("Existing disk", with_browse(self.disk_path, "Disk images (*)")),
                              ("", self.force),
                              ("Installer ISO", with_browse(self.iso, "ISO images (*.iso)")),
                              ("virtio drivers ISO",
                               with_browse(self.virtio_iso, "ISO images (*.iso)")),
                              ("OpenCore image", with_browse(self.opencore, "Images (*)")),
                              ("Network", self.networks)):
            form.addRow(label, widget)
        form.addRow(self.error)
        self._apply_defaults()  # before the signals: the wizard is not whole yet
        for widget in (self.name, self.memory, self.disk_size, self.disk_path, self.iso,
                       self.virtio_iso, self.opencore):
            widget.textChanged.connect(self._changed)
        for key, widget in (("memory", self.memory), ("disk", self.disk_size)):
            widget.textEdited.connect(lambda _text, key=key: self.edited.add(key))
        self.disk_path.textChanged.connect(self._disk_chosen)
        self.vcpus.valueChanged.connect(self._vcpus_changed)
        for box in (self.template, self.speed):
            box.currentIndexChanged.connect(self._changed)
        self.networks.changed.connect(self._changed)
        self.force.toggled.connect(self._changed)
        self.template.currentIndexChanged.connect(self._apply_defaults)

    def _disk_chosen(self, path: str) -> None:
        """An existing disk is the VM's disk: no new one is made, so its size is not asked
        (both were accepted, and the size silently dropped)."""
        self.disk_size.setEnabled(not path.strip())
        self.disk_size.setToolTip("" if not path.strip() else
                                  "The existing disk below is used: no new disk is made")

    def _vcpus_changed(self, *_args) -> None:
        if not self._applying:
            self.edited.add("vcpus")
        self._changed()

    def _apply_defaults(self, *_args) -> None:
        """The chosen system's defaults, within this computer (unless typed over), and only
        its own fields shown (virtio drivers for Windows, OpenCore for macOS)."""
        from ..base.vm_config import DEFAULTS, HostResources, VMConfig, VMType

        kind = self.template.currentData()
        default = DEFAULTS[VMType(kind)]
        devices = self.wizard_.devices
        memory, vcpus = VMConfig.defaults_within(kind, HostResources(
            devices.memory_mb or 0, devices.cpus or 0))  # the CLI's too
        self._applying = True
        if "memory" not in self.edited:
            self.memory.setText(_gib(memory))
        if "vcpus" not in self.edited:
            self.vcpus.setValue(vcpus)
        if "disk" not in self.edited:
            self.disk_size.setText(f"{default.disk_gb}G")
        self._applying = False
        self.form.setRowVisible(self.virtio_iso.parentWidget(), kind.startswith("windows"))
        self.form.setRowVisible(self.opencore.parentWidget(), kind == "macos")

    def check(self, config) -> None:
        """What the config alone cannot know: this computer's size, the network running."""
        from ..base.errors import InvalidConfig
        from ..base.vm_config import HostResources

        devices = self.wizard_.devices
        if devices.memory_mb and devices.cpus:
            config.check_host_limits(HostResources(devices.memory_mb, devices.cpus),
                                     force=self.force.isChecked())
        if self.networks.problem():
            raise InvalidConfig("network", self.networks.problem())


class _DevicesPage(CheckedPage):
    fields = ("gpu_passthrough", "usb_devices", "shares", "looking_glass", "display_mode")

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
        form.addRow("Shared folder", with_browse(self.share, None))
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
        self.start = QCheckBox("Start it when it is made")
        self.start.setChecked(True)
        layout.addWidget(self.plan_text)
        layout.addWidget(self.steps)
        layout.addWidget(self.start)
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
        request = self._request()
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
        from .texts import said

        self.plan = None
        self.plan_text.setText(f"Cannot create: {said(error)}")
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
        request = self._request()
        plan, ctx = self.plan, self.wizard_.ctx
        self.wizard_.tasks.run(
            lambda: create.create(ctx, request, plan=plan, progress=progress.step.emit),
            self._created, self._failed)
        return False

    def _request(self):
        from ..actions import create

        return create.CreateRequest(self.config, secrets=self.wizard_.secrets(),
                                    force=self.wizard_.system_page.force.isChecked())

    def _created(self, outcome) -> None:
        self.creating = False
        self.setEnabled(True)
        self.wizard_.result = outcome.result
        self.wizard_.start_after = self.start.isChecked()  # the window starts it
        self.steps.addItem("created")
        self.wizard_.accept()

    def _failed(self, error: BaseException) -> None:
        self.creating = False
        self.setEnabled(True)
        self.steps.addItem(f"failed: {error}")


def _gib(memory_mb: int) -> str:
    return f"{memory_mb // 1024}G" if memory_mb % 1024 == 0 else f"{memory_mb}M"
