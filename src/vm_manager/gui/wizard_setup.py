"""The create wizard's unattended-setup page: the account, its password (never saved), the
formats and time zone, the edition, the installers that go onto the setup medium (the
Looking Glass host, WinFsp, the GPU's driver) for Windows; the cloud image and SSH key for
Linux."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QLineEdit, QWizard

from .widgets import CheckedPage, error_label, with_browse


class SetupPage(CheckedPage):
    """Unattended setup: on by default for Windows when an installer ISO is given; the
    account, its password (never saved), the language and time zone, the edition, the
    Looking Glass host installer; for Linux, the cloud image and SSH key."""

    fields = ("unattended", "password", "product key", "cloud_image_path", "secure_boot")

    def __init__(self, wizard: QWizard):  # the CreateWizard
        from ..actions.create import host_locale, host_timezone, windows_zones

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
        self.timezone = ZonePicker(windows_zones(), host_timezone())
        self.edition = QLineEdit()
        self.product_key = QLineEdit()
        self.product_key.setPlaceholderText("none: the edition's generic key (not activated)")
        self.ui_language = QLineEdit()
        self.ui_language.setPlaceholderText("the disc's (or your language, when it has it)")
        self.keyboard = QLineEdit()
        self.keyboard.setPlaceholderText("the formats' (e.g. de-DE, or 0407:00000407)")
        self.lg_installer = QLineEdit()
        self.winfsp = QLineEdit()
        self.gpu_driver = QLineEdit()
        self.cloud_image = QLineEdit()
        self.ssh_key = QLineEdit()
        self.secure_boot = QCheckBox("Secure Boot (the image must boot through shim; Arch's"
                                     " does not)")
        self.secure_boot.setChecked(True)
        self.note = QLabel()
        self.note.setWordWrap(True)
        self.error = error_label()
        self.rows = {"windows": (self.locale, self.timezone, self.edition, self.lg_installer,
                                 self.winfsp, self.gpu_driver, self.product_key,
                                 self.ui_language, self.keyboard),
                     "linux": (self.cloud_image, self.ssh_key, self.secure_boot)}
        form.addRow(self.unattended)
        for label, widget in (
                ("Account", self.user), ("Password", self.password), ("Again", self.again),
                ("Formats (locale)", self.locale), ("Time zone", self.timezone),
                ("Edition", self.edition), ("Product key", self.product_key),
                ("Windows language", self.ui_language), ("Keyboard", self.keyboard),
                ("Looking Glass host installer", with_browse(self.lg_installer, "(*.exe *.zip)")),
                ("WinFsp installer (shared folders)", with_browse(self.winfsp, "(*.msi)")),
                ("GPU driver (NVIDIA or AMD package)", with_browse(self.gpu_driver, "(*.exe)")),
                ("Cloud image (Linux)", with_browse(self.cloud_image, "Images (*)")),
                ("SSH public key (Linux)", with_browse(self.ssh_key, "Keys (*.pub)")),
                ("Firmware (Linux)", self.secure_boot)):
            form.addRow(label, widget)
        form.addRow(self.note)
        form.addRow(self.error)
        for widget in (self.user, self.password, self.again, self.locale, self.timezone,
                       self.edition, self.lg_installer, self.winfsp, self.gpu_driver,
                       self.cloud_image, self.ssh_key, self.product_key, self.ui_language,
                       self.keyboard):
            widget.textChanged.connect(self._changed)
        self.unattended.toggled.connect(self._changed)
        self.secure_boot.toggled.connect(self._changed)

    def initializePage(self) -> None:  # noqa: N802 - Qt name
        kind = self.wizard_.system_page.template.currentData()
        windows = kind in ("windows11", "windows10")
        self.unattended.setEnabled(kind != "macos")
        seen = (kind, bool(self.wizard_.system_page.iso.text()))
        if seen != getattr(self, "_defaults_for", None):  # your own choice stays, until
            self._defaults_for = seen  # the system or its installer changes
            self.unattended.setChecked(windows and seen[1])
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
                                                  " guest tools (and the Looking Glass host and"
                                                  " GPU driver when given)."))
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
                         ui_language=self.ui_language.text().strip() or None,
                         keyboard=self.keyboard.text().strip() or None,
                         lg_host_installer=self.lg_installer.text().strip() or None,
                         winfsp_installer=self.winfsp.text().strip() or None,
                         gpu_driver_installer=self.gpu_driver.text().strip() or None)
        else:
            setup["ssh_key_path"] = self.ssh_key.text().strip() or None
        data = {"unattended": {k: v for k, v in setup.items() if v is not None}, **firmware}
        if not windows:
            data["cloud_image_path"] = self.cloud_image.text().strip() or None
        return data

    def key(self) -> str | None:
        """The product key given, in its form (``InvalidConfig`` as the CLI's)."""
        from ..actions.create import check_product_key

        return check_product_key(self.product_key.text().strip() or None, "product key")

    def check_password(self, config) -> None:
        """The password rules the CLI applies (a Linux account with a key needs none)."""
        from ..actions.create import check_password

        setup = config.unattended
        if setup is None or (setup.ssh_key_path and not self.password.text()):
            return
        check_password(self.password.text(), self.again.text())


class ZonePicker(QComboBox):
    """The Windows time zones to pick from (this computer's preselected), each with a city
    in its tooltip; a zone may still be typed (an IANA name or a city is taken, as by
    ``--timezone``). Read and written like a line edit (``text``, ``textChanged``)."""

    def __init__(self, zones, current: str):
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QCompleter

        super().__init__()
        self.setEditable(True)
        self.setInsertPolicy(QComboBox.NoInsert)
        for zone, city in zones:
            self.addItem(zone)
            self.setItemData(self.count() - 1, f"e.g. {city}", Qt.ToolTipRole)
        completer = QCompleter([zone for zone, _ in zones], self)
        completer.setCaseSensitivity(Qt.CaseInsensitive)
        completer.setFilterMode(Qt.MatchContains)
        self.setCompleter(completer)
        self.setCurrentText(current)
        self.textChanged = self.currentTextChanged

    def text(self) -> str:
        return self.currentText()

    def setText(self, text: str) -> None:  # noqa: N802 - a line edit's name
        self.setCurrentText(text)

